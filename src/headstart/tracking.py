"""Run tracking in MLflow (``headstart train --track mlflow``).

A training run becomes an MLflow run: its settings as parameters, each epoch's
losses and accuracies as metrics with the epoch as step, the final metrics of
``metrics.json``, and the run folder's report, configuration and model as
artifacts. Where they go is MLflow's usual ``MLFLOW_TRACKING_URI`` (a server,
a database), else MLflow's local default (``./mlruns``; with MLflow 3, ``./mlflow.db``
with the artifacts in ``./mlruns``); the experiment is
``MLFLOW_EXPERIMENT_NAME``, else "headstart". MLflow is an optional extra
(``pip install "headstart[track]"``), imported only here and only when asked for.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ._console import Console
from .errors import UsageError
from .runfolder import (CONFIG_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, REPORT_FILE, SPLIT_FILE,
                        read_run_file)

if TYPE_CHECKING:
    from .runfolder import RunRequest

__all__ = ["MlflowTracker", "final_metrics"]

_EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
_SPLIT_METRICS = ("accuracy", "balanced_accuracy", "log_loss", "expected_calibration_error", "roc_auc", "pr_auc")


class MlflowTracker:
    """One headstart training run, logged as one MLflow run."""

    def __init__(self, mlflow, console: Console):
        self.mlflow = mlflow
        self.console = console
        self.step = 0
        self.run_id: str | None = None
        self.status = "FINISHED"

    @classmethod
    def create(cls, console: Console) -> MlflowTracker:
        """Import MLflow and point it at ``MLFLOW_TRACKING_URI`` (default ``./mlruns``)."""
        try:
            import mlflow
        except ModuleNotFoundError:
            raise UsageError("--track mlflow needs MLflow: pip install 'headstart[track]'") from None
        # Unset, MLflow picks its own local default: ./mlruns (MLflow 2), or ./mlflow.db with the
        # artifacts in ./mlruns (MLflow 3, which refuses a plain ./mlruns folder as a store).
        return cls(mlflow, console)

    @contextlib.contextmanager
    def run(self, out: Path, request: RunRequest) -> Iterator[MlflowTracker]:
        """The MLflow run, open for the block: ended FINISHED, or with ``status`` if set
        (``KILLED`` for an interrupted run, which ``--resume`` logs as a new one), or FAILED."""
        self._start(out, request)
        status = "FAILED"
        try:
            yield self
            status = self.status
        finally:
            self.mlflow.end_run(status=status)

    def _start(self, out: Path, request: RunRequest) -> None:
        mlflow = self.mlflow
        try:
            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or "headstart")
            run = mlflow.start_run(run_name=Path(out).name)
        except Exception as exc:  # MLflow raises its own and its HTTP client's errors: name the store
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"--track mlflow: cannot start a run at {mlflow.get_tracking_uri()}: {reason}") from None
        self.run_id = run.info.run_id
        params = {k: ("" if v is None else str(v)) for k, v in request.params.items() if k != "cache_dir"}
        mlflow.log_params({**params, "data": str(request.data), "run_folder": str(Path(out).resolve())})
        self.console.info(f"tracking in MLflow: run {self.run_id} at {mlflow.get_tracking_uri()}")

    def log_epoch(self, row: dict) -> None:
        """One history row (an epoch of either stage, or the lightweight head's fit)."""
        self.step += 1
        values = {k: float(row[k]) for k in _EPOCH_METRICS if _finite(row.get(k))}
        if values:
            self.mlflow.log_metrics(values, step=self.step)

    def log_run(self, out: Path) -> None:
        """The final metrics and the run folder's files, once the model is saved."""
        metrics = read_run_file(out, METRICS_FILE)
        self.mlflow.log_metrics(final_metrics(metrics))
        self.mlflow.set_tag("workflow", metrics.get("workflow", ""))
        for name in (REPORT_FILE, CONFIG_FILE, METRICS_FILE, HISTORY_FILE, SPLIT_FILE):
            if (Path(out) / name).is_file():
                self.mlflow.log_artifact(str(Path(out) / name))
        self.mlflow.log_artifact(str(Path(out) / MODEL_FILE), artifact_path="model")


def final_metrics(metrics: dict) -> dict[str, float]:
    """``metrics.json``'s numbers as flat MLflow metric names: ``val_accuracy``, ``test_log_loss``..."""
    flat = {}
    for split in ("val", "test"):
        for key, value in (metrics.get(split) or {}).items():
            if (key in _SPLIT_METRICS or (key.startswith("top_") and key.endswith("_accuracy"))) and _finite(value):
                flat[f"final_{split}_{key}"] = float(value)
    for stage in ("stage1", "fine_tune"):
        for key in ("val_accuracy", "val_loss"):
            value = (metrics.get(stage) or {}).get(key)
            if _finite(value):
                flat[f"{stage}_{key}"] = float(value)
    if _finite(metrics.get("train_seconds")):
        flat["train_seconds"] = float(metrics["train_seconds"])
    return flat


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
