"""Prediction sets with a coverage guarantee: split conformal prediction.

Asked for 90% coverage, a model names, per image, the smallest set of classes that contains
the true class for at least 90% of images like those it was calibrated on: one class where it
is sure, several where it hesitates. The method is split conformal prediction with the LAC score
(Sadinle, Lei and Wasserman, "Least Ambiguous Set-Valued Classifiers with Bounded Error Levels",
JASA 2019; Angelopoulos and Bates, "A Gentle Introduction to Conformal Prediction", 2021,
section 1): a validation image's non-conformity score is one minus the probability of its true
class; with ``n`` of them and coverage ``1 - a``, ``q`` is the ``ceil((n + 1)(1 - a))``-th
smallest, and an image's set holds every class whose probability is at least ``1 - q``. If the
validation and new images are exchangeable, the set contains the true class with probability at
least ``1 - a`` (and at most ``1 - a + 1 / (n + 1)``), whatever the model; of the sets with that
guarantee, LAC's are the smallest on average. The most probable class is always in the set, so
a set is never empty. The scores are computed once, at the end of ``fit``, and saved with the
model: prediction needs no validation image. NumPy only.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError

__all__ = ["conformity_scores", "conformal_quantile", "prediction_sets", "sets_within", "check_coverage"]


def conformity_scores(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's non-conformity score, one minus the probability of its true class (``labels``:
    class indices), in ascending order; rows with NaN or without a class are left out."""
    proba, labels = np.asarray(proba, dtype=np.float64), np.asarray(labels)
    usable = ~np.isnan(proba).any(axis=1) & (labels >= 0)
    return np.sort(1 - proba[usable, labels[usable]])


def check_coverage(coverage: float, name: str = "coverage") -> None:
    """Refuse a coverage that is not a probability strictly between 0 and 1."""
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not 0 < coverage < 1:
        raise UsageError(f"'{name}' must be a number in (0, 1), such as 0.9. Got {coverage!r} instead.")


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The score below which a new image's true class falls with probability ``coverage``: the
    ``ceil((n + 1) * coverage)``-th smallest of the ``n`` validation ``scores`` (1, every class,
    when there are too few of them for that coverage)."""
    check_coverage(coverage)
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(scores) + 1) * coverage)
    return float(scores[rank - 1]) if rank <= len(scores) else 1.0


def prediction_sets(proba: np.ndarray, scores: np.ndarray, coverage: float) -> np.ndarray:
    """Which classes are in each image's set (a boolean matrix like ``proba``), calibrated on the
    validation ``scores`` for ``coverage``: :func:`sets_within` of :func:`conformal_quantile`."""
    return sets_within(proba, conformal_quantile(scores, coverage))


def sets_within(proba: np.ndarray, quantile: float) -> np.ndarray:
    """Which classes are in each image's set: those whose probability is at least one minus
    ``quantile``, and always the most probable. A row with NaN (an unreadable image) has none."""
    proba = np.asarray(proba, dtype=np.float64)
    chosen = proba >= 1 - quantile - 1e-9  # the score's own rounding
    readable = ~np.isnan(proba).any(axis=1)
    chosen[np.flatnonzero(readable), proba[readable].argmax(axis=1)] = True
    chosen[~readable] = False
    return chosen
