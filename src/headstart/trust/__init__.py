"""Predictions a user can trust: calibrated probabilities (:mod:`.calibration`), "none of these"
(:mod:`.reject`), prediction sets with a coverage guarantee (:mod:`.conformal`), and where the
model looked (:mod:`.cam`, class activation maps, PyTorch models only).

What a model learns from its validation images for these is computed at the end of ``fit``
(:func:`headstart.evaluate.calibrate_predictions`) and saved in its head's configuration, so that every runtime (PyTorch, an
exported file, ``serve``) has it. Importing this package imports NumPy alone.
"""

from __future__ import annotations

from .calibration import apply_temperature, fit_temperature
from .conformal import conformal_quantile, conformity_scores, prediction_sets, sets_within
from .decisions import Judgement, TrustPolicy, check_trust_options, decide
from .reject import UNKNOWN, keeping_threshold, known_scores, reject_option, rejected

__all__ = ["apply_temperature", "fit_temperature", "conformal_quantile", "conformity_scores", "prediction_sets",
           "sets_within", "check_trust_options", "decide", "TrustPolicy", "Judgement", "UNKNOWN",
           "keeping_threshold", "known_scores", "reject_option", "rejected"]
