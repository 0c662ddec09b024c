"""Inspecting one image folder: its images, their features, every check, and what was found.

The checks themselves are pure functions (:mod:`.checks`); this module knows
the folder. It lists the images as training would, gets their features from
the one feature pipeline (so features training cached are reused, and a
folder inspected before needs no PyTorch), and turns the checks' indices
into findings named by path, split and class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._console import Console
from ..config import BackboneRequest, require_engine
from ..data.dataset import DatasetSplit, split_of
from ..data.labels import load_split
from ..errors import UsageError
from ..features.cache import CacheLayout
from ..features.embeddings import normalized_embeddings
from ..features.neighbours import find_near_duplicates
from ..features.pipeline import FeatureRequest, extract_features
from ..runfolder import relative_path
from .checks import (
    KINDS,
    TITLES,
    class_imbalance,
    file_digests,
    find_exact_duplicates,
    find_label_errors,
    out_of_fold_probabilities,
)

__all__ = ["Finding", "InspectSettings", "Inspection", "load_split", "inspect_folder", "summary_lines"]


@dataclass(frozen=True)
class Finding:
    """One flagged image (or class, for imbalance). Paths are relative to the data folder."""

    kind: str
    severity: str  # high: leaks and conflicting labels; medium; low
    path: str
    split: str
    label: str
    detail: str
    suggested: str = ""  # label errors: the class the image looks like
    other_path: str = ""  # duplicates: the image it duplicates
    other_split: str = ""
    other_label: str = ""
    score: float | None = None  # near-duplicates: cosine similarity; label errors: p(given label)

    @property
    def leak(self) -> bool:
        """A duplicate across splits or under two labels: reported loudly."""
        return self.severity == "high"


@dataclass(frozen=True)
class InspectSettings:
    """What ``inspect`` runs with; checked on creation, so a bad option fails before any work
    (whether the backbone's name exists is checked by :func:`headstart.features.pipeline.check_backbone`,
    or when it is built)."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    image_size: int | None = None
    engine: str = "auto"
    # Calibrated on cats_and_dogs_filtered (4.5 M pairs): distinct photos reach 0.80 at most,
    # while a JPEG re-encode at quality 50, a mirror image or a 5% crop of the same photo
    # score 0.92-0.97 (median). 0.90 sits in the gap.
    near_duplicate: float = 0.90
    folds: int = 5
    device: str = "auto"
    workers: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.near_duplicate <= 1:
            raise UsageError(f"--near-duplicate must be a cosine similarity in (0, 1]. "
                             f"Got {self.near_duplicate!r} instead.")
        if self.folds < 2:
            raise UsageError(f"--folds must be at least 2. Got {self.folds!r} instead.")
        BackboneRequest(self.backbone, self.weights, self.image_size)  # checks the name and image size
        require_engine(self.engine)

    @property
    def feature_request(self) -> FeatureRequest:
        return FeatureRequest(BackboneRequest(self.backbone, self.weights, self.image_size), engine=self.engine,
                              device=self.device, workers=self.workers)


@dataclass
class Inspection:
    """What :func:`inspect_folder` found, with what is needed to report it."""

    root: Path
    classes: tuple[str, ...]
    presplit: bool
    images: int
    counts: dict[str, dict[str, int]]  # decodable images per class, per split
    findings: list[Finding]
    settings: InspectSettings
    notes: list[str] = field(default_factory=list)  # how the checks ran
    unchecked: dict[str, str] = field(default_factory=dict)  # kind -> why it could not run
    timings: dict[str, float] = field(default_factory=dict)
    feature_engine: str = ""
    features_computed: int = 0

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]


def inspect_folder(data: str | Path | DatasetSplit, settings: InspectSettings | None = None,
                   cache_dir: str | Path | None = None, console: Console | None = None) -> Inspection:
    """Run every check on an image folder (or a prepared split); returns the findings, ordered by kind."""
    settings = settings or InspectSettings()
    cache = CacheLayout(cache_dir)
    console = console or Console(0)
    start = time.perf_counter()
    # No random split drawn (no fractions): a leak can only be across splits the user made.
    split = data if isinstance(data, DatasetSplit) else load_split(data)
    samples = [(s, name) for name, group in split.splits().items() for s in group]
    paths = [s.path for s, _ in samples]
    ranks = {name: rank for rank, name in enumerate(split.splits())}
    where = [_Place(relative_path(s.path, split.root), name, split.label_names(s), ranks[name], split.multi_label)
             for s, name in samples]
    labels = split.targets(s for s, _ in samples)
    result = Inspection(split.root, split.classes, split.presplit, len(paths), {}, [], settings)
    timings = result.timings

    console.info(f"inspecting {len(paths)} image(s) of {len(split.classes)} classes in {split.root}: "
                 "hashing the files for exact duplicates")
    tick = time.perf_counter()
    groups = find_exact_duplicates(file_digests(paths))
    timings["hashing"] = time.perf_counter() - tick
    extracted = extract_features(paths, settings.feature_request, cache, console).features
    timings["features"] = extracted.seconds
    result.feature_engine, result.features_computed = extracted.engine, extracted.computed
    # In memory, unlike training's streamed rows: every image is compared with every other,
    # and 10,000 images of Lite0's 1,280 features are 51 MB in float32.
    features, decoded = extracted.to_array(), extracted.ok
    extracted.close()

    result.findings += _unreadable(split, extracted.failed)
    result.findings += _exact_findings(groups, where)
    console.info(f"comparing features for near-duplicates, then {settings.folds}-fold cross-validation "
                 "for likely label errors")
    tick = time.perf_counter()
    result.findings += _near_duplicate_findings(features, decoded, groups, where, settings.near_duplicate)
    timings["near_duplicates"] = time.perf_counter() - tick
    tick = time.perf_counter()
    if split.multi_label:
        result.unchecked["label_error"] = ("not checked: confident learning looks for the one class an image "
                                           "shows, and this set is multi-label")
    else:
        _check_labels(result, features, decoded, labels, where)
    timings["label_errors"] = time.perf_counter() - tick
    result.counts = _decodable_counts(split, decoded)
    result.findings += _imbalance_findings(result, where, by_folder=split.presplit and split.label_file is None)
    timings["total"] = time.perf_counter() - start
    return result


def summary_lines(result: Inspection) -> list[str]:
    """One line per kind: how many findings, and how many of them are leaks or conflicts."""
    lines = []
    for kind in KINDS:
        found = result.of_kind(kind)
        loud = sum(f.leak for f in found)
        if kind in result.unchecked:
            lines.append(f"{TITLES[kind].lower()}: {result.unchecked[kind]}")
            continue
        text = f"{TITLES[kind].lower()}: {len(found) or 'none'}"
        if loud:
            text += f" ({loud} across splits or with conflicting labels)"
        lines.append(text)
    return lines


@dataclass(frozen=True)
class _Place:
    path: str  # relative to the data folder
    split: str
    label: str  # a multi-label image's classes, LABEL_SEP-separated
    rank: int = 0  # the split's: train, val, test
    multi_label: bool = False  # one image under several labels is then no conflict

    @property
    def order(self) -> tuple[int, str]:
        """Training copies first: a duplicate group's first member is the one to keep."""
        return self.rank, self.path


def _place_of(path: Path, split: DatasetSplit) -> _Place:
    """Split and class of a file that discover left out, from where it lies (a label file's
    bad rows say theirs in the reason)."""
    relative = relative_path(path, split.root)
    if split.label_file is not None:
        return _Place(relative, "", "")
    parts = Path(relative).parts
    if split.presplit and len(parts) >= 2:
        name = split_of(parts[0]) or ""
        return _Place(relative, name, parts[1] if len(parts) > 2 else "")
    return _Place(relative, "train", parts[0] if len(parts) > 1 else "")


def _unreadable(split: DatasetSplit, failed: dict[Path, str]) -> list[Finding]:
    reasons = [(s.path, s.reason) for s in split.skipped] + list(failed.items())
    out = []
    for path, reason in reasons:
        place = _place_of(path, split)
        out.append(Finding("unreadable", "medium", place.path, place.split, place.label, reason))
    return out


def _pair_finding(kind: str, a: _Place, b: _Place, score: float | None, detail: str) -> Finding:
    """One row for a duplicate pair: ``path`` is the copy to look at (the later split), ``other_path``
    the one it duplicates. High severity when the pair crosses splits or disagrees on the label."""
    keep, copy = sorted((a, b), key=lambda p: p.order)
    problems = []
    if keep.split != copy.split:
        problems.append(f"leak: in {keep.split} and {copy.split}")
    if keep.label != copy.label and not keep.multi_label:
        problems.append(f"conflicting labels: {keep.label} and {copy.label}")
    return Finding(kind, "high" if problems else "low", copy.path, copy.split, copy.label,
                   "; ".join([*problems, detail]), other_path=keep.path, other_split=keep.split,
                   other_label=keep.label, score=score)


def _exact_findings(groups: list[list[int]], where: list[_Place]) -> list[Finding]:
    out = []
    for group in groups:
        first, *copies = sorted(group, key=lambda i: where[i].order)
        out += [_pair_finding("exact_duplicate", where[first], where[i], None,
                              f"same bytes as {where[first].path} ({len(group)} files)") for i in copies]
    return out


def _near_duplicate_findings(features: np.ndarray, decoded: np.ndarray, groups: list[list[int]],
                             where: list[_Place], threshold: float) -> list[Finding]:
    # One image per exact-duplicate group stands for it: its copies' pairs are already reported.
    copies = {i for g in groups for i in sorted(g, key=lambda i: where[i].order)[1:]}
    candidates = np.array([i for i in np.flatnonzero(decoded) if i not in copies], dtype=int)
    pairs = find_near_duplicates(normalized_embeddings(features[candidates]), threshold)
    return [_pair_finding("near_duplicate", where[candidates[i]], where[candidates[j]], s,
                          f"cosine similarity {s:.3f}") for i, j, s in pairs]


def _check_labels(result: Inspection, features: np.ndarray, decoded: np.ndarray, labels: np.ndarray,
                  where: list[_Place]) -> None:
    """Add the likely label errors to ``result``, or say why they could not be looked for."""
    settings, classes = result.settings, result.classes
    usable = np.flatnonzero(decoded)
    per_class = np.bincount(labels[usable], minlength=len(classes))
    if per_class.min() < 2:
        scarce = classes[int(per_class.argmin())]
        result.unchecked["label_error"] = (f"not checked: class {scarce} has {int(per_class.min())} decodable "
                                           "image(s), and cross-validation needs 2")
        return
    proba, c = out_of_fold_probabilities(features[usable], labels[usable], len(classes),
                                         settings.folds, settings.seed)
    for k, suggested, p in find_label_errors(proba, labels[usable]):
        place = where[usable[k]]
        result.findings.append(Finding("label_error", "medium", place.path, place.split, place.label,
                                       f"labelled {place.label}, looks like {classes[suggested]} "
                                       f"(out-of-fold p({place.label}) = {p:.3f})",
                                       suggested=classes[suggested], score=p))
    result.notes.append(f"label errors: linear head with L2 C={c:g}, "
                        f"{min(settings.folds, int(per_class.min()))}-fold out-of-fold probabilities "
                        f"over {len(usable)} images")


def _decodable_counts(split: DatasetSplit, decoded: np.ndarray) -> dict[str, dict[str, int]]:
    """Images per class in each split that has any, leaving out those that failed to decode."""
    return {name: per_class for name, per_class in split.counts(decoded).items() if split.splits()[name]}


def _imbalance_findings(result: Inspection, where: list[_Place], by_folder: bool) -> list[Finding]:
    # A split's folder (validation/ or val/...) is where its images lie.
    folders = {p.split: Path(p.path).parts[0] if by_folder else "" for p in where}
    return [Finding("class_imbalance", "low", (Path(folders[s]) / name).as_posix(), s, name, why)
            for s, name, why in class_imbalance(result.counts)]
