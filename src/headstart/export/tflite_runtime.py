"""The TFLite (LiteRT) format's runtime: an exported ``.tflite`` file run with the LiteRT
interpreter (``ai-edge-litert``), NumPy and Pillow only. The class names, preprocessing and a
multi-label model's thresholds travel in the flatbuffer's own metadata, an entry named
``headstart`` (the same JSON as the ONNX file's). No PyTorch here: a deployment installs
``pip install "headstart[tflite]"``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .runtime import METADATA_KEY, ExportedClassifier, missing_extra

__all__ = ["TfliteClassifier", "litert_module", "read_metadata"]


def litert_module():
    """``ai_edge_litert``, or the one-line error saying how to install it."""
    try:
        import ai_edge_litert.interpreter
    except ImportError:
        raise missing_extra("ai-edge-litert", "a TFLite model", '"headstart[tflite]"') from None
    return ai_edge_litert


def read_metadata(content: bytes) -> str | None:
    """The headstart entry of a TFLite flatbuffer's metadata, as text; None when it has none."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_KEY.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return None if isinstance(data, int) else data.tobytes().decode("utf-8")  # 0: an empty buffer
    return None


class TfliteClassifier(ExportedClassifier):
    """An exported headstart model in TFLite: ``predict``/``predict_proba`` like
    :class:`ImageClassifier`. The file takes one image at a time (what phones run); a batch is
    run image by image."""

    format_name = "TFLite"
    engine = "litert"

    def _open(self, path: Path) -> tuple[str | None, int | None]:
        litert = litert_module()
        content = path.read_bytes()
        # The interpreter verifies the flatbuffer before the metadata is read from it.
        self._interpreter = litert.interpreter.Interpreter(model_content=content, num_threads=os.cpu_count())
        self._interpreter.allocate_tensors()
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0]["index"], outputs[0]["index"]
        # An interpreter holds its tensors between calls: one image at a time, across threads too.
        self._lock = threading.Lock()
        return read_metadata(content), int(outputs[0]["shape"][-1])

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        rows = []
        with self._lock:
            for image in batch:
                self._interpreter.set_tensor(self._input, image[None])
                self._interpreter.invoke()
                rows.append(self._interpreter.get_tensor(self._output)[0].copy())
        return np.stack(rows)
