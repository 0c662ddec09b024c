"""Metrics as data, computed by scikit-learn; only the calibration error has no counterpart there."""

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
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

__all__ = ["classification_metrics", "decoded_metrics", "calibration_bins", "expected_calibration_error", "format_metrics",
           "wilson_interval", "most_confused"]

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


def most_confused(matrix: Sequence[Sequence[int]], classes: Sequence[str], most: int = 10) -> list[dict]:
    """The off-diagonal cells of the confusion matrix with the most images, largest first
    (fastai's ``most_confused``): which class is taken for which, and how often."""
    counts = np.asarray(matrix)
    cells = [(int(counts[i, j]), i, j) for i in range(len(classes)) for j in range(len(classes))
             if i != j and counts[i, j] > 0]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [{"true": classes[i], "predicted": classes[j], "count": n,
             "fraction_of_true": n / max(int(counts[i].sum()), 1)} for n, i, j in cells[:most]]


def decoded_metrics(y_true: Sequence[int], proba: np.ndarray, classes: Sequence[str]) -> dict:
    """:func:`classification_metrics` of the images that could be decoded (the rows of ``proba``
    that are not NaN), with ``undecodable`` counting the others."""
    ok = ~np.isnan(proba).any(axis=1)
    metrics = classification_metrics(np.asarray(y_true)[ok], proba[ok], classes)
    metrics["undecodable"] = int((~ok).sum())
    return metrics


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
