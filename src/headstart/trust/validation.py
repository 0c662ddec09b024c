"""The last step of ``fit``: what the validation images teach a single-label model about its own
probabilities. The temperature (:mod:`.calibration`) is fitted on the final model's validation
probabilities, already computed for its metrics (no extra pass over the images); the conformal
scores (:mod:`.conformal`) and the ``auto`` rejection threshold (:mod:`.reject`) are then taken
from the calibrated probabilities, and all three are saved in the head's configuration.
Multi-label models are left as they are: each class's decision threshold is already tuned on
validation, and a set of classes per image is what they predict.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import ModelConfig
from ..data.dataset import DatasetSplit
from ..record import CalibrationRecord
from .calibration import MIN_IMAGES, apply_temperature, fit_temperature
from .conformal import conformity_scores
from .reject import keeping_threshold, known_scores

__all__ = ["calibrate_predictions", "tuned_config"]

_SCALE = 1e6  # the saved scores' precision: rounded up (and the threshold down), the guarantees hold


def calibrate_predictions(predictions: dict[str, np.ndarray], split: DatasetSplit
                          ) -> tuple[CalibrationRecord | None, dict[str, np.ndarray]]:
    """The temperature fitted on ``predictions["val"]`` (the final model's validation probabilities)
    and every split's probabilities with it applied; (None, ``predictions``) unchanged when there
    are too few validation images to fit on."""
    from ..metrics import expected_calibration_error  # scikit-learn: only fitting needs it

    labels = {name: split.targets(samples) for name, samples in split.splits().items()}
    val = predictions.get("val")
    if val is None or (~np.isnan(val).any(axis=1)).sum() < MIN_IMAGES:
        return None, predictions
    temperature = fit_temperature(val, labels["val"])
    calibrated = {name: apply_temperature(proba, temperature) for name, proba in predictions.items()}
    measured = "test" if "test" in predictions else "val"

    def ece(proba: np.ndarray) -> float:
        readable = ~np.isnan(proba).any(axis=1)
        return expected_calibration_error(labels[measured][readable], proba[readable])

    return CalibrationRecord(temperature, ece(predictions[measured]), ece(calibrated[measured]), measured,
                             int((~np.isnan(val).any(axis=1)).sum())), calibrated


def tuned_config(config: ModelConfig, calibration: CalibrationRecord | None, split: DatasetSplit,
                 predictions: dict[str, np.ndarray]) -> ModelConfig:
    """``config`` with its head's temperature, conformal scores and ``auto`` rejection threshold,
    from the final (calibrated) model's validation probabilities in ``predictions``."""
    val = predictions.get("val")
    if config.head.multi_label or val is None:
        return config
    scores = conformity_scores(val, split.targets(split.val))
    threshold = keeping_threshold(known_scores(val))
    head = dataclasses.replace(config.head, temperature=calibration.temperature if calibration else 1.0,
                               conformal_scores=tuple(math.ceil(s * _SCALE) / _SCALE for s in scores),
                               reject_threshold=None if threshold is None else math.floor(threshold * _SCALE) / _SCALE)
    return dataclasses.replace(config, head=head)
