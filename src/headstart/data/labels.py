"""Labels beyond folders: label files (CSV) and labels held in memory, as a :class:`DatasetSplit`.

A label file has a ``path`` column (relative to the image folder, by default the
CSV's own folder, or absolute), a ``label`` column (``labels`` and ``class`` are
read too, so a run's ``split.csv`` is a label file) and an optional ``split``
column (``train``, ``val`` or ``validation``, ``test``). Several labels in one
cell are separated by ``;``: the set is then **multi-label** (one sigmoid output
per class, and an image may have no label at all: "none of these").

A bad row (a missing or unreadable file, an empty label where each image needs
one, an unknown split, a path listed again with other labels) is never fatal: it
is reported with its line and left out, as :func:`headstart.data.discover`
leaves out unreadable images.

Without a split column, the validation (and test) images are drawn as for
folders: stratified by class for single-label sets; for multi-label sets a
seeded random draw (no iterative stratification: with a few hundred images per
class, a random 20% keeps every frequent class in validation).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import file_problem
from ..errors import DataError, UsageError
from .dataset import (LABEL_SEP, SPLIT_FOLDERS, DatasetSplit, Sample, Skipped, copy_groups, discover, draw_split,
                      stratified_split)
from .identical import copies
from .images import probe_all

__all__ = ["LABEL_COLUMNS", "read_label_file", "from_targets", "to_split", "load_split",
           "evaluation_split"]

LABEL_COLUMNS = ("label", "labels", "class")  # the first one present is read
_SPLITS = {name: split for split, names in SPLIT_FOLDERS.items() for name in names}


@dataclass(frozen=True)
class _Row:
    """One labelled image as given, before the checks: where it came from, for the report."""

    path: Path
    labels: tuple[str, ...]
    split: str  # "" when none is given
    where: str  # e.g. "labels.csv line 4"


def read_label_file(path: str | Path, root: str | Path | None = None, label_sep: str = LABEL_SEP,
                    multi_label: bool | None = None, val_fraction: float = 0.2, test_fraction: float = 0.0,
                    seed: int = 0, classes: Sequence[str] | None = None) -> DatasetSplit:
    """The images and labels of a label file, split into train / val / test.

    ``root``: where relative paths start (default: the label file's own folder; for a run's
    ``split.csv``, :func:`headstart.record.label_root` finds the folder that run was trained on).
    ``multi_label``: None decides from the file (several labels in any cell);
    True allows images with no label. ``classes``: a model's classes, for
    evaluation; a label outside them is an error.
    """
    path = Path(path)
    problem = file_problem(path)  # a FIFO or /dev/zero would hang the reader
    if problem == "is missing":
        raise DataError(f"label file not found: {path}")
    if problem is not None:
        raise DataError(f"label file {path} {problem}")
    if not label_sep:
        raise UsageError("--label-sep must not be empty")
    root = Path(root) if root is not None else path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
            if "path" not in columns or label_column is None:
                raise DataError(f"{path}: expected a 'path' and a 'label' column, found "
                                f"{', '.join(columns) or 'none'}")
            names = dict(zip(columns, reader.fieldnames))
            rows = [_Row(_resolve(root, (r.get(names["path"]) or "").strip()),
                         _split_labels(r.get(names[label_column]) or "", label_sep),
                         (r.get(names["split"]) or "").strip().lower() if "split" in names else "",
                         f"{path.name} line {reader.line_num}")
                    for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a readable CSV file: {exc}") from None
    if not rows:
        raise DataError(f"{path} lists no image")
    split = _build(rows, root, multi_label, val_fraction, test_fraction, seed, classes, where=str(path))
    return dataclasses.replace(split, label_file=path.absolute(), label_sep=label_sep)


def from_targets(paths: Sequence[str | Path], y, classes: Sequence[str] | None = None,
                 multi_label: bool | None = None, label_sep: str = LABEL_SEP, val_fraction: float = 0.2,
                 test_fraction: float = 0.0, seed: int = 0) -> DatasetSplit:
    """Labels held in memory, in scikit-learn's conventions, as a split.

    ``y`` is one class name per path (single-label), one list of names per path
    (multi-label), or a binary indicator matrix (N, classes) with ``classes``
    naming its columns, as ``MultiLabelBinarizer`` gives. A string holding
    ``label_sep`` is read as a label file's cell is.
    """
    paths = [Path(p) for p in paths]
    labels = _label_lists(y, classes, label_sep, len(paths))
    if multi_label is None and _is_indicator(y):
        multi_label = True
    if not paths:
        raise DataError("no image given to fit on")
    parents = [str(p.parent.absolute()) for p in paths]
    root = Path(os.path.commonpath(parents))
    rows = [_Row(p if p.is_absolute() else Path(os.path.abspath(p)), tuple(names), "", f"image {i}")
            for i, (p, names) in enumerate(zip(paths, labels))]
    return _build(rows, root, multi_label, val_fraction, test_fraction, seed,
                  classes if _is_indicator(y) else None, where="y")


def to_split(data, y=None, classes: Sequence[str] | None = None, multi_label: bool | None = None,
             val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0) -> DatasetSplit:
    """What ``ImageClassifier.fit`` was given, as a split: a folder, paths with labels ``y``, a
    pandas DataFrame with ``path`` and ``label`` columns (duck-typed: pandas is not required),
    or a split. ``multi_label=True`` makes a folder's classes one-label sets."""
    fractions = dict(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if y is None and hasattr(data, "columns"):
        missing = [c for c in ("path", "label") if c not in data.columns]
        if missing:
            raise UsageError(f"the DataFrame needs 'path' and 'label' columns. Got {list(data.columns)} instead.")
        data, y = list(data["path"]), list(data["label"])
    if y is not None:
        if isinstance(data, (str, Path)):
            raise UsageError(f"fit(paths, y) takes a list of image paths, not {str(data)!r}: "
                             "pass a folder alone, or one path per label")
        return from_targets(data, y, classes, multi_label, **fractions)
    split = data if isinstance(data, DatasetSplit) else discover(data, **fractions)
    if multi_label and not split.multi_label:
        split = split.as_multi_label()
    if multi_label is False and split.multi_label:
        raise UsageError("multi_label=False, but images have several labels: leave it None or set it True")
    return split


def load_split(data: str | Path | None, labels: str | Path | None = None, label_sep: str = LABEL_SEP,
               val_fraction: float = 0.0, test_fraction: float = 0.0, seed: int = 0) -> DatasetSplit:
    """The images of the folder ``data``, or of the label file ``labels`` (relative paths from
    ``data`` when given), split as :func:`discover` and :func:`read_label_file` split them.

    Paths are resolved as ``headstart train`` resolves them, so that the features training
    cached (keyed by absolute path) are found.
    """
    fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed}
    if labels is not None:
        root = Path(data).resolve() if data is not None else None
        return read_label_file(Path(labels).resolve(), root, label_sep, **fractions)
    if data is None:
        raise UsageError("give the image folder DATA, or --labels CSV")
    return discover(Path(data).resolve(), **fractions)


def evaluation_split(data: str | Path | None, classes: Sequence[str], multi_label: bool,
                     labels: str | Path | None = None, label_sep: str = LABEL_SEP) -> DatasetSplit:
    """The labelled images to measure a model of ``classes`` on: a folder's (split folders as they
    are, else every image as "train"), or a label file's, with the model's class indices."""
    if labels is not None:
        return read_label_file(labels, data, label_sep, multi_label=multi_label, val_fraction=0.0, classes=classes)
    if data is None:
        raise UsageError("give the labelled image folder DATA, or --labels FILE")
    split = discover(data, val_fraction=0.0)
    unknown = [c for c in split.classes if c not in classes]
    if unknown:
        raise DataError(f"{data} has classes the model does not know: {', '.join(unknown)}")
    remap = [list(classes).index(c) for c in split.classes]
    split = dataclasses.replace(split, classes=tuple(classes), **{
        name: [Sample(s.path, remap[s.label]) for s in samples] for name, samples in split.splits().items()})
    return split.as_multi_label() if multi_label else split


def _resolve(root: Path, text: str) -> Path:
    # Normalised, so that one photo spelt two ways (x.jpg, ants/../x.jpg) is one photo to the checks.
    path = Path(text)
    return Path(os.path.normpath(path if path.is_absolute() else root / path)) if text else path


def _split_labels(cell, sep: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in str(cell).split(sep) if part.strip())


def _is_indicator(y) -> bool:
    if hasattr(y, "columns") or isinstance(y, (str, bytes)):
        return False
    try:
        array = np.asarray(y)
    except ValueError:  # ragged label lists
        return False
    return array.ndim == 2 and array.dtype.kind in "biuf"


def _label_lists(y, classes: Sequence[str] | None, sep: str, count: int) -> list[tuple[str, ...]]:
    """Every image's label names, from any form of ``y``."""
    if _is_indicator(y):
        matrix = np.asarray(y)
        if classes is None or len(classes) != matrix.shape[1]:
            raise UsageError(f"y is an indicator matrix with {matrix.shape[1]} columns: pass classes= "
                             f"with one name per column. Got {classes!r} instead.")
        if not np.isin(matrix, (0, 1)).all():
            raise UsageError("y as a matrix must hold 0 and 1 only (a binary indicator matrix)")
        names = [str(c) for c in classes]
        labels = [tuple(names[j] for j in np.flatnonzero(row)) for row in matrix]
    else:
        labels = []
        for value in list(y):
            if isinstance(value, (str, bytes, int, np.integer)):
                labels.append(_split_labels(value, sep) if isinstance(value, str) else (str(value),))
            else:
                labels.append(tuple(str(v) for v in value))
    if len(labels) != count:
        raise UsageError(f"y has {len(labels)} labels for {count} paths: expected one per path")
    return labels


def _build(rows: list[_Row], root: Path, multi_label: bool | None, val_fraction: float, test_fraction: float,
           seed: int, classes: Sequence[str] | None, where: str) -> DatasetSplit:
    """Check the rows, leave out the bad ones, and split the rest."""
    if multi_label is None:
        multi_label = any(len(r.labels) > 1 for r in rows)
    presplit = any(r.split for r in rows)
    good, skipped = _check_rows(rows, multi_label, presplit)
    known = tuple(classes) if classes is not None else tuple(sorted({c for r in good for c in r.labels}))
    unknown = sorted({c for r in good for c in r.labels} - set(known))
    if unknown:
        raise DataError(f"{where} has classes the model does not know: {', '.join(unknown)}")
    if len(known) < (1 if multi_label else 2):
        raise DataError(f"{where} has {len(known)} class(es) among its usable rows: "
                        f"a classifier needs {'at least one' if multi_label else 'at least two'}")
    index = {c: i for i, c in enumerate(known)}

    def sample(row: _Row) -> Sample:
        ids = tuple(sorted(index[c] for c in row.labels))
        return Sample(row.path, -1, ids) if multi_label else Sample(row.path, ids[0])

    if presplit:
        parts = {name: [sample(r) for r in good if _SPLITS[r.split] == name] for name in ("train", "val", "test")}
        if not parts["train"] and classes is None:  # a model's classes: its held-out rows are scored
            raise DataError(f"{where} has no usable training row (split 'train')")
        return DatasetSplit(root, known, parts["train"], parts["val"], parts["test"], skipped, presplit=True,
                            multi_label=multi_label)
    samples = [sample(r) for r in good]
    if multi_label:
        train, val, test = _random_split(samples, val_fraction, test_fraction, seed)
    else:
        per_class = {c: [s.path for s in samples if s.label == index[c]] for c in known}
        train, val, test = stratified_split(per_class, known, val_fraction, test_fraction, seed)
    return DatasetSplit(root, known, train, val, test, skipped, multi_label=multi_label)


def _check_rows(rows: list[_Row], multi_label: bool, presplit: bool) -> tuple[list[_Row], list[Skipped]]:
    """The usable rows, one per image, and every bad one with its reason."""
    skipped: list[Skipped] = []
    first: dict[Path, _Row] = {}
    conflicting: set[Path] = set()
    for row in rows:
        reason = _row_problem(row, multi_label, presplit)
        if reason:
            skipped.append(Skipped(row.path, f"{row.where}: {reason}"))
            continue
        seen = first.get(row.path)
        if seen is None:
            first[row.path] = row
        elif (set(seen.labels), _SPLITS[seen.split] if seen.split else "") != \
                (set(row.labels), _SPLITS[row.split] if row.split else ""):
            conflicting.add(row.path)
            skipped.append(Skipped(row.path, f"{row.where}: listed again with other labels or split than on "
                                             f"{seen.where}"))
    for path in conflicting:
        skipped.append(Skipped(path, f"{first[path].where}: left out, the image is listed again with other labels"))
    candidates = [r for p, r in first.items() if p not in conflicting]
    unreadable = probe_all([r.path for r in candidates])
    skipped += [Skipped(r.path, f"{r.where}: {unreadable[r.path]}") for r in candidates if r.path in unreadable]
    return [r for r in candidates if r.path not in unreadable], skipped


def _row_problem(row: _Row, multi_label: bool, presplit: bool) -> str | None:
    if row.path == Path(""):
        return "empty path"
    if not row.labels and not multi_label:
        return "empty label (each image needs one, unless the set is multi-label)"
    if len(row.labels) > 1 and not multi_label:
        return f"several labels ({', '.join(row.labels)}), but multi-label classification is off"
    if presplit and row.split not in _SPLITS:
        return (f"unknown split {row.split!r} (expected train, val or test)" if row.split
                else "no split, where other rows have one")
    if not row.path.is_file():
        return f"file not found: {row.path}"
    return None


def _random_split(samples: list[Sample], val_fraction: float, test_fraction: float, seed: int
                  ) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """A seeded random split (multi-label sets have no one class to stratify by), copies of one
    photo on one side."""
    order = sorted(samples, key=lambda s: str(s.path))
    twins = copies(s.path for s in order)
    return draw_split(copy_groups(order, twins, key=lambda s: s.path), val_fraction, test_fraction, random.Random(seed))
