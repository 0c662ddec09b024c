"""The TFLite (LiteRT) format's exporter (its runtime is :mod:`.tflite_runtime`).

Converted from PyTorch by ``litert-torch`` (Google's maintained converter, no TensorFlow), the
same network the ONNX file holds (:mod:`.source` gives the metadata both carry). The file takes
one uint8 image (1 x 3 x H x W) at a time, as a phone runs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._console import Console
from .onnx import _Probabilities
from .runtime import METADATA_KEY, missing_extra
from .source import onnx_source

__all__ = ["write_tflite", "with_metadata"]


def write_tflite(clf, path: str | Path, console: Console) -> None:
    """Write ``clf`` (a fitted ImageClassifier) as one ``.tflite`` file, its metadata included."""
    try:
        import litert_torch
    except ImportError:
        raise missing_extra("litert-torch", "--format tflite", "litert-torch") from None
    with tempfile.TemporaryDirectory() as scratch:
        _, meta = onnx_source(clf, Path(scratch), console)
        console.info("converting to TFLite with litert-torch (about 20 s)")
        sample = (torch.zeros(1, *clf.config_.preprocessing.input_size, dtype=torch.uint8),)
        converted = Path(scratch) / "model.tflite"
        # Its progress goes to stdout, which carries results only: dropped, as are torch.export's
        # and the converter's notices.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            litert_torch.convert(_Probabilities.of(clf), sample).export(str(converted))
        meta["input"] = "uint8 RGB, 1 x 3 x H x W, resized and centre-cropped as 'preprocessing' says"
        Path(path).write_bytes(with_metadata(converted.read_bytes(), meta))


def with_metadata(content: bytes, meta: dict[str, Any]) -> bytes:
    """The TFLite flatbuffer ``content`` with ``meta`` added as its ``headstart`` metadata entry."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
