"""headstart: a small labelled image folder in, an accurate classifier out, by transfer learning.

>>> import headstart
>>> clf = headstart.ImageClassifier(backbone="efficientnet_lite0").fit("data/")
>>> clf.predict(["new.jpg"])
>>> clf.save("runs/mine")
>>> clf = headstart.load("runs/mine")
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    BackboneError,
    DataError,
    ExitStatus,
    ExportCheckError,
    HeadstartError,
    ModelFileError,
    NotFittedError,
    UsageError,
)

__all__ = [
    "__version__",
    "ImageClassifier",
    "Prediction",
    "load",
    "ExitStatus",
    "HeadstartError",
    "UsageError",
    "DataError",
    "BackboneError",
    "ModelFileError",
    "ExportCheckError",
    "NotFittedError",
]

_LAZY = {"ImageClassifier": "model", "load": "model", "Prediction": "predictor"}


def __getattr__(name: str):
    # PyTorch is imported on first use of the training API, not by `import headstart`:
    # the ONNX runtime path (headstart predict MODEL.onnx) must run without it.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
