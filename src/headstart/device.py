"""Where and how the network runs: the device, the precision, the memory layout, the batch bound,
and which engine runs the backbone to features. Each is decided here and nowhere else.

PyTorch is imported inside the functions that need it: whether a run is on a
CPU for certain (:func:`cpu_only`), and so which engine it will use
(:func:`pytorch_free_engine`), is decided before a cached lightweight run
decides whether to import PyTorch at all.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ._console import Console
from .errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "resolve_device",
    "resolve_precision",
    "autocast",
    "memory_format",
    "prepare",
    "to_device",
    "available_memory",
    "bounded_batch_size",
    "cpu_only",
    "CPU_ENGINE",
    "engine_candidates",
    "pytorch_free_engine",
]

# What --engine auto runs first on a CPU: ONNX Runtime, 3.2-3.7x eager fp32 there
# (benchmarks/README.md). On a GPU, mixed-precision autocast.
CPU_ENGINE = "onnx"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is the first CUDA GPU when there is one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return torch.device(name)


def _cpu_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX), as oneDNN sees it."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype. ``auto``: bf16 where the hardware runs it natively, fp16 on older GPUs.

    On CPUs with AVX-512 BF16 or AMX, bf16 autocast runs EfficientNet about
    4x faster than fp32 with no measurable loss of accuracy.
    """
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise UsageError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_bf16() else torch.float32


def predicting_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype of a trained model's probabilities: fp32 for ``auto``.

    Reduced precision is opt-in when predicting: bf16 moved probabilities by up to 0.08 from the
    run's own predictions.csv and from its exports; "auto" buys speed where it changes nothing.
    """
    return resolve_precision("fp32" if precision == "auto" else precision, device)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on a CPU, where oneDNN's convolutions run faster that way; the default on a GPU.

    Measured on an H200 with EfficientNet-Lite0 (batch 32, bf16): channels-last
    cost 2-5 s of one-time kernel set-up before the first forward pass and 6-11 s
    before the first training step, in every process, against 0.3 s for the
    default layout, while steady-state steps differed by under 5 ms. At a few
    thousand images the set-up is the larger cost.
    """
    import torch

    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def prepare(net: nn.Module, device: torch.device) -> nn.Module:
    """Move ``net`` to ``device``, in the memory layout its convolutions run fastest in there."""
    return net.to(device=device, memory_format=memory_format(device))


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of images moved to ``device`` (asynchronously from pinned memory), laid out as ``prepare``'s net."""
    return images.to(device, non_blocking=True, memory_format=memory_format(device))


# Working memory per input value (3 x H x W) and image while training: EfficientNet-Lite0
# fine-tuned end to end in fp32 measured 550 bytes (79 MB per image at 224 px); rounded up.
_TRAIN_BYTES_PER_INPUT_VALUE = 600


def available_memory(device: torch.device) -> int | None:
    """Bytes free for tensors on ``device`` (None when unknown)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def bounded_batch_size(batch_size: int, input_size: tuple[int, int, int], device: torch.device,
                       console: Console) -> int:
    """``batch_size``, or less when a batch would not fit in half the free memory."""
    free = available_memory(device)
    if free is None:
        return batch_size
    per_image = _TRAIN_BYTES_PER_INPUT_VALUE * input_size[0] * input_size[1] * input_size[2]
    fits = max(1, int(free * 0.5 // per_image))
    if batch_size > fits:
        console.warn(f"--batch-size {batch_size} would not fit in the {free / 2**30:.1f} GiB free on "
                     f"{device.type}: using {fits}")
        return fits
    return batch_size


def cpu_only(device: str) -> bool:
    """Whether ``--device`` means the CPU for certain, known without importing PyTorch: ``cpu``,
    or ``auto`` on a machine with no GPU device nodes (NVIDIA, AMD's ROCm, WSL's GPU bridge) or
    with every GPU hidden. When in doubt, PyTorch decides."""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    return not any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))


def engine_candidates(engine: str, device: torch.device) -> list[str]:
    """The engines to try, in order, for ``--engine engine`` on ``device``: the named one alone,
    or for ``auto``, ONNX Runtime then bf16 (where native) then eager fp32 on a CPU, and
    mixed precision then eager on a GPU."""
    if engine != "auto":
        return [engine]
    if device.type == "cuda":
        import torch

        return ["bf16" if torch.cuda.is_bf16_supported() else "fp16", "eager"]
    return [CPU_ENGINE, *(["bf16"] if _cpu_bf16() else []), "eager"]


def pytorch_free_engine(engine: str, device: str) -> str | None:
    """The engine a run with these settings uses first when it is on a CPU for certain (so its
    features may come from the cache or an exported engine, without PyTorch); None when PyTorch
    must decide: a GPU may be there, or the engine (fp16) needs one."""
    if engine == "fp16" or not cpu_only(device):
        return None
    return CPU_ENGINE if engine == "auto" else engine
