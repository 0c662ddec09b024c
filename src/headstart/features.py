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

Beside the features, the cache keeps a :class:`BackboneRecord` of each
pretrained backbone (its spec, preprocessing and tensors) and, beside each
exported engine, the checksum of the file that matched eager fp32. With them,
a lightweight run on the CPU needs no PyTorch: cached features are read back,
missing ones come from the exported engine in ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._console import Console
from ._io import atomic_path, file_digest, write_json
from .config import CPU_ENGINE, BackboneSpec, Preprocessing, from_json
from .errors import UsageError
from .images import DECODE_ERRORS, DecodeAhead, decode_failure, default_workers, network_input
from .runtime import FeatureSession

if TYPE_CHECKING:
    import torch

__all__ = [
    "ORIGINAL",
    "FLIPPED",
    "ExtractorKey",
    "FeatureCache",
    "default_cache_dir",
    "file_identity",
    "cache_summary",
    "cache_extras",
    "clear_cache",
    "FeatureMatrix",
    "Rows",
    "FeatureSet",
    "BackboneRecord",
    "backbone_request",
    "recall_backbone",
    "cpu_only",
    "backbone_on_record",
    "remember_net",
    "features_without_pytorch",
    "engine_file",
    "exported_engine",
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


def cache_extras(root: str | Path) -> dict[str, tuple[int, int]]:
    """What the cache keeps beside features, as (how many, bytes): exported engines (with their
    checks) and backbone records."""
    root = Path(root)
    engines = list((root / "engines").glob("*.onnx"))
    records = [d for d in (root / "backbones").glob("*") if d.is_dir()]
    return {"exported engines": (len(engines), _bytes(root / "engines")),
            "backbone records": (len(records), _bytes(root / "backbones"))}


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def clear_cache(root: str | Path) -> int:
    """Delete every cached feature, exported engine and backbone record under ``root``; returns the bytes freed."""
    root = Path(root)
    freed = 0
    for name in ("features", "engines", "backbones"):
        folder = root / name
        if folder.is_dir():
            freed += _bytes(folder)
            shutil.rmtree(folder)
    return freed



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


def _variants(flip: bool) -> list[int]:
    return [ORIGINAL, FLIPPED] if flip else [ORIGINAL]


@dataclass(frozen=True)
class BackboneRecord:
    """What the cache remembers of a pretrained backbone it holds features of.

    With it, a lightweight run writes the same model file as a run through
    PyTorch without importing PyTorch or timm: the backbone's tensors are
    copied from here, the head's are new.
    """

    spec: BackboneSpec
    preprocessing: Preprocessing
    tensors: Path  # safetensors: every tensor of the network but the head's


def backbone_request(name: str, weights: str | Path | None, image_size: int | None) -> dict | None:
    """What identifies a backbone before it is built: the name and image size asked for, the
    weights (by digest or package version) and the versions that build it. None for weights
    from the hub, which only timm can name."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__
    from .weights import weights_source

    try:
        timm = version("timm")
    except PackageNotFoundError:  # then nothing can build a backbone, and the run says so
        return None
    source = weights_source(name, weights)
    if source is None:
        return None
    return {"name": name, "weights": source, "image_size": image_size, "timm": timm, "headstart": __version__}


def _record_folder(root: str | Path, request: dict) -> Path:
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:20]
    return Path(root) / "backbones" / digest


def recall_backbone(root: str | Path, request: dict) -> BackboneRecord | None:
    """The record of ``request``, if the cache has an intact one: its tensors' SHA-256 is checked,
    so a damaged record is never used (it is rewritten by the next full run)."""
    folder = _record_folder(root, request)
    tensors = folder / "tensors.safetensors"
    try:
        saved = json.loads((folder / "backbone.json").read_text(encoding="utf-8"))
        if saved["request"] != request or saved["sha256"] != file_digest(tensors):
            return None
        return BackboneRecord(from_json(BackboneSpec, saved["spec"], "spec"),
                              from_json(Preprocessing, saved["preprocessing"], "preprocessing"), tensors)
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        return None


def cpu_only(device: str) -> bool:
    """Whether ``--device`` means the CPU for certain, known without importing PyTorch: ``cpu``,
    or ``auto`` on a machine with no GPU device nodes (NVIDIA, AMD's ROCm, WSL's GPU bridge) or
    with every GPU hidden. When in doubt, PyTorch decides."""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    return not any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))


def backbone_on_record(cache_dir: str | Path, name: str, weights: str | Path | None, image_size: int | None,
                       device: str, engine: str) -> BackboneRecord | None:
    """The cache's record of a backbone, when its features may be had without PyTorch: on a CPU
    for certain (``device``), with an engine that runs there, and weights the cache can name."""
    if engine == "fp16" or not cpu_only(device):
        return None
    request = backbone_request(name, weights, image_size)
    return None if request is None else recall_backbone(cache_dir, request)


def remember_net(cache_dir: str | Path, name: str, weights: str | Path | None, image_size: int | None,
                 spec: BackboneSpec, preprocessing: Preprocessing, net) -> None:
    """Record the backbone of ``net`` (a :class:`headstart.head.ClassifierNet` that ``name``,
    ``weights`` and ``image_size`` built): its tensors but the head's, written first so a record
    never points to a partial file (13 MB for Lite0, once). Nothing is done when an intact record
    is there, or when the weights cannot be named without timm."""
    request = backbone_request(name, weights, image_size)
    if request is None or recall_backbone(cache_dir, request) is not None:
        return
    from safetensors.numpy import save_file

    tensors = {k: v.detach().cpu().contiguous().numpy() for k, v in net.state_dict().items()
               if not k.startswith("head.")}
    folder = _record_folder(cache_dir, request)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "tensors.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(folder / "backbone.json", {"request": request, "spec": asdict(spec),
                                          "preprocessing": asdict(preprocessing),
                                          "sha256": file_digest(folder / "tensors.safetensors")})


def features_without_pytorch(paths: Sequence[Path], record: BackboneRecord, engine: str, cache_dir: str | Path,
                             flip: bool = False, workers: int | None = None, console: Console | None = None,
                             ready: Callable[[str, bool], None] | None = None) -> FeatureSet | None:
    """Features of ``paths`` by the backbone on record, without PyTorch: read from the cache, the
    missing ones computed by the exported engine while child processes decode their images.
    None when some are missing and there is no checked exported engine (then the backbone must
    be built). ``ready(engine, computing)`` is called once it is sure to work, before any
    features are computed."""
    start = time.perf_counter()
    console = console or Console(0)
    engine = CPU_ENGINE if engine == "auto" else engine
    spec = record.spec
    key = ExtractorKey(spec.architecture, spec.weights, record.preprocessing, engine, spec.num_features)
    paths = [Path(p) for p in paths]
    failed: dict[Path, str] = {}
    ok = np.ones(len(paths), dtype=bool)
    with FeatureCache(cache_dir, key) as cache:
        found = {v: FeatureMatrix(len(paths), key.num_features, cache.folder) for v in _variants(flip)}
        todo = _lookup(cache, paths, found)
        runner = exported_engine(cache_dir, key) if todo else None
        if todo and runner is None:
            for matrix in found.values():
                matrix.close()
            return None
        if ready is not None:
            ready(engine, bool(todo))
        if todo:
            console.info(f"extracting features of {len(todo)} image(s) with engine {engine}, exported earlier "
                         f"({len(paths) - len(todo)} cached)")
            ahead = _start_decoding(paths, todo, key.preprocessing, workers)
            batches = (_decoded_batches(ahead, todo, runner.batch_size) if ahead is not None
                       else _decoded_here(paths, todo, key.preprocessing, runner.batch_size))
            try:
                _compute(runner, batches, -(-len(todo) // runner.batch_size), paths, cache, found, ok, failed,
                         console)
            finally:
                if ahead is not None:
                    ahead.close()
    return FeatureSet(found[ORIGINAL], found.get(FLIPPED), ok, failed, engine, len(todo),
                      time.perf_counter() - start)


def extract_features(paths: Sequence[Path], net, spec: BackboneSpec, preprocessing: Preprocessing,
                     cache_dir: str | Path, engine: str = "auto", device: torch.device | None = None,
                     flip: bool = False, workers: int | None = None,
                     console: Console | None = None) -> FeatureSet:
    """Features of ``paths`` from the cache, computing (and caching) only what is missing.

    Decoding runs in worker processes while the engine runs the backbone, so
    both cores are busy; large JPEGs are decoded at reduced size (Pillow's
    draft mode) when that cannot change the network's input.
    """
    import torch

    from .engine import create_engine, engine_candidates
    from .loader import ImageDataset, make_loader

    start = time.perf_counter()
    console = console or Console(0)
    device = device or torch.device("cpu")
    paths = [Path(p) for p in paths]
    variants = _variants(flip)
    names = engine_candidates(engine, device)

    def key_for(name: str) -> ExtractorKey:
        return ExtractorKey(spec.architecture, spec.weights, preprocessing, name, spec.num_features)

    # The first candidate engine is the one used unless it fails: look there first, so a
    # warm run never builds an engine at all.
    cache = FeatureCache(cache_dir, key_for(names[0]))
    found = {v: FeatureMatrix(len(paths), spec.num_features, cache.folder) for v in variants}
    todo = _lookup(cache, paths, found)
    used = names[0]
    failed: dict[Path, str] = {}
    ok = np.ones(len(paths), dtype=bool)
    if todo:
        runner = create_engine(engine, net, preprocessing.input_size, device,
                               lambda name: engine_file(cache_dir, key_for(name)),
                               _sample_batch(paths, todo, preprocessing), console)
        used = runner.name
        if used == "onnx" and runner.error is not None:
            _mark_verified(engine_file(cache_dir, key_for(used)), runner.error)
        if used != names[0]:
            cache.close()
            cache = FeatureCache(cache_dir, key_for(used))
            todo = _lookup(cache, paths, found)
        console.info(f"extracting features of {len(todo)} image(s) with engine {used} "
                     f"({len(paths) - len(todo)} cached)")
        gpu = device.type == "cuda"
        dataset = ImageDataset.for_eval([paths[i] for i in todo], todo, preprocessing)
        loader = make_loader(dataset, runner.batch_size, workers=_extraction_workers(workers, gpu), gpu=gpu)
        _compute(runner, _loader_batches(loader, todo), -(-len(todo) // runner.batch_size), paths, cache, found,
                 ok, failed, console)
    cache.close()
    return FeatureSet(found[ORIGINAL], found.get(FLIPPED), ok, failed, used, len(todo),
                      time.perf_counter() - start)


def _compute(runner: Callable[[np.ndarray], np.ndarray], batches: Iterator[tuple[np.ndarray, list[int], list]],
             count: int, paths: Sequence[Path], cache: FeatureCache, found: dict[int, FeatureMatrix],
             ok: np.ndarray, failed: dict[Path, str], console: Console) -> None:
    """Run ``runner`` on every batch (and its mirror images, when ``found`` has them): features into
    the cache and into ``found``'s rows; an image that failed to decode is marked in ``ok`` and ``failed``."""
    for images, rows, failures in console.progress(batches, total=count, desc="features"):
        for row, reason in failures:
            failed[paths[row]] = reason
            ok[row] = False
        if not rows:
            continue
        batch_paths = [paths[row] for row in rows]
        for variant, matrix in found.items():
            features = runner(np.ascontiguousarray(images[..., ::-1]) if variant == FLIPPED else images)
            cache.store(batch_paths, features, variant)
            for row, feature in zip(rows, features):
                matrix.write(row, feature)


def engine_file(cache_dir: str | Path, key: ExtractorKey) -> Path:
    """Where the backbone exported for ``key`` (an ONNX graph) is kept."""
    return Path(cache_dir) / "engines" / f"{key.digest()}.onnx"


def _mark_verified(path: Path, error: float) -> None:
    """Record that the exported engine at ``path`` matched eager fp32 on real images."""
    write_json(path.with_suffix(".verified.json"), {"sha256": file_digest(path), "error": error})


def exported_engine(cache_dir: str | Path, key: ExtractorKey) -> FeatureSession | None:
    """The backbone exported for ``key``, ready to run without PyTorch; None unless the cache holds
    it intact and it was checked against eager fp32 (as the first run through PyTorch does)."""
    if key.engine != "onnx":
        return None
    path = engine_file(cache_dir, key)
    try:
        verified = json.loads(path.with_suffix(".verified.json").read_text(encoding="utf-8"))
        if verified["sha256"] != file_digest(path):
            return None
        return FeatureSession(path)
    except Exception:  # missing or damaged files; onnxruntime raises its own untyped errors
        return None


def _extraction_workers(workers: int | None, gpu: bool) -> int:
    """Decoding processes while extracting (``workers`` when set). On a CPU, decoding costs about a
    fifth of the backbone: half the usual workers keep it fed and leave the cores to the engine.
    Beside a GPU, decoding is the bottleneck."""
    if workers is not None:
        return workers
    return default_workers(gpu) if gpu else max(1, default_workers() // 2)


def _start_decoding(paths: Sequence[Path], missing: Sequence[int], preprocessing: Preprocessing,
                  workers: int | None) -> DecodeAhead | None:
    """Start decoding the images whose features are missing in child processes; None where that
    is not possible or not wanted (``workers=0``: decode in the main process)."""
    processes = _extraction_workers(workers, gpu=False)
    if not missing or not processes or not DecodeAhead.AVAILABLE:
        return None
    return DecodeAhead([paths[i] for i in missing], preprocessing, processes)


_Batches = Iterator[tuple[np.ndarray, list[int], list[tuple[int, str]]]]


def _loader_batches(loader, todo: Sequence[int]) -> _Batches:
    """(uint8 images, their positions in ``paths``, failures by position) from a DataLoader over ``todo``."""
    for batch in loader:
        # The labels carry each image's position in `paths`.
        yield batch.images.numpy(), batch.labels.tolist(), [(todo[i], reason) for i, reason in batch.failed]


def _decoded_batches(ahead: DecodeAhead, todo: Sequence[int], size: int) -> _Batches:
    """The same, from images decoded ahead by child processes."""
    for start in range(0, len(todo), size):
        pixels, done, failures = ahead.take(start, min(start + size, len(todo)))
        yield pixels, [todo[i] for i in done], [(todo[i], reason) for i, reason in failures]


def _decoded_here(paths: Sequence[Path], todo: Sequence[int], preprocessing: Preprocessing, size: int) -> _Batches:
    """The same, decoded in this process (``--workers 0``, or where children cannot be forked)."""
    for start in range(0, len(todo), size):
        pixels, rows, failures = [], [], []
        for row in todo[start:start + size]:
            try:
                pixels.append(network_input(paths[row], preprocessing))
                rows.append(row)
            except DECODE_ERRORS as exc:
                failures.append((row, decode_failure(paths[row], exc)))
        yield np.stack(pixels) if pixels else np.zeros((0, *preprocessing.input_size), np.uint8), rows, failures


def _lookup(cache: FeatureCache, paths: Sequence[Path], found: dict[int, FeatureMatrix]) -> list[int]:
    missing = set()
    for variant, matrix in found.items():
        missing.update(cache.lookup(paths, matrix, variant))
    return sorted(missing)


def _sample_batch(paths: Sequence[Path], todo: Sequence[int], preprocessing: Preprocessing,
                  size: int = 8) -> np.ndarray | None:
    """A few decodable images to check an engine's features against eager fp32."""
    pixels = next(_decoded_here(paths, todo[:4 * size], preprocessing, 4 * size))[0][:size]
    return pixels if len(pixels) else None
