"""A comparison of backbones, shown: an aligned terminal table, ``backbones.csv``, and
``backbones.html`` with the accuracy vs speed trade-off plot (``backbones.png``).

The plot follows the report's conventions (:mod:`headstart._plots`):
built without pyplot, percentages on the accuracy axis, written atomically.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from .. import _html as h
from .._io import write_text
from .._plots import percent_axis, save
from ..runfolder import BACKBONES_FILE, backbones_csv
from .survey import SAMPLE_IMAGES, TIMINGS, Survey

__all__ = ["HTML_FILE", "PLOT_FILE", "survey_table", "trade_off", "write_survey"]

HTML_FILE = "backbones.html"
PLOT_FILE = "backbones.png"
_HEADERS = ("backbone", "input", "params", "weights", "val acc", "val loss", "img/s", "s/1k img", "extracted")


def _cells(survey: Survey) -> list[list[str]]:
    rows = []
    for e in survey.entries:
        accuracy = f"{e.val_accuracy:.2%}" + (f" (mAP {e.val_map:.3f})" if e.val_map is not None else "")
        extracted = f"{e.computed} in {e.extraction_seconds:.1f} s" if e.computed else "all cached"
        rows.append([e.candidate.label, f"{e.input_size} px", f"{e.parameters / 1e6:.1f} M",
                     f"{e.weights_mb:.1f} MB", accuracy, f"{e.val_loss:.4f}", f"{e.images_per_second:.1f}",
                     f"{e.seconds_per_1000:.1f}" + ("" if e.within_budget else " (over)"), extracted])
    return rows


def survey_table(survey: Survey) -> str:
    """The terminal table; ``*`` marks the chosen backbone (the best within the budget)."""
    rows = _cells(survey)
    widths = [max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(_HEADERS)]
    lines = ["  " + "  ".join(f"{header:<{w}}" if i == 0 else f"{header:>{w}}"
                              for i, (header, w) in enumerate(zip(_HEADERS, widths)))]
    for entry, row in zip(survey.entries, rows):
        lines.append(("* " if entry.chosen else "  ") + "  ".join(
            f"{cell:<{w}}" if i == 0 else f"{cell:>{w}}" for i, (cell, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def trade_off(survey: Survey) -> Figure:
    """Validation accuracy (mAP for multi-label) against seconds per 1,000 images: up and to the
    left is better; the chosen backbone ringed, the time budget dashed."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    for e in survey.entries:
        ax.scatter(e.seconds_per_1000, e.score, s=40 + 6 * e.weights_mb, alpha=0.75,
                   color="#2e7d32" if e.chosen else "#1f77b4" if e.within_budget else "#9e9e9e")
        if e.chosen:
            ax.scatter(e.seconds_per_1000, e.score, s=220 + 6 * e.weights_mb, facecolors="none",
                       edgecolors="#2e7d32", linewidths=2)
        ax.annotate(f"{e.candidate.name} ({e.input_size} px)", (e.seconds_per_1000, e.score),
                    textcoords="offset points", xytext=(8, 6), fontsize=9)
    if survey.time_budget is not None:
        ax.axvline(survey.time_budget, color="#c62828", linestyle="--", label="time budget")
        ax.legend(loc="lower right")
    ax.set_xlabel("seconds of feature extraction per 1,000 images (this machine)")
    ax.set_ylabel("validation mAP" if survey.multi_label else "validation accuracy")
    if not survey.multi_label:
        percent_axis(ax.yaxis)
    ax.margins(x=0.25, y=0.15)
    ax.grid(alpha=0.3)
    ax.set_title("accuracy vs speed (marker area: size of the weights)", fontsize=10)
    return figure


def write_survey(survey: Survey, out: Path) -> list[Path]:
    """``backbones.csv``, ``backbones.png`` and ``backbones.html`` in ``out``; returns their paths."""
    csv_path, plot_path, html_path = out / BACKBONES_FILE, out / PLOT_FILE, out / HTML_FILE
    write_text(csv_path, backbones_csv(survey.rows()))
    save(trade_off(survey), plot_path)
    chosen = survey.chosen
    budget = "no time budget" if survey.time_budget is None else \
        f"a time budget of {survey.time_budget:g} s of feature extraction per 1,000 images"
    body = [f"<h1>{len(survey.entries)} backbones compared</h1>",
            (f'<p class="muted">{h.escape(str(survey.root))}: {survey.classes} classes, {h.escape(survey.sizes)} '
             "(test images left out: the choice is made on validation).</p>"),
            f'<p class="ok">Best, with {h.escape(budget)}: <b>{h.escape(survey.reason)}</b></p>' if chosen else "",
            h.table(["", *_HEADERS], [[h.Raw("&#9733;") if e.chosen else "", *row] for e, row in
                                      zip(survey.entries, _cells(survey))], numeric=range(2, len(_HEADERS) + 1)),
            h.image(plot_path, "validation accuracy against seconds per 1,000 images"),
            "<h2>How it was measured</h2>",
            (f"<p>Each backbone's features of the same training and validation images (one split, drawn "
            f"once) come from the feature cache, or are computed and cached; the lightweight head is fitted "
            f"on them as <code>headstart train</code> fits it, and scored on the validation images. "
            f"<b>img/s</b>: the fastest of {TIMINGS} warm extractions of the first "
            f"{min(survey.sample, SAMPLE_IMAGES)} training images (other processes' load only slows a "
            "timing), recomputed by the engine a training run uses on this machine, decoding included, "
            "whatever the cache held. <b>extracted</b>: the features this comparison computed (the rest "
            "were cached). <b>weights</b>: the backbone's saved weights, as a run's model file holds "
            "them; <b>params</b> leaves BatchNorm statistics out.</p>")]
    write_text(html_path, h.page("headstart: backbones compared", "\n".join(b for b in body if b)))
    return [csv_path, html_path, plot_path]
