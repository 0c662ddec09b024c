"""The lightweight workflow's features: computed once per image, ever, and cached on disk.

On a CPU the backbone's forward pass is nearly the whole cost of transfer
learning. Here it is paid once per image: pooled backbone features are stored
in a cache keyed by

* the **extractor**: backbone architecture, weights (with their digest),
  preprocessing and engine, hashed into one folder per extractor;
* the **file**: absolute path, size and modification time (as ``make`` and
  git do), plus the variant (the image itself, or its mirror image).

A rerun with another head setting, learning rate or split reads every
feature back; a changed or added image is recomputed alone. Features are
stored as float16 in SQLite (one transaction per batch, so an interrupted
extraction keeps what it did) with a CRC32 of each row: a damaged entry is
detected, recomputed and never silently used.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ._console import Console
from .config import BackboneSpec, Preprocessing
from .data import ImageDataset, default_workers, make_loader
from .engine import create_engine, engine_candidates

__all__ = [
    "ORIGINAL",
    "FLIPPED",
    "ExtractorKey",
    "FeatureCache",
    "default_cache_dir",
    "file_identity",
    "cache_summary",
    "clear_cache",
    "FeatureSet",
    "extract_features",
]

ORIGINAL, FLIPPED = 0, 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    path TEXT NOT NULL,
    variant INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (path, variant)
)
"""


def default_cache_dir() -> Path:
    """The user's cache folder for headstart (e.g. ``~/.cache/headstart`` on Linux)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("headstart", appauthor=False))


@dataclass(frozen=True)
class ExtractorKey:
    """What makes two features comparable: same network, same weights, same pixels in, same engine."""

    architecture: str
    weights: str
    preprocessing: Preprocessing
    engine: str
    num_features: int

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_identity(path: Path) -> tuple[str, int, int]:
    """(absolute path, size, mtime in ns): a changed file gets a new identity."""
    stat = path.stat()
    return str(path.absolute()), stat.st_size, stat.st_mtime_ns


class FeatureCache:
    """Pooled features of one extractor, in ``root/<key digest>/features.sqlite``."""

    def __init__(self, root: str | Path, key: ExtractorKey):
        self.key = key
        self.folder = Path(root) / "features" / key.digest()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "features.sqlite"
        meta = self.folder / "extractor.json"
        if not meta.exists():
            meta.write_text(json.dumps(asdict(key), indent=2) + "\n")
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            return _open_database(self.path)
        except sqlite3.DatabaseError:
            # A damaged database file is rebuilt from scratch, never half-trusted.
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return _open_database(self.path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def lookup(self, paths: Sequence[Path], variant: int = ORIGINAL) -> tuple[np.ndarray, list[int]]:
        """Cached features for ``paths`` (float16, one row each) and the indices still to compute.

        A row whose file changed, or whose bytes fail their checksum, counts as missing.
        """
        dim = self.key.num_features
        out = np.zeros((len(paths), dim), dtype=np.float16)
        missing = []
        identities = [file_identity(p) for p in paths]
        rows = {}
        query = "SELECT path, size, mtime_ns, crc, data FROM features WHERE variant = ? AND path IN ({})"
        names = [i[0] for i in identities]
        for start in range(0, len(names), 500):  # SQLite caps the number of bound parameters
            chunk = names[start:start + 500]
            for row in self._db.execute(query.format(",".join("?" * len(chunk))), (variant, *chunk)):
                rows[row[0]] = row[1:]
        for i, (name, size, mtime_ns) in enumerate(identities):
            row = rows.get(name)
            if row is None or row[0] != size or row[1] != mtime_ns:
                missing.append(i)
                continue
            crc, data = row[2], row[3]
            if len(data) != dim * 2 or zlib.crc32(data) != crc:
                missing.append(i)
                continue
            out[i] = np.frombuffer(data, dtype=np.float16)
        return out, missing

    def store(self, paths: Sequence[Path], features: np.ndarray, variant: int = ORIGINAL) -> None:
        """Save one batch of features in one transaction."""
        records = []
        for path, feature in zip(paths, np.asarray(features, dtype=np.float16)):
            name, size, mtime_ns = file_identity(path)
            data = feature.tobytes()
            records.append((name, variant, size, mtime_ns, zlib.crc32(data), data))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?, ?)", records)


def _open_database(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60)
    # A 2.5 kB feature row fills a 4 kB page alone; 8 kB pages hold three: 35% smaller.
    db.execute("PRAGMA page_size = 8192")
    db.execute(_SCHEMA)
    db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
    return db


def cache_summary(root: str | Path) -> list[dict]:
    """One entry per extractor in the cache: what it is, how many features, how many bytes."""
    entries = []
    for folder in sorted((Path(root) / "features").glob("*")):
        meta = folder / "extractor.json"
        if not meta.is_file():
            continue
        try:
            key = json.loads(meta.read_text())
            db = sqlite3.connect(folder / "features.sqlite")
            count = db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
            db.close()
        except (json.JSONDecodeError, sqlite3.DatabaseError):
            key, count = {}, 0
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        entries.append({"folder": str(folder), "architecture": key.get("architecture", "?"),
                        "engine": key.get("engine", "?"),
                        "image_size": (key.get("preprocessing") or {}).get("input_size", ["?"])[-1],
                        "features": count, "bytes": size})
    return entries


def clear_cache(root: str | Path) -> int:
    """Delete every cached feature and exported engine under ``root``; returns the bytes freed."""
    root = Path(root)
    freed = 0
    for name in ("features", "engines"):
        folder = root / name
        if folder.is_dir():
            freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            shutil.rmtree(folder)
    return freed



@dataclass
class FeatureSet:
    """Pooled features of a list of images, in order; NaN rows for images that failed to decode."""

    features: np.ndarray  # float32 (N, num_features)
    flipped: np.ndarray | None  # the mirror images' features, when asked for
    failed: dict[Path, str]
    engine: str
    computed: int  # images that went through the backbone (the rest came from the cache)
    seconds: float


def extract_features(paths: Sequence[Path], net, spec: BackboneSpec, preprocessing: Preprocessing,
                     cache_dir: str | Path, engine: str = "auto", device: torch.device | None = None,
                     flip: bool = False, workers: int | None = None,
                     console: Console | None = None) -> FeatureSet:
    """Features of ``paths`` from the cache, computing (and caching) only what is missing.

    Decoding runs in worker processes while the engine runs the backbone, so
    both cores are busy; large JPEGs are decoded at reduced size (Pillow's
    draft mode) when that cannot change the network's input.
    """
    start = time.perf_counter()
    console = console or Console(0)
    device = device or torch.device("cpu")
    paths = [Path(p) for p in paths]
    variants = [ORIGINAL, FLIPPED] if flip else [ORIGINAL]
    names = engine_candidates(engine, device)

    def key_for(name: str) -> ExtractorKey:
        return ExtractorKey(spec.architecture, spec.weights, preprocessing, name, spec.num_features)

    # The first candidate engine is the one used unless it fails: look there first, so a
    # warm run never builds an engine at all.
    cache = FeatureCache(cache_dir, key_for(names[0]))
    found, todo = _lookup(cache, paths, variants)
    used = names[0]
    failed: dict[Path, str] = {}
    if todo:
        sample = _sample_batch(paths, todo, preprocessing)
        runner = create_engine(engine, net, preprocessing.input_size, device,
                               lambda name: Path(cache_dir) / "engines" / f"{key_for(name).digest()}.onnx",
                               sample, console)
        used = runner.name
        if used != names[0]:
            cache.close()
            cache = FeatureCache(cache_dir, key_for(used))
            found, todo = _lookup(cache, paths, variants)
        console.info(f"extracting features of {len(todo)} image(s) with engine {used} "
                     f"({len(paths) - len(todo)} cached)")
        dataset = ImageDataset.for_eval([paths[i] for i in todo], todo, preprocessing)
        # Decoding costs about a fifth of the backbone: half the usual workers keep it fed
        # and leave the cores to the engine.
        workers = max(1, default_workers() // 2) if workers is None else workers
        loader = make_loader(dataset, runner.batch_size, workers=workers)
        for batch in console.progress(loader, total=len(loader), desc="features"):
            for index, reason in batch.failed:
                failed[dataset.paths[index]] = reason
            if not batch.indices:
                continue
            batch_paths = [dataset.paths[i] for i in batch.indices]
            rows = batch.labels.tolist()  # the labels carry each image's position in `paths`
            for variant in variants:
                images = batch.images.flip(-1) if variant == FLIPPED else batch.images
                features = runner(images).numpy()
                cache.store(batch_paths, features, variant)
                found[variant][rows] = features.astype(np.float16)
    cache.close()
    out = {v: found[v].astype(np.float32) for v in variants}
    for path in failed:
        for v in variants:
            out[v][paths.index(path)] = np.nan
    return FeatureSet(out[ORIGINAL], out.get(FLIPPED), failed, used, len(todo), time.perf_counter() - start)


def _lookup(cache: FeatureCache, paths: Sequence[Path], variants: Sequence[int]
            ) -> tuple[dict[int, np.ndarray], list[int]]:
    found, missing = {}, set()
    for variant in variants:
        found[variant], absent = cache.lookup(paths, variant)
        missing.update(absent)
    return found, sorted(missing)


def _sample_batch(paths: Sequence[Path], todo: Sequence[int], preprocessing: Preprocessing,
                  size: int = 8) -> torch.Tensor | None:
    """A few decodable images to check an engine's features against eager fp32."""
    dataset = ImageDataset.for_eval([paths[i] for i in todo[:4 * size]], None, preprocessing)
    images = [x for x, _, _ in (dataset[i] for i in range(len(dataset))) if x is not None][:size]
    return torch.stack(images) if images else None
