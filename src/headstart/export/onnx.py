"""The ONNX format's exporter (its runtime is :mod:`.onnx_runtime`, its check :mod:`.parity`).

``write_onnx`` writes a whole trained model as one self-describing file (class names and
preprocessing in its metadata); :mod:`.parity` measures it against PyTorch, which
:meth:`headstart.export.ExportFormat.export` requires before moving it into place.
``export_onnx``, the graph alone, is shared with the lightweight workflow's ``onnx`` feature
engine (:mod:`headstart.features.engines`).

The TorchScript-based exporter is used first: on these CPUs it turns timm's
EfficientNets into graphs that ONNX Runtime runs about 3.7x faster than eager
PyTorch fp32, in under a second, with no extra dependency. The newer
``torch.export``-based exporter is the fallback for networks the tracer rejects.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .._console import Console
from .._io import atomic_path
from ..config import HeadSpec
from .onnx_runtime import METADATA_KEY

__all__ = ["export_onnx", "write_onnx", "ONNX_OPSET"]

ONNX_OPSET = 17


def export_onnx(module: nn.Module, path: str | Path, input_size: tuple[int, int, int],
                input_name: str = "images", output_name: str = "output",
                input_dtype: torch.dtype = torch.uint8) -> Path:
    """Write ``module`` (fp32, CPU, eval mode) to ``path`` with a dynamic batch axis.

    headstart's networks take raw uint8 pixels (they normalise inside), and so does the graph.
    """
    path = Path(path)
    module = module.float().cpu().eval()
    example = (torch.zeros(2, *input_size, dtype=input_dtype),)
    kwargs = dict(input_names=[input_name], output_names=[output_name],
                  dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                  opset_version=ONNX_OPSET)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notices
        try:
            torch.onnx.export(module, example, str(tmp), dynamo=False, **kwargs)
        except Exception:
            torch.onnx.export(module, example, str(tmp), dynamo=True, **kwargs)
    return path


class _Probabilities(nn.Module):
    """The whole classifier, uint8 pixels in, class probabilities out: what a deployment wants
    (the softmax of the logits over the head's temperature, or a multi-label model's sigmoid per
    class), as PyTorch gives them (:func:`headstart.backbone.head.activation`). The temperature is
    part of the graph, so any runtime that reads the file gives the calibrated probabilities."""

    def __init__(self, net: nn.Module, head: HeadSpec):
        super().__init__()
        self.net = net
        self.multi_label = head.multi_label
        self.temperature = float(head.temperature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        if self.multi_label:
            return torch.sigmoid(logits)
        return torch.softmax(logits / self.temperature, dim=1)

    @classmethod
    def of(cls, clf) -> _Probabilities:
        """``clf``'s network (a fitted ImageClassifier's, copied), fp32 on the CPU."""
        return cls(copy.deepcopy(clf.net_).float().cpu().eval(), clf.config_.head)


def write_onnx(clf, path: str | Path, console: Console) -> None:
    """Write ``clf`` (a fitted ImageClassifier) as one ONNX file, its metadata included."""
    import onnx

    config = clf.config_
    meta = {"classes": list(config.classes), "preprocessing": dataclasses.asdict(config.preprocessing),
            "backbone": config.backbone.name, "architecture": config.backbone.architecture,
            "input": "uint8 RGB, N x 3 x H x W, resized and centre-cropped as 'preprocessing' says",
            "output": "class probabilities, N x classes", "multi_label": False, "versions": config.versions,
            # Already applied by the graph; the rest is what reject and coverage decide with.
            "temperature": config.head.temperature, "conformal_scores": list(config.head.conformal_scores),
            "reject_threshold": config.head.reject_threshold,
            "metrics": clf.metrics_.scores() if clf.metrics_ is not None else {}}
    if config.head.multi_label:
        meta.update(multi_label=True, thresholds=list(config.head.decision_thresholds()),
                    output="each class's probability (a sigmoid each), N x classes; a class is predicted "
                           "when its probability reaches its threshold")
    console.info(f"exporting {config.backbone.name} and its head to ONNX")
    export_onnx(_Probabilities.of(clf), path, config.preprocessing.input_size, output_name="probabilities")
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    graph.producer_name = "headstart"
    onnx.save(graph, str(path))
