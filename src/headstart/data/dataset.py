"""From a folder of images to labelled samples: discovery and splits.

Layout: one subfolder per class. When the folder holds split folders
(:data:`SPLIT_FOLDERS`, in any case: ``train/``, ``Training/``, ``training_set/``
...; ``val/``, ``valid/``, ``dev/`` ...; ``test/``, ``Testing/`` ...) they are
used as they are, and a train split alone (or with a test split only) gives up
a stratified share of its images for validation; otherwise a stratified split
is drawn with a seed and saved with the run. :func:`split_of` is the one rule
for which folder is which split, for every command. A file that cannot be used
is never fatal: it is reported with its reason and left out.

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
import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..config import LABEL_SEP
from ..errors import DataError
from .identical import copies
from .images import image_files, is_hidden, probe_all

T = TypeVar("T")

__all__ = ["SPLIT_FOLDERS", "LABEL_SEP", "label_matrix", "sample_targets", "Sample", "Skipped", "DatasetSplit", "discover", "split_of",
           "find_split_folders", "stratified_split", "draw_split", "copy_groups"]

# The names downloaded datasets give their split folders (compared in lower case).
SPLIT_FOLDERS = {"train": ("train", "training", "training_set", "train_set"),
                 "val": ("val", "valid", "validation", "dev"),
                 "test": ("test", "testing", "test_set")}
_EXPECTED = ("expected one folder per class holding its images, or split folders (train/, val/, test/) "
             "each holding one folder per class")




@dataclass(frozen=True)
class Sample:
    """One image and its class index; in a multi-label set, ``label`` is -1 and ``labels`` holds
    the indices of every class it shows (empty: none of them)."""

    path: Path
    label: int
    labels: tuple[int, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"skipping {self.path}: {self.reason}"


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
    label_sep: str = LABEL_SEP  # how its cells separate several labels

    def splits(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def samples(self) -> list[Sample]:
        """Train, val and test samples, in that order: the order of the lightweight workflow's features."""
        return self.train + self.val + self.test

    def sizes(self) -> str:
        return f"{len(self.train)} train / {len(self.val)} val / {len(self.test)} test images"

    def sparse_validation(self, val_fraction: float) -> str | None:
        """A warning when most classes have no validation image, though validation was asked for."""
        unseen = sum(n == 0 for n in self.counts()["val"].values())
        if (self.val or val_fraction > 0) and unseen > len(self.classes) / 2:
            # A class keeps at least one image for training: with one or two images per class,
            # most classes have none to validate on, and the validation metrics say little.
            return (f"{unseen} of {len(self.classes)} classes have no validation image (too few images per "
                    "class): validation metrics, early stopping and the fine-tuning guard rest on the others")
        return None

    def counts(self, kept: Sequence[bool] | None = None) -> dict[str, dict[str, int]]:
        """Images per class in each split (an image counts once for each of its labels); with
        ``kept``, one flag per image in :meth:`samples` order, only the images flagged."""
        flags = iter(kept) if kept is not None else itertools.repeat(True)
        out = {}
        for name, samples in self.splits().items():
            per_class = dict.fromkeys(self.classes, 0)
            for s in samples:
                keep = next(flags)
                for label in self.label_indices(s):
                    per_class[self.classes[label]] += bool(keep)
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


def sample_targets(samples: Sequence[Sample], num_classes: int, multi_label: bool) -> np.ndarray:
    """What ``samples`` are labelled, as metrics take it: class indices, or for multi-label
    samples the indicator matrix."""
    return label_matrix(samples, num_classes) if multi_label else np.array([s.label for s in samples])


def label_matrix(samples: Iterable[Sample], num_classes: int) -> np.ndarray:
    """The binary indicator matrix (N, classes), float32, of multi-label samples."""
    samples = list(samples)
    out = np.zeros((len(samples), num_classes), dtype=np.float32)
    for row, s in enumerate(samples):
        out[row, list(s.labels)] = 1
    return out


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))


def split_of(name: str) -> str | None:
    """The split ("train", "val" or "test") a folder named ``name`` holds, or None."""
    return next((split for split, names in SPLIT_FOLDERS.items() if name.lower() in names), None)


def find_split_folders(root: Path) -> dict[str, Path]:
    """The split folders of ``root`` by split; empty when it has none (its folders are classes).

    Raises :class:`DataError` for split folders without a train split.
    """
    found: dict[str, list[Path]] = {}
    for folder in _class_folders(root):
        split = split_of(folder.name)
        if split is not None:
            found.setdefault(split, []).append(folder)
    if not found:
        return {}
    if "train" not in found:
        names = ", ".join(f"{p.name}/" for group in found.values() for p in group)
        raise DataError(f"{root} has split folder(s) {names} but no training split (train/): {_EXPECTED}")
    # Two folders for one split (val/ and validation/): the name listed first is used, the
    # other is listed as skipped.
    return {split: min(group, key=lambda p: SPLIT_FOLDERS[split].index(p.name.lower()))
            for split, group in found.items()}


def _check_not_nested(root: Path, folders: list[Path]) -> None:
    """Refuse class folders that all hold the same folders: a layout turned inside out (one folder
    per split inside each class, or split folders under unknown names), which would train a
    model to tell the wrong things apart."""
    inside = [{p.name for p in _class_folders(f)} for f in folders]
    shared = set.intersection(*inside) if inside else set()
    if len(shared) >= 2 and all(names == shared for names in inside):
        listed = ", ".join(f"{n}/" for n in sorted(shared))
        raise DataError(f"every folder of {root} ({', '.join(f.name + '/' for f in folders[:4])}"
                        f"{', ...' if len(folders) > 4 else ''}) holds the same folders ({listed}): {_EXPECTED}")


def _scan_classes(root: Path, classes: Sequence[str] | None = None) -> tuple[dict[str, list[Path]], list[Skipped]]:
    """Usable images per class folder of ``root``, and the files left out with a reason."""
    folders = _class_folders(root)
    if classes is None:
        if not folders:
            raise DataError(f"no class folders in {root}: expected one subfolder of images per class")
        if len(folders) < 2:
            raise DataError(f"{root} has a single class folder ({folders[0].name}): "
                            "a classifier needs at least two classes")
        _check_not_nested(root, folders)
    else:
        unknown = sorted(p.name for p in folders if p.name not in classes)
        if unknown:
            raise DataError(f"{root} has class folder(s) not in the training split: {', '.join(unknown)}")
    unusable: dict[Path, str] = {}
    files = {p.name: image_files(p, unusable) for p in folders}
    bad = probe_all([f for paths in files.values() for f in paths])
    skipped = [Skipped(p, r) for p, r in {**unusable, **bad}.items()]
    images = {name: [f for f in paths if f not in bad] for name, paths in files.items()}
    for name, paths in images.items():
        if not paths:
            # This error ends the run before the skipped files are reported: say why here.
            unreadable = [f for f in files[name] if f in bad]
            why = (f": {len(unreadable)} file(s) cannot be used, e.g. {unreadable[0].name}: {bad[unreadable[0]]}"
                   if unreadable else "")
            raise DataError(f"class folder {root / name} has no usable images{why}")
    return images, skipped


def discover(root: str | Path, val_fraction: float = 0.2, test_fraction: float = 0.0,
             seed: int = 0) -> DatasetSplit:
    """Find the classes and images under ``root`` and split them into train / val / test.

    With split folders but no validation one, ``val_fraction`` of each class of the train
    split is drawn for validation (``test_fraction`` too, when there is no test folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    split_folders = find_split_folders(root)
    if split_folders:
        train_images, skipped = _scan_classes(split_folders["train"])
        # Folders beside the split folders (a Kaggle "single_prediction/") are no class: said, not used.
        skipped += [Skipped(p, "not a split folder (train, val, test): left out" if split_of(p.name) is None
                            else f"a second {split_of(p.name)} split folder: left out")
                    for p in _class_folders(root) if p not in split_folders.values()]
        classes = tuple(sorted(train_images))
        splits = {}
        for name in ("val", "test"):
            if name in split_folders:
                splits[name], more = _scan_classes(split_folders[name], classes)
                skipped += more
        samples = {name: _to_samples(images, classes) for name, images in splits.items()}
        drawn = (0.0 if "val" in samples else val_fraction, 0.0 if "test" in samples else test_fraction)
        if any(drawn):
            train, val, test = stratified_split(train_images, classes, *drawn, seed)
        else:
            train, val, test = _to_samples(train_images, classes), [], []
        return DatasetSplit(root, classes, train, samples.get("val", val), samples.get("test", test),
                            skipped, presplit=True)
    images, skipped = _scan_classes(root)
    classes = tuple(sorted(images))
    train, val, test = stratified_split(images, classes, val_fraction, test_fraction, seed)
    return DatasetSplit(root, classes, train, val, test, skipped)


def _to_samples(images: dict[str, list[Path]], classes: Sequence[str]) -> list[Sample]:
    return [Sample(p, classes.index(name)) for name in classes for p in images.get(name, [])]


def stratified_split(images: dict[str, list[Path]], classes: Sequence[str], val_fraction: float,
                     test_fraction: float, seed: int) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Split each class in the same proportions, reproducibly for a seed, byte-identical copies
    of a photo always on one side (:mod:`headstart.data.identical`).

    Done per class rather than with scikit-learn's ``train_test_split``, which
    refuses classes with a single image: here such a class stays in training,
    where it is still learned from.
    """
    rng = random.Random(seed)
    twins = copies(p for paths in images.values() for p in paths)
    train, val, test = [], [], []
    for label, name in enumerate(classes):
        drawn = draw_split(copy_groups(sorted(images[name]), twins), val_fraction, test_fraction, rng)
        for split, paths in zip((train, val, test), drawn):
            split += [Sample(p, label) for p in paths]
    return train, val, test


def draw_split(groups: list[list[T]], val_fraction: float, test_fraction: float, rng: random.Random
               ) -> tuple[list[T], list[T], list[T]]:
    """Train, val and test drawn from shuffled ``groups`` (copies of one photo, kept together) in
    the proportions asked for, counted in items; at least one group stays for training."""
    rng.shuffle(groups)
    n = sum(map(len, groups))
    n_test = min(round(n * test_fraction), max(n - 1, 0))
    n_val = min(round(n * val_fraction), max(n - 1 - n_test, 0))
    test, val, train = [], [], []
    for group in groups[:-1]:  # the last goes to training whatever its size
        split = test if len(test) < n_test else val if len(val) < n_val else train
        split += group
    train += groups[-1] if groups else []
    return train, val, test


def copy_groups(items: Sequence[T], twins: dict, key=lambda item: item) -> list[list[T]]:
    """``items`` in groups of byte-identical copies (``twins``: path -> first copy), in order."""
    groups: dict[object, list[T]] = {}
    for item in items:
        groups.setdefault(twins.get(key(item), key(item)), []).append(item)
    return list(groups.values())
