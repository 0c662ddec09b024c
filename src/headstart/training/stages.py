"""The two stages of the method through the network: stage 1 trains the head on the frozen backbone;
stage 2, when asked for, fine-tunes and is kept only if validation improves.

Stage 2 unfreezes the backbone (or its last blocks) and retrains end to end at
a very low learning rate, BatchNorm still in inference mode
(:class:`headstart.backbone.head.ClassifierNet`). The guard is
:func:`fine_tune_improved`: otherwise the stage-1 weights are restored and the
user is told. When it keeps fine-tuning, the validation photos have done their
work (the blend, the epoch, the verdict are chosen), and fine-tuning runs again
from stage 1 on the training and validation photos together, as chosen: the
refit, scikit-learn's ``refit=True``.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch

from .. import distributed
from ..backbone.freeze import freeze, unfreeze
from ..metrics import difference_noise
from .loop import (Trainer, loss_function, resume_after, run_epoch, stage_dict, stage_from, stats_dict, stats_from,
                   train_stage, validation_probabilities)
from .results import EpochStats, TrainResult

__all__ = ["train_frozen", "fine_tune", "fine_tune_improved", "guard_verdict", "likely_cause"]

# Validation losses within this share of stage 1's count as unchanged: fine-tuning moved nothing.
FLAT = 0.05

# At an accuracy within the noise of stage 1's, fine-tuning is kept only for a validation loss
# lower by more than this share of stage 1's: smaller falls are noise too.
LOSS_MARGIN = 0.02

# The shares of the fine-tuned weights tried in blends with stage 1's, beside 1 (fine-tuned alone).
BLENDS = (0.25, 0.5, 0.75)


def train_frozen(trainer: Trainer) -> TrainResult:
    """The standard workflow's stage 1: the head, on the frozen backbone."""
    result = TrainResult()
    freeze(trainer.net.backbone)
    checkpoint = trainer.checkpoint
    if checkpoint.passed("frozen"):  # resuming after stage 1: take its outcome as it was
        saved = checkpoint.state
        result.history = list(saved["history"])
        if saved["stage"] == "frozen":
            trainer.net.load_state_dict(checkpoint.tensors_with("net."))
            result.stage1 = stage_from(saved["result"])
            resume_after(trainer, "stage 1")
        else:
            trainer.net.load_state_dict(checkpoint.tensors_with("stage1."))
            result.stage1 = stage_from(saved["stage1"])
        return result
    result.stage1 = train_stage(trainer, "frozen", trainer.config.epochs, result)
    return result


def fine_tune_improved(before: EpochStats, after: EpochStats) -> bool:
    """Keep fine-tuning only for a validation score higher beyond the noise of the validation
    images, or one within that noise, higher or lower, and a loss lower by more than
    :data:`LOSS_MARGIN`.
    The score is accuracy, or for a multi-label model the mean average precision (threshold-free,
    as the thresholds are tuned afterwards). The loss is the calibrated one when both have it: the
    model is calibrated before it is used, and label smoothing leaves a fine-tuned model less
    confident than a head fitted exactly, which the raw loss would count against it."""
    return guard_verdict(before, after)[0]


def guard_verdict(before: EpochStats, after: EpochStats) -> tuple[bool, str]:
    """Whether fine-tuning is kept, and the guard's reason in words (the log and the report say it)."""
    if before.mean_ap is not None and after.mean_ap is not None:
        name, was, now, shown = "mAP", before.mean_ap, after.mean_ap, "{:.4f}".format
    else:
        name, was, now, shown = "accuracy", before.accuracy, after.accuracy, "{:.2%}".format
    change = f"{shown(was)} -> {shown(now)}"
    loss, loss_was, loss_now = "loss", before.loss, after.loss
    if before.calibrated_loss is not None and after.calibrated_loss is not None:
        loss, loss_was, loss_now = "calibrated loss", before.calibrated_loss, after.calibrated_loss
    losses = f"{loss_was:.4f} -> {loss_now:.4f}"
    # One photo more or less right out of 64 is chance, either way, and so is a loss a hair lower:
    # within both, the cheaper model (stage 1: nothing to refit, nothing moved) is kept.
    noise = difference_noise(was, before.count) if name == "accuracy" else 0.0
    if was - now > noise:
        return False, f"lowered validation {name}: {change}"
    if now - was > noise:
        return True, f"raised validation {name}: {change}"
    if loss_now < (1 - LOSS_MARGIN) * loss_was:
        within = f"at equal {name}" if now == was else f"with an {name} within the noise of {before.count} images"
        return True, f"improved validation {loss} {within} ({change}): {losses}"
    if now == was:
        return False, f"validation {name} unchanged ({shown(now)}) and {loss} not {LOSS_MARGIN:.0%} lower: {losses}"
    moved = "raised" if now > was else "lowered"
    return False, (f"{moved} validation {name} only within the noise of {before.count} images ({change}, "
                   f"under {noise:.1%}) and the {loss} is not {LOSS_MARGIN:.0%} lower: {losses}")


def likely_cause(before: EpochStats, history: list[dict]) -> str | None:
    """Why fine-tuning did not pay, read from its validation losses against stage 1's (None when
    they say nothing): rising from the first epoch and staying up, the rate was too high; flat,
    too low or too few epochs; falling, then rising, it overfitted.

    A first epoch above stage 1's loss is not enough to blame the rate: a head fitted without
    label smoothing is more confident than one trained with it, so the unsmoothed validation loss
    jumps at the first epoch even when fine-tuning goes on to pay.
    """
    losses = [row["val_loss"] for row in history if row["stage"] == "fine-tune"]
    start = before.loss
    if not losses or not all(math.isfinite(x) for x in (start, *losses)):
        return None
    trace = " -> ".join(f"{x:.4f}" for x in (start, *losses))
    if max(abs(x - start) for x in losses) <= FLAT * start:
        return (f"validation loss stayed flat ({trace}): the rate is likely too low or the epochs too few; "
                "try a higher --fine-tune-lr or more --fine-tune-epochs")
    if losses[0] > start and losses[-1] >= (1 - FLAT) * losses[0]:
        return (f"validation loss rose from the first epoch ({trace}): the rate is likely too high; "
                "try a lower --fine-tune-lr, or --unfreeze-last to train fewer blocks")
    if losses[0] > start:
        return (f"validation loss rose in the first epoch, then fell ({trace}): fine-tuning was recovering "
                "when it stopped; try more --fine-tune-epochs or a lower --fine-tune-lr")
    if losses[-1] > min(losses):
        return (f"validation loss fell, then rose ({trace}): fine-tuning overfitted the training images; "
                "try fewer --fine-tune-epochs or --augment strong")
    return (f"validation loss fell ({trace}) but the score did not rise: more --fine-tune-epochs, "
            "or more validation images, may tell")


def fine_tune(trainer: Trainer, epochs: int, result: TrainResult, before: EpochStats | None = None) -> None:
    """Stage 2: unfreeze, retrain end to end at a very low rate; keep it only if validation improves,
    then refit on train + val when the trainer has a loader for it.

    ``before`` is stage 1's validation result; when it was measured another way
    (the lightweight workflow's features), pass None and it is measured here by
    the same pipeline as the fine-tuned model, so the comparison is fair.
    """
    checkpoint = trainer.checkpoint
    if checkpoint.state is not None and checkpoint.state["stage"] == "refit":  # the guard had chosen
        before_state = checkpoint.tensors_with("stage1.")
        _restore_choice(checkpoint, result)
    else:
        before_state = _guarded_fine_tune(trainer, epochs, result, before)
    if result.fine_tune_kept and trainer.refit_loader is not None:
        _refit(trainer, result, before_state)


def _guarded_fine_tune(trainer: Trainer, epochs: int, result: TrainResult, before: EpochStats | None) -> dict:
    """Fine-tune on the training images, blend, and let the guard decide; returns stage 1's weights."""
    net, config, checkpoint = trainer.net, trainer.config, trainer.checkpoint
    saved = checkpoint.state if checkpoint.state and checkpoint.state["stage"] == "fine-tune" else None
    if saved is not None:
        before = stats_from(saved["stage1_val"])
        before_state = checkpoint.tensors_with("stage1.")
        result.history = list(saved["history"])
        result.stage1 = stage_from(saved["stage1"])
    else:
        if before is None and trainer.val_loader is not None:
            before = run_epoch(trainer, trainer.val_loader, loss_function(trainer), desc="validate stage 1")
        before_state = copy.deepcopy(net.state_dict())
    trainable = unfreeze(net.backbone, config.unfreeze_last)
    which = "all blocks" if config.unfreeze_last is None else f"last {config.unfreeze_last} block(s)"
    trainer.console.info(f"fine-tuning {which} of the backbone ({trainable:,} parameters) "
                         f"at lr {config.fine_tune_lr:g}, BatchNorm kept in inference mode")
    # Every fine-tuning checkpoint carries stage 1's outcome and weights: the guard needs them.
    checkpoint.carry_state = {"stage1_val": stats_dict(before), "stage1": stage_dict(result.stage1)}
    checkpoint.carry_tensors = {f"stage1.{k}": v for k, v in before_state.items()}
    if saved is not None and saved["complete"]:  # interrupted after the last epoch: nothing to redo
        net.load_state_dict(checkpoint.tensors_with("net."))
        result.fine_tune = stage_from(saved["result"])
        resume_after(trainer, "fine-tuning")  # its random state too: the refit's dropout draws from it
    else:
        result.fine_tune = train_stage(trainer, "fine-tune", epochs, result)
    freeze(net.backbone)
    if config.blend:
        _blend(trainer, result, before_state)
    _guard(trainer, result, before, before_state)
    return before_state


def _refit(trainer: Trainer, result: TrainResult, before_state: dict) -> None:
    """Fine-tune again from stage 1's weights on the training and validation images together, for
    the epochs the guarded run kept, and blend as it chose.

    The validation photos chose the blend, the epochs and the verdict; given back, they
    are a quarter more photos to learn from (at the default split). The refitted model
    has no held-out images to be checked on: what the guard checked was the same recipe
    on fewer photos, and the validation figures, the temperature and the prediction sets
    come from that model's validation probabilities (``result.val_proba``), kept here
    before the photos are trained on.
    """
    net, checkpoint = trainer.net, trainer.checkpoint
    epochs = result.fine_tune.best_epoch
    saved = checkpoint.state if checkpoint.state and checkpoint.state["stage"] == "refit" else None
    if saved is None:  # a fresh refit: the guarded model's view of validation, before it trains on it
        result.val_proba = validation_probabilities(trainer)
        net.load_state_dict(before_state)
    checkpoint.carry_state = {**checkpoint.carry_state, "choice": _choice_dict(result)}
    checkpoint.carry_tensors = {**checkpoint.carry_tensors, "choice.val_proba": torch.from_numpy(result.val_proba)}
    if saved is not None and saved["complete"]:  # interrupted after its last epoch: nothing to redo
        net.load_state_dict(checkpoint.tensors_with("net."))
    else:
        unfreeze(net.backbone, trainer.config.unfreeze_last)
        trainer.console.info(f"refitting: fine-tuning again from stage 1 on the training and validation images "
                             f"together, for the {epochs} epoch(s) kept")
        train_stage(dataclasses.replace(trainer, train_loader=trainer.refit_loader, val_loader=None), "refit",
                    epochs, result)
        freeze(net.backbone)
    share = result.fine_tune_share
    if share is not None and share < 1.0:
        net.load_state_dict(blended(before_state, net.state_dict(), share))
    result.refit_epochs = epochs


def _choice_dict(result: TrainResult) -> dict:
    """What the guarded fine-tune chose, as a refit's checkpoints carry it."""
    return {"fine_tune": stage_dict(result.fine_tune), "kept": result.fine_tune_kept,
            "reason": result.fine_tune_reason, "share": result.fine_tune_share}


def _restore_choice(checkpoint, result: TrainResult) -> None:
    """The guarded fine-tune's outcome, from a refit's checkpoint: a resumed refit continues from it."""
    saved, choice = checkpoint.state, checkpoint.state["choice"]
    result.stage1 = stage_from(saved["stage1"])
    result.fine_tune = stage_from(choice["fine_tune"])
    result.fine_tune_kept, result.fine_tune_reason = choice["kept"], choice["reason"]
    result.fine_tune_share = choice["share"]
    result.val_proba = checkpoint.tensors["choice.val_proba"].numpy()
    result.history = list(saved["history"])
    checkpoint.carry_state = {"stage1_val": saved["stage1_val"], "stage1": saved["stage1"]}
    checkpoint.carry_tensors = {k: v for k, v in checkpoint.tensors.items() if k.startswith("stage1.")}


def blended(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], share: float) -> dict[str, torch.Tensor]:
    """The weights ``(1 - share) * first + share * second``; integer buffers are the second's."""
    return {k: torch.lerp(first[k], v, share) if v.is_floating_point() else v for k, v in second.items()}


def _blend(trainer: Trainer, result: TrainResult, before_state: dict) -> None:
    """Keep the best on validation of the fine-tuned weights and their blends with stage 1's.

    Averaging the weights of a network before and after fine-tuning (WiSE-FT, Wortsman et al.,
    2022) often beats both ends: fine-tuning moves the weights along a path on which the loss
    stays low. With BatchNorm frozen, both networks share every running statistic, so a blend is
    a network of the same kind, evaluated at the cost of one validation pass.
    """
    if result.fine_tune.val is None:
        return
    tuned = copy.deepcopy(trainer.net.state_dict())
    best, best_val = 1.0, result.fine_tune.val
    for share in BLENDS:
        trainer.net.load_state_dict(blended(before_state, tuned, share))
        val = run_epoch(trainer, trainer.val_loader, loss_function(trainer), desc=f"validate blend {share:g}")
        if guard_verdict(best_val, val)[0]:
            best, best_val = share, val
    best, best_val = distributed.broadcast((best, best_val))  # rank 0 decides, as the guard does
    trainer.net.load_state_dict(tuned if best == 1.0 else blended(before_state, tuned, best))
    result.fine_tune = dataclasses.replace(result.fine_tune, val=best_val)
    result.fine_tune_share = best
    if best < 1.0:
        trainer.console.info(f"blending {best:.0%} of the fine-tuned weights with stage 1's scored best on "
                             f"validation: loss {best_val.loss:.4f}, accuracy {best_val.accuracy:.2%}")


def _guard(trainer: Trainer, result: TrainResult, before: EpochStats | None, before_state: dict) -> None:
    """Keep the fine-tuned weights only if validation improved; otherwise restore stage 1's."""
    after = result.fine_tune.val
    if before is None or after is None:
        result.fine_tune_kept = True
        return
    # Rank 0 decides for every rank of a data-parallel run: all keep the same weights.
    result.fine_tune_kept, result.fine_tune_reason = distributed.broadcast(guard_verdict(before, after))
    if result.fine_tune_kept:
        trainer.console.info(f"fine-tuning kept: it {result.fine_tune_reason}")
    else:
        trainer.net.load_state_dict(before_state)
        trainer.console.info(f"fine-tuning not kept ({result.fine_tune_reason}): keeping the stage-1 weights")
        result.fine_tune_cause = likely_cause(before, result.history)
        if result.fine_tune_cause:
            trainer.console.info(f"likely cause: {result.fine_tune_cause}")
