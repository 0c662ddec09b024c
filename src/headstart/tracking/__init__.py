"""Trackers: callbacks that log a training run to an experiment tracker (``headstart train --track``).

:data:`TRACKERS` is the one table of them: a name for ``--track``, and where its class lives
(imported only when asked for: each tracker's library is an optional extra). A new
tracker is one module here with a :class:`~headstart.callbacks.Callback` subclass that
has a ``create(directory, console)`` classmethod, and one entry in the table.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from pathlib import Path

from .._console import Console
from ..callbacks import Callback
from ..record import RunMetrics

__all__ = ["TRACKERS", "create_trackers", "final_metrics"]

# name -> (module, class); the module is imported only when --track names it.
TRACKERS = {
    "mlflow": ("headstart.tracking.mlflow_tracker", "MlflowTracker"),
    "tensorboard": ("headstart.tracking.tensorboard_tracker", "TensorBoardTracker"),
}

_SPLIT_METRICS = ("accuracy", "balanced_accuracy", "log_loss", "expected_calibration_error", "roc_auc", "pr_auc",
                  "top_k_accuracy", "mean_ap", "macro_f1")


def create_trackers(names: Sequence[str], directory: Path, console: Console) -> list[Callback]:
    """The trackers ``names`` for the run folder ``directory``, each checked (its library installed,
    its store reachable) before anything is written."""
    trackers = []
    for name in dict.fromkeys(names):
        module, cls = TRACKERS[name]
        trackers.append(getattr(importlib.import_module(module), cls).create(directory, console))
    return trackers


def final_metrics(metrics: RunMetrics) -> dict[str, float]:
    """A run's final numbers under flat names: ``final_val_accuracy``, ``final_test_log_loss``,
    ``stage1_val_loss``, ``train_seconds``..."""
    flat = {}
    for split, scores in metrics.splits().items():
        for key in _SPLIT_METRICS:
            value = getattr(scores, key)
            if _finite(value):
                name = f"top_{scores.top_k}_accuracy" if key == "top_k_accuracy" else key
                flat[f"final_{split}_{name}"] = float(value)
    for stage in ("stage1", "fine_tune"):
        record = getattr(metrics, stage)
        for key in ("val_accuracy", "val_loss"):
            if record is not None and _finite(getattr(record, key)):
                flat[f"{stage}_{key}"] = float(getattr(record, key))
    if _finite(metrics.train_seconds):
        flat["train_seconds"] = float(metrics.train_seconds)
    return flat


def epoch_metrics(logs: dict) -> dict[str, float]:
    """The numbers of one ``history.csv`` row that were measured (no NaN)."""
    return {k: float(logs[k]) for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
            if _finite(logs.get(k))}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
