"""The OpenVINO format's exporter and int8 quantizer (its runtime is :mod:`.openvino_runtime`).

The IR is converted by OpenVINO's own converter from the ONNX graph headstart already writes and
checks (:mod:`.source`): one traced graph for both formats, so what differs between
them is the converter alone, and the parity check sees it. Weights stay fp32 (OpenVINO's
default compresses them to fp16). ``--int8`` quantizes the IR with NNCF's post-training
quantization, calibrated on training photos.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .._console import Console
from .files import staged
from .openvino_runtime import OpenVinoClassifier, openvino_module
from .quantize import Int8Report, check_int8
from .runtime import METADATA_KEY, missing_extra
from .source import onnx_source

__all__ = ["write_openvino", "quantize_openvino"]


def write_openvino(clf, path: str | Path, console: Console) -> None:
    """Write ``clf`` (a fitted ImageClassifier) as an OpenVINO IR: ``path`` (.xml) and its .bin."""
    ov = openvino_module()
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path, meta = onnx_source(clf, Path(scratch), console)
        console.info("converting to OpenVINO IR")
        model = ov.convert_model(str(onnx_path))
    model.set_rt_info(json.dumps(meta), [METADATA_KEY])
    ov.save_model(model, str(path), compress_to_fp16=False)


def quantize_openvino(fp32_path: Path, int8_path: Path, calibration: Sequence[Path], val_images: Sequence[Path],
                      val_labels: Sequence[int], max_drop: float, console: Console) -> Int8Report:
    """NNCF post-training int8 quantization of the IR ``fp32_path``, calibrated on ``calibration``
    (training) images; written only when validation accuracy drops by at most ``max_drop`` points."""
    try:
        import nncf
    except ImportError:
        raise missing_extra("nncf", "--int8 for OpenVINO", "nncf") from None
    ov = openvino_module()
    fp32 = OpenVinoClassifier(fp32_path)
    pixels = []
    for image in console.progress(calibration, total=len(calibration), desc="int8 calibration"):
        try:
            pixels.append(fp32.pixels(image)[None])
        except Exception:  # an unreadable calibration image is simply not used
            continue
    console.info(f"int8: quantizing with NNCF, calibrated on {len(pixels)} training image(s)")
    model = ov.Core().read_model(str(fp32_path))
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars: stdout carries results only
        quantized = nncf.quantize(model, nncf.Dataset(pixels), subset_size=max(1, len(pixels)))
    quantized.set_rt_info(json.dumps(fp32.metadata), [METADATA_KEY])
    with staged(int8_path, (".bin",)) as tmp:
        ov.save_model(quantized, str(tmp), compress_to_fp16=False)
        report = check_int8(fp32, OpenVinoClassifier(tmp), val_images, val_labels, max_drop, int8_path, console)
    return report
