"""Training: stage 1 (the head on a frozen backbone), then the guarded fine-tune.

Stage 1 trains only the head while the backbone is frozen. Stage 2, when
asked for, unfreezes the backbone (or its last blocks) and retrains end to end
at a very low learning rate, BatchNorm still in inference mode. Its result is
kept only if validation improves; otherwise the stage-1 weights are restored
and the user is told.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ._console import Console
from .backbone import freeze, unfreeze
from .checkpoint import optimizer_tensors, restore_optimizer, save_checkpoint
from .config import TrainingConfig
from .errors import UsageError
from .results import EpochStats, StageResult, TrainResult
from .head import ClassifierNet

__all__ = [
    "resolve_device",
    "resolve_precision",
    "autocast",
    "prepare",
    "to_device",
    "run_epoch",
    "train_stage",
    "fit",
    "fine_tune",
    "Checkpointing",
]

def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype. ``auto``: bf16 where the hardware runs it natively, fp16 on older GPUs.

    On CPUs with AVX-512 BF16 or AMX, bf16 autocast runs EfficientNet about
    4x faster than fp32 with no measurable loss of accuracy.
    """
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
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


# Working memory per input value (3 x H x W) and image while training: EfficientNet-Lite0
# fine-tuned end to end in fp32 measured 550 bytes (79 MB per image at 224 px); rounded up.
_TRAIN_BYTES_PER_INPUT_VALUE = 600


def available_memory(device: torch.device) -> int | None:
    """Bytes free for tensors on ``device`` (None when unknown)."""
    if device.type == "cuda":
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


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
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
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def prepare(net: nn.Module, device: torch.device) -> nn.Module:
    """Move ``net`` to ``device``, in the memory layout its convolutions run fastest in there."""
    return net.to(device=device, memory_format=memory_format(device))


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of images moved to ``device`` (asynchronously from pinned memory), laid out as ``prepare``'s net."""
    return images.to(device, non_blocking=True, memory_format=memory_format(device))


def run_epoch(net: ClassifierNet, loader: DataLoader, device: torch.device, dtype: torch.dtype,
              criterion: nn.Module, optimizer: torch.optim.Optimizer | None = None,
              scaler: torch.amp.GradScaler | None = None, console: Console | None = None,
              desc: str = "") -> EpochStats:
    """One pass over ``loader``: trains when given an optimizer, else only measures."""
    training = optimizer is not None
    net.train(training)
    total_loss, correct, count, failed = 0.0, 0, 0, []
    batches = console.progress(loader, total=len(loader), desc=desc) if console else loader
    grad = torch.enable_grad() if training else torch.inference_mode()
    with grad:
        for batch in batches:
            failed += batch.failed
            if not batch.indices:
                continue
            images = to_device(batch.images, device)
            labels = batch.labels.to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = net(images)
            loss = criterion(logits.float(), labels)
            if training:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            n = labels.numel()
            total_loss += loss.item() * n
            correct += (logits.argmax(1) == labels).sum().item()
            count += n
    if count == 0:
        return EpochStats(math.nan, math.nan, 0, failed)
    return EpochStats(total_loss / count, correct / count, count, failed)


def _trainable(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]


@dataclass
class Checkpointing:
    """Where to checkpoint after every epoch, and the checkpoint to resume from, if any."""

    run_dir: Path | None = None
    state: dict | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def resumes(self, stage: str) -> bool:
        return self.state is not None and self.state["stage"] == stage and not self.state["complete"]

    def passed(self, stage: str) -> bool:
        """Whether the checkpoint lies beyond ``stage``: the stage is done and is not rerun."""
        if self.state is None:
            return False
        return self.state["stage"] != stage or self.state["complete"]

    def tensors_with(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def _stats_dict(stats: EpochStats | None) -> dict | None:
    return None if stats is None else {"loss": stats.loss, "accuracy": stats.accuracy, "count": stats.count}


def _stats_from(data: dict | None) -> EpochStats | None:
    return None if data is None else EpochStats(data["loss"], data["accuracy"], data["count"])


def train_stage(net: ClassifierNet, stage: str, train_loader: DataLoader, val_loader: DataLoader | None,
                epochs: int, lr: float, config: TrainingConfig, device: torch.device, dtype: torch.dtype,
                result: TrainResult, console: Console, on_epoch: Callable[[dict], None] | None = None,
                checkpointing: Checkpointing | None = None, carry: dict | None = None) -> StageResult:
    """Train the parameters that require grad for up to ``epochs`` epochs.

    With a validation split, stops after ``config.patience`` epochs without a
    lower validation loss and restores the best epoch's weights. With
    ``checkpointing``, saves every completed epoch (and ``carry``: state and
    tensors a later stage needs) and resumes from a checkpoint of this stage.
    """
    checkpointing = checkpointing or Checkpointing()
    carry = carry or {"state": {}, "tensors": {}}
    optimizer = torch.optim.AdamW(_trainable(net), lr=lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    criterion = nn.CrossEntropyLoss(weight=_class_weights(train_loader, config, device),
                                    label_smoothing=config.label_smoothing)
    measure = nn.CrossEntropyLoss()
    best_loss, best_epoch, best_state, best_val = math.inf, 0, None, None
    first = 1
    if checkpointing.resumes(stage):
        saved, tensors = checkpointing.state, checkpointing.tensors
        net.load_state_dict(checkpointing.tensors_with("net."))
        restore_optimizer(optimizer, saved["optimizer"], tensors, "optim.")
        schedule.load_state_dict(saved["schedule"])
        best_loss, best_epoch = saved["best_loss"], saved["best_epoch"]
        best_val = _stats_from(saved["best_val"])
        best_state = checkpointing.tensors_with("best.") or None
        _restore_rng(tensors, device)
        train_loader.generator.set_state(tensors["rng.loader"])
        first = saved["epoch"] + 1
        result.history[:] = saved["history"]
        console.info(f"resuming {stage} at epoch {first}/{epochs}")
    epoch = first - 1
    stopped = False
    for epoch in range(first, epochs + 1):
        start = time.perf_counter()
        current_lr = optimizer.param_groups[0]["lr"]
        train = run_epoch(net, train_loader, device, dtype, criterion, optimizer, scaler, console,
                          desc=f"{stage} {epoch}/{epochs}")
        val = run_epoch(net, val_loader, device, dtype, measure, console=console,
                        desc="validate") if val_loader is not None else None
        schedule.step()
        for stats, loader in ((train, train_loader), (val, val_loader)):
            for index, reason in stats.failed if stats else ():
                path = loader.dataset.paths[index]
                if path not in result.failed:
                    console.warn(f"skipping {path}: {reason}")
                    result.failed[path] = reason
        row = {
            "epoch": len(result.history) + 1, "stage": stage,
            "train_loss": train.loss, "train_accuracy": train.accuracy,
            "val_loss": val.loss if val else math.nan, "val_accuracy": val.accuracy if val else math.nan,
            "lr": current_lr, "seconds": time.perf_counter() - start,
        }
        result.history.append(row)
        console.info(_epoch_line(row, epoch, epochs))
        if val is None:
            best_epoch, best_val = epoch, None
        elif val.loss < best_loss:
            best_loss, best_epoch, best_val = val.loss, epoch, val
            best_state = copy.deepcopy(net.state_dict())
        elif epoch - best_epoch >= config.patience > 0:
            stopped = True
        if checkpointing.run_dir is not None and not stopped and epoch < epochs:
            optim_state, optim_tensors = optimizer_tensors(optimizer, "optim.")
            state = {"stage": stage, "epoch": epoch, "complete": False, "history": result.history,
                     "best_loss": best_loss, "best_epoch": best_epoch, "best_val": _stats_dict(best_val),
                     "optimizer": optim_state, "schedule": schedule.state_dict(), **carry["state"]}
            tensors = {**_prefixed("net.", net.state_dict()), **optim_tensors,
                       **_prefixed("best.", best_state or {}),
                       **_rng_tensors(device), "rng.loader": train_loader.generator.get_state(),
                       **carry["tensors"]}
            save_checkpoint(checkpointing.run_dir, state, tensors)
        if on_epoch is not None:
            on_epoch(row)
        if stopped:
            console.info(f"{stage}: no better validation loss for {config.patience} epochs: "
                         f"stopping, restoring epoch {best_epoch}")
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    stage_result = StageResult(best_val, epoch, best_epoch, epoch < epochs)
    if checkpointing.run_dir is not None:
        state = {"stage": stage, "epoch": epoch, "complete": True, "history": result.history,
                 "result": _stage_dict(stage_result), **carry["state"]}
        save_checkpoint(checkpointing.run_dir, state, {**_prefixed("net.", net.state_dict()), **carry["tensors"]})
    return stage_result


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors renamed under ``prefix``: the inverse of :meth:`Checkpointing.tensors_with`."""
    return {prefix + k: v for k, v in state.items()}


def _stage_dict(stage: StageResult) -> dict:
    return {"val": _stats_dict(stage.val), "epochs_run": stage.epochs_run, "best_epoch": stage.best_epoch,
            "stopped_early": stage.stopped_early}


def _stage_from(data: dict) -> StageResult:
    """The inverse of :func:`_stage_dict`."""
    return StageResult(_stats_from(data["val"]), data["epochs_run"], data["best_epoch"], data["stopped_early"])


def _rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    """The random state a resumed epoch must continue from: on a GPU, dropout draws from CUDA's generator."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    # A checkpoint written on another kind of device carries no state for this one's generator.
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def _class_weights(loader: DataLoader, config: TrainingConfig, device: torch.device) -> torch.Tensor | None:
    """scikit-learn's 'balanced' weights: n_samples / (n_classes * count of the class)."""
    if config.class_weight != "balanced":
        return None
    counts = np.bincount(loader.dataset.labels).astype(np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _epoch_line(row: dict, epoch: int, epochs: int) -> str:
    line = (f"{row['stage']} epoch {epoch}/{epochs}: train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.2%}")
    if not math.isnan(row["val_loss"]):
        line += f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}"
    return line + f" | {row['seconds']:.0f} s"


def fine_tune_improved(before: EpochStats, after: EpochStats) -> bool:
    """Keep fine-tuning only for higher validation accuracy, or equal accuracy and lower loss."""
    return after.accuracy > before.accuracy or (
        after.accuracy == before.accuracy and after.loss < before.loss)


def fit(net: ClassifierNet, train_loader: DataLoader, val_loader: DataLoader | None,
        config: TrainingConfig, device: torch.device, dtype: torch.dtype, console: Console,
        on_epoch: Callable[[dict], None] | None = None,
        checkpointing: Checkpointing | None = None) -> TrainResult:
    """The standard workflow's stage 1: the head, on the frozen backbone."""
    checkpointing = checkpointing or Checkpointing()
    result = TrainResult()
    freeze(net.backbone)
    if checkpointing.passed("frozen"):  # resuming after stage 1: take its outcome as it was
        saved = checkpointing.state
        result.history = list(saved["history"])
        if saved["stage"] == "frozen":
            net.load_state_dict(checkpointing.tensors_with("net."))
            result.stage1 = _stage_from(saved["result"])
        else:
            net.load_state_dict(checkpointing.tensors_with("stage1."))
            result.stage1 = _stage_from(saved["stage1"])
        return result
    result.stage1 = train_stage(net, "frozen", train_loader, val_loader, config.epochs, config.lr,
                                config, device, dtype, result, console, on_epoch, checkpointing)
    return result


def fine_tune(net: ClassifierNet, train_loader: DataLoader, val_loader: DataLoader | None,
              config: TrainingConfig, epochs: int, device: torch.device, dtype: torch.dtype,
              result: TrainResult, console: Console, on_epoch: Callable[[dict], None] | None = None,
              before: EpochStats | None = None, checkpointing: Checkpointing | None = None) -> None:
    """Stage 2: unfreeze, retrain end to end at a very low rate; keep it only if validation improves.

    ``before`` is stage 1's validation result; when it was measured another way
    (the lightweight workflow's features), pass None and it is measured here by
    the same pipeline as the fine-tuned model, so the comparison is fair.
    """
    checkpointing = checkpointing or Checkpointing()
    saved = checkpointing.state if checkpointing.state and checkpointing.state["stage"] == "fine-tune" else None
    if saved is not None:
        before = _stats_from(saved["stage1_val"])
        before_state = checkpointing.tensors_with("stage1.")
        result.history = list(saved["history"])
        result.stage1 = _stage_from(saved["stage1"])
    else:
        if before is None and val_loader is not None:
            before = run_epoch(net, val_loader, device, dtype, nn.CrossEntropyLoss(), console=console,
                               desc="validate stage 1")
        before_state = copy.deepcopy(net.state_dict())
    trainable = unfreeze(net.backbone, config.unfreeze_last)
    which = "all blocks" if config.unfreeze_last is None else f"last {config.unfreeze_last} block(s)"
    console.info(f"fine-tuning {which} of the backbone ({trainable:,} parameters) "
                 f"at lr {config.fine_tune_lr:g}, BatchNorm kept in inference mode")
    carry = {"state": {"stage1_val": _stats_dict(before), "stage1": _stage_dict(result.stage1)},
             "tensors": _prefixed("stage1.", before_state)}
    if saved is not None and saved["complete"]:  # interrupted after the last epoch: nothing to redo
        net.load_state_dict(checkpointing.tensors_with("net."))
        result.fine_tune = _stage_from(saved["result"])
    else:
        result.fine_tune = train_stage(net, "fine-tune", train_loader, val_loader, epochs, config.fine_tune_lr,
                                       config, device, dtype, result, console, on_epoch, checkpointing, carry)
    freeze(net.backbone)
    after = result.fine_tune.val
    if before is None or after is None:
        result.fine_tune_kept = True
        return
    result.fine_tune_kept = fine_tune_improved(before, after)
    if result.fine_tune_kept:
        console.info(f"fine-tuning improved validation accuracy: {before.accuracy:.2%} -> {after.accuracy:.2%}")
    else:
        net.load_state_dict(before_state)
        console.info(f"fine-tuning did not improve validation ({before.accuracy:.2%} -> {after.accuracy:.2%}): "
                     "keeping the stage-1 weights")
