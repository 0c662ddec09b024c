"""One fit, start to end: choose the workflow, train stage 1, fine-tune when asked for.

* **lightweight** without fine-tuning (:mod:`.lightweight`): features from the
  one pipeline, then the linear head; no PyTorch when the features come from the
  cache or the exported engine;
* otherwise **through the network** (:mod:`.network`): the backbone is built,
  stage 1 runs (the head on extracted features, or the standard workflow's
  epochs), then the guarded fine-tune (:mod:`.stages`).
"""

from __future__ import annotations

from .. import distributed
from .._console import Console
from ..config import TrainingConfig
from ..data.dataset import DatasetSplit
from ..data.identical import copies_of
from ..device import cpu_only, resolve_device
from ..errors import DataError, UsageError
from ..runfolder import SKIPPED_FILE
from .lightweight import fit_lightweight
from .plan import FitContext, choose_workflow
from .results import Fitted

__all__ = ["fit", "agreed_split", "report_split"]


def fit(split: DatasetSplit, config: TrainingConfig, context: FitContext) -> Fitted:
    """Train on ``split`` with ``config``: stage 1 by the chosen workflow, then the guarded fine-tune."""
    # A CPU for certain is known without importing PyTorch; otherwise PyTorch looks for a GPU.
    device_type = "cpu" if cpu_only(config.device) else resolve_device(config.device).type
    workflow, fine_tune_epochs = choose_workflow(config, device_type)
    if fine_tune_epochs and not split.val:
        raise UsageError("fine-tuning is guarded by the validation split, and there is none: "
                         "set --val-fraction above 0 or add a val/ folder")
    if workflow == "lightweight" and not fine_tune_epochs:
        context.console.info(f"lightweight workflow on {device_type}, {split.sizes()}")
        return fit_lightweight(split, config, context)
    from .network import fit_network

    return fit_network(split, config, context, workflow, fine_tune_epochs)


def agreed_split(split: DatasetSplit) -> DatasetSplit:
    """Rank 0's split on every rank of a data-parallel run, checked against what each rank sees."""
    chosen = distributed.broadcast(split)
    if len(chosen.samples()) != len(split.samples()):
        raise DataError(f"{split.root} holds {len(split.samples())} usable images here but "
                        f"{len(chosen.samples())} on rank 0: every machine needs the same data at the same path")
    return chosen


def report_split(split: DatasetSplit, console: Console, val_fraction: float) -> None:
    """What a fit trains on, in one line, and what it left out or may lack, as warnings."""
    how = ("given splits" if split.presplit else "a seeded random split") if split.multi_label \
        else "split folders" if split.presplit else "a stratified split"
    kind = ", multi-label" if split.multi_label else ""
    console.info(f"{len(split.classes)} classes{kind} ({', '.join(split.classes[:8])}"
                 f"{', ...' if len(split.classes) > 8 else ''}) from {split.root}, using {how}: {split.sizes()}")
    console.warn_each([str(s) for s in split.skipped], SKIPPED_FILE)
    if warning := split.sparse_validation(val_fraction):
        console.warn(warning)
    if split.presplit and (warning := _copied_from_training(split)):
        console.warn(warning)


def _copied_from_training(split: DatasetSplit) -> str | None:
    """A warning when given val or test photos are byte-identical copies of training photos
    (drawn splits never are): their scores would flatter the model."""
    train = [s.path for s in split.train]
    copied = {name: copies_of([s.path for s in samples], train) for name, samples in (("val", split.val),
                                                                                      ("test", split.test))}
    if not any(copied.values()):
        return None
    counts = " and ".join(f"{len(paths)} {'validation' if name == 'val' else 'test'}"
                          for name, paths in copied.items() if paths)
    example = min(p for paths in copied.values() for p in paths)
    return (f"{counts} photo(s) are byte-identical copies of training photos (e.g. {example}): their scores "
            "flatter the model; remove the copies, or let headstart draw the split (it keeps copies together)")
