"""What every trained model offers, whichever engine runs it: one protocol for the PyTorch model
(:class:`headstart.model.ImageClassifier`) and the exported one
(:class:`headstart.onnx.runtime.OnnxClassifier`).

``predict``, ``serve`` and ``evaluate`` use a model only through this
protocol; :func:`headstart.model.open_model` opens either kind. No PyTorch here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .config import Preprocessing

__all__ = ["Prediction", "Predictor", "ProbabilityPredictor", "stack_probabilities", "best_classes", "label_sets"]


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
                threshold: float | None = None) -> np.ndarray:
        """The most probable class name per path (None for an image that cannot be decoded); for
        a multi-label model, the tuple of class names predicted per path."""

    @property
    def multi_label_(self) -> bool:
        """Whether the model has a sigmoid per class (several labels per image, or none)."""

    @property
    def thresholds_(self) -> np.ndarray | None:
        """A multi-label model's decision threshold per class; None for a single-label model."""


class ProbabilityPredictor:
    """``predict_proba`` and ``predict`` from a model's ``iter_predict``, written once for both kinds."""

    classes_: tuple[str, ...]
    multi_label_: bool = False
    thresholds_: np.ndarray | None = None

    def _check_fitted(self) -> None:
        """Raise when there is no model to predict with yet (an unfitted estimator)."""

    def iter_predict(self, paths: Sequence[str | Path], batch_size: int | None = None, tta: bool = False
                     ) -> Iterator[Prediction]:
        raise NotImplementedError

    def predict_proba(self, paths: Sequence[str | Path] | str | Path, tta: bool = False) -> np.ndarray:
        """Class probabilities, one row per path (columns in ``classes_`` order).

        A row is NaN for an image that cannot be decoded. With ``tta``, each image's
        probabilities are averaged with its mirror image's.
        """
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self._check_fitted()
        return stack_probabilities(self.iter_predict(paths, tta=tta), len(paths), len(self.classes_))

    def predict(self, paths: Sequence[str | Path] | str | Path, tta: bool = False,
                threshold: float | None = None) -> np.ndarray:
        """The most probable class name per path (None for an image that cannot be decoded).

        A multi-label model predicts the tuple of the classes whose probability reaches their
        threshold (``thresholds_``, tuned on validation; ``threshold`` sets one for every class).
        ``MultiLabelBinarizer(classes=model.classes_)`` turns these into an indicator matrix.
        """
        proba = self.predict_proba(paths, tta=tta)
        if not self.multi_label_:
            return best_classes(proba, self.classes_)
        return label_sets(proba, self.classes_, self.thresholds_ if threshold is None else threshold)


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
