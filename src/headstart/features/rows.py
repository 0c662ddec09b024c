"""Features as float16 rows on disk, streamed in bounded chunks: what the lightweight head reads.

Memory stays flat however many images there are: an extraction writes each
feature row to an anonymous temporary file as it is computed or read from the
cache, and every pass of the head's solver reads them back a chunk at a time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FeatureMatrix", "Rows", "FeatureSet", "CHUNK_ROWS", "RESIDENT_BYTES"]


class FeatureMatrix:
    """Rows of float16 features in an anonymous temporary file, read back in bounded chunks.

    The lightweight head makes hundreds of passes over the training features.
    Held in memory they would make it grow with the dataset (2.5 kB per image
    for Lite0 in float16, 10 kB in the float64 copy scikit-learn's solver
    makes); here they stay in the file (in the OS page cache while it has room)
    and a pass holds one chunk at a time. The file is unlinked at creation: it
    disappears with the process, even after a crash.
    """

    def __init__(self, rows: int, dim: int, folder: str | Path | None = None):
        self.rows, self.dim = rows, dim
        self._row_bytes = dim * 2
        self._file = tempfile.TemporaryFile(dir=folder)
        self._file.truncate(rows * self._row_bytes)
        self._fd = self._file.fileno()

    @classmethod
    def from_array(cls, array: np.ndarray, folder: str | Path | None = None) -> "FeatureMatrix":
        matrix = cls(*array.shape, folder)
        for start in range(0, len(array), 4096):
            block = np.ascontiguousarray(array[start:start + 4096], dtype=np.float16)
            os.pwrite(matrix._fd, block.tobytes(), start * matrix._row_bytes)
        return matrix

    def write(self, row: int, values: np.ndarray) -> None:
        self.write_bytes(row, np.asarray(values, dtype=np.float16).tobytes())

    def write_bytes(self, row: int, data: bytes) -> None:
        os.pwrite(self._fd, data, row * self._row_bytes)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The rows at ``indices`` (ascending), as float32; reads the span they cover."""
        indices = np.asarray(indices)
        if not len(indices):
            return np.zeros((0, self.dim), dtype=np.float32)
        first, last = int(indices[0]), int(indices[-1])
        span = np.empty((last - first + 1, self.dim), dtype=np.float16)
        os.preadv(self._fd, [memoryview(span).cast("B")], first * self._row_bytes)
        return span[indices - first].astype(np.float32)

    def close(self) -> None:
        self._file.close()


# Rows per chunk when streaming features: 4096 x 1280 float32 is 21 MB.
CHUNK_ROWS = 4096
# Below this many float32 bytes, a set of rows is read once and kept in memory:
# small datasets skip the file reads on every pass, and memory stays bounded.
RESIDENT_BYTES = 64 << 20


class Rows:
    """Some rows of feature matrices, with their labels: a training, validation or fold set.

    ``chunks()`` yields the rows as float32 arrays of at most :data:`CHUNK_ROWS`
    rows, in order; rows are read from disk on each pass, unless all of them fit in
    :data:`RESIDENT_BYTES`, when they are read once and kept.
    """

    def __init__(self, parts: Sequence[tuple[FeatureMatrix, np.ndarray]], labels: np.ndarray):
        self.parts = [(matrix, np.asarray(indices, dtype=np.int64)) for matrix, indices in parts]
        self.labels = np.asarray(labels)
        if sum(len(i) for _, i in self.parts) != len(self.labels):
            raise ValueError(f"{sum(len(i) for _, i in self.parts)} rows but {len(self.labels)} labels")
        self.dim = self.parts[0][0].dim if self.parts else 0
        self._resident: list[np.ndarray] | None = None
        if len(self) * self.dim * 4 <= RESIDENT_BYTES:
            self._resident = list(self._read_chunks())

    @classmethod
    def from_array(cls, features: np.ndarray, labels: np.ndarray) -> "Rows":
        return cls([(FeatureMatrix.from_array(features), np.arange(len(features)))], labels)

    def __len__(self) -> int:
        return len(self.labels)

    def chunks(self) -> Iterator[np.ndarray]:
        return iter(self._resident) if self._resident is not None else self._read_chunks()

    def _read_chunks(self) -> Iterator[np.ndarray]:
        for matrix, indices in self.parts:
            blocks = indices // CHUNK_ROWS
            bounds = np.flatnonzero(np.diff(blocks)) + 1
            for group in np.split(indices, bounds):
                if len(group):
                    yield matrix.read(group)

    def subset(self, positions: np.ndarray) -> "Rows":
        """The rows at ``positions`` (ascending, counted across parts)."""
        positions = np.asarray(positions)
        parts, offset = [], 0
        for matrix, indices in self.parts:
            inside = positions[(positions >= offset) & (positions < offset + len(indices))]
            parts.append((matrix, indices[inside - offset]))
            offset += len(indices)
        return Rows(parts, self.labels[positions])

    def to_array(self) -> np.ndarray:
        return np.concatenate(list(self.chunks())) if len(self) else np.zeros((0, self.dim), np.float32)


@dataclass
class FeatureSet:
    """Pooled features of a list of images, in order, in float16 files."""

    matrix: FeatureMatrix  # (N, num_features); a row is zeros where ``ok`` is False
    flipped: FeatureMatrix | None  # the mirror images' features, when asked for
    ok: np.ndarray  # bool (N,): False for images that failed to decode
    failed: dict[Path, str]
    engine: str
    computed: int  # images that went through the backbone (the rest came from the cache)
    seconds: float

    def rows(self, indices: np.ndarray, labels: np.ndarray, with_flipped: bool = False) -> Rows:
        """The images at ``indices`` (ascending) with their labels; with ``with_flipped``, their
        mirror images too, as more rows."""
        parts = [(self.matrix, indices)]
        if with_flipped and self.flipped is not None:
            parts.append((self.flipped, indices))
            labels = np.concatenate([labels, labels])
        return Rows(parts, labels)

    def to_array(self) -> np.ndarray:
        """Every row in memory, float32, NaN where an image failed: for small sets and tests."""
        out = self.matrix.read(np.arange(self.matrix.rows))
        out[~self.ok] = np.nan
        return out

    def close(self) -> None:
        self.matrix.close()
        if self.flipped is not None:
            self.flipped.close()
