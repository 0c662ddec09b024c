"""The lightweight workflow's multi-label head: one-vs-rest logistic regressions on pooled features.

Each class gets its own binary logistic regression (scikit-learn's
``OneVsRestClassifier(LogisticRegression())`` objective: binary cross-entropy
plus ``||w||² / 2C`` on standardised features, intercept not penalised). The
classes are independent, so all of them are minimised together, in one
streamed pass per L-BFGS step over the float16 feature files, as the
single-label head is (:mod:`.linear`): memory stays flat however many images.

The L2 strength is the one of :data:`C_GRID` with the best validation mean
average precision (without validation rows, the best out-of-fold one), and each
class's decision threshold the one with the best F1 on those same held-out
probabilities. Then, as scikit-learn's ``LogisticRegressionCV`` refits, the heads
are fitted again at that strength on the training and validation rows together:
every labelled image counts. The validation figures reported
(:attr:`OvrHead.val_proba`) stay those of the heads fitted without them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..features.rows import Rows
from .linear import C_GRID, Standardised
from .results import EpochStats

__all__ = ["OvrHead", "fit_ovr_head", "sigmoid_probabilities"]


@dataclass
class OvrHead:
    """Fitted one-vs-rest heads on raw pooled features: probabilities = sigmoid(features @ weight.T + bias)."""

    weight: np.ndarray  # float32 (num_classes, num_features)
    bias: np.ndarray  # float32 (num_classes,)
    C: float  # the inverse L2 strength validation chose
    thresholds: np.ndarray  # each class's decision threshold
    train: EpochStats
    val: EpochStats | None  # of the heads fitted on the training rows alone
    val_proba: np.ndarray | None  # their validation probabilities: honest figures, unlike the refitted heads'
    seconds: float
    search: list[dict]  # every C tried, with its validation (else cross-validated) mean average precision


def fit_ovr_head(train: Rows, val: Rows | None, class_weight: str | None = None, seed: int = 0) -> OvrHead:
    """Fit the heads on ``train`` (labels: an indicator matrix); strength and thresholds on ``val``,
    then refit on both."""
    from threadpoolctl import threadpool_limits

    from ..metrics import best_f1_thresholds  # scikit-learn: imported when a head is fitted, not before

    start = time.perf_counter()
    has_val = val is not None and len(val) > 0
    # Thin matrix products per step: BLAS threads only slow them down (as for the single-label head).
    with threadpool_limits(1, user_api="blas"):
        if has_val:
            path = _path(train, class_weight)
            held_out = [sigmoid_probabilities(val, w, b) for w, b in path]
            y_held = val.labels
        else:
            path, held_out, y_held = _cross_validated(train, class_weight, seed)
        scores = [_score(y_held, p) for p in held_out]
        best = int(np.argmax(scores))  # the strongest L2 among ties
        thresholds = best_f1_thresholds(y_held, held_out[best])
        weight, bias = path[best]
        if has_val:
            both = Rows(train.parts + val.parts, np.concatenate([train.labels, val.labels]))
            objective = _BinaryObjective(both, class_weight)
            weight, bias = objective.unscale(objective.minimize(C_GRID[best], objective.scale(weight, bias)))
    return OvrHead(weight, bias, C_GRID[best], thresholds,
                   multilabel_stats(train.labels, sigmoid_probabilities(train, weight, bias)),
                   multilabel_stats(val.labels, held_out[best]) if has_val else None,
                   held_out[best] if has_val else None, time.perf_counter() - start,
                   [{"C": c, ("val_mean_ap" if has_val else "cv_mean_ap"): float(score)}
                    for c, score in zip(C_GRID, scores)])


def _score(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean average precision; minus the cross-entropy where no class has a held-out image."""
    from ..metrics import mean_average_precision

    score = mean_average_precision(y, proba)
    return score if not np.isnan(score) else -_bce(y.ravel(), proba.ravel())


def _path(rows: Rows, class_weight: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The solution for each C of the grid, from strong to weak L2, each warm-started from the last."""
    objective = _BinaryObjective(rows, class_weight)
    params, path = None, []
    for c in C_GRID:
        params = objective.minimize(c, params)
        path.append(objective.unscale(params))
    return path


def _cross_validated(rows: Rows, class_weight: str | None, seed: int):
    """Without validation rows: the path on all of ``rows``, and out-of-fold probabilities for each C."""
    from sklearn.model_selection import KFold

    held_out = [np.zeros(rows.labels.shape) for _ in C_GRID]
    splits = min(5, len(rows))
    if splits >= 2:
        for fit, out in KFold(splits, shuffle=True, random_state=seed).split(np.zeros(len(rows))):
            for i, (w, b) in enumerate(_path(rows.subset(fit), class_weight)):
                held_out[i][out] = sigmoid_probabilities(rows.subset(out), w, b)
    return _path(rows, class_weight), held_out, rows.labels


def _bce(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else 0.0


def multilabel_stats(y: np.ndarray, proba: np.ndarray) -> EpochStats:
    """Binary cross-entropy, label-wise accuracy at 0.5 and mean average precision of ``proba``."""
    from ..metrics import mean_average_precision

    return EpochStats(_bce(y.ravel(), proba.ravel()), float(((proba >= 0.5) == (y > 0.5)).mean()), len(y),
                      mean_ap=mean_average_precision(y, proba))


def sigmoid_probabilities(rows: Rows, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Each class's probability for every row, float64 (rows, classes)."""
    parts = [_sigmoid(np.asarray(x, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T + bias)
             for x in rows.chunks()]
    return np.concatenate(parts) if parts else np.zeros((0, len(bias)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))


class _BinaryObjective(Standardised):
    """Mean binary cross-entropy of every class, plus each class's L2 penalty, and the gradient,
    in one streamed pass. With ``class_weight="balanced"``, a class's positives weigh
    negatives / positives (PyTorch's ``pos_weight``), so a rare class is not ignored."""

    def __init__(self, rows: Rows, class_weight: str | None):
        super().__init__(rows, rows.labels.shape[1])
        positives = rows.labels.sum(axis=0)
        self.pos_weight = np.ones(self.k)
        if class_weight == "balanced":
            self.pos_weight = (len(rows) - positives) / np.maximum(positives, 1)
        self.total_weight = float(len(rows))

    def __call__(self, params: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
        weight, bias = self.unscale(params)
        loss, grad_w, grad_b, offset = 0.0, np.zeros((self.k, self.d)), np.zeros(self.k), 0
        for x in self.rows.chunks():
            y = self.rows.labels[offset:offset + len(x)]
            offset += len(x)
            z = (x @ weight.T + bias).astype(np.float64)
            positive = y * self.pos_weight
            # log(1 + e^-z) for the positives, log(1 + e^z) for the negatives, without overflow.
            loss += float(np.sum(positive * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)))
            p = _sigmoid(z)
            g = (positive * (p - 1) + (1 - y) * p).astype(np.float32)
            grad_w += g.T @ x
            grad_b += g.sum(axis=0, dtype=np.float64)
        return self.penalised(params, l2, loss, grad_w, grad_b)
