"""The new head, and the full network: frozen-able backbone + head.

The head is the classic transfer-learning head: global average pooling, dropout, one dense layer. It
accepts a backbone feature map (standard workflow) or already pooled features
(lightweight workflow), so both workflows train the very same layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..config import HeadSpec, Preprocessing
from ..device import autocast, to_device

if TYPE_CHECKING:
    from .pretrained import Pretrained

__all__ = ["Head", "Normalize", "ClassifierNet", "activation", "probabilities"]


class Head(nn.Module):
    """Global average pooling -> dropout -> linear, producing one logit per class."""

    def __init__(self, num_features: int, spec: HeadSpec):
        super().__init__()
        self.dropout = nn.Dropout(spec.dropout)
        self.fc = nn.Linear(num_features, spec.num_classes)

    @staticmethod
    def pool(features: torch.Tensor) -> torch.Tensor:
        """Average over space (N, C, H, W) or tokens (N, T, C); pooled (N, C) passes through."""
        if features.ndim == 4:
            return features.mean(dim=(2, 3))
        if features.ndim == 3:
            return features.mean(dim=1)
        return features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(features)))

    def load_linear(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Take the dense layer's weights from the lightweight head, fitted on pooled features:
        both workflows train this very layer."""
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(weight))
            self.fc.bias.copy_(torch.from_numpy(bias))


class Normalize(nn.Module):
    """Images in, as uint8 (0-255) or float (0-1), normalised with the backbone's mean and std.

    Part of the network rather than of the data pipeline, so decoding workers
    ship compact uint8 tensors and an exported model takes raw pixels. Its
    buffers are not saved: ``config.json`` holds mean and std.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255
        return (images - self.mean) / self.std


class ClassifierNet(nn.Module):
    """Backbone + head. The backbone always runs in inference mode.

    ``train()`` switches only the head to training mode: the backbone's
    BatchNorm layers keep using their ImageNet running statistics (and its
    dropout / stochastic depth stay off), whether the backbone is frozen or
    being fine-tuned. This is the method's key detail: updating BatchNorm
    statistics on a small new dataset wrecks what the backbone learned.
    """

    def __init__(self, backbone: nn.Module, head: Head, preprocessing: Preprocessing):
        super().__init__()
        self.normalize = Normalize(preprocessing.mean, preprocessing.std)
        self.backbone = backbone
        self.head = head

    @classmethod
    def create(cls, backbone: Pretrained, head: HeadSpec) -> ClassifierNet:
        """A pretrained backbone with a new head, randomly initialised."""
        return cls(backbone.module, Head(backbone.spec.num_features, head), backbone.preprocessing)

    def train(self, mode: bool = True) -> "ClassifierNet":
        super().train(mode)
        self.backbone.eval()
        return self

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, the input of the head's dropout."""
        return Head.pool(self.backbone.forward_features(self.normalize(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(self.normalize(images)))


def activation(head: HeadSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """How ``head``'s logits become probabilities, in every runtime (PyTorch here, the exported
    graphs too): a sigmoid per class for a multi-label head, else the softmax of the logits
    divided by the head's temperature (1, or fitted on validation: :mod:`headstart.trust`)."""
    if head.multi_label:
        return torch.sigmoid
    temperature = float(head.temperature)
    return lambda logits: torch.softmax(logits / temperature, 1)


def probabilities(net: ClassifierNet, device: torch.device, dtype: torch.dtype, images: torch.Tensor,
                  tta: bool = False, head: HeadSpec | None = None) -> np.ndarray:
    """Class probabilities of ``net`` on a batch, as :func:`activation` of ``head`` (default: a
    plain softmax) makes them; with ``tta``, averaged with the mirror images'."""
    activation_of = activation(head or HeadSpec(num_classes=2))
    images = to_device(images, device)
    with torch.inference_mode(), autocast(device, dtype):
        proba = activation_of(net(images).float())
        if tta:
            proba = (proba + activation_of(net(images.flip(-1)).float())) / 2
    return proba.cpu().numpy()
