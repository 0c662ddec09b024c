"""What every trained model offers, whichever engine runs it: one protocol for the PyTorch model
(:class:`headstart.model.ImageClassifier`) and the exported ones (each format's runtime, such as
:class:`headstart.export.onnx_runtime.OnnxClassifier`).

``predict``, ``serve`` and ``evaluate`` use a model only through this
protocol; :func:`headstart.model.open_model` opens any kind. No PyTorch here.

The Python API follows scikit-learn: ``predict_proba`` and ``predict`` return
one row per image (a folder stands for its images, searched recursively in
sorted order, as ``headstart predict`` lists them), an image that cannot be read
gets a NaN row and a ``UserWarning`` naming it, and ``score`` is the mean accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .config import HeadSpec, Preprocessing
from .data.images import image_files
from .errors import UsageError
from .trust.decisions import check_trust_options, decide

__all__ = ["Prediction", "Predictor", "ProbabilityPredictor", "expand_images", "stack_probabilities",
           "best_classes", "label_sets"]


@dataclass(frozen=True)
class Prediction:
    """One image's result: class probabilities in ``classes_`` order, or why it failed."""

    path: Path
    probabilities: np.ndarray | None
    error: str | None = None


class Predictor(Protocol):
    """A trained classifier, as the commands that only predict see it."""

    classes_: tuple[str, ...]

    @property
    def preprocessing(self) -> Preprocessing:
        """How an image becomes the network's input."""

    def iter_predict(self, paths: Sequence[str | Path], batch_size: int | None = None, tta: bool = False
                     ) -> Iterator[Prediction]:
        """Predictions for ``paths`` in order, streamed batch by batch."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch (N, 3, H, W) already resized and cropped."""

    def predict_proba(self, paths: Sequence[str | Path] | str | Path, tta: bool = False) -> np.ndarray:
        """Class probabilities, one row per path; NaN for an image that cannot be decoded."""

    def predict(self, paths: Sequence[str | Path] | str | Path, tta: bool = False,
                threshold: float | None = None, reject: str | float | None = None,
                coverage: float | None = None) -> np.ndarray:
        """The most probable class name per path (None for an image that cannot be decoded, and
        ``"unknown"`` for one ``reject`` rejects); with ``coverage``, its prediction set; for a
        multi-label model, the tuple of class names predicted per path."""

    @property
    def head_(self) -> HeadSpec:
        """The head's configuration: multi-label or not, and what its validation images taught it."""

    @property
    def multi_label_(self) -> bool:
        """Whether the model has a sigmoid per class (several labels per image, or none)."""

    @property
    def thresholds_(self) -> np.ndarray | None:
        """A multi-label model's decision threshold per class; None for a single-label model."""

    def score(self, paths: Sequence[str | Path] | str | Path, y: Sequence[str], tta: bool = False) -> float:
        """Mean accuracy against the class names ``y``."""


class ProbabilityPredictor:
    """``predict_proba`` and ``predict`` from a model's ``iter_predict``, written once for both kinds."""

    classes_: tuple[str, ...]
    head_: HeadSpec
    multi_label_: bool = False
    thresholds_: np.ndarray | None = None

    def _check_fitted(self) -> None:
        """Raise when there is no model to predict with yet (an unfitted estimator)."""

    def iter_predict(self, paths: Sequence[str | Path], batch_size: int | None = None, tta: bool = False
                     ) -> Iterator[Prediction]:
        raise NotImplementedError

    def predict_proba(self, paths: Sequence[str | Path] | str | Path, tta: bool = False) -> np.ndarray:
        """Class probabilities, one row per image (columns in ``classes_`` order).

        ``paths``: image files, or folders, which stand for their images (searched
        recursively, in :func:`expand_images`'s order). A row is NaN for an image that
        cannot be read, and a ``UserWarning`` names it. With ``tta``, each image's
        probabilities are averaged with its mirror image's.
        """
        return self._probabilities(paths, tta)

    def _probabilities(self, paths: Sequence[str | Path] | str | Path, tta: bool) -> np.ndarray:
        """``predict_proba``'s work, for every public method: its warning points at the user's call."""
        self._check_fitted()
        paths = expand_images(paths)
        failed: list[Prediction] = []

        def noting_failures() -> Iterator[Prediction]:
            for prediction in self.iter_predict(paths, tta=tta):
                if prediction.probabilities is None:
                    failed.append(prediction)
                yield prediction

        proba = stack_probabilities(noting_failures(), len(paths), len(self.classes_))
        if failed:
            shown = "; ".join(f"{p.path}: {p.error}" for p in failed[:5])
            more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
            warnings.warn(f"{len(failed)} of {len(paths)} image(s) could not be read, their rows are NaN: "
                          f"{shown}{more}", UserWarning, stacklevel=3)
        return proba

    def predict(self, paths: Sequence[str | Path] | str | Path, tta: bool = False,
                threshold: float | None = None, reject: str | float | None = None,
                coverage: float | None = None) -> np.ndarray:
        """The most probable class name per image (None, with a warning, for one that cannot be read).

        ``reject`` (a single-label model's): ``"unknown"`` for an image whose highest probability
        is below it, ``"auto"`` being the threshold that keeps 95% of the validation images
        (:mod:`headstart.trust.reject`). ``coverage`` (such as 0.9): per image, the tuple of the
        classes of its prediction set, most probable first, which holds the true class with that
        probability (split conformal prediction, :mod:`headstart.trust.conformal`); a rejected
        image's set is empty.

        A multi-label model predicts the tuple of the classes whose probability reaches their
        threshold (``thresholds_``, tuned on validation; ``threshold`` sets one for every class).
        ``MultiLabelBinarizer(classes=model.classes_)`` turns these into an indicator matrix.
        """
        if reject is not None or coverage is not None:
            self._check_fitted()
            check_trust_options(self.head_, self.classes_, reject, coverage)  # before any image is read
            return decide(self._probabilities(paths, tta), self.classes_, self.head_, reject, coverage)
        proba = self._probabilities(paths, tta)
        if not self.multi_label_:
            return best_classes(proba, self.classes_)
        return label_sets(proba, self.classes_, self.thresholds_ if threshold is None else threshold)

    def score(self, paths: Sequence[str | Path] | str | Path, y: Sequence[str], tta: bool = False) -> float:
        """Mean accuracy of ``predict(paths)`` against the class names ``y`` (scikit-learn's ``score``).

        An image that cannot be read counts as a mistake (and is named in a warning).
        """
        if self.multi_label_:
            raise UsageError("score compares one class name per image; a multi-label model's metrics "
                             "(mean average precision, F1...) come from headstart evaluate")
        predicted = best_classes(self._probabilities(paths, tta), self.classes_)
        y = np.asarray(list(y), dtype=object)
        if len(y) != len(predicted):
            raise UsageError(f"score: expected one class name in y per image. Received {len(y)} names "
                             f"for {len(predicted)} image(s).")
        return float(np.mean(predicted == y)) if len(y) else float("nan")


def expand_images(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """Image files of ``paths``: a file as given (even missing: its row will say so), a folder
    as its images, searched recursively, sorted by folder then name (hidden files skipped)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found: list[Path] = []
    for path in map(Path, paths):
        found += image_files(path) if path.is_dir() else [path]
    return found


def stack_probabilities(predictions: Iterator[Prediction], rows: int, classes: int) -> np.ndarray:
    """Predictions as one array, NaN rows for images that failed."""
    out = np.full((rows, classes), np.nan, dtype=np.float32)
    for i, prediction in enumerate(predictions):
        if prediction.probabilities is not None:
            out[i] = prediction.probabilities
    return out


def best_classes(proba: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The arg-max class name of each row; None where the row is NaN."""
    out = np.full(len(proba), None, dtype=object)
    ok = ~np.isnan(proba).any(axis=1)
    out[ok] = np.array(classes, dtype=object)[proba[ok].argmax(axis=1)]
    return out


def label_sets(proba: np.ndarray, classes: Sequence[str], thresholds) -> np.ndarray:
    """A multi-label model's decisions: per row, the tuple of classes whose probability reaches
    its threshold (one per class, or one number for all); None where the row is NaN."""
    out = np.full(len(proba), None, dtype=object)
    ok = ~np.isnan(proba).any(axis=1)
    chosen = proba >= np.asarray(thresholds, dtype=np.float64)
    for i in np.flatnonzero(ok):
        out[i] = tuple(classes[k] for k in np.flatnonzero(chosen[i]))
    return out
