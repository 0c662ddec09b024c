"""What every exported model's runtime shares: opening the file safely, reading the headstart
metadata it carries (class names, preprocessing, a multi-label model's thresholds), and
predicting batch by batch. Each format's runtime (:mod:`.onnx_runtime`, :mod:`.openvino_runtime`,
:mod:`.tflite_runtime`) only opens its file and runs one batch. No PyTorch here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import file_problem
from ..config import HeadSpec, Preprocessing, from_json
from ..data.images import network_input, predict_in_batches
from ..errors import ModelFileError, UsageError
from ..predictor import Prediction, ProbabilityPredictor

__all__ = ["ExportedClassifier", "METADATA_KEY", "missing_extra", "readable_file"]

# The metadata entry that holds classes and preprocessing, as JSON, in every exported format.
METADATA_KEY = "headstart"


def readable_file(path: Path) -> None:
    """Refuse a missing file, or one that reading would hang on (a FIFO, a device)."""
    problem = file_problem(path)
    if problem == "is missing":
        raise ModelFileError(f"model file not found: {path}")
    if problem is not None:
        raise ModelFileError(f"{path} {problem}: refused")


def missing_extra(module: str, what: str, install: str) -> UsageError:
    """The one-line error for a format whose library is not installed: ``install`` is what
    ``pip install`` takes (an extra, ``"headstart[openvino]"``, or a package)."""
    return UsageError(f"{what} needs {module}, which is not installed: pip install {install}")


class ExportedClassifier(ProbabilityPredictor):
    """An exported headstart model: ``predict``/``predict_proba`` like :class:`ImageClassifier`.

    A format's runtime defines ``format_name``, ``_open(path)``, which loads the file and returns
    its metadata's JSON text (None when it has none) and the number of probabilities the model
    declares per image (None when it leaves it open), and ``_forward(batch)``.
    """

    format_name = "exported"
    engine = "exported"  # what runs it, as serve's /model reports it

    def __init__(self, path: str | Path, batch_size: int = 32):
        path = Path(path)
        readable_file(path)
        try:
            raw, outputs = self._open(path)
        except (ModelFileError, UsageError):
            raise
        except Exception as exc:  # each runtime raises its own untyped errors for bad files
            raise ModelFileError(f"{path} is not a readable {self.format_name} model: {self._reason(exc)}") from None
        if raw is None:
            raise ModelFileError(f"{path} has no headstart metadata: export it with 'headstart export'")
        self.metadata = self._read_metadata(path, raw, outputs)
        self.batch_size = batch_size

    def _open(self, path: Path) -> tuple[str | None, int | None]:
        raise NotImplementedError

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _reason(exc: Exception) -> str:
        """The line of a runtime's error that says what is wrong with the file."""
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

    def _read_metadata(self, path: Path, raw: str, outputs: int | None) -> dict[str, Any]:
        try:
            meta = json.loads(raw)
            self.classes_ = tuple(str(c) for c in meta["classes"])
            # A model whose metadata names fewer (or more) classes than it outputs would index
            # past its class list, or label every image wrongly: refused on opening.
            if isinstance(outputs, int) and outputs != len(self.classes_):
                raise ModelFileError(f"{path}: its metadata names {len(self.classes_)} classes but the model "
                                     f"outputs {outputs} probabilities per image")
            self.preprocessing = from_json(Preprocessing, meta["preprocessing"], "preprocessing")
            self.multi_label_ = meta["multi_label"] is True
            self.thresholds_ = np.array(meta["thresholds"], dtype=np.float64) if self.multi_label_ else None
            if self.multi_label_ and len(self.thresholds_) != len(self.classes_):
                raise ValueError(f"{len(self.thresholds_)} thresholds for {len(self.classes_)} classes")
            # The temperature is already in the graph: the head keeps it as the run's config.json does,
            # with what reject and coverage decide with (headstart.trust).
            self.head_ = HeadSpec(len(self.classes_), multi_label=self.multi_label_,
                                  thresholds=tuple(self.thresholds_) if self.multi_label_ else (),
                                  temperature=meta.get("temperature", 1.0),
                                  conformal_scores=tuple(meta.get("conformal_scores", ())),
                                  reject_threshold=meta.get("reject_threshold"))
        except (ValueError, KeyError, TypeError, UsageError) as exc:
            raise ModelFileError(f"{path}: damaged headstart metadata ({exc})") from None
        except RecursionError:
            raise ModelFileError(f"{path}: damaged headstart metadata (its JSON is nested too deeply)") from None
        return meta

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
        out = np.asarray(self._forward(batch))
        if out.ndim != 2 or out.shape[1] != len(self.classes_):  # an output size the graph did not declare
            raise ModelFileError(f"the model outputs {out.shape[-1]} probabilities per image, but its metadata "
                                 f"names {len(self.classes_)} classes")
        return out
