"""Where features are cached: the cache folder's layout, and the features database of each extractor.

On a CPU the backbone's forward pass is nearly the whole cost of transfer
learning. Here it is paid once per image: pooled backbone features are stored
in a cache keyed by

* the **extractor**: backbone architecture, weights (with their digest),
  preprocessing and engine, hashed into one folder per extractor;
* the **file**: absolute path, size and modification time (as ``make`` and
  git do), plus the variant (the image itself, or its mirror image).

A rerun with another head setting, learning rate or split reads every
feature back; a changed or added image is recomputed alone. A cache in a
folder that cannot be written (a shared, read-only copy) is read as it is. Features are
stored as float16 in SQLite (one transaction per batch, so an interrupted
extraction keeps what it did) with a CRC32 of each row: a damaged entry is
detected, recomputed and never silently used.

:class:`CacheLayout` is the one place that knows the folder's layout::

    <root>/features/<extractor digest>/features.sqlite, extractor.json
    <root>/engines/<extractor digest>.onnx, <digest>.verified.json
    <root>/backbones/<request digest>/backbone.json, tensors.safetensors
    <root>/.lock   held shared by every run using the cache, exclusively by ``cache clear``
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import file_digest, write_json
from ..config import Preprocessing
from ..errors import StorageError
from .rows import FeatureMatrix

__all__ = ["ORIGINAL", "FLIPPED", "ExtractorKey", "CacheLayout", "FeatureCache", "default_cache_dir",
           "file_identity"]

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


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ExtractorKey:
    """What makes two features comparable: same network, same weights, same pixels in, same engine."""

    architecture: str
    weights: str
    preprocessing: Preprocessing
    engine: str
    num_features: int

    def digest(self) -> str:
        return _digest(asdict(self))


class CacheLayout:
    """The cache folder (``root``, default: the user's cache folder) and where everything lies in it."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold the cache for a run: ``cache clear`` refuses to delete it meanwhile (a run that lost
        its backbone record while saving would lose the finished model)."""
        with _lock(self.root, exclusive=False):
            yield

    def features_folder(self, key: ExtractorKey) -> Path:
        return self.root / "features" / key.digest()

    def open_features(self, key: ExtractorKey) -> FeatureCache:
        """The features database of extractor ``key`` (created, with its description, if new)."""
        folder = self.features_folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "extractor.json"
        if not meta.exists():
            meta.write_text(json.dumps(asdict(key), indent=2) + "\n")
        return FeatureCache(folder / "features.sqlite", key, read_only=not _writable(folder))

    def engine_file(self, key: ExtractorKey) -> Path:
        """Where the backbone exported for ``key`` (an ONNX graph) is kept."""
        return self.root / "engines" / f"{key.digest()}.onnx"

    def mark_engine_checked(self, key: ExtractorKey, error: float) -> None:
        """Record that the exported engine of ``key`` matched eager fp32 on real images."""
        path = self.engine_file(key)
        write_json(path.with_suffix(".verified.json"), {"sha256": file_digest(path), "error": error})

    def checked_engine_file(self, key: ExtractorKey) -> Path | None:
        """The exported engine of ``key`` when it is there intact and passed the check against eager
        fp32 (as the first run through PyTorch does); None otherwise."""
        if key.engine != "onnx":
            return None
        path = self.engine_file(key)
        try:
            verified = json.loads(path.with_suffix(".verified.json").read_text(encoding="utf-8"))
            return path if verified["sha256"] == file_digest(path) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def record_folder(self, identity: dict) -> Path:
        """Where the record of the backbone with ``identity`` (see :mod:`.record`) is kept."""
        return self.root / "backbones" / _digest(identity)

    def summary(self) -> list[dict]:
        """One entry per extractor in the cache: what it is, how many features, how many bytes."""
        entries = []
        for folder in sorted((self.root / "features").glob("*")):
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

    def extras(self) -> dict[str, tuple[int, int]]:
        """What the cache keeps beside features, as (how many, bytes): exported engines (with their
        checks) and backbone records."""
        engines = list((self.root / "engines").glob("*.onnx"))
        records = [d for d in (self.root / "backbones").glob("*") if d.is_dir()]
        return {"exported engines": (len(engines), _bytes(self.root / "engines")),
                "backbone records": (len(records), _bytes(self.root / "backbones"))}

    def clear(self) -> int:
        """Delete every cached feature, exported engine and backbone record; returns the bytes freed.

        Refused (:class:`StorageError`) while a run holds the cache (:meth:`in_use`).
        """
        freed = 0
        with _lock(self.root, exclusive=True):
            for name in ("features", "engines", "backbones"):
                folder = self.root / name
                if folder.is_dir():
                    freed += _bytes(folder)
                    shutil.rmtree(folder)
        return freed


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


@contextlib.contextmanager
def _lock(root: Path, exclusive: bool) -> Iterator[None]:
    """An advisory lock on ``root/.lock``: shared by runs, exclusive for a clear, which does not
    wait. A cache that cannot be written needs no lock (it cannot be cleared); neither can a
    system without ``fcntl`` (Windows) take one, and there a clear is not guarded."""
    try:
        import fcntl
    except ModuleNotFoundError:
        yield
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / ".lock", "a+b")
    except OSError:
        if exclusive:
            raise
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            raise StorageError(f"the cache {root} is in use by a running headstart command (train or "
                               "inspect): clear it when that has finished") from None
        yield


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def file_identity(path: Path) -> tuple[str, int, int]:
    """(absolute path, size, mtime in ns): a changed file gets a new identity."""
    stat = path.stat()
    return _path_key(path.absolute()), stat.st_size, stat.st_mtime_ns


def _path_key(path: Path) -> str:
    """The text a file's row is keyed by: its absolute path. A name that is not valid UTF-8
    (held as surrogate escapes, which SQLite cannot store) is keyed by its bytes in hex after
    a "?", which begins no absolute path, so no two files share a key."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "?" + os.fsencode(text).hex()
    return text


class FeatureCache:
    """Pooled features of one extractor, in one SQLite database (see :meth:`CacheLayout.open_features`)."""

    def __init__(self, path: Path, key: ExtractorKey, read_only: bool = False):
        self.key = key
        self.path = path
        self.folder = path.parent
        # A folder that cannot be written (a shared cache, a read-only disk): its features are
        # read, and new ones are computed but not kept.
        self.read_only = read_only and path.is_file()
        self._db = _open_read_only(path) if self.read_only else self._connect()

    @property
    def scratch_folder(self) -> Path | None:
        """Where temporary feature files go: beside the cache (the same disk), or the system's
        temporary folder when the cache cannot be written."""
        return None if self.read_only else self.folder

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

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def lookup(self, paths: Sequence[Path], out: FeatureMatrix, variant: int = ORIGINAL) -> list[int]:
        """Copy the cached features of ``paths`` into the rows of ``out``; returns the indices
        still to compute. A row whose file changed, or whose bytes fail their checksum, counts
        as missing. Read 500 rows at a time, so memory does not grow with ``paths``.
        """
        dim = self.key.num_features
        missing = []
        query = "SELECT path, size, mtime_ns, crc, data FROM features WHERE variant = ? AND path IN ({})"
        for start in range(0, len(paths), 500):  # SQLite caps the number of bound parameters
            identities = [file_identity(p) for p in paths[start:start + 500]]
            names = [i[0] for i in identities]
            rows = {row[0]: row[1:] for row in
                    self._db.execute(query.format(",".join("?" * len(names))), (variant, *names))}
            for i, (name, size, mtime_ns) in enumerate(identities, start):
                row = rows.get(name)
                if row is None or row[0] != size or row[1] != mtime_ns or len(row[3]) != dim * 2 \
                        or zlib.crc32(row[3]) != row[2]:
                    missing.append(i)
                    continue
                out.write_bytes(i, row[3])
        return missing

    def store(self, paths: Sequence[Path], features: np.ndarray, variant: int = ORIGINAL) -> None:
        """Save one batch of features in one transaction (none in a read-only cache)."""
        if self.read_only:
            return
        records = []
        for path, feature in zip(paths, np.asarray(features, dtype=np.float16)):
            name, size, mtime_ns = file_identity(path)
            data = feature.tobytes()
            records.append((name, variant, size, mtime_ns, zlib.crc32(data), data))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?, ?)", records)


def _open_read_only(path: Path) -> sqlite3.Connection:
    # ``immutable``: SQLite then takes no lock and wants no -wal or -shm file, which it could
    # not create in a folder it cannot write.
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)


def _open_database(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60)
    # A 2.5 kB feature row fills a 4 kB page alone; 8 kB pages hold three: 35% smaller.
    db.execute("PRAGMA page_size = 8192")
    db.execute(_SCHEMA)
    db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
    return db
