"""What training produces, as plain data: each epoch's statistics, each stage's outcome, the history.

No PyTorch here: the lightweight head, fitted on cached features, reports
its outcome in the same terms as the stages trained through the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["HISTORY_COLUMNS", "EpochStats", "StageResult", "TrainResult"]

# history.csv, one row per epoch of either stage.
HISTORY_COLUMNS = ("epoch", "stage", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "lr", "seconds")


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    count: int
    failed: list[tuple[int, str]] = field(default_factory=list)  # (dataset index, reason)


@dataclass
class StageResult:
    val: EpochStats | None
    epochs_run: int
    best_epoch: int
    stopped_early: bool


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    stage1: StageResult | None = None
    fine_tune: StageResult | None = None
    fine_tune_kept: bool | None = None  # None: no fine-tuning was asked for
    failed: dict[Path, str] = field(default_factory=dict)  # images that could not be decoded
    seconds: float = 0.0
