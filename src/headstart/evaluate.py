"""Metrics as data, computed by scikit-learn: nothing here is hand-rolled."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

__all__ = ["classification_metrics", "format_metrics"]


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support and the confusion matrix.

    Rows of the confusion matrix are true classes, columns predicted ones, both
    in the order of ``classes``.
    """
    labels = list(range(len(classes)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "count": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }


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
    lines.append(f"accuracy {metrics['accuracy']:.2%}  balanced accuracy {metrics['balanced_accuracy']:.2%}  "
                 f"({metrics['count']} images)")
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for name in classes:
        m = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(" " * width + "  " + " ".join(f"{c[:8]:>8}" for c in classes))
    for name, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:8d}" for v in row))
    return "\n".join(lines)
