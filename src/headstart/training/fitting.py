"""One fit, start to end: choose the workflow, train stage 1, fine-tune when asked for.

* **lightweight** without fine-tuning (:mod:`.lightweight`): features from the
  one pipeline, then the linear head; no PyTorch when the features come from the
  cache or the exported engine;
* otherwise **through the network** (:mod:`.network`): the backbone is built,
  stage 1 runs (the head on extracted features, or the standard workflow's
  epochs), then the guarded fine-tune (:mod:`.stages`).
"""

from __future__ import annotations

from ..config import TrainingConfig
from ..data.dataset import DatasetSplit
from ..device import cpu_only, resolve_device
from ..errors import UsageError
from .lightweight import fit_lightweight
from .plan import FitContext, choose_workflow
from .results import Fitted

__all__ = ["fit"]


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
