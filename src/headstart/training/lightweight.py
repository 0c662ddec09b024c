"""The lightweight workflow's stage 1: features from the one pipeline, then a linear head in seconds.

When the features come from the cache or the exported engine, nothing here
imports PyTorch: the model's tensors are the backbone record's plus the new
head's, as NumPy arrays, and the model file is written from them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .. import distributed
from .._console import Console
from ..config import HeadSpec, TrainingConfig
from ..data.dataset import DatasetSplit
from ..features.neighbours import MAX_COPY_PAIRS, near_copies
from ..features.pipeline import Extraction, extract_features
from ..features.rows import FeatureSet
from ..record import FeatureRecord, HeadSearch
from .linear import LinearHead, Progress, fit_linear_head, probabilities, smoothed_scale
from .ovr import OvrHead, fit_ovr_head, sigmoid_probabilities
from .plan import FitContext, feature_request
from .results import Fitted, StageResult, TrainResult

__all__ = ["HeadFit", "fit_head", "fit_lightweight", "warn_of_near_copies"]


def fit_lightweight(split: DatasetSplit, config: TrainingConfig, context: FitContext) -> Fitted:
    """Stage 1 alone, on features from the pipeline: without PyTorch when they can be had so."""
    start = time.perf_counter()
    extraction = extract_features([s.path for s in split.samples()], feature_request(config), context.cache,
                                  context.console)
    if extraction.without_pytorch and extraction.features is not None:
        computing = extraction.features.computed > 0
        context.console.info(f"features from the cache {'and the exported engine ' if computing else ''}"
                             f"({extraction.features.engine}), so the head is fitted without loading the backbone")
    warn_of_near_copies(extraction, split, context.console)
    head = fit_head(extraction, split, config, context, fine_tuning=False)
    fitted = Fitted("lightweight", extraction.spec, extraction.preprocessing, head.result,
                    features=head.features, head=head.search, held_out_proba=head.proba, thresholds=head.thresholds)
    if extraction.without_pytorch:
        from safetensors.numpy import load_file

        fitted.state = {**load_file(str(extraction.record.tensors)), "head.fc.weight": head.linear.weight,
                        "head.fc.bias": head.linear.bias}
    else:
        from ..backbone.head import ClassifierNet

        fitted.net = ClassifierNet.create(extraction.backbone, HeadSpec(len(split.classes), config.dropout,
                                                                        multi_label=split.multi_label))
        fitted.net.head.load_linear(head.linear.weight, head.linear.bias)
        fitted.net.eval()
    fitted.timings["stage1"] = time.perf_counter() - start
    return fitted


@dataclass
class HeadFit:
    """The lightweight head, fitted on the features of ``split.samples()``."""

    linear: LinearHead | OvrHead
    result: TrainResult
    features: FeatureRecord  # what computing the features took
    search: HeadSearch  # the L2 strength chosen, and what choosing it took
    proba: dict[str, np.ndarray]  # the head's probabilities for the val and test images, NaN where undecodable
    thresholds: tuple[float, ...] = ()  # multi-label: each class's decision threshold
    # When fine-tuning follows, the head it starts from (weight, bias): a single-label head fitted on
    # the training images alone, scaled to the smoothed loss (linear.smoothed_scale); a multi-label
    # one as it is. None otherwise.
    fine_tune_start: tuple[np.ndarray, np.ndarray] | None = None


# A fit that outlasts this says where it is this often (thousands of classes take minutes).
PROGRESS_SECONDS = 10.0


def _progress_every(seconds: float, console) -> Progress:
    """A solver progress callback that prints a line at most every ``seconds``."""
    start = last = time.perf_counter()

    def report(c: float, iteration: int, objective: float) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= seconds:
            last = now
            console.info(f"fitting the head: L2 C={c:g}, iteration {iteration}, objective {objective:.4f}, "
                         f"{now - start:.0f} s")

    return report


def fit_head(extraction: Extraction, split: DatasetSplit, config: TrainingConfig, context: FitContext,
             fine_tuning: bool) -> HeadFit:
    """The lightweight workflow's stage 1: a linear head on the features, in seconds; with
    ``fine_tuning``, the head fine-tuning will start from too.

    On a data-parallel run, rank 0 fits it on the gathered features (the same rows as one process
    would have, so the same head) and every rank gets it: all then fine-tune the same network.
    """
    return distributed.broadcast(_fit_head(extraction, split, config, context, fine_tuning) if distributed.is_main()
                                 else None)


def _fit_head(extraction: Extraction, split: DatasetSplit, config: TrainingConfig, context: FitContext,
              fine_tuning: bool) -> HeadFit:
    features, console = extraction.features, context.console
    for path, reason in features.failed.items():
        console.warn(f"skipping {path}: {reason}")
    labels = split.targets(split.samples())
    bounds, usable = _positions(features, split)
    rows = {name: features.rows(index, labels[index], with_flipped=name == "train")
            for name, index in usable.items()}
    val_rows = rows["val"] if len(rows["val"]) else None
    if split.multi_label:
        head = fit_ovr_head(rows["train"], val_rows, config.class_weight, config.seed)
        predict, strength = sigmoid_probabilities, f"L2 C={head.C:g}, refitted on train + val"
        fine_tune_start = (head.weight, head.bias) if fine_tuning else None  # multi-label losses are not smoothed
    else:
        both = np.concatenate([usable["train"], usable["val"]])
        refit = features.rows(both, labels[both], with_flipped=True) if config.refit and val_rows else None
        head = fit_linear_head(rows["train"], val_rows, len(split.classes), config.class_weight, config.seed,
                               progress=_progress_every(PROGRESS_SECONDS, console), refit=refit)
        predict, strength = probabilities, f"L2 C={head.C:g}" + (", refitted on train + val" if head.guarded else "")
        fine_tune_start = None
        if fine_tuning:
            guarded = head.guarded or (head.weight, head.bias)
            scale = smoothed_scale(rows["train"], *guarded, config.label_smoothing, config.seed)
            fine_tune_start = (guarded[0] * scale, guarded[1] * scale)
    result = TrainResult(failed=dict(features.failed))
    row = {"epoch": 1, "stage": "head", "train_loss": head.train.loss, "train_accuracy": head.train.accuracy,
           "val_loss": head.val.loss if head.val else math.nan,
           "val_accuracy": head.val.accuracy if head.val else math.nan, "lr": math.nan,
           "seconds": features.seconds + head.seconds}
    result.history.append(row)
    if context.on_epoch is not None:
        context.on_epoch(row)
    result.stage1 = StageResult(head.val, 1, 1, False)
    val_text = f", val loss {head.val.loss:.4f} acc {head.val.accuracy:.2%}" if head.val else ""
    if head.val and head.val.mean_ap is not None:
        val_text += f" mAP {head.val.mean_ap:.4f}"
    mirrors = " (their mirror images included)" if features.flipped is not None else ""
    console.info(f"head fitted on the features of {len(rows['train'])} training rows{mirrors} in {head.seconds:.1f} s "
                 f"({strength}): train acc {head.train.accuracy:.2%}{val_text}")
    record = FeatureRecord(features.engine, features.computed, len(labels) - features.computed, features.seconds)
    search = HeadSearch(head.C, head.seconds, tuple(head.search), refitted=head.val_proba is not None)
    proba = {}
    for i, name in enumerate(("val", "test"), start=1):
        proba[name] = np.full((bounds[i + 1] - bounds[i], len(split.classes)), np.nan)
        # A head refitted on train + val: its validation figures are those before the refit.
        refitted = name == "val" and head.val_proba is not None
        proba[name][usable[name] - bounds[i]] = head.val_proba if refitted else predict(rows[name], head.weight,
                                                                                        head.bias)
    features.close()
    thresholds = tuple(float(t) for t in head.thresholds) if split.multi_label else ()
    return HeadFit(head, result, record, search, proba, thresholds, fine_tune_start)


def _positions(features: FeatureSet, split: DatasetSplit) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Where each split starts and ends in ``split.samples()``, and the positions of its decodable images."""
    bounds = np.cumsum([0, len(split.train), len(split.val), len(split.test)])
    return bounds, {name: np.flatnonzero(features.ok[bounds[i]:bounds[i + 1]]) + bounds[i]
                    for i, name in enumerate(("train", "val", "test"))}


def warn_of_near_copies(extraction: Extraction, split: DatasetSplit, console: Console) -> None:
    """Warn when validation or test photos are near-identical copies of training photos
    (:data:`~headstart.features.neighbours.NEAR_IDENTICAL`): their scores flatter the model.

    A training run's check, before its head is fitted (a backbone survey fits heads too, and
    needs no warning per backbone). Only said, not mended: a split moved by features would change
    with the engine that computed them, and the same seed must draw the same split. Skipped past
    ``MAX_COPY_PAIRS``, and on all but the first process of a data-parallel run."""
    if not distributed.is_main():
        return
    features = extraction.features
    bounds, usable = _positions(features, split)
    train, held = usable["train"], np.concatenate([usable["val"], usable["test"]])
    if not len(held) or len(held) * len(train) > MAX_COPY_PAIRS:
        return
    vectors = lambda index: features.rows(index, np.zeros(len(index))).to_array()  # noqa: E731
    twin = near_copies(vectors(held), vectors(train))
    if not (twin >= 0).any():
        return
    samples, copied = split.samples(), held[twin >= 0]
    counts = " and ".join(f"{n} {name}" for n, name in ((int((copied < bounds[2]).sum()), "validation"),
                                                      (int((copied >= bounds[2]).sum()), "test")) if n)
    example = samples[copied[0]].path, samples[train[twin[twin >= 0][0]]].path
    console.warn(f"{counts} photo(s) are near-identical to training photos, the same photo recropped, re-encoded "
                 f"or recoloured (e.g. {example[0]} and {example[1]}): their scores flatter the model; "
                 f"'headstart inspect {split.root}' lists them")
