"""``headstart compare``: runs side by side, one column per run, one row per setting or metric.

Built from each run folder's ``config.json`` and ``metrics.json`` alone (no model
is loaded). Settings that differ between the runs come first and are marked: they
are what explains a difference in the metrics below them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import _html as h
from ._io import csv_text, write_text
from .record import read_record

__all__ = ["Comparison", "compare_runs", "comparison_csv", "comparison_html", "comparison_text"]

_METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("log_loss", "log loss"),
            ("expected_calibration_error", "calibration error (ECE)"), ("roc_auc", "ROC-AUC"),
            ("pr_auc", "PR-AUC"), ("count", "images"))


@dataclass(frozen=True)
class Comparison:
    """Run names (columns), and rows of (section, name, one value per run)."""

    runs: tuple[str, ...]
    rows: tuple[tuple[str, str, tuple[str, ...]], ...]

    def differing(self, row: tuple[str, str, tuple[str, ...]]) -> bool:
        return len(set(row[2])) > 1


def compare_runs(runs: Sequence[str | Path]) -> Comparison:
    """Settings (differing ones first), then metrics, then timings, of the finished ``runs``."""
    records = [read_record(run) for run in runs]
    configs, metrics = [r.config for r in records], [r.metrics for r in records]
    settings = {"backbone": [c.backbone.name for c in configs],
                "image size": ["x".join(map(str, c.preprocessing.input_size[1:])) for c in configs],
                "workflow": [m.workflow for m in metrics],
                "head L2 C": [m.head.C if m.head else None for m in metrics],
                "feature engine": [m.features.engine if m.features else None for m in metrics],
                "data": [r.request.data if r.request else None for r in records]}
    # Only what each run's workflow read: a lightweight run shows no epochs or learning rate it never used.
    used = [r.used_settings() for r in records]
    for name in dict.fromkeys(k for u in used for k in u):
        settings[name.replace("_", " ")] = [u.get(name) for u in used]
    setting_rows = [("setting", k, tuple(map(_text, v))) for k, v in settings.items()]
    setting_rows.sort(key=lambda row: len(set(row[2])) == 1)  # stable: differing settings first
    rows = list(setting_rows)
    for split in ("val", "test"):
        scores = [m.splits().get(split) for m in metrics]
        if any(scores):
            rows += [(f"{split} metrics", label, tuple(_text(getattr(s, key) if s else None) for s in scores))
                     for key, label in _METRICS]
    for stage, label in (("stage1", "stage 1"), ("fine_tune", "fine-tuning")):
        stages = [getattr(m, stage) for m in metrics]
        if any(stages):
            rows.append(("training", f"{label} val accuracy", tuple(_text(s.val_accuracy if s else None)
                                                                    for s in stages)))
    rows.append(("training", "fine-tuning kept", tuple(_text(m.fine_tune.kept if m.fine_tune else None)
                                                       for m in metrics)))
    rows.append(("time", "training seconds", tuple(_text(m.train_seconds) for m in metrics)))
    return Comparison(tuple(str(r) for r in runs), tuple(rows))


def comparison_text(comparison: Comparison) -> str:
    """An aligned plain-text table; a ``*`` marks a setting that differs between runs."""
    label_width = max(len(r[1]) for r in comparison.rows) + 2
    widths = [max(len(run), *(len(r[2][i]) for r in comparison.rows)) for i, run in enumerate(comparison.runs)]
    lines = [" " * label_width + "  ".join(f"{run:>{w}}" for run, w in zip(comparison.runs, widths))]
    section = None
    for row in comparison.rows:
        if row[0] != section:
            section = row[0]
            lines.append(f"[{section}]")
        mark = "*" if row[0] == "setting" and comparison.differing(row) else " "
        lines.append(f"{mark}{row[1]:<{label_width - 1}}" + "  ".join(f"{v:>{w}}" for v, w in zip(row[2], widths)))
    return "\n".join(lines)


def comparison_csv(comparison: Comparison, path: Path) -> None:
    write_text(path, csv_text(("section", "name", *comparison.runs), ((s, n, *v) for s, n, v in comparison.rows)))


def comparison_html(comparison: Comparison, path: Path) -> None:
    """A self-contained page; settings that differ are highlighted."""
    body = [f"<h1>{len(comparison.runs)} runs compared</h1>",
            '<p class="muted">Highlighted: the settings that differ between the runs.</p>']
    for section in dict.fromkeys(r[0] for r in comparison.rows):
        rows = []
        for s, name, values in comparison.rows:
            if s != section:
                continue
            label = h.Raw(f"<mark>{h.escape(name)}</mark>") if s == "setting" and len(set(values)) > 1 else name
            rows.append([label, *values])
        body.append(f"<h2>{h.escape(section)}</h2>" + h.table(["", *comparison.runs], rows,
                                                               numeric=range(1, len(comparison.runs) + 1)))
    write_text(path, h.page("headstart: runs compared", "\n".join(body)))


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return str(value)
