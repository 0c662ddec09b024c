"""``report.html``'s evaluation of a multi-label model: what a single-label page shows as accuracy
and confusion, a multi-label page shows as average precision, F1 and thresholds per class.

Sections, from the run folder's files alone: the summary metrics (mAP, micro, macro and
samples F1, subset accuracy, Hamming loss), per-class AP and F1 worst first with each
class's threshold, precision-recall curves with the chosen operating point, label
co-occurrence over the whole set (``split.csv``), and the images with the worst missed
labels (a true class given the lowest probability) and the worst spurious ones (an absent
class given the highest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .. import _html as h
from ..runfolder import SPLIT_FILE, read_csv_file
from . import plots
from ..config import LABEL_SEP
from ..record import PerClass, SplitMetrics
from .record import PageData, _image_path, _num

__all__ = ["evaluation_sections", "pr_curves", "co_occurrence"]

WORST_SHOWN = 12
CURVES_SHOWN = 12  # the classes with the lowest AP: more curves in one plot are unreadable


def evaluation_sections(run: PageData, plot_dir: Path) -> list[str]:
    """The Metrics, Plots and worst-labels sections of a multi-label run's report."""
    m = run.splits
    evaluated = list(m)
    if not evaluated:
        return ["<h2>Metrics</h2><p>No validation or test images: nothing to measure the model on.</p>"]
    main = evaluated[-1]  # test when there is one (the unbiased estimate), else val
    title = {"val": "validation", "test": "test"}[main]
    parts = ["<h2>Metrics</h2>", _summary_table(m, evaluated), f"<h3>Per class, {title} (worst AP first)</h3>",
             _per_class_table(m[main])]
    parts.append(f"<h2>Plots ({title})</h2>")
    parts.append(h.image(plots.save(_per_class_bars(m[main], title), plot_dir / "per_class_ap_f1.png"),
                         "AP and F1 per class"))
    rows = [r for r in run.predictions if r.get("split") == main and r.get("predicted") is not None
            and r.get(f"p_{run.classes[0]}")]
    y_true, proba = _label_matrix(rows, run.classes)
    if len(rows):
        thresholds = [m[main].per_class[c].threshold for c in run.classes]
        parts.append(h.image(plots.save(pr_curves(y_true, proba, run.classes, thresholds, title),
                                        plot_dir / "pr_curves.png"), "precision-recall curves"))
    every = read_csv_file(run.directory, SPLIT_FILE, required=False) or []
    if every:
        matrix, _ = _label_matrix(every, run.classes)
        parts.append(h.image(plots.save(co_occurrence(matrix, run.classes), plot_dir / "co_occurrence.png"),
                             "label co-occurrence"))
    if len(rows):
        parts.append(_worst_section(run, rows, y_true, proba, title))
    return parts


def _summary_table(m: dict[str, SplitMetrics], evaluated: Sequence[str]) -> str:
    names = [("mean_ap", "mAP (mean average precision)"), ("macro_f1", "macro F1"), ("micro_f1", "micro F1"),
             ("samples_f1", "samples F1"), ("subset_accuracy", "subset accuracy (whole label set right)"),
             ("hamming_loss", "Hamming loss (wrong image-class decisions)"), ("log_loss", "binary cross-entropy")]
    rows = [[label, *(_num(getattr(m[s], key)) for s in evaluated)] for key, label in names]
    rows.append(["images", *(m[s].count for s in evaluated)])
    headers = ["metric", *({"val": "validation", "test": "test"}[s] for s in evaluated)]
    return h.table(headers, rows, numeric=range(1, len(evaluated) + 1))


def _worst_first(per_class: dict) -> list[str]:
    """Classes by AP, then F1, lowest first; a class without images (no AP) last."""
    return sorted(per_class, key=lambda c: (np.nan_to_num(_ap(per_class[c]), nan=2.0), per_class[c].f1))


def _ap(scores: PerClass) -> float:
    """A class's average precision; NaN for a class with no image to rank (``metrics.json`` writes null)."""
    return math.nan if scores.average_precision is None else scores.average_precision


def _per_class_table(metrics: SplitMetrics) -> str:
    per_class = metrics.per_class
    rows = [[c, _num(v.average_precision, 3), _num(v.f1, 3), _num(v.precision, 3), _num(v.recall, 3),
             _num(v.threshold, 3), v.support]
            for c, v in ((c, per_class[c]) for c in _worst_first(per_class))]
    return h.table(["class", "AP", "F1", "precision", "recall", "threshold", "images"], rows,
                   numeric=(1, 2, 3, 4, 5, 6))


def _per_class_bars(metrics: SplitMetrics, split: str, most: int = 40) -> Figure:
    per_class = metrics.per_class
    names = _worst_first(per_class)[:most]
    y = np.arange(len(names))
    figure = Figure(figsize=(7, max(2.5, 0.36 * len(names) + 1.2)), layout="constrained")
    ax = figure.subplots()
    ax.barh(y - 0.2, [np.nan_to_num(_ap(per_class[c])) for c in names], 0.4, label="AP")
    ax.barh(y + 0.2, [per_class[c].f1 for c in names], 0.4, label="F1 at the threshold")
    ax.set_yticks(y, [f"{c[:20]} (n={per_class[c].support})" for c in names])
    ax.invert_yaxis()  # the worst class on top, where the eye starts
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title(f"Average precision and F1 per class, {split}, worst first")
    ax.grid(axis="x", alpha=0.3)
    return figure


def pr_curves(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], thresholds: Sequence[float],
              split: str = "validation") -> Figure:
    """Each class's precision-recall curve (the :data:`CURVES_SHOWN` with the lowest AP), with the
    point its threshold operates at."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure = Figure(figsize=(7, 5.5), layout="constrained")
    ax = figure.subplots()
    present = [k for k in range(len(classes)) if y_true[:, k].any()]
    ap = {k: average_precision_score(y_true[:, k], proba[:, k]) for k in present}
    for k in sorted(present, key=ap.get)[:CURVES_SHOWN]:
        precision, recall, _ = precision_recall_curve(y_true[:, k], proba[:, k])
        line, = ax.plot(recall, precision, label=f"{classes[k][:20]} (AP {ap[k]:.3f})")
        chosen = proba[:, k] >= thresholds[k]
        tp = int((chosen & (y_true[:, k] > 0)).sum())
        ax.plot(tp / y_true[:, k].sum(), tp / max(chosen.sum(), 1), "o", color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"Precision-recall per class, {split} (dots: the chosen thresholds)")
    ax.grid(alpha=0.3)
    return figure


def co_occurrence(y_true: np.ndarray, classes: Sequence[str], most: int = 30) -> Figure:
    """How often each pair of classes labels the same image (the diagonal: images per class), over
    the whole set; the ``most`` most frequent classes when there are more."""
    keep = np.argsort(-y_true.sum(axis=0), kind="stable")[:most]
    counts = (y_true[:, keep].T @ y_true[:, keep]).astype(int)
    names = [classes[k][:16] for k in keep]
    size = max(4.0, 0.45 * len(names) + 2)
    figure = Figure(figsize=(size, size), layout="constrained")
    ax = figure.subplots()
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    if len(names) <= 15:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=8,
                        color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_title("Label co-occurrence (images with both labels)")
    return figure


def _worst_section(run: PageData, rows: list[dict], y_true: np.ndarray, proba: np.ndarray, title: str) -> str:
    """The worst missed labels (present, lowest probability) and spurious ones (absent, highest)."""
    missed = np.argwhere(y_true > 0)
    missed = missed[np.argsort(proba[y_true > 0], kind="stable")][:WORST_SHOWN]
    spurious = np.argwhere(y_true == 0)
    spurious = spurious[np.argsort(-proba[y_true == 0], kind="stable")][:WORST_SHOWN]
    parts = [f"<h2>Worst missed and spurious labels ({title})</h2>"]
    for heading, pairs in (("Missed: a class the image has, given the lowest probability", missed),
                           ("Spurious: a class the image lacks, given the highest probability", spurious)):
        table = h.table(["image", "file", "true labels", "predicted", "class", "probability"],
                        [[h.thumbnail(_image_path(run, rows[i]["path"]), rows[i]["path"]), rows[i]["path"],
                          rows[i]["class"] or "(none)", rows[i]["predicted"] or "(none)", run.classes[k],
                          _num(proba[i, k], 3)] for i, k in pairs], numeric=(5,))
        parts.append(f"<h3>{heading}</h3>{table}")
    return "\n".join(parts)


def _label_matrix(rows: list[dict], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The indicator matrix of the rows' ``class`` cells (``;``-separated), and their probabilities."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(rows), len(classes)))
    for i, row in enumerate(rows):
        for name in filter(None, (row.get("class") or "").split(LABEL_SEP)):
            if name in index:
                y[i, index[name]] = 1
    proba = np.array([[float(r.get(f"p_{c}") or "nan") for c in classes] for r in rows]).reshape(len(rows), -1)
    return y, proba
