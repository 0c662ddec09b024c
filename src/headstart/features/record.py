"""The cache's record of each pretrained backbone it holds features of: what lets a cached run
skip PyTorch.

A record holds the backbone's spec, its preprocessing and its tensors, with
their SHA-256. With it, a lightweight run on the CPU reads its features from
the cache (or computes the missing ones with the exported engine) and writes
the same model file as a run through PyTorch, tensor for tensor, without
importing PyTorch or timm. Nothing here imports them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_path, file_digest, read_json, write_json
from ..config import BackboneRequest, BackboneSpec, Preprocessing, from_json
from ..errors import ModelFileError, UsageError
from .cache import CacheLayout

__all__ = ["BackboneRecord", "backbone_identity", "recall_backbone", "remember_backbone"]


@dataclass(frozen=True)
class BackboneRecord:
    """What the cache remembers of a pretrained backbone."""

    spec: BackboneSpec
    preprocessing: Preprocessing
    tensors: Path  # safetensors: every tensor of the network but the head's, named as in the model file


def backbone_identity(request: BackboneRequest) -> dict | None:
    """What identifies a backbone before it is built: the name and image size asked for, the
    weights (by digest or package version) and the versions that build it. None for weights
    from the hub, which only timm can name."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__
    from ..backbone.weights import weights_source

    try:
        timm = version("timm")
    except PackageNotFoundError:  # then nothing can build a backbone, and the run says so
        return None
    source = weights_source(request.name, request.weights)
    if source is None:
        return None
    return {"name": request.name, "weights": source, "image_size": request.image_size, "timm": timm,
            "headstart": __version__}


def recall_backbone(cache: CacheLayout, request: BackboneRequest) -> BackboneRecord | None:
    """The record of ``request``, if the cache has an intact one: its tensors' SHA-256 is checked,
    so a damaged record is never used (it is rewritten by the next run through PyTorch)."""
    identity = backbone_identity(request)
    if identity is None:
        return None
    folder = cache.record_folder(identity)
    tensors = folder / "tensors.safetensors"
    try:
        saved = read_json(folder / "backbone.json")
        if saved["request"] != identity or saved["sha256"] != file_digest(tensors):
            return None
        return BackboneRecord(from_json(BackboneSpec, saved["spec"], "spec"),
                              from_json(Preprocessing, saved["preprocessing"], "preprocessing"), tensors)
    except (OSError, ValueError, KeyError, TypeError, UsageError, ModelFileError):
        return None


def remember_backbone(cache: CacheLayout, request: BackboneRequest, spec: BackboneSpec,
                      preprocessing: Preprocessing, module: Any) -> None:
    """Record the pretrained backbone ``module`` that ``request`` built (a PyTorch module, used
    through its ``state_dict`` alone). Its tensors are written first, so a record never points to
    a partial file (13 MB for Lite0, once). Nothing is done when an intact record is there, or
    when the weights cannot be named without timm."""
    identity = backbone_identity(request)
    if identity is None or recall_backbone(cache, request) is not None:
        return
    from safetensors.numpy import save_file

    # Named as in the model file, where the backbone sits under "backbone.".
    tensors = {f"backbone.{k}": v.detach().cpu().contiguous().numpy() for k, v in module.state_dict().items()}
    folder = cache.record_folder(identity)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "tensors.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(folder / "backbone.json", {"request": identity, "spec": asdict(spec),
                                          "preprocessing": asdict(preprocessing),
                                          "sha256": file_digest(folder / "tensors.safetensors")})
