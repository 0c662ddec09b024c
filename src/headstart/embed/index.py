"""A nearest-neighbour index over a set of embeddings, in a folder: ``headstart index`` writes
it, ``headstart similar`` searches it.

Vectors are centred on the indexed set's mean and scaled to unit length
(:func:`headstart.features.embeddings.normalized_embeddings`); queries are centred on the same
mean, and the distance is one minus their cosine similarity (0: the same features, about 1:
unrelated photos). Up to :data:`EXACT_UP_TO` vectors, search is exact, by the blocked dot
product inspect's near-duplicate search uses (:func:`headstart.features.neighbours.nearest`);
above, a faiss HNSW graph answers (``benchmarks/bench_index.py`` chose faiss-cpu over usearch:
half the build time, a higher recall). The folder::

    index.json    the backbone's identity and request, the number of vectors, the search used
    photos.csv    path, split, label of each vector
    vectors.npy   the unit vectors, float32 (memory-mapped: float16 would halve the file, but
                  converting it back costs more than the search itself)
    mean.npy      the mean the vectors were centred on
    graph.faiss   the HNSW graph, above EXACT_UP_TO vectors

An index refuses queries embedded with another backbone: their distances would mean nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._console import Console
from .._io import atomic_files, csv_text, json_text, read_json
from ..config import BackboneRequest, from_json
from ..errors import DataError, ModelFileError, UsageError
from ..features.cache import CacheLayout
from ..features.embeddings import normalized_embeddings
from ..features.neighbours import nearest
from ..features.pipeline import FeatureRequest
from ..runfolder import prepare_output_dir, read_csv_file
from .photos import Photo
from .vectors import BackboneIdentity, Embeddings, embed_photos

__all__ = ["EXACT_UP_TO", "IndexRecord", "Match", "NeighbourIndex", "build_index", "find_similar"]

# Measured by benchmarks/bench_index.py on 2 cores, 1,280 dimensions: exact search over 100,000
# vectors answers one query in 0.13 s and needs no building, where an HNSW graph takes 70 s to
# build; exact search slows linearly with the number of photos, the graph does not.
EXACT_UP_TO = 200_000
INDEX_FILE, PHOTOS_FILE, VECTORS_FILE, MEAN_FILE, GRAPH_FILE = (
    "index.json", "photos.csv", "vectors.npy", "mean.npy", "graph.faiss")
_LINKS, _EF_SEARCH = 32, 64  # HNSW's links per node, and candidates kept while searching
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class IndexRecord:
    """``index.json``: the backbone the vectors came from, and how the index is searched."""

    backbone: BackboneIdentity
    request: BackboneRequest
    count: int
    search: str  # "exact" (NumPy) or "faiss" (an HNSW graph)
    format_version: int = _FORMAT_VERSION


@dataclass(frozen=True)
class Match:
    """One of a query photo's nearest photos: its rank (1 for the nearest) and distance."""

    query: Path
    rank: int
    photo: Photo
    distance: float


def build_index(embeddings: Embeddings, out: str | Path, overwrite: bool = False,
                exact_up_to: int = EXACT_UP_TO) -> Path:
    """Write the index of ``embeddings`` into the folder ``out`` (refused when not empty, unless
    ``overwrite``); exact search up to ``exact_up_to`` vectors, an HNSW graph above."""
    if not embeddings.photos:
        raise DataError("no photos to index")
    out = prepare_output_dir(out, overwrite)
    mean = embeddings.vectors.mean(axis=0)
    unit = normalized_embeddings(embeddings.vectors, mean)
    search = "exact" if len(unit) <= exact_up_to else "faiss"
    record = IndexRecord(embeddings.identity, embeddings.request, len(unit), search)
    rows = [(str(p.path), p.split, p.label) for p in embeddings.photos]
    with atomic_files(out) as new:
        for name, array in ((VECTORS_FILE, unit), (MEAN_FILE, mean.astype(np.float32))):
            with open(new(name), "wb") as f:  # a file object: np.save would add .npy to a temporary name
                np.save(f, array)
        new(PHOTOS_FILE).write_text(csv_text(("path", "split", "label"), rows), encoding="utf-8")
        new(INDEX_FILE).write_text(json_text(asdict(record)), encoding="utf-8")
        if search == "faiss":
            _faiss().write_index(_graph(unit), str(new(GRAPH_FILE)))
    return out


class NeighbourIndex:
    """An index folder opened for search (its vectors memory-mapped, never read whole)."""

    def __init__(self, folder: str | Path):
        self.folder = folder = Path(folder)
        if not (folder / INDEX_FILE).is_file():
            raise UsageError(f"{folder} is not an index folder written by 'headstart index' ({INDEX_FILE} missing)")
        try:
            self.record = from_json(IndexRecord, read_json(folder / INDEX_FILE), "index")
        except UsageError as exc:
            raise ModelFileError(f"{folder / INDEX_FILE}: {exc}") from None
        if self.record.format_version != _FORMAT_VERSION:
            raise ModelFileError(f"{folder / INDEX_FILE}: format_version {self.record.format_version}, expected "
                                 f"{_FORMAT_VERSION} (written by another headstart version?): build the index again")
        rows = read_csv_file(folder, PHOTOS_FILE, required=False)
        if rows is None:
            raise ModelFileError(f"{folder / PHOTOS_FILE} is missing: build the index again")
        self.photos = [Photo(Path(r["path"]), r["split"], r["label"]) for r in rows]
        try:
            self.vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
            self.mean = np.load(folder / MEAN_FILE)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{folder}: its vectors cannot be read ({exc})") from None
        if not len(self.photos) == len(self.vectors) == self.record.count:
            raise ModelFileError(f"{folder}: {PHOTOS_FILE}, {VECTORS_FILE} and {INDEX_FILE} disagree on the "
                                 "number of photos: build the index again")
        self._graph = _load_graph(folder / GRAPH_FILE) if self.record.search == "faiss" else None

    def search(self, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed photos of each row of raw ``features``: (indices, distances),
        both (rows, k), nearest first."""
        unit = normalized_embeddings(features, self.mean)
        if self._graph is None:
            indices, similarities = nearest(self.vectors, unit, k)
            return indices, 1.0 - similarities
        similarities, indices = self._graph.search(unit, min(k, len(self.photos)))
        return indices.astype(np.int64), 1.0 - similarities


def find_similar(index: str | Path | NeighbourIndex, queries: Sequence[str | Path] | Embeddings, k: int = 5,
                 cache_dir: str | Path | None = None, console: Console | None = None) -> list[Match]:
    """Each query's ``k`` nearest photos in ``index``, nearest first (a query photo that is itself
    indexed is not its own neighbour). ``queries``: image paths, embedded with the index's own
    backbone through the feature cache (``cache_dir``), or embeddings (``headstart embed``'s
    Parquet file, :func:`headstart.embed.read_parquet`), refused when another backbone made them."""
    if k < 1:
        raise UsageError(f"--k must be at least 1. Got {k!r} instead.")
    index = index if isinstance(index, NeighbourIndex) else NeighbourIndex(index)
    console = console or Console(0)
    if not isinstance(queries, Embeddings):
        cache = CacheLayout(cache_dir)
        with cache.in_use():
            queries = embed_photos([Photo(Path(p).resolve()) for p in queries], FeatureRequest(index.record.request),
                                   cache, console)
    _check_backbone(index, queries.identity)
    indices, distances = index.search(queries.vectors, k + 1)
    matches = []
    for query, found, far in zip(queries.photos, indices, distances):
        # A graph marks a neighbour it could not find with -1.
        others = [(i, d) for i, d in zip(found, far) if i >= 0 and index.photos[i].path != query.path][:k]
        matches += [Match(query.path, rank, index.photos[i], float(d)) for rank, (i, d) in enumerate(others, 1)]
    return matches


def _check_backbone(index: NeighbourIndex, queries: BackboneIdentity) -> None:
    if queries != index.record.backbone:
        raise UsageError(f"the queries were embedded with backbone {queries.describe()}, the index {index.folder} "
                         f"with {index.record.backbone.describe()}: embed them with the index's backbone")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UsageError("an index of this many photos is searched by faiss: pip install 'headstart[embed]'") from None
    return faiss


def _graph(unit: np.ndarray):
    faiss = _faiss()
    graph = faiss.IndexHNSWFlat(unit.shape[1], _LINKS, faiss.METRIC_INNER_PRODUCT)
    graph.add(np.ascontiguousarray(unit, dtype=np.float32))
    return graph


def _load_graph(path: Path):
    faiss = _faiss()
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: build the index again")
    try:
        graph = faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss's one error type, for a damaged file too
        raise ModelFileError(f"{path} is not a faiss index: build the index again ({exc})") from None
    graph.hnsw.efSearch = _EF_SEARCH
    return graph
