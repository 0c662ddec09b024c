"""A fit through the network: the pretrained backbone with a new head, stage 1, then the guarded
fine-tune. This is the path of the standard workflow and of every fine-tuning run.

On a data-parallel run, every rank trains a replica on its share of each epoch
(DistributedDataParallel, :func:`headstart.training.loop.train_stage`) and validates
its share of the validation images; the statistics are summed over the ranks.
``--batch-size`` is per process: the global batch is N times larger. The learning
rate is not rescaled (the gradients are averaged over the global batch, as in one
process); to keep a one-process run's dynamics, keep the global batch (divide
``--batch-size`` by N), or scale ``--lr`` by sqrt(N), the rule for Adam-type
optimisers (Malladi et al., 2022), when the global batch grows N times.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DistributedSampler

from .. import distributed
from ..backbone.head import ClassifierNet
from ..backbone.pretrained import create_backbone
from ..config import HeadSpec, Preprocessing, TrainingConfig
from ..data.dataset import DatasetSplit
from ..data.loader import ImageDataset, make_loader, train_transform
from ..device import bounded_batch_size, prepare, resolve_device, resolve_precision
from ..features.pipeline import extract_features
from .lightweight import fit_head, warn_of_near_copies
from .loop import StageCheckpoint, Trainer, validation_thresholds
from .plan import FitContext, feature_request
from .results import Fitted, TrainResult
from .stages import fine_tune, train_frozen

__all__ = ["fit_network"]


def fit_network(split: DatasetSplit, config: TrainingConfig, context: FitContext, workflow: str,
                fine_tune_epochs: int) -> Fitted:
    """Stage 1 through the network (or on features it extracts), then the guarded fine-tune."""
    console = context.console
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    backbone = create_backbone(config.backbone_request, console=console)
    console.info(backbone.spec.describe(backbone.preprocessing))
    head = HeadSpec(len(split.classes), config.dropout, multi_label=split.multi_label)
    net = prepare(ClassifierNet.create(backbone, head), device)
    dtype = resolve_precision(config.precision, device)
    precision = str(dtype).removeprefix("torch.")
    # The lightweight head's features come from the feature engine (named when it runs), not this precision.
    runs = f"features by the feature engine, fine-tuning in {precision}" if workflow == "lightweight" else precision
    ranks = distributed.world().size
    where = f"{ranks} processes on {device.type}s, each {config.batch_size} images a step" if ranks > 1 else device.type
    console.info(f"{workflow} workflow on {where} ({runs}), {split.sizes()}")
    fitted = Fitted(workflow, backbone.spec, backbone.preprocessing, TrainResult(), net=net)
    start = time.perf_counter()
    stage1_val = None  # measured by the same pipeline as the fine-tuned model, unless stage 1 ran through it
    if workflow == "lightweight":
        extraction = extract_features([s.path for s in split.samples()], feature_request(config), context.cache,
                                      console, backbone=backbone)
        warn_of_near_copies(extraction, split, console)
        head = fit_head(extraction, split, config, context, fine_tuning=bool(fine_tune_epochs))
        # Stage 1's model is the head as fitted (and refitted); fine-tuning starts from its own.
        net.head.load_linear(*(head.fine_tune_start or (head.linear.weight, head.linear.bias)))
        fitted.result, fitted.held_out_proba = head.result, head.proba
        fitted.features, fitted.head = head.features, head.search
        fitted.thresholds = head.thresholds
    train_loader, val_loader, refit_loader = _loaders(split, backbone.preprocessing, config, device, console)
    trainer = Trainer(net, train_loader, val_loader, config, device, dtype, console, context.on_epoch,
                      StageCheckpoint.at(context.checkpoint_dir), multi_label=split.multi_label,
                      input_size=backbone.preprocessing.input_size,
                      refit_loader=refit_loader if fine_tune_epochs and config.refit else None)
    if workflow == "standard":
        fitted.result = train_frozen(trainer)
        stage1_val = fitted.result.stage1.val
    fitted.timings["stage1"] = time.perf_counter() - start
    if fine_tune_epochs:
        fine_tune(trainer, fine_tune_epochs, fitted.result, before=stage1_val)
        fitted.timings["fine_tune"] = time.perf_counter() - start - fitted.timings["stage1"]
    if fitted.result.fine_tune_kept:  # the head's view of val and test is no longer the model's
        fitted.held_out_proba = {} if fitted.result.val_proba is None else {"val": fitted.result.val_proba}
    elif workflow == "lightweight":
        net.head.load_linear(head.linear.weight, head.linear.bias)
    if split.multi_label and (workflow == "standard" or fitted.result.fine_tune_kept):
        fitted.thresholds = validation_thresholds(trainer, fitted.result.val_proba)
    net.eval()
    return fitted


def _loaders(split: DatasetSplit, preprocessing: Preprocessing, config: TrainingConfig, device: torch.device,
             console) -> tuple:
    """The training loader (augmented, shuffled), the validation loader (None without val images),
    and the refit's loader: the training and validation images together, as the training loader
    (None without val images).

    A loader starts its decoding workers when iterated, not here. Each epoch's shuffle is drawn
    from the seed and the epoch's number (DistributedSampler, in one process too) and dealt out to
    the ranks: ``--batch-size B`` on N processes trains on the same global batches as ``B x N`` in
    one process (when N divides the training images; otherwise a few are repeated to even the
    shares), and a run resumes on any number of processes. Each rank augments with its own
    seed. The validation images are split into contiguous shares, none repeated (DistributedSampler
    would pad), so the summed statistics are exact.
    """
    batch_size = bounded_batch_size(config.batch_size, preprocessing.input_size, device, console)
    gpu = device.type == "cuda"
    here = distributed.world()

    def training(samples):
        train = ImageDataset([s.path for s in samples], split.targets(samples), train_transform(preprocessing,
                                                                                                config.augment))
        sampler = DistributedSampler(train, here.size, here.rank, shuffle=True, seed=config.seed)
        return make_loader(train, batch_size, workers=config.workers, seed=config.seed + here.rank, gpu=gpu,
                           sampler=sampler)

    if not split.val:
        return training(split.train), None, None
    val = ImageDataset.for_eval([s.path for s in split.val], split.targets(split.val), preprocessing)
    return (training(split.train),
            make_loader(val, batch_size, workers=config.workers, seed=config.seed, gpu=gpu,
                        sampler=range(*distributed.shard_bounds(len(val))) if here.size > 1 else None),
            training(split.train + split.val))
