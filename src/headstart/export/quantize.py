"""Static int8 quantization of an exported classifier with ONNX Runtime: written only when it keeps
its validation accuracy (:func:`check_int8`, which every format's int8 copy passes). No PyTorch here.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._console import Console
from .._io import atomic_files
from ..errors import ExportCheckError
from ..predictor import stack_probabilities
from .onnx_runtime import METADATA_KEY, OnnxClassifier
from .runtime import ExportedClassifier

__all__ = ["Int8Report", "quantize_int8", "check_int8"]


@dataclass
class Int8Report:
    fp32_accuracy: float
    int8_accuracy: float
    speedup: float  # int8 images/s over fp32 images/s, same batch, this machine
    images: int = 0  # validation images both were scored on

    @property
    def drop_points(self) -> float:
        return 100 * (self.fp32_accuracy - self.int8_accuracy)

    def entry(self, fmt: str, max_drop: float) -> dict:
        """This check as the int8 file's entry in ``export.json``."""
        return {"format": fmt, "precision": "int8", "measured": True, "images": {"val": self.images},
                "accuracy": {"fp32": self.fp32_accuracy, "int8": self.int8_accuracy},
                "drop_points": self.drop_points, "max_drop": max_drop, "speedup": self.speedup,
                "passed": self.drop_points <= max_drop, "forced": self.drop_points > max_drop}


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: Sequence[Path], val_images: Sequence[Path],
                  val_labels: Sequence[int], max_drop: float, console: Console) -> Int8Report:
    """Static int8 quantization with ONNX Runtime, calibrated on ``calibration`` (training) images.

    Written only when validation accuracy drops by at most ``max_drop`` points.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnxruntime.set_default_logger_severity(3)  # the quantizer's own sessions: errors only
    fp32 = OnnxClassifier(fp32_path)

    class Images(CalibrationDataReader):
        def __init__(self):
            self.paths = iter(console.progress(calibration, total=len(calibration), desc="int8 calibration"))

        def get_next(self):
            for path in self.paths:
                try:
                    return {"images": fp32.pixels(path)[None]}
                except Exception:  # an unreadable calibration image is simply not used
                    continue
            return None

    with atomic_files(int8_path.parent) as new, tempfile.TemporaryDirectory() as scratch:
        tmp, prepared = new(int8_path.name), Path(scratch) / "prepared.onnx"
        console.info(f"int8: quantizing, calibrated on {len(calibration)} training image(s)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Shape inference and graph fusion first, as ONNX Runtime's quantizer recommends.
            quant_pre_process(str(fp32_path), str(prepared))
            quantize_static(str(prepared), str(tmp), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
        graph = onnx.load(str(tmp))
        if not any(p.key == METADATA_KEY for p in graph.metadata_props):
            entry = graph.metadata_props.add()
            entry.key, entry.value = METADATA_KEY, json.dumps(fp32.metadata)
            onnx.save(graph, str(tmp))
        report = check_int8(fp32, OnnxClassifier(tmp), val_images, val_labels, max_drop, int8_path, console)
    return report


def check_int8(fp32: ExportedClassifier, int8: ExportedClassifier, val_images: Sequence[Path],
               val_labels: Sequence[int], max_drop: float, int8_path: Path, console: Console) -> Int8Report:
    """The int8 model ``int8`` against its fp32 source ``fp32`` (both opened exports) on validation:
    refused (:class:`ExportCheckError`) when accuracy drops by more than ``max_drop`` points."""
    labels = np.asarray(val_labels)
    accuracy = {name: _accuracy(m, val_images, labels, console, f"int8: {name} on validation")
                for name, m in (("fp32", fp32), ("int8", int8))}
    report = Int8Report(accuracy["fp32"], accuracy["int8"], _speed(int8, val_images) / _speed(fp32, val_images),
                        len(val_images))
    console.info(f"int8: validation accuracy {report.fp32_accuracy:.2%} -> {report.int8_accuracy:.2%} "
                 f"({-report.drop_points:+.2f} points), speed {report.speedup:.2f}x fp32")
    if report.speedup < 1:
        console.warn(f"int8 is slower than fp32 on this CPU ({report.speedup:.2f}x): keep the fp32 model "
                     "unless file size matters more than speed")
    if report.drop_points > max_drop:
        raise ExportCheckError(f"int8 loses {report.drop_points:.2f} points of validation accuracy "
                               f"(--max-drop {max_drop:g}): {int8_path} not written (--force writes it anyway)")
    return report


def _accuracy(model: ExportedClassifier, images: Sequence[Path], labels: np.ndarray, console: Console,
              desc: str) -> float:
    predictions = console.progress(model.iter_predict(images), total=len(images), desc=desc)
    return float((stack_probabilities(predictions, len(images), len(model.classes_)).argmax(1) == labels).mean())


def _speed(model: ExportedClassifier, images: Sequence[Path], repeats: int = 3) -> float:
    """Images per second of the network alone, on one batch of real images (median of repeats)."""
    batch = np.stack([model.pixels(p) for p in images[:32]])
    model.run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.run(batch)
        times.append(time.perf_counter() - start)
    return len(batch) / statistics.median(times)
