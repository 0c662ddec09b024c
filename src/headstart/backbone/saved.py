"""The network as ``model.safetensors`` holds it: built from ``config.json``, loaded and checked
tensor by tensor, and written back on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import ModelFileError
from .head import ClassifierNet, Head
from .pretrained import build_architecture

__all__ = ["build_network", "load_tensors", "saved_tensors"]


def load_tensors(net: ClassifierNet, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file: {exc}") from None
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise ModelFileError(f"{path} does not match its config.json: {len(missing)} missing, "
                             f"{len(unexpected)} unexpected, {len(wrong)} wrong-shape tensors (e.g. {first})")
    net.load_state_dict(state)


def build_network(config: ModelConfig) -> ClassifierNet:
    """The network ``config`` describes, randomly initialised: its weights come from a saved model."""
    return ClassifierNet(build_architecture(config.backbone), Head(config.backbone.num_features, config.head),
                         config.preprocessing)


def saved_tensors(net: ClassifierNet) -> dict[str, torch.Tensor]:
    """The network's tensors as saved: on the CPU, contiguous."""
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
