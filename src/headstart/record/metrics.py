"""What ``metrics.json`` holds, as frozen dataclasses: each training stage, the fine-tuning
guard's verdict, the lightweight head's search, the calibration, and the final model's metrics
on each split. :mod:`headstart.record` reads and writes the file.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import FORMAT_VERSION, from_json

__all__ = ["StageRecord", "FineTuneRecord", "FeatureRecord", "HeadSearch", "CalibrationRecord", "PerClass", "Confusion", "SplitMetrics", "RunMetrics"]

_TOP_K = re.compile(r"top_(\d+)_accuracy")


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
    refit_epochs: int | None = None  # kept: its epochs again, on train + val (None: the guarded model kept)

    def verdict(self) -> str:
        """Whether fine-tuning was kept, and as what: the one sentence the summary and the report print."""
        if not self.kept:
            return "not kept: stage-1 weights restored"
        kept = "kept"
        if self.share is not None and self.share < 1:
            kept = f"kept as a blend, {self.share:.0%} fine-tuned and {1 - self.share:.0%} stage 1"
        if self.refit_epochs:
            kept += (f", then refitted on train + val for {self.refit_epochs} epoch(s) (the validation "
                     "figures are the guarded model's, before the refit)")
        return kept


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
    refitted: bool = False  # then fitted again at that strength on train + val (--refit; multi-label: always)


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

    @property
    def score(self) -> float | None:
        """The number a run is known by: accuracy, or a multi-label model's mAP (as :meth:`headline`)."""
        return self.mean_ap if self.multi_label else self.accuracy

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

    def scores(self) -> dict[str, float | None]:
        """Each split's :attr:`SplitMetrics.score`, as ``serve``'s ``/model`` and an export's metadata give them."""
        return {name: metrics.score for name, metrics in self.splits().items()}

    def trained_on_val(self) -> bool:
        """Whether the final model was trained on its validation images too: refitted on train +
        val once they had chosen, as the fine-tuned network (when kept) or the lightweight head."""
        fine_tune = self.fine_tune
        if fine_tune is not None and fine_tune.kept:
            return bool(fine_tune.refit_epochs)
        return self.head is not None and self.head.refitted

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


def _pct(value: float | None) -> str:
    return f"{value:.2%}" if value is not None and math.isfinite(value) else "n/a"


def _num(value: float | None) -> str:
    return f"{value:.4f}" if value is not None and math.isfinite(value) else "n/a"
