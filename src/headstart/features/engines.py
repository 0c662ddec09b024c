"""Engines that run the frozen backbone to pooled features, as fast as the machine allows.

Measured on a 2-core AVX-512 CPU, EfficientNet-Lite0 at 224 px, batch 64
(``benchmarks/bench_workflows.py`` measures them again on any machine):

========================  =======  ==========================
engine                    img/s    vs eager fp32
========================  =======  ==========================
``eager`` (fp32)          ~35      1x, the reference
``bf16`` (autocast)       ~92      2.6x, features within 7%
``onnx`` (ONNX Runtime)   ~128     3.7x, features within 1e-5
========================  =======  ==========================

``auto`` picks ``onnx`` on a CPU and ``bf16``/``fp16`` autocast on a GPU (the
order of candidates is :func:`headstart.device.engine_candidates`'), and
checks the chosen engine against eager fp32 on the first images: an engine
whose features differ by more than :data:`TOLERANCE` is refused and the next
one tried. ``compile`` (``torch.compile``) is available on request: its
minute-long compilation rarely pays off on a dataset of this size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._console import Console
from ..backbone.head import Head, Normalize
from ..config import Preprocessing
from ..device import autocast, engine_candidates, prepare, to_device
from ..errors import UsageError
from ..export.onnx import export_onnx  # the graph alone, as deployment writes it
from .onnx_engine import FeatureSession

__all__ = ["TOLERANCE", "FeatureEngine", "create_engine", "feature_error", "PooledFeatures"]

# Largest accepted relative L2 distance between an engine's features and eager
# fp32's, per image (0.1 means a cosine similarity of at least ~0.995).
TOLERANCE = 0.1


class PooledFeatures(nn.Module):
    """The backbone followed by the head's global average pooling: what the cache stores.

    It takes images as the whole network does (uint8, normalised inside), so an
    exported engine and the model file agree on their input.
    """

    def __init__(self, backbone: nn.Module, preprocessing: Preprocessing):
        super().__init__()
        self.normalize = Normalize(preprocessing.mean, preprocessing.std)
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return Head.pool(self.backbone.forward_features(self.normalize(images)))


@dataclass
class FeatureEngine:
    """A callable from a batch of images as the network takes them (uint8 NumPy, N x 3 x H x W)
    to their pooled features (float32 NumPy, N x num_features)."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    batch_size: int
    error: float | None = None  # measured against eager fp32 on real images, when it was

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)


def _torch_engine(name: str, module: nn.Module, device: torch.device, dtype: torch.dtype,
                  compile_: bool = False) -> FeatureEngine:
    module = prepare(module, device).eval()
    if compile_:
        module = torch.compile(module)

    def run(images: np.ndarray) -> np.ndarray:
        batch = to_device(torch.from_numpy(np.ascontiguousarray(images)), device)
        with torch.inference_mode(), autocast(device, dtype):
            return module(batch).float().cpu().numpy()

    return FeatureEngine(name, run, batch_size=256 if device.type == "cuda" else 64)


def _onnx_engine(module: nn.Module, input_size: tuple[int, int, int], model_path: Path) -> FeatureEngine:
    if model_path.is_file():
        try:
            session = FeatureSession(model_path)
            return FeatureEngine("onnx", session, session.batch_size)
        except Exception:  # onnxruntime raises its own untyped errors for a damaged file
            model_path.unlink()  # exported again below
    model_path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(module, model_path, input_size, output_name="features")
    session = FeatureSession(model_path)
    return FeatureEngine("onnx", session, session.batch_size)


def feature_error(features: np.ndarray, reference: np.ndarray) -> float:
    """The largest per-image relative L2 distance between two feature batches."""
    distance = np.linalg.norm(features - reference, axis=1)
    return float((distance / np.maximum(np.linalg.norm(reference, axis=1), 1e-12)).max())


def create_engine(name: str, module: PooledFeatures, input_size: tuple[int, int, int], device: torch.device,
                  onnx_path: Callable[[str], Path], sample: np.ndarray | None,
                  console: Console) -> FeatureEngine:
    """The engine ``name`` (or, for ``auto``, the first that works and passes the parity check).

    ``module`` computes the features to run; ``onnx_path(engine)`` says where an
    exported graph is kept; ``sample`` is a small batch of real images for the
    parity check against eager fp32.
    """
    reference = None
    if sample is not None:
        reference = _torch_engine("eager", module, torch.device("cpu"), torch.float32)(sample)
    for candidate in engine_candidates(name, device):
        try:
            engine = _build(candidate, module, input_size, device, onnx_path)
        except Exception as exc:  # an exporter or runtime that cannot handle this network
            if name != "auto":
                raise UsageError(f"--engine {candidate} cannot run backbone: {exc}") from exc
            console.warn(f"engine {candidate} unavailable ({type(exc).__name__}: {exc}); trying the next")
            continue
        if reference is not None and candidate != "eager":
            error = feature_error(engine(sample), reference)
            if error > TOLERANCE:
                if name != "auto":
                    raise UsageError(f"--engine {candidate}: features differ from eager fp32 by {error:.3f} "
                                     f"(tolerance {TOLERANCE})")
                console.warn(f"engine {candidate} differs from eager fp32 by {error:.3f}: trying the next")
                continue
            engine.error = error
        return engine
    raise UsageError("no feature engine works here")  # unreachable: eager always works


def _build(name: str, module: nn.Module, input_size, device: torch.device, onnx_path) -> FeatureEngine:
    if name == "onnx":
        if device.type != "cpu":
            raise UsageError("--engine onnx runs on the CPU only; use bf16 or fp16 on a GPU")
        return _onnx_engine(module, input_size, onnx_path(name))
    if name == "eager":
        return _torch_engine(name, module, device, torch.float32)
    if name == "compile":
        return _torch_engine(name, module, device, torch.float32, compile_=True)
    if name == "fp16" and device.type != "cuda":
        raise UsageError("--engine fp16 needs a CUDA GPU")
    return _torch_engine(name, module, device, torch.bfloat16 if name == "bf16" else torch.float16)
