"""The run's plots, as matplotlib figures: learning curves (or, for a lightweight head,
validation loss and accuracy against the L2 strengths tried), confusion matrices,
per-class F1, ROC and precision-recall curves (two classes), the most confidently
wrong images and a reliability diagram.

Each function takes plain data (history rows, metrics, probabilities) and
returns a :class:`~matplotlib.figure.Figure`; :func:`save` (from :mod:`headstart._plots`) writes it as a PNG.
Figures are built without pyplot, so nothing depends on a display or on
global state, and plotting is safe from any thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .._plots import percent_axis, save
from ..data.images import DECODE_ERRORS, load_thumbnail
from ..metrics import CALIBRATION_BINS, calibration_bins, expected_calibration_error

__all__ = ["learning_curves", "regularization_path", "confusion", "per_class_f1", "reliability_diagram",
           "roc_pr_curves", "Mistake", "confident_mistakes", "save"]

_STAGE_NAMES = {"head": "head on cached features", "frozen": "stage 1 (frozen backbone)", "fine-tune": "fine-tuning",
                "refit": "fine-tuning again on train + val"}
_COLORS = {"train": "#1f77b4", "val": "#d62728"}


def learning_curves(history: Sequence[dict], fine_tune_kept: bool | None = None) -> Figure:
    """Loss and accuracy per epoch, train and validation, for both stages; the start of
    fine-tuning marked, and whether its result was kept."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots(1, 2)
    epochs = np.arange(1, len(history) + 1)
    for ax, metric, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "accuracy", "accuracy")):
        for split in ("train", "val"):
            values = np.array([row.get(f"{split}_{metric}", math.nan) for row in history], dtype=float)
            if np.isfinite(values).any():
                ax.plot(epochs, values, marker="o", color=_COLORS[split],
                        label="train" if split == "train" else "validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_xlim(0.5, len(history) + 0.5)
        if len(history) <= 25:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        if metric == "accuracy":
            percent_axis(ax.yaxis)
    starts = [i for i, row in enumerate(history) if row.get("stage") == "fine-tune"]
    if starts:
        kept = {True: " (kept)", False: " (not kept)"}.get(fine_tune_kept, "")
        for ax in axes:
            # In the legend, not written on the plot, where it would cross a curve.
            ax.axvline(starts[0] + 0.5, color="#555", linestyle="--", linewidth=1,
                       label=f"fine-tuning starts{kept}")
    stages = dict.fromkeys(row.get("stage") for row in history)
    figure.suptitle("Learning curves: " + ", then ".join(_STAGE_NAMES.get(s, str(s)) for s in stages))
    for ax in axes:
        ax.legend(loc="best", fontsize=8)
    return figure


# What a head's search may record for each C tried, and how to say it.
_SEARCH_SERIES = {"val_loss": "validation loss", "cv_loss": "cross-validated loss",
                  "val_accuracy": "validation accuracy", "val_mean_ap": "validation mean average precision",
                  "cv_mean_ap": "cross-validated mean average precision"}


def regularization_path(search: Sequence[dict], chosen: float) -> Figure:
    """A lightweight head's search: what it measured (validation or cross-validated loss, accuracy,
    or a multi-label head's mean average precision) against each inverse L2 strength C tried; the
    chosen one marked."""
    c = np.array([row["C"] for row in search], dtype=float)
    keys = [key for key in _SEARCH_SERIES if key in search[0]]
    figure = Figure(figsize=(5 + 4.5 * (len(keys) - 1), 4), layout="constrained")
    for ax, key in zip(np.atleast_1d(figure.subplots(1, len(keys))), keys):
        label = _SEARCH_SERIES[key]
        ax.plot(c, [row[key] for row in search], marker="o", color=_COLORS["val"], label=label)
        ax.axvline(chosen, color="#555", linestyle="--", linewidth=1, label=f"chosen C={chosen:g}")
        ax.set_xscale("log")
        ax.set_xlabel("C, inverse L2 strength (left: stronger regularisation)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        if key == "val_accuracy":
            percent_axis(ax.yaxis)
    figure.suptitle("Lightweight head: the L2 strengths tried")
    return figure


def roc_pr_curves(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], split: str = "validation") -> Figure:
    """ROC and precision-recall curves of a two-class model, the second class as positive."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    score = proba[:, 1]
    fpr, tpr, _ = roc_curve(y_true, score)
    precision, recall, _ = precision_recall_curve(y_true, score)
    figure = Figure(figsize=(10, 4.3), layout="constrained")
    roc, pr = figure.subplots(1, 2)
    roc.plot(fpr, tpr, color="#4c72b0", label=f"model (AUC {auc(fpr, tpr):.3f})")
    roc.plot([0, 1], [0, 1], "--", color="#888", label="chance")
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    roc.set_title(f"ROC, {split}")
    pr.plot(recall, precision, color="#4c72b0", drawstyle="steps-post",
            label=f"model (AP {average_precision_score(y_true, score):.3f})")
    pr.axhline(float(np.mean(y_true == 1)), linestyle="--", color="#888", label="chance")
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_title(f"Precision-recall, {split}")
    for ax in (roc, pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc else "lower left", fontsize=8)
    figure.suptitle(f"Positive class: {_short(classes[1], 40)}")
    return figure


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], normalize: bool = False,
              split: str = "validation") -> Figure:
    """The confusion matrix (rows: true class, columns: predicted), as counts or as the
    fraction of each true class."""
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    n = len(classes)
    side = min(max(4.5, 0.45 * n + 2.5), 24)
    figure = Figure(figsize=(side + 1, side), layout="constrained")
    ax = figure.subplots()
    shown = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    # Beyond 60 classes every name would overlap its neighbours: name every k-th one.
    ticks = np.arange(0, n, math.ceil(n / 60))
    names = [_short(classes[i]) for i in ticks]
    ax.set_xticks(ticks, names, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 30:  # beyond that the numbers are unreadable; the colours still tell
        limit = values.max() / 2 if values.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.0%}" if normalize else f"{int(counts[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=9 if n <= 12 else 7,
                        color="white" if values[i, j] > limit else "black")
    kind = "normalised by true class" if normalize else "counts"
    ax.set_title(f"Confusion matrix, {split} ({kind})")
    return figure


def per_class_f1(metrics: dict, split: str = "validation", most: int = 40) -> Figure:
    """F1 per class, worst first, with each class's number of images; the ``most`` worst
    classes when there are more (a bar chart of hundreds is unreadable; the report's table
    has them all)."""
    per_class = metrics["per_class"]
    names = sorted(per_class, key=lambda c: per_class[c]["f1"])[:most]
    f1 = [per_class[c]["f1"] for c in names]
    figure = Figure(figsize=(7, max(2.5, 0.32 * len(names) + 1.2)), layout="constrained")
    ax = figure.subplots()
    bars = ax.barh(np.arange(len(names)), f1, color="#4c72b0")
    ax.set_yticks(np.arange(len(names)), [_short(c) for c in names])
    ax.invert_yaxis()  # the worst class on top, where the eye starts
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("F1 score")
    for bar, name in zip(bars, names):
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2,
                f"{per_class[name]['f1']:.3f} (n={per_class[name]['support']})", va="center", fontsize=8)
    shown = f", the {len(names)} worst of {len(per_class)} classes" if len(names) < len(per_class) else ""
    ax.set_title(f"F1 per class, {split}{shown}")
    ax.grid(axis="x", alpha=0.3)
    return figure


def reliability_diagram(y_true: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS,
                        split: str = "validation") -> Figure:
    """Accuracy against confidence (the top probability) in equal-width bins: a calibrated
    model's bars follow the diagonal. Below, how many images fall in each bin."""
    counts, accuracy, mean_conf = calibration_bins(y_true, proba, bins)
    ece = expected_calibration_error(y_true, proba, bins)
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    figure = Figure(figsize=(5.5, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = counts > 0
    top.bar(centres[filled], accuracy[filled], width=1 / bins, edgecolor="#333", color="#4c72b0", label="accuracy")
    top.plot(centres[filled], mean_conf[filled], "D", color="#d62728", markersize=5, label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="#555", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    percent_axis(top.yaxis)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"Reliability diagram, {split} (ECE {ece:.3f})")
    bottom.bar(centres, counts, width=1 / bins, color="#888")
    bottom.set_yscale("symlog")
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    return figure


@dataclass(frozen=True)
class Mistake:
    """A misclassified image: its file, true class, predicted class and that prediction's
    probability; ``picture``, when given, is shown instead of the file (the network's input with
    a class activation map over it)."""

    path: Path
    true: str
    predicted: str
    probability: float
    picture: np.ndarray | None = None


def confident_mistakes(mistakes: Sequence[Mistake], split: str = "validation", columns: int = 4,
                       thumbnail: int = 192) -> Figure:
    """A grid of misclassified images, most confident first, each titled with its true class,
    predicted class and probability."""
    rows = max(1, math.ceil(len(mistakes) / columns))
    figure = Figure(figsize=(2.6 * columns, 2.9 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, mistake in zip(axes, mistakes):
        try:
            ax.imshow(mistake.picture if mistake.picture is not None
                      else np.asarray(load_thumbnail(mistake.path, thumbnail)))
        except DECODE_ERRORS:
            ax.text(0.5, 0.5, "cannot read the image", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"true: {_short(mistake.true, 18)}\npredicted: {_short(mistake.predicted, 18)} "
                     f"({mistake.probability:.2f})\n{_short(mistake.path.name, 26)}", fontsize=8)
    figure.suptitle(f"Most confidently wrong, {split}")
    return figure


def _short(text: str, width: int = 20) -> str:
    """A class or file name for a plot: shortened, and with ``$`` escaped, which matplotlib
    would otherwise read as the start of a formula (a class named "$5 bill")."""
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")
