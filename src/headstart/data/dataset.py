"""From a folder of images to labelled samples: discovery and splits.

Layout: one subfolder per class. When the folder holds split folders
(``train/`` plus ``val/`` or ``validation/``, optionally ``test/``) they are
used as they are; otherwise a stratified split is drawn with a seed and saved
with the run. A file that cannot be used is never fatal: it is reported with
its reason and left out.

Multi-label sets (several labels per image, or none) come from label files and
in-memory labels (:mod:`headstart.data.labels`) as the same :class:`DatasetSplit`,
with ``multi_label`` set: each :class:`Sample` then carries the tuple of its
classes in ``labels`` and no single ``label`` (-1). :meth:`DatasetSplit.targets`
is the one conversion to what a model trains on: class indices, or a binary
indicator matrix (one column per class, as scikit-learn's ``MultiLabelBinarizer``).

Nothing here imports PyTorch: a rerun whose features are all cached finds its
images without it. Decoding into batches is :mod:`headstart.data.loader`'s.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .images import image_files, is_hidden, probe_all

__all__ = ["SPLIT_FOLDERS", "LABEL_SEP", "label_matrix", "Sample", "Skipped", "DatasetSplit", "discover", "stratified_split"]

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}


# Labels of a multi-label sample in the run's CSV files (split.csv, predictions.csv).
LABEL_SEP = ";"


@dataclass(frozen=True)
class Sample:
    """One image and its class index; in a multi-label set, ``label`` is -1 and ``labels`` holds
    the indices of every class it shows (empty: none of them)."""

    path: Path
    label: int
    labels: tuple[int, ...] = ()


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
    multi_label: bool = False  # True: samples carry ``labels``, a model gets one sigmoid output per class
    label_file: Path | None = None  # where the labels came from, when from a label file
    label_sep: str = ";"  # how its cells separate several labels

    def splits(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def samples(self) -> list[Sample]:
        """Train, val and test samples, in that order: the order of the lightweight workflow's features."""
        return self.train + self.val + self.test

    def sizes(self) -> str:
        return f"{len(self.train)} train / {len(self.val)} val / {len(self.test)} test images"

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split (an image counts once for each of its labels)."""
        out = {}
        for name, samples in self.splits().items():
            per_class = dict.fromkeys(self.classes, 0)
            for s in samples:
                for label in self.label_indices(s):
                    per_class[self.classes[label]] += 1
            out[name] = per_class
        return out

    def label_indices(self, sample: Sample) -> tuple[int, ...]:
        """The classes of ``sample``: its one label, or its multi-label set."""
        return sample.labels if self.multi_label else (sample.label,)

    def label_names(self, sample: Sample) -> str:
        """``sample``'s classes as the run's CSV files write them (``;``-separated when multi-label)."""
        return LABEL_SEP.join(self.classes[i] for i in self.label_indices(sample))

    def targets(self, samples: Iterable[Sample]) -> np.ndarray:
        """What a model trains on: class indices (N,), or for a multi-label set the binary
        indicator matrix (N, classes), float32."""
        samples = list(samples)
        if not self.multi_label:
            return np.array([s.label for s in samples], dtype=np.int64)
        return label_matrix(samples, len(self.classes))

    def as_multi_label(self) -> DatasetSplit:
        """This split for a multi-label model (``--multi-label`` on a folder): each image's one class
        becomes its label set."""
        if self.multi_label:
            return self
        convert = [[Sample(s.path, -1, (s.label,)) for s in samples] for samples in (self.train, self.val, self.test)]
        return dataclasses.replace(self, train=convert[0], val=convert[1], test=convert[2], multi_label=True)


def label_matrix(samples: Iterable[Sample], num_classes: int) -> np.ndarray:
    """The binary indicator matrix (N, classes), float32, of multi-label samples."""
    samples = list(samples)
    out = np.zeros((len(samples), num_classes), dtype=np.float32)
    for row, s in enumerate(samples):
        out[row, list(s.labels)] = 1
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
