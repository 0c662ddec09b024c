"""What training produces, as plain data: each epoch's statistics, each stage's outcome, the history.

No PyTorch here: the lightweight head, fitted on cached features, reports
its outcome in the same terms as the stages trained through the network.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import BackboneSpec, Preprocessing
from ..data.dataset import DatasetSplit
from ..record import FeatureRecord, HeadSearch

if TYPE_CHECKING:
    from ..backbone.head import ClassifierNet

__all__ = ["EpochStats", "StageResult", "TrainResult", "Fitted", "without_failed"]


@dataclass
class EpochStats:
    """One pass over a set of images. For a multi-label model, ``loss`` is the binary
    cross-entropy per (image, class), ``accuracy`` the share of those decisions right at
    0.5 (1 - Hamming loss), and ``mean_ap`` the mean average precision."""

    loss: float
    accuracy: float
    count: int
    failed: list[tuple[int, str]] = field(default_factory=list)  # (dataset index, reason)
    mean_ap: float | None = None
    # Single-label validation of a model to be calibrated: the loss once its temperature is fitted.
    calibrated_loss: float | None = None


@dataclass
class StageResult:
    val: EpochStats | None
    epochs_run: int
    best_epoch: int
    stopped_early: bool

    def summary(self) -> dict:
        """As ``metrics.json`` reports a stage."""
        summary = {
            "val_accuracy": self.val.accuracy if self.val else math.nan,
            "val_loss": self.val.loss if self.val else math.nan,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }
        if self.val is not None and self.val.mean_ap is not None:
            summary["val_mean_ap"] = self.val.mean_ap
        return summary


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    stage1: StageResult | None = None
    fine_tune: StageResult | None = None
    fine_tune_kept: bool | None = None  # None: no fine-tuning was asked for
    fine_tune_reason: str | None = None  # the guard's verdict in words
    fine_tune_cause: str | None = None  # not kept: why, read from the validation losses
    fine_tune_share: float | None = None  # of the fine-tuned weights in the blend kept with stage 1's
    refit_epochs: int | None = None  # fine-tuning's epochs again, on train + val, after the guard kept it
    # After a refit: the validation probabilities of the model the guard chose (NaN where undecodable).
    val_proba: np.ndarray | None = None
    failed: dict[Path, str] = field(default_factory=dict)  # images that could not be decoded
    seconds: float = 0.0


@dataclass
class Fitted:
    """What a fit produced: the model's weights (the network, or after a fit without PyTorch its
    tensors as NumPy arrays), how it was trained, and the head's own view of val and test."""

    workflow: str
    spec: BackboneSpec
    preprocessing: Preprocessing
    result: TrainResult
    net: ClassifierNet | None = None
    state: dict[str, np.ndarray] | None = None
    features: FeatureRecord | None = None  # the lightweight workflow's features
    head: HeadSearch | None = None  # the lightweight head's L2 search
    # val/test probability rows (NaN where undecodable) that stand for the final model's own: the
    # lightweight head's, from the cached features, unless fine-tuning is kept; after a refit, the
    # guarded model's validation rows (the refitted model has trained on those photos).
    held_out_proba: dict[str, np.ndarray] = field(default_factory=dict)
    thresholds: tuple[float, ...] = ()  # multi-label: each class's decision threshold, tuned on validation
    timings: dict[str, float] = field(default_factory=dict)


def without_failed(split: DatasetSplit, failed: dict[Path, str], proba: dict[str, np.ndarray]
                   ) -> tuple[DatasetSplit, dict[str, np.ndarray]]:
    """The split, and the per-split probability rows, without the images that failed to decode.

    Those were never trained or validated on: the saved split and counts leave them
    out, as skipped.csv lists them.
    """
    decoded = {name: np.array([s.path not in failed for s in samples], dtype=bool)
               for name, samples in split.splits().items()}
    kept = dataclasses.replace(split, **{name: [s for s, ok in zip(samples, decoded[name]) if ok]
                                         for name, samples in split.splits().items()})
    return kept, {name: rows[decoded[name]] for name, rows in proba.items()}
