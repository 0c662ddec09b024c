"""From image files to batches: decoding datasets, transforms, DataLoaders.

Images are decoded lazily, in worker processes: the dataset is never held in
memory whole. A file that fails to decode is never fatal: it travels with the
batch as a failure, with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..config import Preprocessing
from .images import DECODE_ERRORS, CenterCropResize, decode_failure, load_image, resize_size
from .workers import available_cores, default_workers

__all__ = [
    "eval_transform",
    "train_size",
    "train_transform",
    "ImageDataset",
    "Batch",
    "collate",
    "make_loader",
]

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


# The side of the augmented training crops, as a share of the network's input side (train_size).
TRAIN_SCALE = 0.8

# Transforms end in uint8 tensors: 4x less to pass between processes than float32.
# Scaling and normalisation happen inside the network (:class:`headstart.backbone.head.Normalize`).
def eval_transform(pre: Preprocessing) -> T.Compose:
    """Resize the shorter side to ``size / crop_pct`` and centre-crop ``size``: uint8 CHW."""
    return T.Compose([CenterCropResize(pre), T.PILToTensor()])


def train_size(pre: Preprocessing) -> tuple[int, int]:
    """The side of the augmented training crops: :data:`TRAIN_SCALE` of the network's input, in
    multiples of 8 (176 px for 224).

    FixRes (Touvron, Vedaldi, Douze and Jégou, "Fixing the train-test resolution discrepancy",
    NeurIPS 2019): a network trained on smaller crops than it is evaluated on loses little, and a
    step costs two-thirds as much; fine-tuning at 176 px reached the reference's test accuracy on
    eurosat10 (seed 0) in 0.6 of the time it took at 224 (benchmarks/README.md). With the light
    crops (0.6-1.0 of the image's area), objects appear about 0.78x as large as in the centre
    crop evaluation sees; shrinking the crops' areas to match, as FixRes would, measured no better
    on dtd10 and eurosat10 (3 seeds each), so the crops keep their range.
    """
    return tuple(max(8, round(side * TRAIN_SCALE / 8) * 8) for side in pre.input_size[1:])


def train_transform(pre: Preprocessing, augment: str) -> T.Compose:
    """Augmentation for the standard workflow and fine-tuning: ``none``, ``light`` or ``strong``
    (random resized crops of :func:`train_size`); uint8 CHW."""
    if augment == "none":
        return eval_transform(pre)
    size = train_size(pre)
    interpolation = _INTERPOLATION[pre.interpolation]
    if augment == "light":
        steps = [T.RandomResizedCrop(size, scale=(0.6, 1.0), interpolation=interpolation, antialias=True),
                 T.RandomHorizontalFlip()]
    else:
        steps = [T.RandomResizedCrop(size, scale=(0.3, 1.0), interpolation=interpolation, antialias=True),
                 T.RandomHorizontalFlip(),
                 T.RandomRotation(15, interpolation=InterpolationMode.BILINEAR),
                 T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3)]
    return T.Compose([*steps, T.PILToTensor()])


class ImageDataset(torch.utils.data.Dataset):
    """Decodes one image per item; a failure is returned as data, never raised.

    Items are ``(tensor, label, index)``, or ``(None, reason, index)`` when the
    image cannot be decoded (e.g. a truncated JPEG whose header looked fine):
    :func:`collate` drops those from the batch and hands them on, so a worker
    process never dies on a bad file.
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | np.ndarray | None, transform,
                 min_size: int | None = None):
        self.paths = list(paths)
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        self.transform = transform
        self.min_size = min_size

    @classmethod
    def for_eval(cls, paths: Sequence[Path], labels: Sequence[int] | None, pre: Preprocessing) -> "ImageDataset":
        """Images as the network sees them at evaluation: resized, centre-cropped, JPEGs drafted."""
        return cls(paths, labels, eval_transform(pre), min_size=resize_size(pre))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return self.transform(load_image(self.paths[index], self.min_size)), self.labels[index], index
        except DECODE_ERRORS as exc:
            return None, decode_failure(self.paths[index], exc), index


@dataclass
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    indices: list[int]
    failed: list[tuple[int, str]]  # (index, reason)


def collate(items) -> Batch:
    good = [(x, y, i) for x, y, i in items if x is not None]
    failed = [(i, reason) for x, reason, i in items if x is None]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), [], failed)
    # Class indices (int64), or a multi-label set's indicator rows (float32).
    return Batch(torch.stack([x for x, _, _ in good]), torch.from_numpy(np.asarray([y for _, y, _ in good])),
                 [i for _, _, i in good], failed)


def make_loader(dataset: ImageDataset, batch_size: int, shuffle: bool = False, workers: int | None = None,
                seed: int = 0, gpu: bool = False, sampler: Iterable[int] | None = None) -> DataLoader:
    """Batches of decoded images; ``gpu``: for a model on a GPU (more workers, pinned memory);
    ``sampler``: the dataset indices to load, in order (this rank's share on a data-parallel run)."""
    # More decoding processes than cores only thrash; more than batches only idle.
    workers = default_workers(gpu) if workers is None else min(workers, available_cores())
    workers = min(workers, max(1, math.ceil(len(dataset) / batch_size)))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        pin_memory=gpu,
        # Workers are started afresh each epoch and seeded from `generator`: augmentation
        # is reproducible, and a resumed run continues exactly where it stopped.
        persistent_workers=False,
    )
