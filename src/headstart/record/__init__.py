"""The run record: ``metrics.json``, ``config.json`` and ``run.json``, as frozen dataclasses.

These three files are what a run folder says about its model: what was asked for
(:class:`RunRequest`, ``run.json``), how to rebuild the model
(:class:`headstart.config.ModelConfig`, ``config.json``) and what training measured
(:class:`RunMetrics`, ``metrics.json``). This module is the one place that writes and
reads them; everything else (the terminal summary, the report, ``compare``, the
trackers) consumes the dataclasses; those of ``metrics.json`` are :mod:`.metrics`'s. Each file carries a ``format_version``: a file of a
version this headstart does not know, or a damaged one, is a
:class:`~headstart.errors.ModelFileError` (exit 5) naming the file, whichever command
meets it first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import file_problem, json_text, read_json
from ..config import FORMAT_VERSION, LABEL_SEP, ModelConfig, from_json
from ..errors import ModelFileError, UsageError
from ..runfolder import (BACKBONES_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE, PREDICTIONS_FILE, RUN_FILE,
                         SKIPPED_FILE, SPLIT_FILE, backbones_csv, check_finished, history_csv, prediction_row,
                         predictions_csv, read_csv_file, relative_path, skipped_csv, split_csv)
from .metrics import (CalibrationRecord, Confusion, FeatureRecord, FineTuneRecord, HeadSearch, PerClass, RunMetrics,
                      SplitMetrics, StageRecord)

__all__ = ["FORMAT_VERSION", "StageRecord", "FineTuneRecord", "FeatureRecord", "HeadSearch", "CalibrationRecord",
           "PerClass", "Confusion", "SplitMetrics", "RunMetrics", "RunRequest", "RunRecord", "read_config", "read_metrics",
           "read_request", "read_record", "read_history", "record_text", "split_images", "split_text", "run_texts", "label_root"]

# The settings each part of training reads (RunRecord.used_settings).
_STAGE1_SETTINGS = {"lightweight": ("flip_features", "class_weight", "refit"),
                    "standard": ("epochs", "lr", "weight_decay", "batch_size", "label_smoothing", "augment",
                                 "dropout", "patience", "class_weight")}
_FINE_TUNE_SETTINGS = ("fine_tune_epochs", "fine_tune_lr", "unfreeze_last", "layer_decay", "blend", "refit",
                       "weight_decay", "batch_size", "label_smoothing", "augment", "dropout", "patience")
_DATA_SETTINGS = ("val_fraction", "test_fraction", "seed", "device", "precision", "workers")


@dataclass(frozen=True)
class RunRequest:
    """``run.json``: what a run was asked to do, enough to rerun or resume it."""

    data: Path  # the data folder, absolute (with a label file: where its relative paths start)
    params: dict[str, Any]  # ImageClassifier's parameters, as JSON values
    labels: Path | None = None  # the label file, absolute, when the labels came from one
    label_sep: str = LABEL_SEP
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        params = {k: str(v) if isinstance(v, Path) else v for k, v in self.params.items()}
        saved = {"data": str(Path(self.data).resolve()), "params": params}
        if self.labels is not None:
            saved.update(labels=str(Path(self.labels).resolve()), label_sep=self.label_sep)
        return {**saved, "format_version": self.format_version}

    @classmethod
    def from_dict(cls, data: Any, where: str = "run") -> RunRequest:
        return from_json(cls, data, where)


@dataclass(frozen=True)
class RunRecord:
    """A trained run as recorded: how to rebuild its model, what it measured, what was asked
    for (None for a model fitted on in-memory data), and one dict per epoch (``history.csv``)."""

    config: ModelConfig
    metrics: RunMetrics
    request: RunRequest | None = None
    history: tuple[dict, ...] = ()
    directory: Path | None = None  # the run folder, once the record is read from one

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    def used_settings(self) -> dict[str, Any]:
        """The training settings this run's workflow read, by name, as the report and ``compare`` show
        them: a lightweight run never read the epochs or learning rate of the standard workflow."""
        training = dataclasses.asdict(self.config.training) if self.config.training else {}
        used = list(_STAGE1_SETTINGS.get(self.metrics.workflow, training))
        if self.metrics.fine_tune:
            used += [name for name in _FINE_TUNE_SETTINGS if name not in used]
        shown = {}
        for name in (n for n in (*used, *_DATA_SETTINGS) if n in training):
            value = training[name]
            if name == "fine_tune_epochs" and self.metrics.fine_tune:
                value = self.metrics.fine_tune.epochs_run
            elif name == "unfreeze_last" and value is None:
                value = "all blocks"
            elif name == "workers" and value is None:
                value = "automatic"
            shown[name] = value
        return shown


def record_text(record: ModelConfig | RunMetrics | RunRequest) -> str:
    """The text of ``config.json``, ``metrics.json`` or ``run.json`` (their one writer)."""
    return json_text(record.to_dict())


def read_config(run: str | Path) -> ModelConfig:
    """``config.json`` of the run folder ``run``."""
    return _read(Path(run) / CONFIG_FILE, ModelConfig)


def read_metrics(run: str | Path) -> RunMetrics:
    """``metrics.json`` of the run folder ``run``."""
    return _read(Path(run) / METRICS_FILE, RunMetrics)


def read_request(run: str | Path) -> RunRequest:
    """``run.json`` of the run folder ``run``."""
    return _read(Path(run) / RUN_FILE, RunRequest)


def read_history(run: str | Path) -> tuple[dict, ...]:
    """``history.csv``: one dict per epoch (``epoch`` an int, ``stage`` a name, the rest floats, NaN where empty)."""
    rows = read_csv_file(Path(run), HISTORY_FILE, required=False) or []
    return tuple({k: v if k == "stage" else int(v) if k == "epoch" else _float(v) for k, v in row.items()}
                 for row in rows)


def read_record(run: str | Path) -> RunRecord:
    """The record of a finished run folder; a missing, damaged or unknown-version file is named in the error."""
    run = Path(run)
    if not run.is_dir():
        raise ModelFileError(f"no such run folder: {run}")
    check_finished(run)
    request = read_request(run) if (run / RUN_FILE).is_file() else None
    return RunRecord(read_config(run), read_metrics(run), request, read_history(run), run)


def split_images(run: Path, split: str, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(image, label) of one split of a run, from its ``split.csv`` and the data folder in
    ``run.json``; only the images still there. Empty when the run has no such files. The label
    is -1 for an image without exactly one of ``classes`` (a multi-label run's)."""
    run = Path(run)
    if not ((run / SPLIT_FILE).is_file() and (run / RUN_FILE).is_file()):
        return []
    root = read_request(run).data
    index = {c: i for i, c in enumerate(classes)}
    rows = [r for r in read_csv_file(run, SPLIT_FILE) if r["split"] == split]
    return [(root / r["path"], index.get(r["class"], -1)) for r in rows if (root / r["path"]).is_file()]


def split_text(split: Any) -> str:
    """``split.csv`` for a :class:`~headstart.data.DatasetSplit`: which image went where, a label file too."""
    return split_csv((relative_path(s.path, split.root), split.label_names(s), name)
                     for name, samples in split.splits().items() for s in samples)


def run_texts(model: Any) -> dict[str, str]:
    """The text files of a run folder for ``model`` (a fitted :class:`headstart.model.ImageClassifier`,
    read through its fitted attributes): its config, and, when it was fitted in this session, its
    record and what fitting produced."""
    texts = {CONFIG_FILE: record_text(model.config_)}
    record = getattr(model, "record_", None)
    if record is None:
        return texts
    texts[METRICS_FILE] = record_text(record.metrics)
    if record.history:
        texts[HISTORY_FILE] = history_csv(record.history)
    if record.request is not None:
        texts[RUN_FILE] = record_text(record.request)
    split = getattr(model, "split_", None)
    if split is None:  # a loaded model: its split and predictions stay in the folder it came from
        return texts
    splits = split.splits()
    texts[SPLIT_FILE] = split_text(split)
    if model.predictions_:
        thresholds = model.thresholds_
        texts[PREDICTIONS_FILE] = predictions_csv(model.classes_, (
            prediction_row(relative_path(s.path, split.root), name, split.label_names(s), p, model.classes_, thresholds)
            for name, proba in model.predictions_.items() for s, p in zip(splits[name], proba)))
    texts[SKIPPED_FILE] = skipped_csv((str(s.path), s.reason) for s in model.skipped_)
    if model.backbones_:
        texts[BACKBONES_FILE] = backbones_csv(model.backbones_)
    return texts


def label_root(data: str | Path | None, labels: str | Path | None) -> Path | None:
    """Where a label file's relative paths start: ``data`` when given; else, for a run's ``split.csv``
    (a ``run.json`` beside it), the data folder that run was trained on; else the label file's folder."""
    if data is not None or labels is None:
        return Path(data) if data is not None else None
    folder = Path(labels).parent
    if not (folder / RUN_FILE).is_file():
        return folder
    try:
        trained_on = read_request(folder).data
    except ModelFileError:  # a label file beside someone else's run.json: its own folder, as any other
        return folder
    return trained_on if trained_on.is_dir() else trained_on.parent


def _read(path: Path, kind: type) -> Any:
    problem = file_problem(path)
    if problem is not None:
        raise ModelFileError(f"not a headstart model folder: {path} {problem}")
    data = read_json(path)
    if not isinstance(data, dict) or "format_version" not in data:
        raise ModelFileError(f"{path} is damaged: it has no format_version, which every file headstart writes has")
    version = data["format_version"]
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} has format_version {version!r}, which this headstart does not read "
                             f"(it reads {FORMAT_VERSION}): it was written by another headstart version")
    try:
        return kind.from_dict(data)
    except UsageError as exc:
        raise ModelFileError(f"{path} is damaged: {exc}") from None


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
