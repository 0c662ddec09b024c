"""Where the model looked: class activation maps (Zhou, Khosla, Lapedriza, Oliva and Torralba,
"Learning Deep Features for Discriminative Localization", CVPR 2016).

headstart's head is global average pooling followed by one dense layer, so a class's logit is the
average over the backbone's feature map of ``weights[class] . features[:, y, x]``, plus its bias:
that map, the class activation map, is exact and needs no gradient. Its mean plus the class's
bias is the logit. Backbones whose features are a spatial map (the convolutional ones:
EfficientNet, ResNet, ConvNeXt...) have one; a vision transformer's tokens are refused.
PyTorch models only: an exported graph outputs probabilities alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import Preprocessing
from ..data.images import network_input
from ..errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = ["class_maps", "overlay", "overlays"]


def class_maps(runtime: tuple, preprocessing: Preprocessing, paths: Sequence[Path], batch_size: int = 32
               ) -> np.ndarray:
    """The class activation map of each image's most probable class, (N, h, w) float32 at the
    feature map's resolution, in logit units; NaN for an image that cannot be read. ``runtime``:
    the network on its device, the device and the compute dtype (``ImageClassifier._inference``)."""
    import torch

    net, device, dtype = runtime
    maps: list[np.ndarray | None] = []
    for start in range(0, len(paths), batch_size):
        pixels, where = [], []
        for i, path in enumerate(paths[start:start + batch_size]):
            try:
                pixels.append(network_input(path, preprocessing))
                where.append(i)
            except Exception:  # an unreadable image gets a NaN map, as it gets a NaN probability row
                continue
        batch: list[np.ndarray | None] = [None] * len(paths[start:start + batch_size])
        if pixels:
            for i, cam in zip(where, _maps(net, device, dtype, torch.from_numpy(np.stack(pixels)))):
                batch[i] = cam
        maps += batch
    shape = next((m.shape for m in maps if m is not None), (1, 1))
    return np.stack([m if m is not None else np.full(shape, np.nan, np.float32) for m in maps]) if maps \
        else np.zeros((0, *shape), np.float32)


def _maps(net, device, dtype, images: torch.Tensor) -> np.ndarray:
    """The maps of the most probable classes of one batch of uint8 images."""
    import torch

    from ..device import autocast, to_device

    with torch.inference_mode():
        with autocast(device, dtype):
            features = net.backbone.forward_features(net.normalize(to_device(images, device))).float()
        if features.ndim != 4:
            raise UsageError("class activation maps need a backbone whose features are a spatial map (a "
                             "convolutional network); this one's are tokens")
        cams = torch.einsum("kc,nchw->nkhw", net.head.fc.weight.float(), features)
        best = (cams.mean(dim=(2, 3)) + net.head.fc.bias.float()).argmax(dim=1)
        return cams[torch.arange(len(best)), best].cpu().numpy().astype(np.float32)


def overlay(pixels: np.ndarray, cam: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """``pixels`` (the network's uint8 input, 3 x H x W) with ``cam`` over it as heat: the map
    scaled to [0, 1] over the image, resized to it, from transparent to red to yellow. H x W x 3 uint8."""
    from PIL import Image

    image = np.transpose(pixels, (1, 2, 0)).astype(np.float32)
    low, high = float(np.nanmin(cam)), float(np.nanmax(cam))
    scaled = (cam - low) / (high - low) if high > low else np.zeros_like(cam)
    heat = np.asarray(Image.fromarray((scaled * 255).astype(np.uint8)).resize(image.shape[1::-1], Image.BILINEAR),
                      dtype=np.float32)[..., None] / 255
    colour = np.concatenate([np.full_like(heat, 255), 255 * heat, np.zeros_like(heat)], axis=2)
    alpha = strength * heat
    return np.clip((1 - alpha) * image + alpha * colour, 0, 255).astype(np.uint8)


def overlays(model, paths: Sequence[Path], batch_size: int = 32) -> list[np.ndarray | None]:
    """Each image's network input with the map of its most probable class over it (:func:`overlay`;
    None for an image that cannot be read). ``model``: a run folder's
    :class:`~headstart.model.ImageClassifier` (its ``explain`` and ``preprocessing``)."""
    maps = model.explain(paths, batch_size=batch_size)
    return [None if np.isnan(cam).all() else overlay(network_input(path, model.preprocessing), cam)
            for path, cam in zip(paths, maps)]
