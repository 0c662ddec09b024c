"""A single-label model's decisions when asked to say "none of these" or to name a set of classes.

What :meth:`headstart.predictor.ProbabilityPredictor.predict` and ``headstart predict`` return
with ``reject`` and ``coverage``, for every kind of model: the numbers they need travel in its
head (:class:`headstart.config.HeadSpec`, saved in ``config.json`` and an export's metadata).
NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import HeadSpec
from ..errors import UsageError
from .conformal import check_coverage, conformal_quantile, sets_within
from .reject import UNKNOWN, known_scores, reject_threshold

__all__ = ["check_trust_options", "decide", "TrustPolicy", "Judgement"]


def check_trust_options(head: HeadSpec, classes: Sequence[str], reject: str | float | None,
                        coverage: float | None, flags: tuple[str, str] = ("reject", "coverage")) -> float | None:
    """Refuse what ``head`` cannot do before any image is read; the rejection threshold asked for
    (None without ``reject``). ``flags``: how the caller names the two options in errors."""
    if reject is None and coverage is None:
        return None
    if head.multi_label:
        raise UsageError(f"'{flags[0] if reject is not None else flags[1]}' applies to models that predict one "
                         "class per image; a multi-label model's classes each have their own threshold")
    if coverage is not None:
        check_coverage(coverage, flags[1])
        if not head.conformal_scores:
            raise UsageError(f"'{flags[1]}' needs the validation scores a model saves when it is trained with "
                             "validation images; this model has none (retrain it, with a validation split)")
    if reject is None:
        return None
    if UNKNOWN in classes:
        raise UsageError(f"'{flags[0]}' marks images {UNKNOWN!r}, which is already one of this model's classes")
    return reject_threshold(reject, head.reject_threshold, flags[0])


def decide(proba: np.ndarray, classes: Sequence[str], head: HeadSpec, reject: str | float | None = None,
           coverage: float | None = None) -> np.ndarray:
    """Per row of ``proba``: with ``coverage``, the tuple of the classes of its conformal prediction
    set, most probable first (empty when rejected); else the most probable class, or ``"unknown"``
    when ``reject`` (``"auto"`` or a probability) rejects it. None where the row is NaN. Each row
    is judged by the :class:`TrustPolicy` that ``headstart predict`` and ``serve`` apply."""
    policy = TrustPolicy.of(head, classes, reject, coverage)
    out = np.full(len(proba), None, dtype=object)
    for i in np.flatnonzero(~np.isnan(proba).any(axis=1)):
        judged = policy.judge(proba[i])
        if judged.chosen is not None:
            out[i] = tuple(classes[k] for k in judged.chosen)
        else:
            out[i] = UNKNOWN if judged.unknown else classes[int(proba[i].argmax())]
    return out


@dataclass(frozen=True)
class Judgement:
    """One image's trust figures: its score (highest probability), whether it is rejected, and its
    prediction set (class indices, most probable first; None when no coverage was asked)."""

    score: float
    unknown: bool
    chosen: tuple[int, ...] | None


@dataclass(frozen=True)
class TrustPolicy:
    """What ``reject`` and ``coverage`` ask of a single-label model, resolved once against its head
    (the rejection threshold, the conformal quantile; None where not asked), then applied image
    by image: ``headstart predict`` writes its rows with it, ``serve`` its answers."""

    threshold: float | None = None
    quantile: float | None = None

    @classmethod
    def of(cls, head: HeadSpec, classes: Sequence[str], reject: str | float | None, coverage: float | None,
           flags: tuple[str, str] = ("reject", "coverage")) -> TrustPolicy:
        threshold = check_trust_options(head, classes, reject, coverage, flags)
        quantile = conformal_quantile(head.conformal_scores, coverage) if coverage is not None else None
        return cls(threshold, quantile)

    def judge(self, probabilities: np.ndarray) -> Judgement:
        """The figures of one image's probability row (the set is empty when the image is rejected)."""
        score = float(known_scores(probabilities[None])[0])
        unknown = self.threshold is not None and score < self.threshold
        chosen = None
        if self.quantile is not None:
            inside = sets_within(probabilities[None], self.quantile)[0]
            chosen = () if unknown else tuple(int(i) for i in probabilities.argsort()[::-1] if inside[i])
        return Judgement(score, unknown, chosen)
