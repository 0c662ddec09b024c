"""device.py: where the network runs, in what precision and layout, and which engine extracts features.

Whether a GPU is there is faked where it matters, so each test means the same on any machine.
"""

import contextlib
import io
import types

import pytest
import torch

from headstart import device
from headstart._console import Console
from headstart.errors import UsageError

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)  # a description: nothing is allocated on it


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("bf16", [True, False])
def test_a_cpu_gets_bf16_only_where_it_runs_natively(monkeypatch, bf16: bool):
    monkeypatch.setattr(device, "_cpu_bf16", lambda: bf16)
    assert device.resolve_precision("auto", CPU) == (torch.bfloat16 if bf16 else torch.float32)
    assert device.resolve_precision("fp32", CPU) == torch.float32
    assert device.resolve_precision("bf16", CPU) == torch.bfloat16
    assert device.engine_candidates("auto", CPU) == ["onnx", *(["bf16"] if bf16 else []), "eager"]


def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_refused(no_gpu):
    assert device.resolve_device("auto") == CPU
    assert device.resolve_device("cpu") == CPU
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UsageError, match=f"^--device {name}: no CUDA GPU is available here; use --device cpu$"):
            device.resolve_device(name)


def test_fp16_needs_a_gpu():
    with pytest.raises(UsageError, match="^--precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU$"):
        device.resolve_precision("fp16", CPU)
    assert device.resolve_precision("fp16", GPU) == torch.float16


@pytest.mark.parametrize("bf16,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_a_gpu_mixes_precision_with_bf16_where_it_has_it(monkeypatch, bf16: bool, expected: torch.dtype):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert device.resolve_precision("auto", GPU) == expected
    assert device.engine_candidates("auto", GPU) == [{True: "bf16", False: "fp16"}[bf16], "eager"]


def test_a_named_engine_is_the_only_candidate():
    for engine in ("eager", "bf16", "compile", "onnx"):
        assert device.engine_candidates(engine, CPU) == [engine]


def test_layout_and_autocast_follow_the_device():
    assert device.memory_format(CPU) == torch.channels_last
    assert device.memory_format(GPU) == torch.contiguous_format
    assert isinstance(device.autocast(CPU, torch.float32), contextlib.nullcontext)
    with device.autocast(CPU, torch.bfloat16):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    net = device.prepare(torch.nn.Conv2d(3, 4, 3), CPU)
    assert net.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_batch_that_would_not_fit_in_half_the_free_memory_is_made_smaller(monkeypatch):
    err = io.StringIO()
    per_image = 600 * 3 * 224 * 224
    monkeypatch.setattr(device, "available_memory", lambda _device: 10 * per_image)
    assert device.bounded_batch_size(4, (3, 224, 224), CPU, Console(err=err)) == 4
    assert err.getvalue() == ""
    assert device.bounded_batch_size(32, (3, 224, 224), CPU, Console(err=err)) == 5
    assert "--batch-size 32 would not fit" in err.getvalue() and "using 5" in err.getvalue()
    monkeypatch.setattr(device, "available_memory", lambda _device: None)  # unknown: as asked
    assert device.bounded_batch_size(32, (3, 224, 224), CPU, Console(err=err)) == 32
    monkeypatch.undo()
    assert device.available_memory(CPU) > 0


def _gpu_nodes(monkeypatch, *present: str) -> None:
    monkeypatch.setattr(device, "Path", lambda node: types.SimpleNamespace(exists=lambda: node in present))


def test_cpu_only_is_known_without_pytorch_when_certain(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _gpu_nodes(monkeypatch)
    assert device.cpu_only("cpu") and device.cpu_only("auto")
    assert not device.cpu_only("cuda") and not device.cpu_only("cuda:0")
    for node in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg"):  # NVIDIA, ROCm, WSL: PyTorch decides
        _gpu_nodes(monkeypatch, node)
        assert not device.cpu_only("auto")
    for hidden in ("", "-1"):  # every GPU hidden
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert device.cpu_only("auto")


def test_the_engine_a_cpu_run_uses_before_pytorch_is_imported(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _gpu_nodes(monkeypatch)
    assert device.pytorch_free_engine("auto", "auto") == device.CPU_ENGINE == "onnx"
    assert device.pytorch_free_engine("eager", "cpu") == "eager"
    assert device.pytorch_free_engine("fp16", "cpu") is None  # needs a GPU: PyTorch says so
    assert device.pytorch_free_engine("auto", "cuda") is None
    _gpu_nodes(monkeypatch, "/dev/nvidia0")
    assert device.pytorch_free_engine("auto", "auto") is None
