"""What a fit is asked to do: the workflow and fine-tuning it runs, the features it needs, and what
it reads and reports to. No PyTorch here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._console import Console
from ..config import FINE_TUNE_RATES, TrainingConfig
from ..features.cache import CacheLayout
from ..features.pipeline import FeatureRequest

__all__ = ["FitContext", "choose_workflow", "fine_tune_rate", "feature_request"]


@dataclass
class FitContext:
    """What a fit reads and reports to, besides the data and the settings."""

    cache: CacheLayout
    console: Console
    on_epoch: Callable[[dict], None] | None = None  # called with each epoch's history row
    checkpoint_dir: Path | None = None  # where each completed epoch is saved, and resumed from


def choose_workflow(config: TrainingConfig, device_type: str) -> tuple[str, int]:
    """The workflow for stage 1 and the number of fine-tuning epochs, for ``auto`` settings.

    ``auto`` fits the head on cached features (lightweight): the most accuracy
    per minute on any device. Fine-tuning runs when asked for, and by default
    for 2 epochs on a GPU, where it is affordable.
    """
    workflow = "lightweight" if config.workflow == "auto" else config.workflow
    epochs = config.fine_tune_epochs
    if epochs is None:
        epochs = 2 if config.workflow == "auto" and device_type == "cuda" else 0
    return workflow, epochs


def fine_tune_rate(config: TrainingConfig, train_photos: int) -> float:
    """Fine-tuning's peak rate: ``config.fine_tune_lr`` when given, else by the number of training
    photos (``config.FINE_TUNE_RATES``: 1e-4 below 1,000, 2e-4 from 1,000)."""
    if config.fine_tune_lr is not None:
        return config.fine_tune_lr
    return next(rate for fewest, rate in FINE_TUNE_RATES if train_photos >= fewest)


def feature_request(config: TrainingConfig) -> FeatureRequest:
    """The features a fit with ``config`` needs, and how to compute them."""
    return FeatureRequest(config.backbone_request, config.engine, config.device, config.flip_features,
                          config.workers)
