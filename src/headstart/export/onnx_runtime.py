"""The ONNX format's runtime: an exported model run with ONNX Runtime, NumPy and Pillow only.

``headstart export RUN`` writes one ``.onnx`` file that carries, in its
metadata, the class names and the preprocessing (and for a multi-label model,
whose outputs are a sigmoid per class, each class's decision threshold; for a single-label
model, what ``reject`` and ``coverage`` decide with, from :mod:`headstart.trust`); this
module needs nothing else. It never imports PyTorch or timm, so a deployment installs
``pip install headstart`` (no ``[train]`` extra) and stays small.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .._io import file_problem
from ..config import HeadSpec, Preprocessing, from_json
from ..data.images import network_input, predict_in_batches
from ..errors import ModelFileError, UsageError
from ..predictor import Prediction, ProbabilityPredictor

__all__ = ["OnnxClassifier", "METADATA_KEY"]

METADATA_KEY = "headstart"  # the ONNX metadata entry holding classes and preprocessing, as JSON


class OnnxClassifier(ProbabilityPredictor):
    """An exported headstart model: ``predict``/``predict_proba`` like :class:`ImageClassifier`."""

    def __init__(self, path: str | Path, batch_size: int = 32):
        import onnxruntime as ort

        path = Path(path)
        problem = file_problem(path)
        if problem == "is missing":
            raise ModelFileError(f"model file not found: {path}")
        if problem is not None:
            raise ModelFileError(f"{path} {problem}: refused")
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: graph-cleanup notices are not the user's concern
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelFileError(f"{path} is not a readable ONNX model: {exc}") from None
        if raw is None:
            raise ModelFileError(f"{path} has no headstart metadata: export it with 'headstart export'")
        try:
            meta = json.loads(raw)
            self.classes_ = tuple(str(c) for c in meta["classes"])
            self.preprocessing = from_json(Preprocessing, meta["preprocessing"], "preprocessing")
            self.multi_label_ = meta["multi_label"] is True
            self.thresholds_ = np.array(meta["thresholds"], dtype=np.float64) if self.multi_label_ else None
            if self.multi_label_ and len(self.thresholds_) != len(self.classes_):
                raise ValueError(f"{len(self.thresholds_)} thresholds for {len(self.classes_)} classes")
            # The temperature is already in the graph: the head keeps it as the run's config.json does.
            self.head_ = HeadSpec(len(self.classes_), multi_label=self.multi_label_,
                                  thresholds=tuple(self.thresholds_) if self.multi_label_ else (),
                                  temperature=meta.get("temperature", 1.0),
                                  conformal_scores=tuple(meta.get("conformal_scores", ())),
                                  reject_threshold=meta.get("reject_threshold"))
        except (ValueError, KeyError, TypeError, UsageError) as exc:
            raise ModelFileError(f"{path}: damaged headstart metadata ({exc})") from None
        except RecursionError:
            raise ModelFileError(f"{path}: damaged headstart metadata (its JSON is nested too deeply)") from None
        outputs = self.session.get_outputs()[0].shape[-1]
        # A model whose metadata names fewer (or more) classes than it outputs would index
        # past its class list, or label every image wrongly: refused on opening.
        if isinstance(outputs, int) and outputs != len(self.classes_):
            raise ModelFileError(f"{path}: its metadata names {len(self.classes_)} classes but the model "
                                 f"outputs {outputs} probabilities per image")
        self.metadata = meta
        self.batch_size = batch_size
        self._input = self.session.get_inputs()[0].name

    def pixels(self, path: Path) -> np.ndarray:
        """The network's input for one image: uint8, channels first, resized and cropped."""
        return network_input(path, self.preprocessing)

    def iter_predict(self, paths: Sequence[str | Path], batch_size: int | None = None, tta: bool = False
                     ) -> Iterator[Prediction]:
        """Predictions for ``paths`` in order, batch by batch; decoding runs on every core."""
        for path, proba, error in predict_in_batches([Path(p) for p in paths], self.preprocessing, self.run,
                                                     batch_size or self.batch_size, tta):
            yield Prediction(path, proba, error)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch (N, 3, H, W)."""
        out = self.session.run(None, {self._input: batch})[0]
        if out.ndim != 2 or out.shape[1] != len(self.classes_):  # an output size the graph did not declare
            raise ModelFileError(f"the model outputs {out.shape[-1]} probabilities per image, but its metadata "
                                 f"names {len(self.classes_)} classes")
        return out
