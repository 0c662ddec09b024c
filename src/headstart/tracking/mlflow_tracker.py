"""Run tracking in MLflow (``headstart train --track mlflow``, or ``fit(callbacks=[MlflowTracker.create()])``).

A training run becomes an MLflow run: its settings as parameters, each epoch's
losses and accuracies as metrics with the epoch as step, the final metrics of
``metrics.json``, and once saved, the run folder's report, configuration and model as
artifacts. Where they go is MLflow's usual ``MLFLOW_TRACKING_URI`` (a server,
a database), else MLflow's local default (``./mlruns``; with MLflow 3, ``./mlflow.db``
with the artifacts in ``./mlruns``); the experiment is
``MLFLOW_EXPERIMENT_NAME``, else "headstart". MLflow is an optional extra
(``pip install "headstart[track]"``), imported only here and only when asked for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .._console import Console
from ..callbacks import Callback
from ..errors import UsageError
from ..runfolder import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, REPORT_FILE, SPLIT_FILE
from . import epoch_metrics, final_metrics

if TYPE_CHECKING:
    from ..record import RunRecord, RunRequest

__all__ = ["MlflowTracker"]

_PATIENCE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class MlflowTracker(Callback):
    """One headstart training run, logged as one MLflow run."""

    def __init__(self, mlflow, directory: Path | None = None, console: Console | None = None):
        self.mlflow = mlflow
        self.directory = directory
        self.console = console or Console(0)
        self.run_id: str | None = None

    @classmethod
    def create(cls, directory: Path | None = None, console: Console | None = None) -> MlflowTracker:
        """Import MLflow and open the experiment (``MLFLOW_EXPERIMENT_NAME``, else "headstart") in the
        store of ``MLFLOW_TRACKING_URI``: an unreachable store fails here, before any training."""
        try:
            import mlflow
        except ModuleNotFoundError:
            raise UsageError("--track mlflow needs MLflow: pip install 'headstart[track]'") from None
        # Unset, MLflow picks its own local default: ./mlruns (MLflow 2), or ./mlflow.db with the
        # artifacts in ./mlruns (MLflow 3, which refuses a plain ./mlruns folder as a store).
        # MLflow retries an unreachable server for minutes by default, silently: a few quick tries,
        # said out loud, unless the user set MLflow's own variables.
        for name, value in _PATIENCE.items():
            os.environ.setdefault(name, value)
        tracker = cls(mlflow, directory, console)
        tries = 1 + int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        tracker.console.info(f"connecting to MLflow at {mlflow.get_tracking_uri()} (at most {tries} "
                             f"{'attempt' if tries == 1 else 'attempts'} of "
                             f"{os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT']} s)")
        tracker._call(mlflow.set_experiment, os.environ.get("MLFLOW_EXPERIMENT_NAME") or "headstart")
        return tracker

    def on_fit_start(self, request: RunRequest) -> None:
        mlflow = self.mlflow
        name = Path(self.directory).name if self.directory is not None else None
        self.run_id = self._call(mlflow.start_run, run_name=name).info.run_id
        params = {k: ("" if v is None else str(v)) for k, v in request.params.items() if k != "cache_dir"}
        params["data"] = str(request.data)
        if self.directory is not None:
            params["run_folder"] = str(Path(self.directory).resolve())
        mlflow.log_params(params)
        self.console.info(f"tracking in MLflow: run {self.run_id} at {mlflow.get_tracking_uri()}")

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if values := epoch_metrics(logs):
            self.mlflow.log_metrics(values, step=epoch)

    def on_fit_end(self, record: RunRecord) -> None:
        with self._only_warning("the final metrics"):
            self.mlflow.log_metrics(final_metrics(record.metrics))
            self.mlflow.set_tag("workflow", record.metrics.workflow)
            self.mlflow.end_run(status="FINISHED")

    def on_interrupt(self) -> None:
        self.mlflow.end_run(status="KILLED")  # --resume logs the rest as a new run

    def on_error(self, error: BaseException) -> None:
        if self.mlflow.active_run() is not None:
            self.mlflow.end_run(status="FAILED")

    def on_save(self, directory: Path) -> None:
        """The run folder's files, attached to the (ended) MLflow run."""
        if self.run_id is None:
            return
        client = self.mlflow.tracking.MlflowClient()
        with self._only_warning("the run folder's files"):
            for name in (REPORT_FILE, CONFIG_FILE, METRICS_FILE, HISTORY_FILE, SPLIT_FILE):
                if (Path(directory) / name).is_file():
                    client.log_artifact(self.run_id, str(Path(directory) / name))
            client.log_artifact(self.run_id, str(Path(directory) / MODEL_FILE), artifact_path="model")

    @contextlib.contextmanager
    def _only_warning(self, what: str) -> Iterator[None]:
        """Once training has ended, a tracking failure costs the user the log, never the trained model."""
        try:
            yield
        except Exception as exc:  # MLflow's own and its HTTP and storage clients' errors
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.console.warn(f"--track mlflow: {what} could not be logged to run {self.run_id} "
                              f"at {self.mlflow.get_tracking_uri()}: {reason}")

    def _call(self, function, *args, **kwargs):
        """``function`` of MLflow; its failure (MLflow raises its own and its HTTP client's errors) names the store."""
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"--track mlflow: cannot start a run at {self.mlflow.get_tracking_uri()}: "
                             f"{reason}") from None
