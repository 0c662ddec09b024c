"""The one feature pipeline: pooled backbone features of a list of images, from the cheapest source.

:func:`extract_features` picks, image by image:

1. the **cache** (:mod:`.cache`), for every image whose features an earlier run
   computed with the same extractor;
2. the **exported engine** (ONNX Runtime, no PyTorch) for the missing ones, when
   the run is on a CPU for certain and the cache holds a record of the backbone
   (:mod:`.record`) and an engine that passed its check against eager fp32;
3. otherwise **PyTorch**: the backbone is built by timm (or handed in, already
   built), recorded in the cache, and run by the engine :mod:`.engines` chooses.

Training's lightweight workflow and ``headstart inspect`` both come here. In
every case decoding overlaps the backbone: child processes decode ahead of
ONNX Runtime, DataLoader workers ahead of PyTorch.

On a data-parallel run (:mod:`headstart.distributed`), each rank extracts its
own share of the images, through its own machine's cache, and the features are
gathered on rank 0 over the process group: no rank reads another's files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import distributed
from .._console import Console
from ..config import BackboneRequest, BackboneSpec, Preprocessing
from ..data.decode_ahead import DecodeAhead
from ..data.images import DECODE_ERRORS, decode_failure, network_input
from ..data.workers import extraction_workers
from ..device import pytorch_free_engine
from .cache import FLIPPED, ORIGINAL, CacheLayout, ExtractorKey, FeatureCache
from .record import BackboneRecord, recall_backbone, remember_backbone
from .rows import FeatureMatrix, FeatureSet

if TYPE_CHECKING:
    from ..backbone.pretrained import Pretrained

__all__ = ["FeatureRequest", "Extraction", "check_backbone", "extract_features"]

# Shares of a data-parallel extraction start on a multiple of this many images: every engine's
# batches (ONNX Runtime's runs of 8, PyTorch's 64 on a CPU) then hold the images of a one-process
# run's, and their features come out the same to the last bit.
_SHARD_ALIGN = 64


@dataclass(frozen=True)
class FeatureRequest:
    """Which features, and how to compute them: the settings of training and inspect that matter."""

    backbone: BackboneRequest = field(default_factory=BackboneRequest)
    engine: str = "auto"
    device: str = "auto"
    flip: bool = False  # the mirror images' features too
    workers: int | None = None  # decoding processes (None: as many as pay)
    recompute: bool = False  # compute every feature, cached or not (and cache it again): to time an engine


@dataclass
class Extraction:
    """The features, and the backbone they came from: its record (when PyTorch was not needed)
    or the network PyTorch built or was handed."""

    features: FeatureSet | None  # None on the ranks of a data-parallel run but rank 0
    spec: BackboneSpec
    preprocessing: Preprocessing
    record: BackboneRecord | None = None
    backbone: Pretrained | None = None

    @property
    def without_pytorch(self) -> bool:
        return self.backbone is None


def check_backbone(request: FeatureRequest, cache: CacheLayout) -> None:
    """Fail on a misspelt backbone name before any work; a backbone on record was built before,
    and timm (with PyTorch) is not imported to check it."""
    if _record(request, cache) is None:
        from ..backbone.pretrained import resolve_architecture

        resolve_architecture(request.backbone.name)


def extract_features(paths: Sequence[Path], request: FeatureRequest, cache: CacheLayout, console: Console,
                     backbone: Pretrained | None = None) -> Extraction:
    """Features of ``paths``, in order, from the cache, the exported engine or PyTorch (see the
    module's docstring). With ``backbone`` (built by the caller, who trains it next), PyTorch runs
    it for the missing features.

    On a data-parallel run, only rank 0's ``features`` are set (to those of every path); the
    other ranks' are None.
    """
    paths = [Path(p) for p in paths]
    if distributed.world().size > 1:
        return _sharded(paths, request, cache, console, backbone)
    return _extract(paths, request, cache, console, backbone)


def _sharded(paths: list[Path], request: FeatureRequest, cache: CacheLayout, console: Console,
             backbone: Pretrained | None) -> Extraction:
    """This rank's share extracted as one process would, then every share gathered on rank 0."""
    start = time.perf_counter()
    first, stop = distributed.shard_bounds(len(paths), _SHARD_ALIGN)
    console.info(f"extracting features on {distributed.world().size} processes, "
                 f"{stop - first} of {len(paths)} image(s) here")
    local = _extract(paths[first:stop], request, cache, console, backbone)
    mine = local.features
    matrices = [mine.matrix] + ([mine.flipped] if mine.flipped is not None else [])
    rows = [distributed.gather_arrays(m.read(np.arange(m.rows)).astype(np.float16)) for m in matrices]
    ok = distributed.gather_arrays(mine.ok)
    shares = distributed.gather_objects((mine.failed, mine.engine, mine.computed))
    mine.close()
    local.features = None
    if distributed.is_main():
        gathered = [FeatureMatrix.from_array(np.concatenate(parts), cache.root) for parts in rows]
        engines = list(dict.fromkeys(engine for _, engine, _ in shares))
        local.features = FeatureSet(gathered[0], gathered[1] if len(gathered) > 1 else None, np.concatenate(ok),
                                    {path: why for failed, _, _ in shares for path, why in failed.items()},
                                    "+".join(engines), sum(n for _, _, n in shares), time.perf_counter() - start)
    return local


def _extract(paths: list[Path], request: FeatureRequest, cache: CacheLayout, console: Console,
             backbone: Pretrained | None) -> Extraction:
    if backbone is None:
        record = _record(request, cache)
        found = _without_pytorch(paths, request, record, cache, console) if record is not None else None
        if found is not None:
            return Extraction(found, record.spec, record.preprocessing, record=record)
        from ..backbone.pretrained import create_backbone

        backbone = create_backbone(request.backbone, console=console)
        console.info(backbone.spec.describe(backbone.preprocessing))
    features = _through_pytorch(paths, request, backbone, cache, console)
    return Extraction(features, backbone.spec, backbone.preprocessing, backbone=backbone)


def _record(request: FeatureRequest, cache: CacheLayout) -> BackboneRecord | None:
    """The cache's record of the backbone when its features may be had without PyTorch."""
    if pytorch_free_engine(request.engine, request.device) is None:
        return None
    return recall_backbone(cache, request.backbone)


def _without_pytorch(paths: list[Path], request: FeatureRequest, record: BackboneRecord, cache: CacheLayout,
                     console: Console) -> FeatureSet | None:
    """Features from the cache, the missing ones from the exported engine while child processes
    decode their images; None when some are missing and there is no checked exported engine."""
    start = time.perf_counter()
    engine = pytorch_free_engine(request.engine, request.device)
    key = ExtractorKey(record.spec.architecture, record.spec.weights, record.preprocessing, engine,
                       record.spec.num_features)
    with cache.open_features(key) as features:
        found = _matrices(len(paths), key.num_features, features.scratch_folder, request.flip)
        todo = _lookup(features, paths, found, request.recompute)
        runner = _exported_engine(cache, key) if todo else None
        if todo and runner is None:
            for matrix in found.values():
                matrix.close()
            return None
        console.info(record.spec.describe(record.preprocessing))
        failed: dict[Path, str] = {}
        ok = np.ones(len(paths), dtype=bool)
        if todo:
            console.info(f"extracting features of {len(todo)} image(s) with engine {engine}, exported earlier "
                         f"({len(paths) - len(todo)} cached)")
            ahead = _start_decoding(paths, todo, key.preprocessing, request.workers)
            batches = (_decoded_batches(ahead, todo, runner.batch_size) if ahead is not None
                       else _decoded_here(paths, todo, key.preprocessing, runner.batch_size))
            try:
                _compute(runner, batches, -(-len(todo) // runner.batch_size), _Sink(paths, features, found, ok, failed),
                         console)
            finally:
                if ahead is not None:
                    ahead.close()
    return FeatureSet(found[ORIGINAL], found.get(FLIPPED), ok, failed, engine, len(todo),
                      time.perf_counter() - start)


def _through_pytorch(paths: list[Path], request: FeatureRequest, backbone: Pretrained, cache: CacheLayout,
                     console: Console) -> FeatureSet:
    """Features from the cache, the missing ones computed by PyTorch (or by the engine it exports),
    while DataLoader workers decode; the backbone is recorded for runs without PyTorch."""
    from ..data.loader import ImageDataset, make_loader
    from ..device import engine_candidates, resolve_device
    from .engines import PooledFeatures, create_engine

    start = time.perf_counter()
    device = resolve_device(request.device)
    spec, preprocessing = backbone.spec, backbone.preprocessing
    module = PooledFeatures(backbone.module, preprocessing)
    remember_backbone(cache, request.backbone, spec, preprocessing, backbone.module)
    names = engine_candidates(request.engine, device)

    def key_for(name: str) -> ExtractorKey:
        return ExtractorKey(spec.architecture, spec.weights, preprocessing, name, spec.num_features)

    # The first candidate engine is the one used unless it fails: look there first, so a
    # warm run never builds an engine at all.
    features = cache.open_features(key_for(names[0]))
    found = _matrices(len(paths), spec.num_features, features.scratch_folder, request.flip)
    todo = _lookup(features, paths, found, request.recompute)
    used = names[0]
    failed: dict[Path, str] = {}
    ok = np.ones(len(paths), dtype=bool)
    if todo:
        runner = create_engine(request.engine, module, preprocessing.input_size, device,
                               lambda name: cache.engine_file(key_for(name)),
                               _sample_batch(paths, todo, preprocessing), console)
        used = runner.name
        if used == "onnx" and runner.error is not None:
            cache.mark_engine_checked(key_for(used), runner.error)
        if used != names[0]:
            features.close()
            features = cache.open_features(key_for(used))
            todo = _lookup(features, paths, found, request.recompute)
        console.info(f"extracting features of {len(todo)} image(s) with engine {used} "
                     f"({len(paths) - len(todo)} cached)")
        gpu = device.type == "cuda"
        dataset = ImageDataset.for_eval([paths[i] for i in todo], todo, preprocessing)
        loader = make_loader(dataset, runner.batch_size, workers=extraction_workers(request.workers, gpu), gpu=gpu)
        _compute(runner, _loader_batches(loader, todo), -(-len(todo) // runner.batch_size),
                 _Sink(paths, features, found, ok, failed), console)
    features.close()
    return FeatureSet(found[ORIGINAL], found.get(FLIPPED), ok, failed, used, len(todo),
                      time.perf_counter() - start)


def _matrices(rows: int, dim: int, folder: Path | None, flip: bool) -> dict[int, FeatureMatrix]:
    """One float16 matrix per variant asked for, beside the cache (so on the same disk)."""
    return {variant: FeatureMatrix(rows, dim, folder) for variant in ([ORIGINAL, FLIPPED] if flip else [ORIGINAL])}


@dataclass
class _Sink:
    """Where computed features go: the cache, the rows of ``found``, and the failures."""

    paths: Sequence[Path]
    cache: FeatureCache
    found: dict[int, FeatureMatrix]
    ok: np.ndarray  # bool per path: False where an image failed to decode
    failed: dict[Path, str]


_Batches = Iterator[tuple[np.ndarray, list[int], list[tuple[int, str]]]]


def _compute(runner: Callable[[np.ndarray], np.ndarray], batches: _Batches, count: int, sink: _Sink,
             console: Console) -> None:
    """Run ``runner`` on every batch (and its mirror images, when ``sink.found`` has them)."""
    for images, rows, failures in console.progress(batches, total=count, desc="features"):
        for row, reason in failures:
            sink.failed[sink.paths[row]] = reason
            sink.ok[row] = False
        if not rows:
            continue
        batch_paths = [sink.paths[row] for row in rows]
        for variant, matrix in sink.found.items():
            features = runner(np.ascontiguousarray(images[..., ::-1]) if variant == FLIPPED else images)
            sink.cache.store(batch_paths, features, variant)
            for row, feature in zip(rows, features):
                matrix.write(row, feature)


def _exported_engine(cache: CacheLayout, key: ExtractorKey):
    """The checked exported engine of ``key``, ready to run in ONNX Runtime; None without one."""
    from .onnx_engine import FeatureSession

    path = cache.checked_engine_file(key)
    if path is None:
        return None
    try:
        return FeatureSession(path)
    except Exception:  # onnxruntime raises its own untyped errors for a damaged file
        return None


def _start_decoding(paths: Sequence[Path], missing: Sequence[int], preprocessing: Preprocessing,
                    workers: int | None) -> DecodeAhead | None:
    """Start decoding the images whose features are missing in child processes; None where that
    is not possible or not wanted (``workers=0``: decode in the main process)."""
    processes = extraction_workers(workers, gpu=False)
    if not missing or not processes or not DecodeAhead.AVAILABLE:
        return None
    return DecodeAhead([paths[i] for i in missing], preprocessing, processes)


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


def _lookup(cache: FeatureCache, paths: Sequence[Path], found: dict[int, FeatureMatrix],
            recompute: bool = False) -> list[int]:
    if recompute:
        return list(range(len(paths)))
    missing = set()
    for variant, matrix in found.items():
        missing.update(cache.lookup(paths, matrix, variant))
    return sorted(missing)


def _sample_batch(paths: Sequence[Path], todo: Sequence[int], preprocessing: Preprocessing,
                  size: int = 8) -> np.ndarray | None:
    """A few decodable images to check an engine's features against eager fp32."""
    pixels = next(_decoded_here(paths, todo[:4 * size], preprocessing, 4 * size))[0][:size]
    return pixels if len(pixels) else None
