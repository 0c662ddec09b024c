"""The last completed epoch of a training run, so an interrupted run can be resumed.

One safetensors file holds everything: the network, the optimiser's moments,
the early-stopping snapshot, the random generators, and (as JSON in its
metadata) the epoch counters and history. One file, replaced atomically after
each epoch: a crash at any moment leaves either the previous epoch or the new
one, never a mix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_path
from ..errors import ModelFileError
from ..runfolder import CHECKPOINT_FILE

if TYPE_CHECKING:
    import torch

__all__ = ["save_checkpoint", "load_checkpoint", "optimizer_tensors", "restore_optimizer"]


def save_checkpoint(run_dir: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(run_dir / CHECKPOINT_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The saved state and tensors, or None when the run has not completed an epoch yet."""
    from safetensors import SafetensorError, safe_open

    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            state = json.loads(f.metadata()["state"])
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"checkpoint {path} is damaged ({exc}): delete it to restart the run") from None
    return state, tensors


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """An optimiser's state_dict split into JSON (hyper-parameters) and named tensors (moments)."""
    import torch

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}, tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict, tensors: dict[str, torch.Tensor],
                      prefix: str) -> None:
    per_param: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, name = key[len(prefix):].split(".", 1)
            per_param.setdefault(int(index), {})[name] = value
    for key, value in saved["scalars"].items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": saved["param_groups"]})
