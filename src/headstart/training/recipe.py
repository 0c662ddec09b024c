"""How a stage optimises: AdamW, a learning rate set at every step, and when fine-tuning, a rate
per block of the backbone.

Fine-tuning's recipe was chosen by measurement on the three shared photo sets
(``benchmarks/bench_recipe.py``, table in ``benchmarks/README.md``): a warm-up,
then a cosine decay, both per step, as timm and fastai schedule. The warm-up
matters because the head starts fitted and the backbone's first steps would
otherwise be its largest, on gradients that the pretrained features have not
earned yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backbone.freeze import layer_groups
from ..backbone.head import ClassifierNet
from ..config import TrainingConfig

__all__ = ["Optimisation", "optimisation", "WARMUP_FRACTION"]

# Fine-tuning's share of steps spent warming up, linearly from a hundredth of the peak rate.
WARMUP_FRACTION = 0.1


@dataclass
class Optimisation:
    """What one training step updates: the optimizer, its per-step schedule, and on float16 the
    loss scaler."""

    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.schedule.step()

    @property
    def lr(self) -> float:
        """The peak group's current rate (the head's, when the blocks have rates of their own)."""
        return max(group["lr"] for group in self.optimizer.param_groups)


def optimisation(net: ClassifierNet, config: TrainingConfig, stage: str, steps: tuple[int, int],
                 dtype: torch.dtype) -> Optimisation:
    """AdamW over the parameters that train, for ``steps`` = (epochs, steps per epoch) of ``stage``
    ("frozen": the head at ``config.lr``; "fine-tune" or its "refit" on train + val: at
    ``config.fine_tune_lr``, warmed up)."""
    fine_tuning = stage in ("fine-tune", "refit")
    lr = config.fine_tune_lr if fine_tuning else config.lr
    groups = _rated_groups(net, lr, config.layer_decay if fine_tuning else 1.0)
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay)
    total = max(steps[0] * steps[1], 1)
    warm = round(total * WARMUP_FRACTION) if fine_tuning else 0
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warm, 1))
    schedule = cosine
    if warm:
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warm)
        schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warm])
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return Optimisation(optimizer, schedule, scaler)


def _rated_groups(net: ClassifierNet, lr: float, decay: float) -> list[dict]:
    """The trainable parameters in groups, the head at ``lr`` and each block below it ``decay``
    times the rate of the block above (discriminative rates: the early blocks' generic features
    move least)."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    if decay == 1.0:
        return [{"params": trainable}]
    groups, rate = [{"params": [p for p in net.head.parameters() if p.requires_grad], "lr": lr}], lr
    for block in reversed(layer_groups(net.backbone)):
        params = [p for module in block for p in module.parameters() if p.requires_grad]
        if params:
            rate *= decay
            groups.append({"params": params, "lr": rate})
    return [g for g in groups if g["params"]]
