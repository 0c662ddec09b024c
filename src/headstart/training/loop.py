"""The epochs of one stage: train, validate, stop early, checkpoint, resume.

Each concern is one small object with state of its own, as Keras' callbacks
and fastai's trackers are: :class:`EarlyStopping` keeps the best epoch's
weights, :class:`StageCheckpoint` what a resumed run continues from, and
:class:`Trainer` what every epoch trains with.

On a data-parallel run (:mod:`headstart.distributed`) each rank trains a
DistributedDataParallel replica on its share of the epoch; the epoch's
statistics are summed over the ranks, and every decision (stop early, keep the
fine-tuning) is rank 0's, broadcast, so the replicas never diverge. Only rank 0
writes the checkpoint; a resumed run reads it there and hands it to every rank,
whatever their number.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import distributed
from .._console import Console
from ..backbone.head import ClassifierNet, probabilities
from ..config import HeadSpec, TrainingConfig
from ..device import autocast, predicting_precision, to_device
from ..trust.calibration import calibrated_loss
from .checkpoint import load_checkpoint, optimizer_tensors, restore_optimizer, save_checkpoint
from .recipe import Optimisation, optimisation
from .results import EpochStats, StageResult, TrainResult

__all__ = ["Trainer", "EarlyStopping", "StageCheckpoint", "run_epoch", "train_stage", "resume_after", "stats_dict",
           "stats_from", "stage_dict", "stage_from", "loss_function", "validation_probabilities", "validation_thresholds"]


@dataclass
class StageCheckpoint:
    """Where a run is checkpointed after every epoch, the checkpoint it resumes from, and what a later
    stage needs from an earlier one (``carry``: stage 1's outcome and weights, kept through fine-tuning)."""

    run_dir: Path | None = None
    state: dict | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    carry_state: dict = field(default_factory=dict)
    carry_tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def at(cls, run_dir: str | Path | None) -> StageCheckpoint:
        """Checkpointing into ``run_dir`` (none when None), resuming from the checkpoint found there."""
        if run_dir is None:
            return cls()
        found = distributed.broadcast(load_checkpoint(Path(run_dir)) if distributed.is_main() else None)
        state, tensors = found if found is not None else (None, {})
        return cls(Path(run_dir), state, tensors)

    def resumes(self, stage: str) -> bool:
        return self.state is not None and self.state["stage"] == stage and not self.state["complete"]

    def passed(self, stage: str) -> bool:
        """Whether the checkpoint lies beyond ``stage``: the stage is done and is not rerun."""
        if self.state is None:
            return False
        return self.state["stage"] != stage or self.state["complete"]

    def tensors_with(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def save(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        if self.run_dir is not None and distributed.is_main():
            save_checkpoint(self.run_dir, {**state, **self.carry_state}, {**tensors, **self.carry_tensors})


class EarlyStopping:
    """Keeps the weights of the epoch with the lowest validation loss; stops after ``patience``
    epochs without a lower one (0: never). Without validation, the last epoch counts as best.
    The loss is the calibrated one when it is measured, as the guard weighs it: label smoothing
    leaves a network less confident epoch after epoch, which the raw loss counts against the
    epochs that learned most."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_loss, self.best_epoch = math.inf, 0
        self.best_val: EpochStats | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val: EpochStats | None, net: nn.Module) -> bool:
        """Take the epoch's validation result; True when training should stop."""
        if val is None:
            self.best_epoch, self.best_val = epoch, None
            return False
        loss = val.loss if val.calibrated_loss is None else val.calibrated_loss
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.best_val = loss, epoch, val
            self.best_state = copy.deepcopy(net.state_dict())
        elif epoch - self.best_epoch >= self.patience > 0:
            return True
        return False

    def restore(self, net: nn.Module) -> None:
        if self.best_state is not None:
            net.load_state_dict(self.best_state)

    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        return ({"best_loss": self.best_loss, "best_epoch": self.best_epoch, "best_val": stats_dict(self.best_val)},
                _prefixed("best.", self.best_state or {}))

    def load(self, saved: dict, checkpoint: StageCheckpoint) -> None:
        self.best_loss, self.best_epoch = saved["best_loss"], saved["best_epoch"]
        self.best_val = stats_from(saved["best_val"])
        self.best_state = checkpoint.tensors_with("best.") or None


@dataclass
class Trainer:
    """What every epoch of a run trains with."""

    net: ClassifierNet
    train_loader: DataLoader
    val_loader: DataLoader | None
    config: TrainingConfig
    device: torch.device
    dtype: torch.dtype
    console: Console
    on_epoch: Callable[[dict], None] | None = None
    checkpoint: StageCheckpoint = field(default_factory=StageCheckpoint)
    multi_label: bool = False  # a sigmoid per class, binary cross-entropy, indicator-matrix labels
    input_size: tuple[int, int, int] = (3, 224, 224)  # of the network's images
    replica: nn.Module | None = None  # what trains: the net, in DistributedDataParallel on several ranks
    refit_loader: DataLoader | None = None  # the training and validation images together, shuffled, augmented


def loss_function(trainer: Trainer, training: bool = False) -> nn.Module:
    """The loss: cross-entropy (with the class weights and label smoothing when ``training``), or
    for a multi-label model binary cross-entropy per class (``pos_weight`` for balanced weights)."""
    weights = _class_weights(trainer) if training else None
    if trainer.multi_label:
        return nn.BCEWithLogitsLoss(pos_weight=weights)
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=trainer.config.label_smoothing if training else 0.0)


def run_epoch(trainer: Trainer, loader: DataLoader, criterion: nn.Module, optimisation: Optimisation | None = None,
              desc: str = "") -> EpochStats:
    """One pass over ``loader``: trains when given an optimisation, else only measures (for a
    multi-label model, its mean average precision too; for a single-label model to be calibrated,
    its loss once calibrated); on a data-parallel run, over this rank's share, and the statistics
    are those of every rank's together."""
    net, device = trainer.net, trainer.device
    training = optimisation is not None
    model = trainer.replica if training and trainer.replica is not None else net
    net.train(training)
    total_loss, correct, count, failed = 0.0, 0.0, 0, []
    seen: list[tuple[np.ndarray, np.ndarray]] = []  # validation: (probabilities, labels)
    # Only what is computed from them needs the probabilities: mAP, or the calibrated loss.
    keep_seen = not training and (trainer.multi_label or trainer.config.calibrate)
    grad = torch.enable_grad() if training else torch.inference_mode()
    with grad:
        for batch in trainer.console.progress(loader, total=len(loader), desc=desc):
            failed += batch.failed
            if not batch.indices:
                if training and model is not net:  # every rank must join each step's gradient all-reduce
                    optimisation.step(
                        model(torch.zeros((0, *trainer.input_size), dtype=torch.uint8, device=device)).sum() * 0.0)
                continue
            images = to_device(batch.images, device)
            labels = batch.labels.to(device, non_blocking=True)
            with autocast(device, trainer.dtype):
                logits = model(images)
            loss = criterion(logits.float(), labels.float() if trainer.multi_label else labels)
            if training:
                optimisation.step(loss)
            n = len(labels)
            total_loss += loss.item() * n
            if trainer.multi_label:  # label-wise accuracy at 0.5: 1 - Hamming loss
                correct += ((logits > 0) == (labels > 0.5)).float().mean(1).sum().item()
            else:
                correct += (logits.argmax(1) == labels).sum().item()
            if keep_seen:
                activation = torch.sigmoid if trainer.multi_label else lambda x: torch.softmax(x, dim=1)
                seen.append((activation(logits.float()).cpu().numpy(), labels.cpu().numpy()))
            count += n
    if distributed.world().size > 1:
        total_loss, correct, count = distributed.all_sum([total_loss, correct, count]).tolist()
        count, failed = int(count), [f for part in distributed.all_gather_objects(failed) for f in part]
        seen = [pair for part in distributed.all_gather_objects(seen) for pair in part]
    if count == 0:
        return EpochStats(math.nan, math.nan, 0, failed)
    stats = EpochStats(total_loss / count, correct / count, count, failed)
    if seen:
        proba, labels = np.concatenate([p for p, _ in seen]), np.concatenate([y for _, y in seen])
        if trainer.multi_label:
            from ..metrics import mean_average_precision

            stats.mean_ap = mean_average_precision(labels, proba)
        elif trainer.config.calibrate:
            stats.calibrated_loss = calibrated_loss(proba, labels)
    return stats


def validation_probabilities(trainer: Trainer) -> np.ndarray:
    """The net's probabilities for each validation image (softmax, or a multi-label model's
    sigmoids), in the validation split's order, NaN rows where undecodable, in the precision the
    trained model predicts in; on a data-parallel run, every rank's share gathered, so each rank
    holds them all."""
    loader, net = trainer.val_loader, trainer.net
    dtype = predicting_precision(trainer.config.precision, trainer.device)
    head = HeadSpec(net.head.fc.out_features, multi_label=trainer.multi_label)
    indices, rows = [], []
    net.eval()
    for batch in trainer.console.progress(loader, total=len(loader), desc="validation probabilities"):
        if batch.indices:
            indices += batch.indices
            rows.append(probabilities(net, trainer.device, dtype, batch.images, head=head))
    proba = np.full((len(loader.dataset), head.num_classes), np.nan, dtype=np.float32)
    for seen, part in distributed.all_gather_objects((indices, np.concatenate(rows) if rows else None)):
        if seen:
            proba[seen] = part
    return proba


def validation_thresholds(trainer: Trainer, proba: np.ndarray | None = None) -> tuple[float, ...]:
    """A multi-label model's decision thresholds, each class's best F1 on the validation images
    (0.5 each without them), from ``proba`` when given (the validation probabilities of the model
    the thresholds are for), else the net's own."""
    from ..metrics import best_f1_thresholds

    classes = trainer.net.head.fc.out_features
    if trainer.val_loader is None:
        return (0.5,) * classes
    proba = validation_probabilities(trainer) if proba is None else proba
    decoded = ~np.isnan(proba).any(axis=1)
    if not decoded.any():
        return (0.5,) * classes
    labels = np.asarray(trainer.val_loader.dataset.labels)[decoded]
    return tuple(float(t) for t in best_f1_thresholds(labels, proba[decoded]))


def train_stage(trainer: Trainer, stage: str, epochs: int, result: TrainResult) -> StageResult:
    """Train the parameters that require grad for up to ``epochs`` epochs, as the stage's recipe
    says (:func:`headstart.training.recipe.optimisation`).

    With a validation split, stops after ``config.patience`` epochs without a
    lower validation loss and restores the best epoch's weights. Saves every
    completed epoch in the trainer's checkpoint, and resumes from one of this stage.
    """
    net, config, checkpoint = trainer.net, trainer.config, trainer.checkpoint
    optimising = optimisation(net, config, stage, (epochs, len(trainer.train_loader)), trainer.dtype)
    loss = loss_function(trainer, training=True)
    stopping = EarlyStopping(config.patience)
    # Gradients are averaged over the ranks at each step. The backbone's BatchNorm layers stay in
    # inference mode (ClassifierNet.train), so their statistics never change: no SyncBatchNorm is
    # needed, and no buffer is broadcast at each step.
    trainer.replica = distributed.data_parallel(net)
    first = 1
    if checkpoint.resumes(stage):
        first = _resume(trainer, optimising, stopping, result)
        trainer.console.info(f"resuming {stage} at epoch {first}/{epochs}")
    epoch = first - 1
    for epoch in range(first, epochs + 1):
        row, val = _epoch(trainer, stage, (epoch, epochs), optimising, loss, result)
        stopped = distributed.broadcast(stopping.update(epoch, val, net))
        if checkpoint.run_dir is not None and not stopped and epoch < epochs:
            optim_state, optim_tensors = optimizer_tensors(optimising.optimizer, "optim.")
            best_state, best_tensors = stopping.state()
            checkpoint.save({"stage": stage, "epoch": epoch, "complete": False, "history": result.history,
                             **best_state, "optimizer": optim_state, "schedule": optimising.schedule.state_dict()},
                            {**_prefixed("net.", net.state_dict()), **optim_tensors, **best_tensors,
                             **_rng_tensors(trainer)})
        if trainer.on_epoch is not None:
            trainer.on_epoch(row)
        if stopped:
            trainer.console.info(f"{stage}: no better validation loss for {config.patience} epochs: "
                                 f"stopping, restoring epoch {stopping.best_epoch}")
            break
    trainer.replica = None  # its gradient hooks go with it: the next stage trains other parameters
    stopping.restore(net)
    outcome = StageResult(stopping.best_val, epoch, stopping.best_epoch, epoch < epochs)
    # The random state goes with the finished stage too: a run resumed from here draws the next
    # stage's shuffles, augmentations and dropout as the uninterrupted run does.
    checkpoint.save({"stage": stage, "epoch": epoch, "complete": True, "history": result.history,
                     "result": stage_dict(outcome)}, {**_prefixed("net.", net.state_dict()), **_rng_tensors(trainer)})
    return outcome


def resume_after(trainer: Trainer, stage: str) -> None:
    """Continue after ``stage``, finished before the interruption: its random state back, and say so."""
    checkpoint = trainer.checkpoint
    # A checkpoint written before the random state was kept with a finished stage lacks it.
    if "rng.torch" in checkpoint.tensors:
        _restore_rng(checkpoint.tensors, trainer)
    trainer.console.info(f"resuming after {stage} (finished at epoch {checkpoint.state['epoch']})")


def _resume(trainer: Trainer, optimising: Optimisation, stopping: EarlyStopping, result: TrainResult) -> int:
    """Restore an interrupted stage from the checkpoint; returns the epoch to continue with."""
    checkpoint = trainer.checkpoint
    saved, tensors = checkpoint.state, checkpoint.tensors
    trainer.net.load_state_dict(checkpoint.tensors_with("net."))
    restore_optimizer(optimising.optimizer, saved["optimizer"], tensors, "optim.")
    optimising.schedule.load_state_dict(saved["schedule"])
    stopping.load(saved, checkpoint)
    _restore_rng(tensors, trainer)
    result.history[:] = saved["history"]
    return saved["epoch"] + 1


def _epoch(trainer: Trainer, stage: str, count: tuple[int, int], optimising: Optimisation, criterion: nn.Module,
           result: TrainResult) -> tuple[dict, EpochStats | None]:
    """Train one epoch and validate it; returns its history row (also appended to ``result``) and
    the validation result."""
    epoch, epochs = count
    start = time.perf_counter()
    current_lr = optimising.lr
    if hasattr(trainer.train_loader.sampler, "set_epoch"):  # each epoch's shuffle, the same on every rank
        trainer.train_loader.sampler.set_epoch(len(result.history))
    train = run_epoch(trainer, trainer.train_loader, criterion, optimising, desc=f"{stage} {epoch}/{epochs}")
    val = (run_epoch(trainer, trainer.val_loader, loss_function(trainer), desc="validate")
           if trainer.val_loader is not None else None)
    for stats, loader in ((train, trainer.train_loader), (val, trainer.val_loader)):
        for index, reason in stats.failed if stats else ():
            path = loader.dataset.paths[index]
            if path not in result.failed:
                trainer.console.warn(f"skipping {path}: {reason}")
                result.failed[path] = reason
    row = {
        "epoch": len(result.history) + 1, "stage": stage,
        "train_loss": train.loss, "train_accuracy": train.accuracy,
        "val_loss": val.loss if val else math.nan, "val_accuracy": val.accuracy if val else math.nan,
        "lr": current_lr, "seconds": time.perf_counter() - start,
    }
    result.history.append(row)
    trainer.console.info(_epoch_line(row, epoch, epochs))
    return row, val


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors renamed under ``prefix``: the inverse of :meth:`StageCheckpoint.tensors_with`."""
    return {prefix + k: v for k, v in state.items()}


def stats_dict(stats: EpochStats | None) -> dict | None:
    return None if stats is None else {"loss": stats.loss, "accuracy": stats.accuracy, "count": stats.count,
                                       "mean_ap": stats.mean_ap, "calibrated_loss": stats.calibrated_loss}


def stats_from(data: dict | None) -> EpochStats | None:
    return None if data is None else EpochStats(data["loss"], data["accuracy"], data["count"],
                                                mean_ap=data.get("mean_ap"),
                                                calibrated_loss=data.get("calibrated_loss"))


def stage_dict(stage: StageResult) -> dict:
    return {"val": stats_dict(stage.val), "epochs_run": stage.epochs_run, "best_epoch": stage.best_epoch,
            "stopped_early": stage.stopped_early}


def stage_from(data: dict) -> StageResult:
    """The inverse of :func:`stage_dict`."""
    return StageResult(stats_from(data["val"]), data["epochs_run"], data["best_epoch"], data["stopped_early"])


def _rng_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The random state a resumed epoch must continue from: the shuffling loader's generator
    (which also seeds its workers), and on a GPU, dropout draws from CUDA's generator."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.loader": trainer.train_loader.generator.get_state()}
    if trainer.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor], trainer: Trainer) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    trainer.train_loader.generator.set_state(tensors["rng.loader"])
    # A checkpoint written on another kind of device carries no state for this one's generator.
    if trainer.device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)


def _class_weights(trainer: Trainer) -> torch.Tensor | None:
    """scikit-learn's 'balanced' weights, n_samples / (n_classes * count of the class); for a
    multi-label model, each class's positive weight: negatives / positives."""
    if trainer.config.class_weight != "balanced":
        return None
    labels = np.asarray(trainer.train_loader.dataset.labels)
    if trainer.multi_label:
        positives = labels.sum(axis=0)
        weights = (len(labels) - positives) / np.maximum(positives, 1)
    else:
        counts = np.bincount(labels).astype(np.float64)
        weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32, device=trainer.device)


def _epoch_line(row: dict, epoch: int, epochs: int) -> str:
    line = (f"{row['stage']} epoch {epoch}/{epochs}: train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.2%}")
    if not math.isnan(row["val_loss"]):
        line += f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}"
    return line + f" | {row['seconds']:.0f} s"
