"""The run record: ``metrics.json``, ``config.json`` and ``run.json``, as frozen dataclasses.

These three files are what a run folder says about its model: what was asked for
(:class:`RunRequest`, ``run.json``), how to rebuild the model
(:class:`headstart.config.ModelConfig`, ``config.json``) and what training measured
(:class:`RunMetrics`, ``metrics.json``). This module is the one place that writes and
reads them; everything else (the terminal summary, the report, ``compare``, the
trackers) consumes the dataclasses. Each file carries a ``format_version``: a file of a
version this headstart does not know, or a damaged one, is a
:class:`~headstart.errors.ModelFileError` (exit 5) naming the file, whichever command
meets it first.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import file_problem, json_text, read_json
from .config import FORMAT_VERSION, LABEL_SEP, ModelConfig, from_json
from .errors import ModelFileError, UsageError
from .runfolder import (BACKBONES_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE, PREDICTIONS_FILE, RUN_FILE,
                        SKIPPED_FILE, SPLIT_FILE, backbones_csv, check_finished, history_csv, prediction_row,
                        predictions_csv, read_csv_file, relative_path, skipped_csv, split_csv)

__all__ = ["FORMAT_VERSION", "StageRecord", "FineTuneRecord", "FeatureRecord", "HeadSearch", "CalibrationRecord",
           "PerClass", "Confusion", "SplitMetrics", "RunMetrics", "RunRequest", "RunRecord", "read_config", "read_metrics",
           "read_request", "read_record", "read_history", "record_text", "split_images", "split_text", "run_texts", "label_root"]

_TOP_K = re.compile(r"top_(\d+)_accuracy")
# The settings each part of training reads (RunRecord.used_settings).
_STAGE1_SETTINGS = {"lightweight": ("flip_features", "class_weight"),
                    "standard": ("epochs", "lr", "weight_decay", "batch_size", "label_smoothing", "augment",
                                 "dropout", "patience", "class_weight")}
_FINE_TUNE_SETTINGS = ("fine_tune_epochs", "fine_tune_lr", "unfreeze_last", "layer_decay", "blend", "weight_decay",
                       "batch_size", "label_smoothing", "augment", "dropout", "patience")
_DATA_SETTINGS = ("val_fraction", "test_fraction", "seed", "device", "precision", "workers")


@dataclass(frozen=True)
class StageRecord:
    """One training stage: stage 1 (the head on the frozen backbone) or fine-tuning, on validation."""

    val_accuracy: float
    val_loss: float
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    val_mean_ap: float | None = None  # multi-label models


@dataclass(frozen=True)
class FineTuneRecord(StageRecord):
    """Fine-tuning, with the guard's verdict: kept only if validation improved on stage 1."""

    kept: bool = False
    reason: str | None = None  # the guard's verdict in words ("improved validation loss from ...")
    likely_cause: str | None = None  # not kept: why, read from the validation losses
    share: float | None = None  # of the fine-tuned weights in the blend kept with stage 1's

    def verdict(self) -> str:
        """Whether fine-tuning was kept, and as what: the one sentence the summary and the report print."""
        if not self.kept:
            return "not kept: stage-1 weights restored"
        if self.share is not None and self.share < 1:
            return f"kept as a blend, {self.share:.0%} fine-tuned and {1 - self.share:.0%} stage 1"
        return "kept"


@dataclass(frozen=True)
class FeatureRecord:
    """The lightweight workflow's features: the engine that computed them, and how many came from the cache."""

    engine: str
    computed: int
    cached: int
    seconds: float


@dataclass(frozen=True)
class HeadSearch:
    """The lightweight head's L2 strength ``C``, chosen from ``search`` (each C tried, with its losses)."""

    C: float
    seconds: float
    search: tuple[dict[str, float], ...] = ()


@dataclass(frozen=True)
class CalibrationRecord:
    """The temperature fitted on the validation images (:mod:`headstart.trust.calibration`), and
    the expected calibration error of the final model without and with it, on ``split``: the test
    images when there are some (the temperature never saw them), else the validation images."""

    temperature: float
    ece_before: float
    ece_after: float
    split: str
    images: int  # the validation images the temperature was fitted on


@dataclass(frozen=True)
class PerClass:
    precision: float
    recall: float
    f1: float
    support: int
    average_precision: float | None = None  # multi-label models
    threshold: float | None = None  # multi-label models: the decision threshold tuned on validation


@dataclass(frozen=True)
class Confusion:
    """One off-diagonal cell of the confusion matrix: ``count`` images of ``true`` predicted as ``predicted``."""

    true: str
    predicted: str
    count: int
    fraction_of_true: float


@dataclass(frozen=True)
class SplitMetrics:
    """The final model's metrics on one split (val, test, or evaluated images), as
    :func:`headstart.metrics.decoded_metrics` computes them. A single-label model has accuracy,
    the confusion matrix, log loss, calibration error, top-k accuracy (more than two classes),
    ROC-AUC and PR-AUC (two); a multi-label one mAP, F1s, subset accuracy and Hamming loss."""

    count: int
    classes: tuple[str, ...]
    per_class: dict[str, PerClass]
    undecodable: int = 0
    multi_label: bool = False
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    accuracy_ci95: tuple[float, ...] | None = None
    confusion_matrix: tuple[tuple[int, ...], ...] | None = None
    most_confused: tuple[Confusion, ...] | None = None
    log_loss: float | None = None
    expected_calibration_error: float | None = None
    roc_auc: float | None = None
    pr_auc: float | None = None
    top_k: int | None = None  # written as "top_<k>_accuracy"
    top_k_accuracy: float | None = None
    mean_ap: float | None = None
    micro_f1: float | None = None
    macro_f1: float | None = None
    samples_f1: float | None = None
    subset_accuracy: float | None = None
    hamming_loss: float | None = None

    def headline(self) -> str:
        """The score a run is known by: accuracy, or a multi-label model's mAP."""
        if self.multi_label:
            return f"mAP {_num(self.mean_ap)}"
        return f"accuracy {_pct(self.accuracy)}"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k not in ("top_k",
                                                                                               "top_k_accuracy")}
        data["per_class"] = {c: {k: v for k, v in row.items() if v is not None} for c, row in data["per_class"].items()}
        if not self.multi_label:
            del data["multi_label"]
        if self.top_k is not None:
            data[f"top_{self.top_k}_accuracy"] = self.top_k_accuracy
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "metrics") -> SplitMetrics:
        """From :func:`headstart.metrics.decoded_metrics`'s dict or the parsed JSON; a
        :class:`UsageError` names a field that is not one."""
        return from_json(cls, _with_top_k(data), where)


def _with_top_k(data: Any) -> Any:
    """A split's metrics with ``top_<k>_accuracy`` read as the fields ``top_k`` and ``top_k_accuracy``."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for key in [k for k in data if _TOP_K.fullmatch(k)]:
        data["top_k"], data["top_k_accuracy"] = int(_TOP_K.fullmatch(key)[1]), data.pop(key)
    return data


@dataclass(frozen=True)
class RunMetrics:
    """``metrics.json``: the workflow, the images per split and class, each stage, the guard's
    verdict on fine-tuning, the lightweight head's search, and the final model's val and test metrics."""

    workflow: str
    train_seconds: float
    counts: dict[str, dict[str, int]]
    skipped: int
    stage1: StageRecord | None = None
    fine_tune: FineTuneRecord | None = None
    features: FeatureRecord | None = None
    head: HeadSearch | None = None
    val: SplitMetrics | None = None
    test: SplitMetrics | None = None
    calibration: CalibrationRecord | None = None  # single-label models calibrated on validation
    timings: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def splits(self) -> dict[str, SplitMetrics]:
        """The final model's metrics by split name, validation first."""
        return {name: m for name, m in (("val", self.val), ("test", self.test)) if m is not None}

    def final(self) -> tuple[str, SplitMetrics] | None:
        """The split a run's score is quoted on: test when there is one (the unbiased estimate), else val."""
        splits = self.splits()
        return next(((name, splits[name]) for name in ("test", "val") if name in splits), None)

    def disagreement(self) -> str | None:
        """A warning when the validation and test accuracies' 95% intervals do not overlap: the
        splits are not alike (copies leaking into one, a shift between them), and one score misleads."""
        val, test = self.val, self.test
        if val is None or test is None or not (val.accuracy_ci95 and test.accuracy_ci95):
            return None
        (val_low, val_high), (test_low, test_high) = val.accuracy_ci95, test.accuracy_ci95
        if val_low <= test_high and test_low <= val_high:
            return None
        return (f"validation accuracy {_pct(val.accuracy)} ({_pct(val_low)}-{_pct(val_high)}) and test accuracy "
                f"{_pct(test.accuracy)} ({_pct(test_low)}-{_pct(test_high)}) disagree beyond their 95% intervals: "
                "the splits are not alike (copies of photos in one of them, or a shift between them)")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("stage1", "fine_tune", "features", "head", "calibration"):
            data[name] = dataclasses.asdict(data[name]) if data[name] is not None else None
        for name in ("val", "test"):
            data[name] = data[name].to_dict() if data[name] is not None else None
        return {k: v for k, v in data.items() if v is not None or k in ("stage1", "fine_tune")}

    @classmethod
    def from_dict(cls, data: Any, where: str = "metrics") -> RunMetrics:
        if isinstance(data, dict):
            data = {**data, **{name: _with_top_k(data[name]) for name in ("val", "test") if name in data}}
        return from_json(cls, data, where)


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


def _pct(value: float | None) -> str:
    return f"{value:.2%}" if value is not None and math.isfinite(value) else "n/a"


def _num(value: float | None) -> str:
    return f"{value:.4f}" if value is not None and math.isfinite(value) else "n/a"
