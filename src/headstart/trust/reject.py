""""None of these": images unlike the classes a model was trained on, marked ``unknown``.

A softmax always sums to one, so a photo of something the model never saw still gets a class,
often with high confidence. The score here is the maximum softmax probability (Hendrycks and
Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural
Networks", ICLR 2017), computed on the calibrated probabilities every runtime gives: it needs
no logits and no feature store, so exported models carry it too. An image whose score is below
a threshold is rejected; ``"auto"`` is the threshold that keeps :data:`KEEP_KNOWN` of the known
(validation) images, saved with the model at the end of ``fit``. NumPy only.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError

__all__ = ["UNKNOWN", "KEEP_KNOWN", "known_scores", "keeping_threshold", "reject_option", "reject_threshold",
           "rejected"]

UNKNOWN = "unknown"  # the class column of a rejected image
KEEP_KNOWN = 0.95  # the share of known validation images that reject="auto" keeps


def known_scores(proba: np.ndarray) -> np.ndarray:
    """How much each image looks like one of the known classes: its highest probability (NaN rows stay NaN)."""
    proba = np.asarray(proba, dtype=np.float64)
    out = np.full(len(proba), np.nan)
    readable = ~np.isnan(proba).any(axis=1)
    out[readable] = proba[readable].max(axis=1)
    return out


def keeping_threshold(scores: np.ndarray, keep: float = KEEP_KNOWN) -> float | None:
    """The highest threshold that keeps at least ``keep`` of the known images' ``scores``
    (an image is kept when its score reaches the threshold); None without scores."""
    scores = np.sort(np.asarray(scores, dtype=np.float64)[~np.isnan(scores)])
    if not len(scores):
        return None
    return float(scores[math.floor(len(scores) * (1 - keep) + 1e-9)])


def reject_option(value: str | None, where: str = "reject") -> str | float | None:
    """``reject`` as a user types it (a command-line option, a query parameter): ``auto`` or a
    probability, whose range :func:`reject_threshold` checks against the model."""
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"'{where}' must be 'auto' or a probability in [0, 1]. Got {value!r} instead.") from None


def reject_threshold(reject: str | float, auto: float | None, where: str = "reject") -> float:
    """The threshold ``reject`` asks for: a probability in [0, 1], or ``"auto"``, the model's own
    (``auto``, None for a model saved without one)."""
    if reject == "auto":
        if auto is None:
            raise UsageError(f"'{where}' auto needs the threshold a model saves when it is trained with validation "
                             "images; this model has none: give a probability such as 0.5")
        return auto
    if isinstance(reject, bool) or not isinstance(reject, (int, float)) or not 0 <= reject <= 1:
        raise UsageError(f"'{where}' must be 'auto' or a probability in [0, 1]. Got {reject!r} instead.")
    return float(reject)


def rejected(proba: np.ndarray, threshold: float) -> np.ndarray:
    """Which images are unlike every known class: a score below ``threshold`` (never an unreadable one)."""
    scores = known_scores(proba)
    return ~np.isnan(scores) & (scores < threshold)
