"""Embeddings: each photo's pooled backbone features, with the identity of the backbone they
came from, through the one feature pipeline (so through the feature cache).

The vectors are the features the lightweight head reads, as the cache holds them: one row per
photo, the same whatever other photos are embedded with it. Two sets of vectors are comparable
only when their :class:`BackboneIdentity` is the same: same network, same weights, same
pixels in. A Parquet file (``headstart embed``) carries it in its metadata, and an index
(:mod:`.index`) in its ``index.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._console import Console
from .._io import atomic_path, json_line
from ..config import AUTO_BACKBONE, LABEL_SEP, BackboneRequest, ModelConfig, Preprocessing, from_json
from ..errors import UsageError
from ..features.cache import CacheLayout
from ..features.pipeline import FeatureRequest, extract_features
from .photos import Photo, find_photos

__all__ = ["BackboneIdentity", "Embeddings", "embed_folder", "embed_photos", "embed_images", "run_backbone", "model_backbone",
           "write_parquet", "read_parquet"]

# The Parquet metadata key, and the version of what it holds.
_META_KEY = b"headstart"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class BackboneIdentity:
    """What makes two embeddings comparable: the network, its weights (by package version or
    file digest) and the pixels it is given. The engine is left out: engines agree to
    within a rounding error, and their features share one cache."""

    architecture: str
    weights: str
    num_features: int
    preprocessing: Preprocessing

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming the identity, for messages and file metadata."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        return (f"{self.architecture} ({self.weights}), {self.preprocessing.image_size} px "
                f"[{self.fingerprint}]")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> BackboneIdentity:
        return from_json(cls, data, where)


@dataclass
class Embeddings:
    """Photos and their vectors (float32, one row each), with the backbone that made them and the
    request that builds it again (to embed more photos alike)."""

    photos: list[Photo]
    vectors: np.ndarray
    identity: BackboneIdentity
    request: BackboneRequest


def embed_photos(photos: Sequence[Photo], request: FeatureRequest, cache: CacheLayout,
                 console: Console) -> Embeddings:
    """The embeddings of ``photos``; a photo that cannot be decoded is left out, with a warning."""
    photos = list(photos)
    extraction = extract_features([p.path for p in photos], request, cache, console)
    features = extraction.features
    vectors, ok = features.to_array(), features.ok
    features.close()
    for path, why in features.failed.items():
        console.warn(f"skipping {path}: {why}")
    spec = extraction.spec
    identity = BackboneIdentity(spec.architecture, spec.weights, spec.num_features, extraction.preprocessing)
    keep = np.flatnonzero(ok)
    return Embeddings([photos[i] for i in keep], vectors[keep], identity, request.backbone)


def embed_folder(data: str | Path | None, request: FeatureRequest | None = None, labels: str | Path | None = None,
                 label_sep: str = LABEL_SEP, cache_dir: str | Path | None = None,
                 console: Console | None = None) -> Embeddings:
    """The embeddings of the photos of a folder or label file (:func:`headstart.embed.find_photos`),
    with ``request``'s backbone (default: ``efficientnet_lite0``), through the feature cache in
    ``cache_dir``; the files left out are warned about."""
    console = console or Console(0)
    photos = find_photos(data, labels, label_sep)
    for skipped in photos.skipped:
        console.warn(f"skipping {skipped.path}: {skipped.reason}")
    console.info(f"embedding {len(photos.photos)} photo(s)")
    cache = CacheLayout(cache_dir)
    with cache.in_use():
        return embed_photos(photos.photos, request or FeatureRequest(), cache, console)


def run_backbone(config: ModelConfig) -> BackboneRequest:
    """The backbone a run was trained on, as a request: what its lightweight head reads features of.
    A fine-tuned backbone's own weights are not used (the feature cache holds pretrained ones)."""
    training = config.training
    if training is not None and training.backbone != AUTO_BACKBONE:
        return training.backbone_request
    return BackboneRequest(config.backbone.name, image_size=config.preprocessing.image_size)


def model_backbone(model: Any) -> BackboneRequest:
    """The backbone of an :class:`~headstart.model.ImageClassifier`: a fitted one's, else the one
    its parameters name."""
    config = getattr(model, "config_", None)
    if config is not None:
        return run_backbone(config)
    if model.backbone == AUTO_BACKBONE:
        raise UsageError("embed: backbone='auto' is chosen when fitting: fit the model first, or name a backbone")
    return BackboneRequest(model.backbone, model.weights, model.image_size)


def embed_images(model: Any, paths: Sequence[str | Path]) -> np.ndarray:
    """Each image's pooled backbone features (float32, one row per path, NaN for an image that
    cannot be decoded), from ``model``'s backbone through its feature cache."""
    request = FeatureRequest(model_backbone(model), engine=model.engine, device=model.device, workers=model.workers)
    features = extract_features([Path(p) for p in paths], request, CacheLayout(model.cache_dir),
                                Console(model.verbose)).features
    vectors = features.to_array()
    features.close()
    return vectors


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError("Parquet files need pyarrow: pip install 'headstart[embed]'") from None
    return pyarrow, pyarrow.parquet


def write_parquet(embeddings: Embeddings, path: str | Path) -> Path:
    """One row per photo: ``path``, ``split`` and ``label`` (null where unknown), ``vector`` (a
    fixed-size list of float32); the backbone's identity and request in the file's metadata."""
    pa, pq = _pyarrow()
    dim = embeddings.identity.num_features
    vectors = np.ascontiguousarray(embeddings.vectors, dtype=np.float32).reshape(-1, dim)
    table = pa.table({
        "path": pa.array([str(p.path) for p in embeddings.photos], pa.string()),
        "split": pa.array([p.split or None for p in embeddings.photos], pa.string()),
        "label": pa.array([p.label or None for p in embeddings.photos], pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim),
    })
    meta = {"format_version": _FORMAT_VERSION, "backbone": asdict(embeddings.identity),
            "request": asdict(embeddings.request)}
    table = table.replace_schema_metadata({_META_KEY: json_line(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp))
    return Path(path)


def read_parquet(path: str | Path) -> Embeddings:
    """Embeddings written by :func:`write_parquet`; another file is refused, naming it."""
    pa, pq = _pyarrow()
    try:
        table = pq.read_table(str(path))
        meta = json.loads(table.schema.metadata[_META_KEY])
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"format_version {meta.get('format_version')!r}")
        identity = BackboneIdentity.from_dict(meta["backbone"], "backbone")
        request = from_json(BackboneRequest, meta["request"], "request")
        column = table.column("vector").combine_chunks()
        vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), -1).astype(np.float32)
        rows = zip(*(table.column(name).to_pylist() for name in ("path", "split", "label")))
    except (OSError, AttributeError, KeyError, TypeError, ValueError, pa.ArrowException) as exc:
        raise UsageError(f"{path} is not an embeddings file written by 'headstart embed' ({exc})") from None
    return Embeddings([Photo(Path(p), s or "", l or "") for p, s, l in rows], vectors, identity, request)
