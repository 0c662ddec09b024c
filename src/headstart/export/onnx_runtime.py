"""The ONNX format's runtime: an exported model run with ONNX Runtime, NumPy and Pillow only.

``headstart export RUN`` writes one ``.onnx`` file that carries, in its
metadata, the class names and the preprocessing (and for a multi-label model,
whose outputs are a sigmoid per class, each class's decision threshold; for a single-label
model, what ``reject`` and ``coverage`` decide with, from :mod:`headstart.trust`); this
module needs nothing else. It never imports PyTorch or timm, so a deployment installs
``pip install headstart`` (no ``[train]`` extra) and stays small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runtime import METADATA_KEY, ExportedClassifier

__all__ = ["OnnxClassifier", "METADATA_KEY"]


class OnnxClassifier(ExportedClassifier):
    """An exported headstart model: ``predict``/``predict_proba`` like :class:`ImageClassifier`."""

    format_name = "ONNX"
    engine = "onnxruntime"

    def _open(self, path: Path) -> tuple[str | None, int | None]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: graph-cleanup notices are not the user's concern
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        return raw, self.session.get_outputs()[0].shape[-1]

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: batch})[0]
