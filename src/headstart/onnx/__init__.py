"""Models as ONNX files: :mod:`.export` writes them (PyTorch), :mod:`.runtime` runs them with ONNX
Runtime, NumPy and Pillow alone, :mod:`.quantize` makes int8 copies. Importing the package
imports none of them.
"""
