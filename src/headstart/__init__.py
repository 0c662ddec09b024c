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
    HeadstartError,
    ModelFileError,
    NotFittedError,
    UsageError,
)
from .model import ImageClassifier, Prediction, load  # noqa: E402

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
    "NotFittedError",
]
