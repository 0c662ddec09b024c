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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ._console import Console
from .backbone import freeze, unfreeze
from .config import TrainingConfig
from .errors import UsageError
from .head import ClassifierNet

__all__ = [
    "resolve_device",
    "resolve_precision",
    "autocast",
    "prepare",
    "EpochStats",
    "TrainResult",
    "run_epoch",
    "train_stage",
    "fit",
]

HISTORY_COLUMNS = ("epoch", "stage", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "lr", "seconds")


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


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def prepare(net: nn.Module, device: torch.device) -> nn.Module:
    """Move ``net`` to ``device``; convolutions run faster channels-last on both CPU and GPU."""
    return net.to(device=device, memory_format=torch.channels_last)


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    count: int
    failed: list[tuple[int, str]] = field(default_factory=list)  # (dataset index, reason)


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
            images = batch.images.to(device, non_blocking=True, memory_format=torch.channels_last)
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


@dataclass
class StageResult:
    val: EpochStats | None
    epochs_run: int
    best_epoch: int
    stopped_early: bool


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    stage1: StageResult | None = None
    fine_tune: StageResult | None = None
    fine_tune_kept: bool | None = None  # None: no fine-tuning was asked for
    failed: dict[Path, str] = field(default_factory=dict)  # images that could not be decoded
    seconds: float = 0.0


def _trainable(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]


def train_stage(net: ClassifierNet, stage: str, train_loader: DataLoader, val_loader: DataLoader | None,
                epochs: int, lr: float, config: TrainingConfig, device: torch.device, dtype: torch.dtype,
                result: TrainResult, console: Console,
                on_epoch: Callable[[dict], None] | None = None) -> StageResult:
    """Train the parameters that require grad for up to ``epochs`` epochs.

    With a validation split, stops after ``config.patience`` epochs without a
    lower validation loss and restores the best epoch's weights.
    """
    optimizer = torch.optim.AdamW(_trainable(net), lr=lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    measure = nn.CrossEntropyLoss()
    best_loss, best_epoch, best_state, best_val = math.inf, 0, None, None
    epoch = 0
    for epoch in range(1, epochs + 1):
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
        if on_epoch is not None:
            on_epoch(row)
        if val is None:
            best_epoch, best_val = epoch, None
            continue
        if val.loss < best_loss:
            best_loss, best_epoch, best_val = val.loss, epoch, val
            best_state = copy.deepcopy(net.state_dict())
        elif epoch - best_epoch >= config.patience > 0:
            console.info(f"{stage}: no better validation loss for {config.patience} epochs: "
                         f"stopping, restoring epoch {best_epoch}")
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    stopped = epoch < epochs
    return StageResult(best_val, epoch, best_epoch, stopped)


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
        on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Stage 1 on the frozen backbone, then the guarded fine-tune when ``config`` asks for it."""
    start = time.perf_counter()
    result = TrainResult()
    freeze(net.backbone)
    result.stage1 = train_stage(net, "frozen", train_loader, val_loader, config.epochs, config.lr,
                                config, device, dtype, result, console, on_epoch)
    if config.fine_tune_epochs > 0:
        _fine_tune(net, train_loader, val_loader, config, device, dtype, result, console, on_epoch)
    freeze(net.backbone)
    result.seconds = time.perf_counter() - start
    return result


def _fine_tune(net: ClassifierNet, train_loader: DataLoader, val_loader: DataLoader | None,
               config: TrainingConfig, device: torch.device, dtype: torch.dtype, result: TrainResult,
               console: Console, on_epoch: Callable[[dict], None] | None) -> None:
    before_state = copy.deepcopy(net.state_dict())
    before = result.stage1.val
    trainable = unfreeze(net.backbone, config.unfreeze_last)
    which = "all blocks" if config.unfreeze_last is None else f"last {config.unfreeze_last} block(s)"
    console.info(f"fine-tuning {which} of the backbone ({trainable:,} parameters) "
                 f"at lr {config.fine_tune_lr:g}, BatchNorm kept in inference mode")
    result.fine_tune = train_stage(net, "fine-tune", train_loader, val_loader, config.fine_tune_epochs,
                                   config.fine_tune_lr, config, device, dtype, result, console, on_epoch)
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
