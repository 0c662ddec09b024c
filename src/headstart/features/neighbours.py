"""Neighbours among embeddings: every pair of images at least as similar as a threshold.

Near-duplicate search for ``headstart inspect``, in memory bounded by a block of rows
rather than by the square of the number of images.
"""

from __future__ import annotations

import numpy as np

__all__ = ["find_near_duplicates"]


def find_near_duplicates(embeddings: np.ndarray, threshold: float, block: int = 1024
                         ) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)``, ``i < j``, whose rows' dot product is at least ``threshold``.

    ``embeddings`` are unit rows (:func:`headstart.features.embeddings.normalized_embeddings`).
    The similarity matrix is computed ``block`` rows at a time against the rows from there on,
    so memory stays at ``block x N`` floats (40 MB for 10,000 images). Sorted by
    similarity, highest first.
    """
    e = np.asarray(embeddings, dtype=np.float32)
    pairs = []
    for start in range(0, len(e), block):
        sims = e[start:start + block] @ e[start:].T
        rows, cols = np.nonzero(np.triu(sims >= threshold, k=1))
        pairs += [(start + int(r), start + int(c), float(sims[r, c])) for r, c in zip(rows, cols)]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))
