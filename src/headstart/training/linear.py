"""The lightweight workflow's head: multinomial logistic regression on pooled features.

The objective is scikit-learn's ``LogisticRegression``'s (softmax cross-entropy
plus ``||W||² / 2C``, on standardised features, intercept not penalised),
minimised full-batch by SciPy's L-BFGS. It is written out here rather than
calling scikit-learn because that solver copies every feature to float64 in
memory (10 kB per image for Lite0): here the features stay in float16 files and
each pass streams them in float32 chunks (:class:`headstart.features.rows.Rows`), so
memory stays flat however many images there are. Standardisation is folded
into the weights, never materialised. Memory stays bounded with many classes
too: logits are computed a bounded block of rows at a time, and the solver keeps
fewer correction pairs when the weights are large (10,000 classes).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..features.rows import Rows
from .results import EpochStats

__all__ = ["C_GRID", "MAX_ITER", "Standardised", "LinearHead", "Progress", "fit_linear_head", "fit_logistic",
           "linear_probabilities", "probabilities", "smoothed_scale"]

# Inverse L2 strengths tried: from strong regularisation, which a few hundred
# images need, to almost none.
C_GRID = tuple(float(c) for c in np.logspace(-4, 1, 6))
MAX_ITER = 500
# At most this many bytes of logits or probabilities (rows x classes, float64 in the metrics)
# at once: a 4096-row chunk of 10,000 classes would take 328 MB.
LOGIT_BYTES = 16 << 20
# L-BFGS keeps 2 x pairs x parameters floats of history: at most this many bytes of them
# (10 pairs, SciPy's default, up to 6,000 classes of Lite0 features; never fewer than 3).
HISTORY_BYTES = 1 << 30

# At most this many rows choose the head's scale for fine-tuning (smoothed_scale): one number.
# Fewer with many classes, their logits held within LOGIT_BYTES.
SCALE_ROWS = 4096

# Called after each solver iteration with (C, iteration, objective value).
Progress = Callable[[float, int, float], None]


@dataclass
class LinearHead:
    """A fitted linear head on raw pooled features: logits = features @ weight.T + bias."""

    weight: np.ndarray  # float32 (num_classes, num_features)
    bias: np.ndarray  # float32 (num_classes,)
    C: float
    train: EpochStats
    val: EpochStats | None
    seconds: float
    # Every C tried, with its validation (else cross-validated) loss, and accuracy with validation:
    # the report plots them, the regularisation curve that stands in for a lightweight run's epochs.
    search: list[dict] = field(default_factory=list)
    # Refitted on train + val: the head fitted on the training rows alone, which ``val`` and
    # ``val_proba`` describe (honest figures, as the refitted head's would not be) and which
    # fine-tuning starts from (its guard needs validation images the network has not seen).
    guarded: tuple[np.ndarray, np.ndarray] | None = None
    val_proba: np.ndarray | None = None


def fit_linear_head(train: Rows, val: Rows | None, num_classes: int, class_weight: str | None = None,
                    seed: int = 0, progress: Progress | None = None, refit: Rows | None = None) -> LinearHead:
    """Fit the head; its L2 strength is the one of :data:`C_GRID` with the lowest validation
    log loss, or without validation rows, the lowest stratified cross-validated log loss.
    With ``refit`` (the training and validation rows together) and validation rows, the head is
    then fitted again at that strength on ``refit`` (scikit-learn's ``refit=True``).
    ``progress`` hears of every solver iteration."""
    from threadpoolctl import threadpool_limits

    # Each L-BFGS step is a few thin matrix products, which BLAS threads only slow down:
    # 0.30 s single-threaded against 0.6-1.7 s with 2 threads, on 3,000 Lite0 features.
    # With thousands of classes the products are wide, and every core helps.
    threads = 1 if num_classes * train.dim < 1 << 20 else None
    with threadpool_limits(threads, user_api="blas"):
        head = _fit_linear_head(train, val, num_classes, class_weight, seed, progress)
        if refit is not None and head.val is not None:
            start = time.perf_counter()
            weight, bias = fit_logistic(refit, num_classes, head.C, class_weight, (head.weight, head.bias), progress)
            head = dataclasses.replace(head, weight=weight, bias=bias, guarded=(head.weight, head.bias),
                                       val_proba=probabilities(val, head.weight, head.bias),
                                       seconds=head.seconds + time.perf_counter() - start)
        return head


def _fit_linear_head(train: Rows, val: Rows | None, num_classes: int, class_weight: str | None,
                     seed: int, progress: Progress | None = None) -> LinearHead:
    start = time.perf_counter()
    has_val = val is not None and len(val) > 0
    present = np.bincount(train.labels, minlength=num_classes)
    present = present[present > 0]
    search = []
    if has_val:
        path = _path(train, num_classes, class_weight, progress)
        scores = [_stats(val, w, b, num_classes) for w, b in path]
        best = int(np.argmin([score.loss for score in scores]))
        weight, bias, c = *path[best], C_GRID[best]
        search = [{"C": c_, "val_loss": score.loss, "val_accuracy": score.accuracy}
                  for c_, score in zip(C_GRID, scores)]
    else:
        if present.min() >= 2:
            losses = np.zeros(len(C_GRID))
            folds = int(min(5, present.min()))
            for fit_rows, held_out in _folds(train, folds, seed):
                path = _path(fit_rows, num_classes, class_weight, progress)
                losses += [_stats(held_out, w, b, num_classes).loss for w, b in path]
            c = C_GRID[int(np.argmin(losses))]
            search = [{"C": c_, "cv_loss": float(loss / folds)} for c_, loss in zip(C_GRID, losses)]
        else:  # a class with a single image: nothing to validate on, take a middle strength
            c = 0.1
        weight, bias = fit_logistic(train, num_classes, c, class_weight, progress=progress)
    return LinearHead(weight, bias, c, _stats(train, weight, bias, num_classes),
                      _stats(val, weight, bias, num_classes) if has_val else None, time.perf_counter() - start,
                      search)


def fit_logistic(rows: Rows, num_classes: int, C: float, class_weight: str | None = None,
                 start: tuple[np.ndarray, np.ndarray] | None = None,
                 progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias, on raw features, of the logistic regression with inverse L2 strength ``C``."""
    objective = _Objective(rows, num_classes, class_weight)
    return objective.unscale(objective.minimize(C, objective.scale(*start) if start else None, progress))


def _path(rows: Rows, num_classes: int, class_weight: str | None,
          progress: Progress | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The solution for each C of the grid, from strong to weak L2, each warm-started from the last."""
    objective = _Objective(rows, num_classes, class_weight)
    params, path = None, []
    for c in C_GRID:
        params = objective.minimize(c, params, progress)
        path.append(objective.unscale(params))
    return path


class Standardised:
    """Parameters of a linear head in standardised-feature space, and the way back to raw
    features: the mean and standard deviation of the rows, from one streamed pass."""

    total_weight: float  # what the subclass's loss is averaged over

    def __init__(self, rows: Rows, num_classes: int):
        self.rows, self.k, self.d = rows, num_classes, rows.dim
        total, squares = np.zeros(self.d), np.zeros(self.d)
        for x in rows.chunks():
            total += x.sum(axis=0, dtype=np.float64)
            squares += np.square(x, dtype=np.float64).sum(axis=0)
        self.mean = total / max(len(rows), 1)
        std = np.sqrt(np.maximum(squares / max(len(rows), 1) - self.mean ** 2, 0))
        self.std = np.where(std < 1e-6, 1.0, std)  # a constant feature: leave it unscaled, as scikit-learn does

    def unscale(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, b = params[:-self.k].reshape(self.k, self.d), params[-self.k:]
        weight = w / self.std
        return weight.astype(np.float32), (b - weight @ self.mean).astype(np.float32)

    def scale(self, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        w = weight.astype(np.float64) * self.std
        return np.concatenate([w.ravel(), bias + weight.astype(np.float64) @ self.mean])

    def penalised(self, params: np.ndarray, l2: float, loss: float, grad_w: np.ndarray, grad_b: np.ndarray
                  ) -> tuple[float, np.ndarray]:
        """The objective and its gradient in standardised space: the summed loss and its raw-feature
        gradients, averaged over ``total_weight``, plus the L2 penalty on the weights."""
        loss, grad_w, grad_b = loss / self.total_weight, grad_w / self.total_weight, grad_b / self.total_weight
        # Raw-feature gradients back to standardised parameters: logits = x W'/s + b - (W'/s) mean.
        w = params[:-self.k].reshape(self.k, self.d)
        grad_w = (grad_w - np.outer(grad_b, self.mean)) / self.std + l2 * w
        return loss + 0.5 * l2 * float(np.sum(w * w)), np.concatenate([grad_w.ravel(), grad_b])

    def minimize(self, C: float, start: np.ndarray | None, progress: Progress | None = None) -> np.ndarray:
        """The parameters minimising the subclass's objective ``self(params, l2)`` at inverse L2
        strength ``C``, from ``start`` (warm start) or zeros; ``progress`` hears of every iteration."""
        from scipy.optimize import minimize

        # scikit-learn minimises C * sum(loss) + |W|^2 / 2; divided by C * n it is this mean form.
        l2 = 1.0 / (C * self.total_weight)
        x0 = start if start is not None else np.zeros(self.k * (self.d + 1))
        pairs = int(np.clip(HISTORY_BYTES // (16 * x0.size), 3, 10))
        iteration = 0

        def step(intermediate_result) -> None:  # the name SciPy passes the current result by
            nonlocal iteration
            iteration += 1
            progress(C, iteration, float(intermediate_result.fun))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # exp overflow is handled by the max shift
            result = minimize(self, x0, args=(l2,), jac=True, method="L-BFGS-B", callback=step if progress else None,
                              options={"maxiter": MAX_ITER, "gtol": 1e-4, "ftol": 64 * np.finfo(float).eps,
                                       "maxcor": pairs})
        return result.x


class _Objective(Standardised):
    """Mean (class-weighted) cross-entropy plus the L2 penalty, and its gradient, in one
    streamed pass over the rows. Parameters live in standardised-feature space."""

    def __init__(self, rows: Rows, num_classes: int, class_weight: str | None):
        super().__init__(rows, num_classes)
        counts = np.bincount(rows.labels, minlength=num_classes).astype(np.float64)
        per_class = np.ones(num_classes)
        if class_weight == "balanced":  # as scikit-learn defines it: n / (classes present x images of the class)
            per_class = len(rows) / (np.count_nonzero(counts) * np.maximum(counts, 1))
        self.sample_weight = per_class[rows.labels]
        self.total_weight = float(self.sample_weight.sum())

    def __call__(self, params: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
        weight, bias = self.unscale(params)
        loss, grad_w, grad_b, offset = 0.0, np.zeros((self.k, self.d)), np.zeros(self.k), 0
        for x in _blocks(self.rows, self.k):
            y = self.rows.labels[offset:offset + len(x)]
            sw = self.sample_weight[offset:offset + len(x)]
            offset += len(x)
            # One (rows x classes) buffer, worked in place: logits, then exp, then the gradient.
            g = x @ weight.T
            g += bias
            g -= g.max(axis=1, keepdims=True)
            true_logit = g[np.arange(len(x)), y]
            np.exp(g, out=g)
            norm = g.sum(axis=1)
            loss -= float(np.dot(sw, true_logit - np.log(norm)))
            g /= norm[:, None]
            g[np.arange(len(x)), y] -= 1
            g *= sw[:, None].astype(np.float32)
            grad_w += g.T @ x
            grad_b += g.sum(axis=0, dtype=np.float64)
        return self.penalised(params, l2, loss, grad_w, grad_b)


def _blocks(rows: Rows, num_classes: int):
    """The rows' chunks, cut so that one block's logits stay within :data:`LOGIT_BYTES`."""
    size = max(1, LOGIT_BYTES // (8 * num_classes))
    for x in rows.chunks():
        for start in range(0, len(x), size):
            yield x[start:start + size]


def probabilities(rows: Rows, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Class probabilities of every row, float64 (rows, classes)."""
    parts = [linear_probabilities(weight, bias, x) for x in rows.chunks()]
    return np.concatenate(parts) if parts else np.zeros((0, len(bias)))


def linear_probabilities(weight: np.ndarray, bias: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Softmax of ``x @ weight.T + bias`` for an in-memory array of features."""
    p = np.asarray(x, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    p += bias
    p -= p.max(axis=1, keepdims=True)
    np.exp(p, out=p)  # in place: with thousands of classes, each copy is rows x classes x 8 bytes
    p /= p.sum(axis=1, keepdims=True)
    return p


def smoothed_scale(rows: Rows, weight: np.ndarray, bias: np.ndarray, smoothing: float, seed: int = 0) -> float:
    """The factor, at most 1, on a head's logits that minimises the label-smoothed cross-entropy
    of ``rows``: the head fine-tuning starts from.

    The head fitted exactly on the features is far more confident than label smoothing allows
    (its training loss near 0, the smoothed loss's floor far above it). Fine-tuning from it spends
    its first steps moving the whole backbone to lower that confidence, which costs validation
    accuracy it then has to win back; scaled, the head predicts the same classes and the
    gradient that is left is the one that teaches. 1 without smoothing.
    """
    if smoothing <= 0 or len(rows) == 0:
        return 1.0
    from scipy.optimize import minimize_scalar

    most = max(1, min(SCALE_ROWS, LOGIT_BYTES // (8 * len(bias))))
    chosen = rows if len(rows) <= most else rows.subset(
        np.sort(np.random.default_rng(seed).choice(len(rows), most, replace=False)))
    logits = np.concatenate([np.asarray(x, np.float64) @ weight.T.astype(np.float64) + bias for x in chosen.chunks()])
    k = logits.shape[1]
    target = np.full_like(logits, smoothing / k)
    target[np.arange(len(logits)), chosen.labels] += 1 - smoothing

    def loss(log_scale: float) -> float:
        z = logits * np.exp(log_scale)
        z -= z.max(axis=1, keepdims=True)
        return float(-(target * (z - np.log(np.exp(z).sum(axis=1, keepdims=True)))).sum(axis=1).mean())

    return float(np.exp(minimize_scalar(loss, bounds=(np.log(1e-3), 0.0), method="bounded").x))


def _stats(rows: Rows, weight: np.ndarray, bias: np.ndarray, num_classes: int) -> EpochStats:
    """Log loss (scikit-learn's: probabilities clipped at machine epsilon) and accuracy, a block
    at a time: all rows' probabilities at once would take rows x classes x 8 bytes (1.6 GB
    for 10,000 classes of one image and its mirror image)."""
    if len(rows) == 0:
        return EpochStats(np.nan, np.nan, 0)
    eps = np.finfo(np.float64).eps
    loss, correct, offset = 0.0, 0, 0
    for x in _blocks(rows, num_classes):
        y = rows.labels[offset:offset + len(x)]
        offset += len(x)
        p = linear_probabilities(weight, bias, x)
        loss -= float(np.log(np.clip(p[np.arange(len(x)), y], eps, 1 - eps)).sum())
        correct += int((p.argmax(axis=1) == y).sum())
    return EpochStats(loss / len(rows), correct / len(rows), len(rows))


def _folds(rows: Rows, n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fit, held_out in splitter.split(np.zeros(len(rows)), rows.labels):
        yield rows.subset(fit), rows.subset(held_out)
