"""The Core ML format: an ``.mlpackage`` (an ML Program) converted by coremltools from the PyTorch
network (through ``torch.export``), with the class names as the classifier's labels and headstart's metadata (the
same JSON as the ONNX file's) in the package's user-defined metadata.

Core ML runs only on Apple devices: on any other OS the export checks what it can read from the
package (its input and output shapes, its class labels, its preprocessing) and records that
parity was not measured. headstart does not run ``.mlpackage`` files itself.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .._console import Console
from ..config import Preprocessing, from_json
from ..errors import ModelFileError, UsageError
from .files import Check, Parity
from .onnx import _Probabilities
from .runtime import METADATA_KEY, missing_extra
from .source import onnx_source

__all__ = ["write_coreml", "check_coreml", "open_coreml"]


def _coremltools():
    # Off macOS, coremltools logs a dozen warnings on import that it cannot run models here (which
    # the export says once), and one that this PyTorch is newer than it was tested with.
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError:
        raise missing_extra("coremltools", "--format coreml", '"headstart[coreml]"') from None
    return coremltools


class _FloatPixels(nn.Module):
    """The classifier fed 0-255 pixel values as float32 (Core ML's tensor inputs are floats); the
    network takes floats as 0-1."""

    def __init__(self, probabilities: nn.Module):
        super().__init__()
        self.probabilities = probabilities

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.probabilities(images / 255)


def write_coreml(clf, path: str | Path, console: Console) -> None:
    """Write ``clf`` (a fitted ImageClassifier) as a Core ML package (a folder ending .mlpackage)."""
    ct = _coremltools()
    with tempfile.TemporaryDirectory() as scratch:
        _, meta = onnx_source(clf, Path(scratch), console)
    meta["input"] = "float32 RGB pixel values 0-255, 1 x 3 x H x W, resized and centre-cropped as 'preprocessing' says"
    shape = (1, *clf.config_.preprocessing.input_size)
    console.info("converting to Core ML with coremltools")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.export's and the converter's notices
        # torch.export rather than the tracer: coremltools fails on the tracer's size arithmetic
        # of timm's EfficientNets with NumPy 2.
        program = torch.export.export(_FloatPixels(_Probabilities.of(clf)).eval(), (torch.zeros(shape),))
        labels = None if meta["multi_label"] else ct.ClassifierConfig(list(meta["classes"]))
        model = ct.convert(program.run_decompositions({}), inputs=[ct.TensorType(name="images", shape=shape)],
                           classifier_config=labels, convert_to="mlprogram",
                           compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16)
    model.user_defined_metadata[METADATA_KEY] = json.dumps(meta)
    model.short_description = f"headstart image classifier: {', '.join(meta['classes'])}"
    model.save(str(path))


def check_coreml(clf, path: Path, check: Check, console: Console) -> Parity:
    """What can be checked of a Core ML package without running it: its input shape, its
    outputs (one probability per class, labelled with the run's classes) and its metadata."""
    ct = _coremltools()
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    config = clf.config_
    [image] = spec.description.input
    shape = tuple(image.type.multiArrayType.shape)
    if shape != (1, *config.preprocessing.input_size):
        raise ModelFileError(f"{path}: the package takes {shape}, not 1 x {config.preprocessing.input_size}")
    meta = json.loads(spec.description.metadata.userDefined[METADATA_KEY])
    preprocessing = from_json(Preprocessing, meta["preprocessing"], "preprocessing")
    if tuple(meta["classes"]) != tuple(config.classes) or preprocessing != config.preprocessing:
        raise ModelFileError(f"{path}: its metadata does not describe the run's classes and preprocessing")
    labels = _class_labels(spec) if not config.head.multi_label else tuple(meta["classes"])
    if labels != tuple(config.classes):
        raise ModelFileError(f"{path}: its class labels {labels} are not the run's {tuple(config.classes)}")
    console.info(f"Core ML package checked: input {shape}, {len(labels)} class labels, preprocessing")
    return Parity.unmeasured(f"Core ML runs only on Apple devices; on this OS ({sys.platform}) the package's "
                             "input, class labels and preprocessing were checked, its answers were not")


def _class_labels(spec) -> tuple[str, ...]:
    """The labels of the program's ``classify`` op (what a classifier's outputs are keyed by)."""
    for block in spec.mlProgram.functions["main"].block_specializations.values():
        for op in block.operations:
            if op.type == "classify":
                labels = op.inputs["classes"].arguments[0].value.immediateValue.list.values
                return tuple(s for label in labels for s in label.immediateValue.tensor.strings.values)
    return ()


def open_coreml(path: Path):
    """headstart does not run Core ML packages: the one-line error that says where they run."""
    raise UsageError(f"{path}: a Core ML package runs on Apple devices (Xcode, Core ML); headstart predicts "
                     "with a run folder or a .onnx, .xml or .tflite export")
