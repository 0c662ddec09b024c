"""Freezing, as transfer learning means it: a frozen backbone's parameters get no gradient, and its
BatchNorm layers stay in inference mode, also while it is fine-tuned.

The inference mode is :class:`headstart.backbone.head.ClassifierNet`'s: its
``train()`` switches only the head to training. Here: which parameters train.
"""

from __future__ import annotations

from torch import nn

__all__ = ["layer_groups", "freeze", "unfreeze"]


def layer_groups(backbone: nn.Module) -> list[list[nn.Module]]:
    """The backbone's blocks from input to output, as timm groups them (stem, stages, head conv)."""
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        return [[m] for m in backbone.children()]
    from timm.models import group_modules

    named = dict(backbone.named_modules())
    groups = group_modules(backbone, matcher(coarse=True))
    return [[named[n] for n in groups[k]] for k in sorted(groups)]


def freeze(backbone: nn.Module) -> None:
    """No backbone parameter gets a gradient."""
    backbone.requires_grad_(False)


def unfreeze(backbone: nn.Module, last: int | None = None) -> int:
    """Let the last ``last`` blocks (all when None) train; returns how many parameters now train."""
    freeze(backbone)
    groups = layer_groups(backbone)
    for group in groups if last is None else groups[-last:]:
        for module in group:
            module.requires_grad_(True)
    return sum(p.numel() for p in backbone.parameters() if p.requires_grad)
