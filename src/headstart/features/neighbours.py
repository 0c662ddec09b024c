"""Neighbours among embeddings, by exact search: every pair of images at least as similar as a
threshold (near-duplicates), each query's nearest images, and which held-out photos are
near-identical copies of training photos.

Both compare unit rows (:func:`headstart.features.embeddings.normalized_embeddings`) a block of
rows at a time, so memory is bounded by a block rather than by the square of the number of
images. ``headstart inspect`` finds near-duplicates here, and ``headstart similar`` searches an
index here while it is small enough for exact search to be fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .embeddings import normalized_embeddings

__all__ = ["find_near_duplicates", "nearest", "near_copies", "NEAR_IDENTICAL", "MAX_COPY_PAIRS"]

# The similarity of embeddings (centred, unit) at which two photos are one photo recropped,
# re-encoded or recoloured. On dtd10, the 14 pairs at or above it are all such copies
# (0.95-0.997; the next, 0.939, too); copies made by hand (JPEG quality 50, 70% size, a 5% crop)
# scored 0.62-0.997, median 0.95: what this finds is certain, not all there is.
NEAR_IDENTICAL = 0.95
# Held-out x training pairs :func:`near_copies` is asked to compare at most: a few seconds on a
# 2-core CPU (10,000 photos split 80/20 are 1.6 x 10**7).
MAX_COPY_PAIRS = 5 * 10**7

# Base rows read (and converted to float32, when stored otherwise) at once: 84 MB of Lite0's features.
_CHUNK = 16384


def _similarity_blocks(queries: np.ndarray, base: np.ndarray, block: int, triangle: bool = False
                       ) -> Iterator[tuple[int, np.ndarray]]:
    """(first query row, its block's similarities) for ``block`` queries at a time;
    with ``triangle`` (queries and base the same rows), each block only against the rows from
    its first on. Memory stays at ``block x N`` floats (40 MB for 10,000 images), and a
    memory-mapped base is read :data:`_CHUNK` rows at a time."""
    for start in range(0, len(queries), block):
        first = start if triangle else 0
        rows = np.asarray(queries[start:start + block], dtype=np.float32)
        parts = [rows @ np.asarray(base[i:i + _CHUNK], dtype=np.float32).T
                 for i in range(first, len(base), _CHUNK)]
        yield start, np.concatenate(parts, axis=1) if parts else np.zeros((len(rows), 0), np.float32)


def find_near_duplicates(embeddings: np.ndarray, threshold: float, block: int = 1024
                         ) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)``, ``i < j``, whose rows' dot product is at least ``threshold``.

    Sorted by similarity, highest first.
    """
    e = np.asarray(embeddings, dtype=np.float32)
    pairs = []
    for start, sims in _similarity_blocks(e, e, block, triangle=True):
        rows, cols = np.nonzero(np.triu(sims >= threshold, k=1))
        pairs += [(start + int(r), start + int(c), float(sims[r, c])) for r, c in zip(rows, cols)]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


def nearest(base: np.ndarray, queries: np.ndarray, k: int, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``base`` most similar to each query: (indices, similarities), both
    (queries, k), most similar first. ``base`` may be a memory-mapped array: it is read
    a block of queries at a time, never copied whole."""
    k = min(k, len(base))
    indices = np.zeros((len(queries), k), dtype=np.int64)
    similarities = np.zeros((len(queries), k), dtype=np.float32)
    for start, sims in _similarity_blocks(queries, base, block):
        top = (np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1]
               else np.tile(np.arange(sims.shape[1]), (len(sims), 1)))
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        indices[start:start + len(sims)] = np.take_along_axis(top, order, axis=1)
        similarities[start:start + len(sims)] = np.take_along_axis(top_sims, order, axis=1)
    return indices, similarities


def near_copies(held_out: np.ndarray, train: np.ndarray, threshold: float = NEAR_IDENTICAL) -> np.ndarray:
    """For each held-out feature row, the position of the training row it is a near-identical
    copy of (the most similar, at least ``threshold``), else -1. Both sides are centred on the
    training rows' mean."""
    if not len(held_out) or not len(train):
        return np.full(len(held_out), -1)
    mean = np.asarray(train, dtype=np.float32).mean(axis=0)
    index, sims = nearest(normalized_embeddings(train, mean), normalized_embeddings(held_out, mean), 1)
    return np.where(sims[:, 0] >= threshold, index[:, 0], -1)
