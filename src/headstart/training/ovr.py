"""The lightweight workflow's multi-label head: one-vs-rest logistic regressions on pooled features.

Each class gets its own binary logistic regression (scikit-learn's
``OneVsRestClassifier(LogisticRegression())`` objective: binary cross-entropy
plus ``||w||² / 2C`` on standardised features, intercept not penalised). The
classes are independent, so all of them are minimised together, in one
streamed pass per L-BFGS step over the float16 feature files, as the
single-label head is (:mod:`.linear`): memory stays flat however many images.

Each class then takes its own L2 strength from :data:`C_GRID`: the one with the
best validation average precision (its share of the mean average precision),
or without validation rows, the best out-of-fold one. Its decision threshold is
the one with the best F1 on the same held-out probabilities.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..evaluate import best_f1_thresholds, mean_average_precision
from ..features.rows import Rows
from .linear import C_GRID, Standardised
from .results import EpochStats

__all__ = ["OvrHead", "fit_ovr_head", "sigmoid_probabilities"]


@dataclass
class OvrHead:
    """Fitted one-vs-rest heads on raw pooled features: probabilities = sigmoid(features @ weight.T + bias)."""

    weight: np.ndarray  # float32 (num_classes, num_features)
    bias: np.ndarray  # float32 (num_classes,)
    C: np.ndarray  # each class's inverse L2 strength
    thresholds: np.ndarray  # each class's decision threshold
    train: EpochStats
    val: EpochStats | None
    seconds: float


def fit_ovr_head(train: Rows, val: Rows | None, class_weight: str | None = None, seed: int = 0) -> OvrHead:
    """Fit the heads on ``train`` (labels: an indicator matrix); strengths and thresholds on ``val``."""
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    # Thin matrix products per step: BLAS threads only slow them down (as for the single-label head).
    with threadpool_limits(1, user_api="blas"):
        num_classes = train.labels.shape[1]
        if val is not None and len(val):
            path = _path(train, class_weight)
            held_out = [sigmoid_probabilities(val, w, b) for w, b in path]
            y_held = val.labels
        else:
            path, held_out, y_held = _cross_validated(train, class_weight, seed)
        best = _best_per_class(y_held, held_out)
        classes = np.arange(num_classes)
        weight = np.stack([path[best[k]][0][k] for k in classes])
        bias = np.array([path[best[k]][1][k] for k in classes], dtype=np.float32)
        chosen = np.stack([held_out[best[k]][:, k] for k in classes], axis=1)
        thresholds = best_f1_thresholds(y_held, chosen)
    has_val = val is not None and len(val) > 0
    return OvrHead(weight, bias, np.array(C_GRID)[best], thresholds,
                   multilabel_stats(train.labels, sigmoid_probabilities(train, weight, bias)),
                   multilabel_stats(val.labels, sigmoid_probabilities(val, weight, bias)) if has_val else None,
                   time.perf_counter() - start)


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


def _best_per_class(y: np.ndarray, held_out: list[np.ndarray]) -> np.ndarray:
    """Per class, the index in :data:`C_GRID` with the best held-out average precision; for a class
    without both positive and negative held-out images, the lowest binary cross-entropy."""
    from sklearn.metrics import average_precision_score

    best = np.zeros(y.shape[1], dtype=int)
    for k in range(y.shape[1]):
        if 0 < y[:, k].sum() < len(y):
            scores = [average_precision_score(y[:, k], p[:, k]) for p in held_out]
        else:
            scores = [-_bce(y[:, k], p[:, k]) for p in held_out]
        best[k] = int(np.argmax(scores))  # the first (strongest L2) among ties
    return best


def _bce(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else 0.0


def multilabel_stats(y: np.ndarray, proba: np.ndarray) -> EpochStats:
    """Binary cross-entropy, label-wise accuracy at 0.5 and mean average precision of ``proba``."""
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
        loss, grad_w, grad_b = loss / self.total_weight, grad_w / self.total_weight, grad_b / self.total_weight
        w = params[:-self.k].reshape(self.k, self.d)
        grad_w = (grad_w - np.outer(grad_b, self.mean)) / self.std + l2 * w
        return loss + 0.5 * l2 * float(np.sum(w * w)), np.concatenate([grad_w.ravel(), grad_b])
