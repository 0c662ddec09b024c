"""Pooled backbone features as embeddings: rows whose dot product is a cosine similarity.

What near-duplicate search (:mod:`.neighbours`) and similarity search between images
(``headstart index`` and ``similar``) compare: NumPy alone, on features the pipeline
already extracted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["normalized_embeddings"]


def normalized_embeddings(features: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Features centred on their mean (or on ``mean``) and scaled to unit length (float32);
    NaN rows become zeros.

    Pooled activations are all positive, so raw cosine similarities crowd near 1;
    centring spreads them out, and unrelated photos land near 0. Queries against a set
    embedded earlier are centred on that set's mean, so both sides are compared alike.
    """
    x = np.asarray(features, dtype=np.float32)
    ok = ~np.isnan(x).any(axis=1)
    out = np.zeros_like(x)
    if ok.any():
        centred = x[ok] - (x[ok].mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float32))
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        out[ok] = centred / np.maximum(norms, 1e-12)
    return out
