"""The OpenVINO format's runtime: an exported IR (``.xml`` with its ``.bin`` beside it) run with
OpenVINO Runtime, NumPy and Pillow only. The class names, preprocessing and a multi-label model's
thresholds travel in the IR's ``rt_info`` (the same JSON as the ONNX file's metadata).
No PyTorch here: a deployment installs ``pip install "headstart[openvino]"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runtime import METADATA_KEY, ExportedClassifier, missing_extra, readable_file

__all__ = ["OpenVinoClassifier", "openvino_module"]


def openvino_module():
    """OpenVINO, or the one-line error saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise missing_extra("openvino", "an OpenVINO model", '"headstart[openvino]"') from None
    return openvino


class OpenVinoClassifier(ExportedClassifier):
    """An exported headstart model in OpenVINO IR: ``predict``/``predict_proba`` like
    :class:`ImageClassifier`."""

    format_name = "OpenVINO"
    engine = "openvino"

    def _open(self, path: Path) -> tuple[str | None, int | None]:
        ov = openvino_module()
        weights = path.with_suffix(".bin")
        readable_file(weights)
        core = ov.Core()
        model = core.read_model(str(path), str(weights))
        raw = model.get_rt_info([METADATA_KEY]).astype(str) if model.has_rt_info([METADATA_KEY]) else None
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"expected one input and one output, found {len(model.inputs)} and "
                             f"{len(model.outputs)}")
        classes = model.output(0).get_partial_shape()[-1]
        # fp32 inference even where the CPU offers bf16: the file was checked at fp32, and a
        # deployment must answer as the check did.
        self._compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return raw, classes.get_length() if classes.is_static else None

    @staticmethod
    def _reason(exc: Exception) -> str:
        # OpenVINO's errors start with a line per C++ source file they passed through.
        lines = [line for line in str(exc).strip().splitlines() if line and not line.startswith("Exception from ")]
        return lines[0].strip() if lines else type(exc).__name__

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        # One request per call: a compiled model's default request is not safe to share between
        # the threads of a server.
        return self._compiled.create_infer_request().infer({0: batch})[0]
