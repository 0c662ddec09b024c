"""Pooled backbone features as embeddings: rows whose dot product is a cosine similarity.

What near-duplicate search (:mod:`.neighbours`) compares, and what similarity search
between images would compare: NumPy alone, on features the pipeline already extracted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["normalized_embeddings"]


def normalized_embeddings(features: np.ndarray) -> np.ndarray:
    """Features centred on their mean and scaled to unit length (float32); NaN rows become zeros.

    Pooled activations are all positive, so raw cosine similarities crowd near 1;
    centring spreads them out, and unrelated photos land near 0.
    """
    x = np.asarray(features, dtype=np.float32)
    ok = ~np.isnan(x).any(axis=1)
    out = np.zeros_like(x)
    if ok.any():
        centred = x[ok] - x[ok].mean(axis=0)
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        out[ok] = centred / np.maximum(norms, 1e-12)
    return out
