"""From a folder of images to batches: discovery, splits, decoding, transforms.

Layout: one subfolder per class. When the folder holds split folders
(``train/`` plus ``val/`` or ``validation/``, optionally ``test/``) they are
used as they are; otherwise a stratified split is drawn with a seed and saved
with the run.

Images are decoded lazily, in worker processes: the dataset is never held in
memory whole. A file that cannot be used is never fatal: it is reported with
its reason and left out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from .config import Preprocessing
from .errors import DataError
from .images import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    CenterCropResize,
    image_files,
    is_hidden,
    probe_all,
    available_cores,
    collect_images,
    decode_failure,
    load_image,
    probe_image,
    resize_size,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "Sample",
    "Skipped",
    "DatasetSplit",
    "discover",
    "collect_images",
    "load_image",
    "probe_image",
    "eval_transform",
    "train_transform",
    "ImageDataset",
    "make_loader",
    "default_workers",
    "available_cores",
]

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class DatasetSplit:
    """The classes, in label order, and the images of each split."""

    root: Path
    classes: tuple[str, ...]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    presplit: bool = False  # True when the split came from train/ val/ test/ folders

    def splits(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split."""
        out = {}
        for name, samples in self.splits().items():
            per_class = dict.fromkeys(self.classes, 0)
            for s in samples:
                per_class[self.classes[s.label]] += 1
            out[name] = per_class
        return out


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))


def _scan_classes(root: Path, classes: Sequence[str] | None = None) -> tuple[dict[str, list[Path]], list[Skipped]]:
    """Usable images per class folder of ``root``, and the files left out with a reason."""
    folders = _class_folders(root)
    if classes is None:
        if not folders:
            raise DataError(f"no class folders in {root}: expected one subfolder of images per class")
        if len(folders) < 2:
            raise DataError(f"{root} has a single class folder ({folders[0].name}): "
                            "a classifier needs at least two classes")
    else:
        unknown = sorted(p.name for p in folders if p.name not in classes)
        if unknown:
            raise DataError(f"{root} has class folder(s) not in the training split: {', '.join(unknown)}")
    files = {p.name: image_files(p) for p in folders}
    bad = probe_all([f for paths in files.values() for f in paths])
    skipped = [Skipped(p, r) for p, r in bad.items()]
    images = {name: [f for f in paths if f not in bad] for name, paths in files.items()}
    for name, paths in images.items():
        if not paths:
            # This error ends the run before the skipped files are reported: say why here.
            unreadable = [f for f in files[name] if f in bad]
            why = (f": {len(unreadable)} file(s) cannot be used, e.g. {unreadable[0].name}: {bad[unreadable[0]]}"
                   if unreadable else "")
            raise DataError(f"class folder {root / name} has no usable images{why}")
    return images, skipped


def _find_split_folders(root: Path) -> dict[str, Path]:
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found if "train" in found and "val" in found else {}


def discover(root: str | Path, val_fraction: float = 0.2, test_fraction: float = 0.0,
             seed: int = 0) -> DatasetSplit:
    """Find the classes and images under ``root`` and split them into train / val / test."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    split_folders = _find_split_folders(root)
    if split_folders:
        train_images, skipped = _scan_classes(split_folders["train"])
        classes = tuple(sorted(train_images))
        splits = {"train": train_images}
        for name in ("val", "test"):
            if name in split_folders:
                splits[name], more = _scan_classes(split_folders[name], classes)
                skipped += more
        samples = {name: _to_samples(images, classes) for name, images in splits.items()}
        return DatasetSplit(root, classes, samples["train"], samples["val"], samples.get("test", []),
                            skipped, presplit=True)
    images, skipped = _scan_classes(root)
    classes = tuple(sorted(images))
    train, val, test = stratified_split(images, classes, val_fraction, test_fraction, seed)
    return DatasetSplit(root, classes, train, val, test, skipped)


def _to_samples(images: dict[str, list[Path]], classes: Sequence[str]) -> list[Sample]:
    return [Sample(p, classes.index(name)) for name in classes for p in images.get(name, [])]


def stratified_split(images: dict[str, list[Path]], classes: Sequence[str], val_fraction: float,
                     test_fraction: float, seed: int) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Split each class in the same proportions, reproducibly for a seed.

    Done per class rather than with scikit-learn's ``train_test_split``, which
    refuses classes with a single image: here such a class stays in training,
    where it is still learned from.
    """
    rng = random.Random(seed)
    train, val, test = [], [], []
    for label, name in enumerate(classes):
        paths = sorted(images[name])
        rng.shuffle(paths)
        n = len(paths)
        n_test = min(round(n * test_fraction), max(n - 1, 0))
        n_val = min(round(n * val_fraction), max(n - 1 - n_test, 0))
        test += [Sample(p, label) for p in paths[:n_test]]
        val += [Sample(p, label) for p in paths[n_test:n_test + n_val]]
        train += [Sample(p, label) for p in paths[n_test + n_val:]]
    return train, val, test


_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}
# Transforms end in uint8 tensors: 4x less to pass between processes than float32.
# Scaling and normalisation happen inside the network (:class:`headstart.head.Normalize`).
def eval_transform(pre: Preprocessing) -> T.Compose:
    """Resize the shorter side to ``size / crop_pct`` and centre-crop ``size``: uint8 CHW."""
    return T.Compose([CenterCropResize(pre), T.PILToTensor()])


def train_transform(pre: Preprocessing, augment: str) -> T.Compose:
    """Augmentation for the standard workflow: ``none``, ``light`` or ``strong``; uint8 CHW."""
    if augment == "none":
        return eval_transform(pre)
    size = pre.input_size[1:]
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

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None, transform,
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
    return Batch(torch.stack([x for x, _, _ in good]),
                 torch.tensor([y for _, y, _ in good], dtype=torch.long),
                 [i for _, _, i in good], failed)


def default_workers(gpu: bool = False) -> int:
    """Decoding processes for a model on the CPU (``gpu`` False) or on a GPU.

    Beside a model on the CPU they share its cores: one per core, at most 4.
    Beside a GPU, decoding is what bounds throughput (a GPU runs the backbone
    50 times faster than a core decodes photos): every core but the main
    process's, at most 16.
    """
    cores = available_cores()
    return max(1, min(16, cores - 1)) if gpu else max(1, min(4, cores))


def make_loader(dataset: ImageDataset, batch_size: int, shuffle: bool = False, workers: int | None = None,
                seed: int = 0, gpu: bool = False) -> DataLoader:
    """Batches of decoded images; ``gpu``: for a model on a GPU (more workers, pinned memory)."""
    # More decoding processes than cores only thrash; more than batches only idle.
    workers = default_workers(gpu) if workers is None else min(workers, available_cores())
    workers = min(workers, max(1, math.ceil(len(dataset) / batch_size)))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        pin_memory=gpu,
        # Workers are started afresh each epoch and seeded from `generator`: augmentation
        # is reproducible, and a resumed run continues exactly where it stopped.
        persistent_workers=False,
    )
