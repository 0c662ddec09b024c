"""Metrics as data, computed by scikit-learn; only the calibration error has no counterpart there.

:func:`classification_metrics` measures a single-label model (softmax, one class
per image), :func:`multilabel_metrics` a multi-label one (a sigmoid per class,
a label set per image, as a binary indicator matrix).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

__all__ = ["classification_metrics", "decoded_metrics", "difference_noise", "multilabel_metrics", "mean_average_precision",
           "best_f1_thresholds", "calibration_bins", "expected_calibration_error", "format_metrics", "wilson_interval",
           "most_confused"]

CALIBRATION_BINS = 15


def classification_metrics(y_true: Sequence[int], proba: np.ndarray, classes: Sequence[str]) -> dict:
    """Every metric of a classifier's probabilities ``proba`` (one row per image) against ``y_true``.

    Accuracy, balanced accuracy, per-class precision/recall/F1/support, the
    confusion matrix (rows: true classes, columns: predicted, in ``classes``
    order), log loss and expected calibration error; top-k accuracy with more
    than two classes; ROC-AUC and PR-AUC (average precision) for two classes,
    when both occur.
    """
    labels = list(range(len(classes)))
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    y_pred = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    metrics = {
        "count": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
    if not len(y_true):
        return metrics
    metrics["accuracy_ci95"] = list(wilson_interval(int((y_pred == y_true).sum()), len(y_true)))
    metrics["most_confused"] = most_confused(metrics["confusion_matrix"], classes)
    proba = proba / proba.sum(axis=1, keepdims=True)  # float32 softmax rounding: exact sums for log_loss
    metrics["log_loss"] = float(log_loss(y_true, proba, labels=labels))
    metrics["expected_calibration_error"] = expected_calibration_error(y_true, proba)
    if len(classes) > 2:
        k = min(5, len(classes) - 1)
        metrics[f"top_{k}_accuracy"] = float(top_k_accuracy_score(y_true, proba, k=k, labels=labels))
    elif len(np.unique(y_true)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(y_true, proba[:, 1]))
        metrics["pr_auc"] = float(average_precision_score(y_true, proba[:, 1]))
    return metrics


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): unlike the normal
    approximation, it stays inside [0, 1] and is sound for accuracies near 100% and small n."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_noise(accuracy: float, count: int) -> float:
    """How far apart two accuracies measured on the same ``count`` images can be by chance alone:
    1.96 standard errors of their difference, with one success and one failure added
    (Agresti-Caffo) so that 100% is not taken as certain. 0 when there are no images."""
    if count <= 0 or not math.isfinite(accuracy):
        return 0.0
    p = (accuracy * count + 1) / (count + 2)
    return 1.96 * math.sqrt(2 * p * (1 - p) / count)


def most_confused(matrix: Sequence[Sequence[int]], classes: Sequence[str], most: int = 10) -> list[dict]:
    """The off-diagonal cells of the confusion matrix with the most images, largest first
    (fastai's ``most_confused``): which class is taken for which, and how often."""
    counts = np.asarray(matrix)
    cells = [(int(counts[i, j]), i, j) for i in range(len(classes)) for j in range(len(classes))
             if i != j and counts[i, j] > 0]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [{"true": classes[i], "predicted": classes[j], "count": n,
             "fraction_of_true": n / max(int(counts[i].sum()), 1)} for n, i, j in cells[:most]]


def decoded_metrics(y_true: Sequence[int] | np.ndarray, proba: np.ndarray, classes: Sequence[str],
                    thresholds: Sequence[float] | None = None) -> dict:
    """:func:`classification_metrics` (with per-class ``thresholds``, :func:`multilabel_metrics`
    of the indicator matrix ``y_true``) of the images that could be decoded (the rows of
    ``proba`` that are not NaN), with ``undecodable`` counting the others."""
    ok = ~np.isnan(proba).any(axis=1)
    y_true = np.asarray(y_true)
    metrics = (classification_metrics(y_true[ok], proba[ok], classes) if thresholds is None
               else multilabel_metrics(y_true[ok], proba[ok], classes, thresholds))
    metrics["undecodable"] = int((~ok).sum())
    return metrics


def multilabel_metrics(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
                       thresholds: Sequence[float]) -> dict:
    """Every metric of a multi-label model's probabilities ``proba`` (N, classes) against the
    indicator matrix ``y_true``, with the label sets decided at ``thresholds`` (one per class).

    Mean average precision (macro AP over the classes with at least one image),
    micro, macro and samples F1, subset accuracy (the whole label set right),
    Hamming loss (the share of wrong (image, class) decisions), binary
    cross-entropy, and per class precision, recall, F1, AP, threshold and support.
    """
    y_true = np.asarray(y_true, dtype=int).reshape(len(proba), len(classes))
    proba = np.asarray(proba, dtype=np.float64)
    y_pred = (proba >= np.asarray(thresholds)).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    ap = _average_precisions(y_true, proba)
    metrics = {
        "multi_label": True,
        "count": int(len(y_true)),
        "mean_ap": mean_average_precision(y_true, proba),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)) if len(y_true) else float("nan"),
        "samples_f1": _samples_f1(y_true, y_pred),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "hamming_loss": float(hamming_loss(y_true, y_pred)) if len(y_true) else float("nan"),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "average_precision": ap[i], "threshold": float(thresholds[i]), "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "classes": list(classes),
    }
    if len(y_true):
        clipped = np.clip(proba, 1e-7, 1 - 1e-7)
        metrics["log_loss"] = float(-np.mean(y_true * np.log(clipped) + (1 - y_true) * np.log(1 - clipped)))
    return metrics


def _average_precisions(y_true: np.ndarray, proba: np.ndarray) -> list[float]:
    """Each class's average precision; NaN for a class with no image (AP is undefined there)."""
    return [float(average_precision_score(y_true[:, k], proba[:, k])) if y_true[:, k].any() else float("nan")
            for k in range(y_true.shape[1])]


def mean_average_precision(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Macro average precision over the classes that have at least one image (NaN if none has)."""
    ap = [a for a in _average_precisions(np.asarray(y_true), np.asarray(proba)) if not np.isnan(a)]
    return float(np.mean(ap)) if ap else float("nan")


def _samples_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of each image's label set, averaged; an image with no label and none predicted scores 1
    (scikit-learn counts it 0, which would punish "none of these" answered right)."""
    if not len(y_true):
        return float("nan")
    hits = (y_true & y_pred).sum(axis=1)
    total = y_true.sum(axis=1) + y_pred.sum(axis=1)
    return float(np.mean(np.where(total == 0, 1.0, 2 * hits / np.maximum(total, 1))))


def best_f1_thresholds(y_true: np.ndarray, proba: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per class, the decision threshold with the best F1 on these images: halfway between the
    lowest probability kept and the highest left out, so it holds for images a little off
    those seen. ``default`` for a class with no image (nothing to tune on)."""
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    out = np.full(y_true.shape[1], default)
    for k in range(y_true.shape[1]):
        if not y_true[:, k].any() or y_true[:, k].all():
            continue
        precision, recall, cuts = precision_recall_curve(y_true[:, k], proba[:, k])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        cut = cuts[int(np.argmax(f1))]
        below = proba[:, k][proba[:, k] < cut]
        out[k] = (cut + below.max()) / 2 if len(below) else cut
    return out


def calibration_bins(y_true: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, accuracy and mean confidence (top probability) in each of ``bins``
    equal-width confidence bins; accuracy and confidence are 0 in an empty bin."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y_true)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    accuracy = np.bincount(which, weights=correct, minlength=bins) / np.maximum(counts, 1)
    mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / np.maximum(counts, 1)
    return counts, accuracy, mean_confidence


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """How far confidence is from accuracy: the gap between the top probability and the
    hit rate in each of ``bins`` equal-width confidence bins, weighted by the bin's images."""
    counts, accuracy, confidence = calibration_bins(y_true, proba, bins)
    return float(np.sum(counts / max(counts.sum(), 1) * np.abs(accuracy - confidence)))


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if not len(y_true):
        return float("nan")
    with warnings.catch_warnings():
        # A class with no image in this split is normal in small data: the score averages the others.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))


def format_metrics(metrics: dict, title: str = "") -> str:
    """A plain-text table of ``metrics`` for the terminal."""
    if metrics.get("multi_label"):
        return _format_multilabel(metrics, title)
    classes = metrics["classes"]
    width = max(9, *(len(c) for c in classes))
    lines = [title] if title else []
    interval = metrics.get("accuracy_ci95")
    ci = f" (95% CI {interval[0]:.2%}-{interval[1]:.2%})" if interval else ""
    lines.append(f"accuracy {metrics['accuracy']:.2%}{ci}  balanced accuracy {metrics['balanced_accuracy']:.2%}  "
                 f"({metrics['count']} images)")
    extra = [f"{label} {metrics[key]:.4f}" for key, label in (
        ("log_loss", "log loss"), ("expected_calibration_error", "calibration error (ECE)"),
        ("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")) if key in metrics]
    extra += [f"{key.replace('_', ' ')} {value:.2%}" for key, value in metrics.items()
              if key.startswith("top_") and key.endswith("_accuracy")]
    if extra:
        lines.append("  ".join(extra))
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for name in classes:
        m = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(" " * width + "  " + " ".join(f"{c[:8]:>8}" for c in classes))
    for name, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:8d}" for v in row))
    if len(classes) > 2 and metrics.get("most_confused"):
        lines.append("most confused (true -> predicted: images)")
        lines += [f"  {c['true']} -> {c['predicted']}: {c['count']}" for c in metrics["most_confused"][:5]]
    return "\n".join(lines)


def _format_multilabel(metrics: dict, title: str) -> str:
    classes = metrics["classes"]
    width = max(9, *(len(c) for c in classes))
    lines = [title] if title else []
    lines.append(f"mAP {metrics['mean_ap']:.4f}  macro F1 {metrics['macro_f1']:.4f}  micro F1 {metrics['micro_f1']:.4f}  "
                 f"samples F1 {metrics['samples_f1']:.4f}  ({metrics['count']} images)")
    lines.append(f"subset accuracy {metrics['subset_accuracy']:.2%}  Hamming loss {metrics['hamming_loss']:.4f}")
    lines.append(f"{'class':<{width}}  precision  recall     f1      AP  threshold  support")
    for name in classes:
        m = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  "
                     f"{m['average_precision']:6.3f}  {m['threshold']:9.3f}  {m['support']:7d}")
    return "\n".join(lines)
