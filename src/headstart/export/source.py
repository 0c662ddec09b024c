"""The ONNX file as the source every other format starts from: its graph (OpenVINO converts it)
and its metadata (class names, preprocessing, thresholds: the same JSON in every format's file).

One writer of the metadata, :func:`.onnx.write_onnx`, so that what a deployment reads never
differs between formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._console import Console
from .onnx import write_onnx
from .onnx_runtime import OnnxClassifier

__all__ = ["onnx_source"]


def onnx_source(clf, folder: Path, console: Console) -> tuple[Path, dict[str, Any]]:
    """Write ``clf`` (a fitted ImageClassifier) as ``folder/model.onnx``; return it and its metadata."""
    path = Path(folder) / "model.onnx"
    write_onnx(clf, path, console)
    return path, OnnxClassifier(path).metadata
