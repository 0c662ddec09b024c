"""Calibration by temperature scaling: probabilities that mean what they say.

A probability of 0.86 should be right 86% of the time. Training with label smoothing, blending
fine-tuned with stage-1 weights, or simply a small data set leaves a model's probabilities too
soft or too sharp. Temperature scaling (Guo, Pleiss, Sun and Weinberger, "On Calibration of
Modern Neural Networks", ICML 2017) divides the logits by one number ``T`` fitted to minimise the
negative log-likelihood of the validation images: the ranking of the classes, and so the
accuracy, never changes. The logarithm of a softmax differs from the logits by a constant per
image, which the softmax ignores, so the temperature is fitted on probabilities and applied to
them exactly as to logits. NumPy only.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fit_temperature", "apply_temperature", "calibrated_loss", "MIN_IMAGES"]

# Fewer validation images than this say too little to fit a temperature on: the softmax stays as it is.
MIN_IMAGES = 20

# The search interval of 1/T, wide enough for any model trained in earnest; a validation set that
# a model gets all right pushes T towards its lower end, and is kept from reaching zero.
_LOG_BETA = (math.log(1 / 20), math.log(20))
_GOLDEN = (math.sqrt(5) - 1) / 2
_TINY = 1e-12


def _log_proba(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), _TINY, 1.0))


def _nll(logits: np.ndarray, labels: np.ndarray, beta: float) -> float:
    scaled = logits * beta
    top = scaled.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def fit_temperature(proba: np.ndarray, labels: np.ndarray, iterations: int = 60) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` (class indices)
    under ``proba`` (rows of softmax probabilities; rows with NaN are left out). The likelihood
    is convex in 1/T, so a golden-section search finds its minimum; 1.0 with fewer than
    :data:`MIN_IMAGES` usable rows."""
    proba, labels = np.asarray(proba, dtype=np.float64), np.asarray(labels)
    usable = ~np.isnan(proba).any(axis=1) & (labels >= 0)
    if usable.sum() < MIN_IMAGES:
        return 1.0
    logits, labels = _log_proba(proba[usable]), labels[usable]
    low, high = _LOG_BETA
    for _ in range(iterations):
        left, right = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
        if _nll(logits, labels, math.exp(left)) <= _nll(logits, labels, math.exp(right)):
            high = right
        else:
            low = left
    return 1 / math.exp((low + high) / 2)


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``proba`` (softmax rows) as the same logits divided by ``temperature`` give them; NaN rows stay NaN."""
    if temperature == 1.0:
        return proba
    scaled = _log_proba(proba) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    out = np.exp(scaled)
    out /= out.sum(axis=1, keepdims=True)
    return out.astype(np.asarray(proba).dtype, copy=False)


def calibrated_loss(proba: np.ndarray, labels: np.ndarray) -> float | None:
    """The negative log-likelihood of ``labels`` under ``proba`` once calibrated by the temperature
    fitted on them: the loss of the probabilities a calibrated model gives (None with fewer than
    :data:`MIN_IMAGES` usable rows)."""
    proba, labels = np.asarray(proba, dtype=np.float64), np.asarray(labels)
    usable = ~np.isnan(proba).any(axis=1) & (labels >= 0)
    if usable.sum() < MIN_IMAGES:
        return None
    temperature = fit_temperature(proba[usable], labels[usable])
    return _nll(_log_proba(proba[usable]), labels[usable], 1 / temperature)
