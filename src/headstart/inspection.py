"""``headstart inspect``: what is wrong with an image folder, before training on it.

Five checks, each a small pure function over hashes, embeddings or counts:

* unreadable files (the header check of :func:`headstart.data.discover`, plus
  images that fail only when decoded);
* exact duplicates, by a hash of the file's bytes;
* near-duplicates, by cosine similarity of the backbone's pooled features;
* likely label errors, by confident learning on out-of-fold probabilities;
* class imbalance.

Duplicates that cross splits (the same photo in train and test) or carry
different labels are flagged loudly: they inflate validation scores or teach
the model contradictions. The embeddings come through the feature cache, so
inspecting a folder that was trained on (lightweight workflow, same backbone)
costs seconds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import _html
from ._console import Console
from ._io import atomic_files, csv_text, file_digest
from .config import ENGINES
from .errors import UsageError

# PyTorch, timm and scikit-learn are imported where they are used: the CLI reads this
# module's defaults for its options, and `headstart predict MODEL.onnx` must not load them.
if TYPE_CHECKING:
    from .data import DatasetSplit

__all__ = [
    "KINDS",
    "CSV_COLUMNS",
    "Finding",
    "InspectSettings",
    "Inspection",
    "load_split",
    "file_digests",
    "find_exact_duplicates",
    "normalized_embeddings",
    "find_near_duplicates",
    "out_of_fold_probabilities",
    "find_label_errors",
    "class_imbalance",
    "inspect_folder",
    "summary_lines",
    "write_inspection",
]

KINDS = ("unreadable", "exact_duplicate", "near_duplicate", "label_error", "class_imbalance")
TITLES = {"unreadable": "Unreadable files", "exact_duplicate": "Exact duplicates",
          "near_duplicate": "Near-duplicates", "label_error": "Likely label errors",
          "class_imbalance": "Class imbalance"}
CSV_COLUMNS = ("kind", "severity", "path", "split", "label", "suggested", "other_path", "other_split",
               "other_label", "score", "detail")
IMBALANCE_RATIO = 3.0  # largest / smallest class in a split
FEW_IMAGES = 10  # a class with fewer images than this in a split is barely learned or measured
_SHOWN = 100  # findings per section of the HTML page with thumbnails; the CSV has them all


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
    (the backbone's name is checked when it is built)."""

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
        if self.image_size is not None and self.image_size < 1:
            raise UsageError(f"--image-size must be positive. Got {self.image_size!r} instead.")
        if self.engine not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}. Got {self.engine!r} instead.")


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


def load_split(data: str | Path) -> DatasetSplit:
    """The images of ``data``: its split folders as they are; without them, everything is "train".

    Inspecting draws no random split: a leak can only be across folders the user made.
    The folder is resolved as ``headstart train`` resolves it, so that the features
    training cached (keyed by absolute path) are found.
    """
    from .data import discover

    return discover(Path(data).resolve(), val_fraction=0.0, test_fraction=0.0)


def file_digests(paths: Sequence[Path]) -> list[str]:
    """SHA-256 of each file's bytes."""

    # Reading is I/O bound, and hashlib releases the GIL on large buffers: threads overlap both.
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(file_digest, paths))


def find_exact_duplicates(digests: Sequence[str]) -> list[list[int]]:
    """Groups of indices whose digests are equal (two or more each), in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        groups.setdefault(d, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def normalized_embeddings(features: np.ndarray) -> np.ndarray:
    """Features centred on their mean and scaled to unit length (float32); NaN rows become zeros.

    Pooled activations are all positive, so raw cosine similarities crowd near 1;
    centring spreads them out, and unrelated photos land near 0.
    """
    x = np.asarray(features, dtype=np.float32)
    ok = ~np.isnan(x).any(axis=1)
    out = np.zeros_like(x)
    if ok.any():
        centred = x[ok] - x[ok].mean(axis=0)
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        out[ok] = centred / np.maximum(norms, 1e-12)
    return out


def find_near_duplicates(embeddings: np.ndarray, threshold: float, block: int = 1024
                         ) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)``, ``i < j``, whose rows' dot product is at least ``threshold``.

    ``embeddings`` are unit rows (:func:`normalized_embeddings`). The similarity
    matrix is computed ``block`` rows at a time against the rows from there on,
    so memory stays at ``block x N`` floats (40 MB for 10,000 images). Sorted by
    similarity, highest first.
    """
    e = np.asarray(embeddings, dtype=np.float32)
    pairs = []
    for start in range(0, len(e), block):
        sims = e[start:start + block] @ e[start:].T
        rows, cols = np.nonzero(np.triu(sims >= threshold, k=1))
        pairs += [(start + int(r), start + int(c), float(sims[r, c])) for r, c in zip(rows, cols)]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = 5,
                              seed: int = 0) -> tuple[np.ndarray, float]:
    """Each image's class probabilities from a linear head that never saw it; and the L2 strength C.

    C is chosen once, by the cross-validation of :func:`headstart.linear.fit_linear_head`
    (the lightweight workflow's head, which minimises scikit-learn's objective), then
    a standardised logistic regression is refitted per fold. Needs at least two
    images of every class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from .features import Rows
    from .linear import fit_linear_head

    # L-BFGS on a few thousand rows is matrix-vector products, which BLAS threads only slow
    # down: on 2 cores, 3,000 images took 1.1 s single-threaded and 4.5-16 s with 2 threads.
    with threadpool_limits(1):
        c = fit_linear_head(Rows.from_array(features, labels), None, num_classes, seed=seed).C
        smallest = int(np.bincount(labels, minlength=num_classes).min())
        splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500))
        return cross_val_predict(model, features, labels, cv=splitter, method="predict_proba"), c


def find_label_errors(proba: np.ndarray, labels: np.ndarray) -> list[tuple[int, int, float]]:
    """Likely mislabelled images by confident learning (Northcutt, Jiang and Chuang, "Confident
    Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021).

    ``proba`` holds out-of-fold probabilities. Class ``j``'s threshold ``t_j`` is
    the mean probability of ``j`` among the images labelled ``j``: how confident
    the model is, on average, when it is right. An image is confidently of class
    ``j`` when ``p_j >= t_j``; when several classes pass, the most probable one
    counts (as in cleanlab's confident joint, so the given label competes too).
    An image is flagged when that class is not its label.

    Returns ``(index, suggested class, probability of the given label)``, the
    least self-confident first.
    """
    # A few lines of NumPy rather than the cleanlab package: this is all of it we need,
    # and cleanlab would bring a heavy dependency tree for it.
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.arange(proba.shape[1])
    thresholds = np.array([proba[labels == j, j].mean() if (labels == j).any() else np.inf for j in classes])
    confident = proba >= thresholds
    best = np.where(confident, proba, -1.0).argmax(axis=1)
    flagged = np.flatnonzero(confident.any(axis=1) & (best != labels))
    given = proba[flagged, labels[flagged]]
    order = np.argsort(given, kind="stable")
    return [(int(flagged[k]), int(best[flagged[k]]), float(given[k])) for k in order]


def class_imbalance(counts: dict[str, dict[str, int]], ratio: float = IMBALANCE_RATIO,
                    few: int = FEW_IMAGES) -> list[tuple[str, str, str]]:
    """``(split, class, why)`` for each class that the largest class of its split outnumbers
    ``ratio`` times or more, or that has fewer than ``few`` images there (splits without images
    are left alone)."""
    found = []
    for split, per_class in counts.items():
        if not any(per_class.values()):
            continue
        largest = max(per_class, key=per_class.get)
        n_max = per_class[largest]
        for name, n in per_class.items():
            why = []
            if n * ratio <= n_max:
                why.append(f"{largest} has {n_max} images, {name} {n}" + (f" ({n_max / n:.1f}x)" if n else ""))
            if n < few:
                why.append(f"{name} has {n} image(s), fewer than {few}")
            if why:
                found.append((split, name, f"{split}: {'; '.join(why)}"))
    return found


def _extract_through_pytorch(paths: Sequence[Path], classes: int, settings: InspectSettings, cache_dir: Path,
                             console: Console):
    """Features of ``paths`` with the backbone built by timm; it is recorded in the cache, so the
    next inspection or training run needs no PyTorch."""
    from .backbone import create_backbone
    from .config import HeadSpec
    from .features import extract_features, remember_net
    from .head import ClassifierNet, Head
    from .train import prepare, resolve_device

    device = resolve_device(settings.device)
    backbone, spec, preprocessing = create_backbone(settings.backbone, settings.weights,
                                                    image_size=settings.image_size)
    net = prepare(ClassifierNet(backbone, Head(spec.num_features, HeadSpec(num_classes=classes)), preprocessing),
                  device)
    remember_net(cache_dir, settings.backbone, settings.weights, settings.image_size, spec, preprocessing, net)
    return extract_features(paths, net, spec, preprocessing, cache_dir, engine=settings.engine, device=device,
                            workers=settings.workers, console=console)


def inspect_folder(data: str | Path | DatasetSplit, settings: InspectSettings | None = None,
                   cache_dir: str | Path | None = None, console: Console | None = None) -> Inspection:
    """Run every check on an image folder (or a prepared split); returns the findings, ordered by kind."""
    from .data import DatasetSplit
    from .features import backbone_on_record, default_cache_dir, features_without_pytorch

    settings = settings or InspectSettings()
    cache_dir = Path(cache_dir or default_cache_dir())
    console = console or Console(0)
    start = time.perf_counter()
    split = data if isinstance(data, DatasetSplit) else load_split(data)
    root = split.root
    samples = [(s, name) for name, group in split.splits().items() for s in group]
    paths = [s.path for s, _ in samples]
    ranks = {name: rank for rank, name in enumerate(split.splits())}
    where = [_Place(s.path.relative_to(root).as_posix(), name, split.classes[s.label], ranks[name])
             for s, name in samples]
    labels = np.array([s.label for s, _ in samples])
    result = Inspection(root, split.classes, split.presplit, len(paths), {}, [], settings)
    timings = result.timings

    record = backbone_on_record(cache_dir, settings.backbone, settings.weights, settings.image_size,
                                settings.device, settings.engine)
    console.info(f"inspecting {len(paths)} image(s) of {len(split.classes)} classes in {root}")
    tick = time.perf_counter()
    groups = find_exact_duplicates(file_digests(paths))
    timings["hashing"] = time.perf_counter() - tick
    extracted = None
    if record is not None:  # the backbone need not be built: features come from the cache and its engine
        extracted = features_without_pytorch(paths, record, settings.engine, cache_dir, workers=settings.workers,
                                             console=console)
    if extracted is None:
        extracted = _extract_through_pytorch(paths, len(split.classes), settings, cache_dir, console)
    timings["features"] = extracted.seconds
    result.feature_engine, result.features_computed = extracted.engine, extracted.computed
    # In memory, unlike training's streamed rows: every image is compared with every other,
    # and 10,000 images of Lite0's 1,280 features are 51 MB in float32.
    features, decoded = extracted.to_array(), extracted.ok
    extracted.close()

    findings = result.findings
    findings += _unreadable(split, extracted.failed)
    findings += _exact_findings(groups, where)

    tick = time.perf_counter()
    # One image per exact-duplicate group stands for it: its copies' pairs are already reported.
    copies = {i for g in groups for i in sorted(g, key=lambda i: where[i].order)[1:]}
    candidates = np.array([i for i in np.flatnonzero(decoded) if i not in copies], dtype=int)
    pairs = find_near_duplicates(normalized_embeddings(features[candidates]), settings.near_duplicate)
    findings += [_pair_finding("near_duplicate", where[candidates[i]], where[candidates[j]], s,
                               f"cosine similarity {s:.3f}") for i, j, s in pairs]
    timings["near_duplicates"] = time.perf_counter() - tick

    tick = time.perf_counter()
    usable = np.flatnonzero(decoded)
    per_class = np.bincount(labels[usable], minlength=len(split.classes))
    if per_class.min() >= 2:
        proba, c = out_of_fold_probabilities(features[usable], labels[usable], len(split.classes),
                                             settings.folds, settings.seed)
        for k, suggested, p in find_label_errors(proba, labels[usable]):
            place = where[usable[k]]
            findings.append(Finding("label_error", "medium", place.path, place.split, place.label,
                                    f"labelled {place.label}, looks like {split.classes[suggested]} "
                                    f"(out-of-fold p({place.label}) = {p:.3f})",
                                    suggested=split.classes[suggested], score=p))
        result.notes.append(f"label errors: linear head with L2 C={c:g}, "
                            f"{min(settings.folds, int(per_class.min()))}-fold out-of-fold probabilities "
                            f"over {len(usable)} images")
    else:
        scarce = split.classes[int(per_class.argmin())]
        result.unchecked["label_error"] = (f"not checked: class {scarce} has {int(per_class.min())} decodable "
                                           "image(s), and cross-validation needs 2")
    timings["label_errors"] = time.perf_counter() - tick

    result.counts = _decodable_counts(split, where, decoded)
    # A split's folder (validation/ or val/...) is where its images lie.
    folders = {p.split: Path(p.path).parts[0] if split.presplit else "" for p in where}
    findings += [Finding("class_imbalance", "low", (Path(folders[s]) / name).as_posix(), s, name, why)
                 for s, name, why in class_imbalance(result.counts)]
    timings["total"] = time.perf_counter() - start
    return result


@dataclass(frozen=True)
class _Place:
    path: str  # relative to the data folder
    split: str
    label: str
    rank: int = 0  # the split's: train, val, test

    @property
    def order(self) -> tuple[int, str]:
        """Training copies first: a duplicate group's first member is the one to keep."""
        return self.rank, self.path


def _place_of(path: Path, split: DatasetSplit) -> _Place:
    """Split and class of a file that discover left out, from where it lies."""
    from .data import SPLIT_FOLDERS

    relative = path.relative_to(split.root).as_posix()
    parts = Path(relative).parts
    if split.presplit and len(parts) >= 2:
        name = next((s for s, names in SPLIT_FOLDERS.items() if parts[0] in names), "")
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
    if keep.label != copy.label:
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


def _decodable_counts(split: DatasetSplit, where: list[_Place], decoded: np.ndarray) -> dict[str, dict[str, int]]:
    """Images per class in each split that has any, leaving out those that failed to decode."""
    counts = {name: dict.fromkeys(split.classes, 0) for name, samples in split.splits().items() if samples}
    for place, ok in zip(where, decoded):
        counts[place.split][place.label] += bool(ok)
    return counts


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


def write_inspection(result: Inspection, out: str | Path) -> tuple[Path, Path]:
    """Write ``inspect.csv`` (one row per finding) and ``inspect.html`` into ``out``, together."""
    out = Path(out)
    rows = ([getattr(f, c) if c != "score" else ("" if f.score is None else f"{f.score:.4f}")
             for c in CSV_COLUMNS] for f in result.findings)
    csv_path, html_path = out / "inspect.csv", out / "inspect.html"
    text, page = csv_text(CSV_COLUMNS, rows), _html_page(result)
    with atomic_files(out) as new:
        new(csv_path.name).write_text(text, encoding="utf-8")
        new(html_path.name).write_text(page, encoding="utf-8")
    return csv_path, html_path


def _html_page(result: Inspection) -> str:
    esc = _html.escape
    parts = [f"<h1>headstart inspect: {esc(result.root.name)}</h1>",
             f'<p class="muted">{esc(str(result.root))}: {result.images} images, {len(result.classes)} classes '
             f"({esc(', '.join(result.classes))}), "
             f"{'split folders' if result.presplit else 'no split folders (all counted as train)'}</p>"]
    loud = [f for f in result.findings if f.leak]
    quiet = [f for f in result.findings if not f.leak]
    if loud:
        parts.append(f'<div class="alert"><strong>{len(loud)} duplicate(s) across splits or with conflicting '
                     "labels.</strong> A photo in both training and validation/test inflates the measured "
                     "accuracy; one under two labels teaches a contradiction. Remove or relabel the copies "
                     "listed below before training.</div>")
    if quiet:
        kinds = [f"{TITLES[k].lower()} ({sum(f.kind == k for f in quiet)})" for k in KINDS
                 if any(f.kind == k for f in quiet)]
        parts.append(f'<div class="warn">To review: {esc(", ".join(kinds))}.</div>')
    if not result.findings and not result.unchecked:
        parts.append(f'<div class="ok"><strong>Clean bill.</strong> No unreadable files, duplicates, likely '
                     f"label errors or class imbalance among {result.images} images.</div>")
    parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in summary_lines(result)) + "</ul>")
    parts += [_section(result, kind) for kind in KINDS]
    splits = list(result.counts)
    parts.append("<h2>Images per class</h2>")
    parts.append(_html.table(["class", *splits],
                             [[c, *(result.counts[s][c] for s in splits)] for c in result.classes]
                             + [["total", *(sum(result.counts[s].values()) for s in splits)]],
                             numeric=range(1, len(splits) + 1)))
    settings = {**dataclasses.asdict(result.settings), "feature engine": result.feature_engine,
                "features computed (not cached)": result.features_computed}
    parts.append("<h2>Settings</h2>")
    parts.append(_html.table(["setting", "value"], [[k, "" if v is None else v] for k, v in settings.items()]))
    if result.notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in result.notes) + "</ul>")
    parts.append("<h2>Timings</h2>")
    parts.append(_html.table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in result.timings.items()],
                             numeric=(1,)))
    return _html.page(f"headstart inspect: {result.root.name}", "\n".join(parts))


_EXPLAIN = {
    "unreadable": "Files that look like images but cannot be used; training skips them.",
    "exact_duplicate": "Files with identical bytes. Each row names a copy and the file it duplicates "
                       "(the training copy when there is one).",
    "near_duplicate": "Different files of (nearly) the same photo: resized, re-encoded, mirrored or "
                      "slightly cropped, by the cosine similarity of the backbone's features.",
    "label_error": "Images a cross-validated linear head confidently puts in another class (confident "
                   "learning), least self-confident first. Often a wrong label; sometimes an ambiguous photo.",
    "class_imbalance": f"Classes that the largest class of their split outnumbers {IMBALANCE_RATIO:g}x or more, "
                       f"and classes with fewer than {FEW_IMAGES} images in a split. Consider --class-weight "
                       "balanced, or more images.",
}


def _section(result: Inspection, kind: str) -> str:
    found = result.of_kind(kind)
    head = f"<h2>{_html.escape(TITLES[kind])} ({len(found)})</h2><p class=\"muted\">{_html.escape(_EXPLAIN[kind])}</p>"
    if not found:
        return head + f"<p>{_html.escape(result.unchecked.get(kind, 'None found.'))}</p>"
    shown = found[:_SHOWN]
    more = (f'<p class="muted">{len(found) - _SHOWN} more in inspect.csv.</p>' if len(found) > _SHOWN else "")

    def picture(relative: str) -> _html.Raw:
        return _html.thumbnail(result.root / relative, relative)

    def where(relative: str, split: str, label: str) -> _html.Raw:
        return _html.Raw(f"<code>{_html.escape(relative)}</code><br>{_html.escape(split)} / {_html.escape(label)}")

    if kind in ("unreadable", "class_imbalance"):
        table = _html.table(["path", "split", "class", "why"], [[f.path, f.split, f.label, f.detail] for f in shown])
    elif kind == "label_error":
        table = _html.table(["image", "path", "labelled", "looks like", "p(label)"],
                            [[picture(f.path), where(f.path, f.split, f.label), f.label, f.suggested,
                              f"{f.score:.3f}"] for f in shown], numeric=(4,))
    else:
        table = _html.table(["image", "path", "duplicate of", "path", "why"],
                            [[picture(f.path), where(f.path, f.split, f.label), picture(f.other_path),
                              where(f.other_path, f.other_split, f.other_label),
                              _html.Raw(f"<strong>{_html.escape(f.detail)}</strong>") if f.leak else f.detail]
                             for f in shown])
    return head + table + more
