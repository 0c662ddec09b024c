"""The lightweight workflow's features: computed once per image, ever, and cached.

:mod:`.pipeline` is the one way in (cache, exported engine or PyTorch);
:mod:`.cache` owns the cache folder's layout; :mod:`.record` keeps what lets a
cached run skip PyTorch; :mod:`.rows` streams features from disk; :mod:`.engines`
runs the backbone through PyTorch, or exports it for :mod:`.onnx_engine` to run in ONNX
Runtime; :mod:`.embeddings` and :mod:`.neighbours` compare images by their features.
Importing the package imports none of them.
"""
