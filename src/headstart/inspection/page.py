"""What ``headstart inspect`` writes: ``inspect.csv``, every finding, and ``inspect.html``, to look at them.

The CSV is for tools and spreadsheets; the page shows the flagged images
themselves (thumbnails side by side for duplicates), because whether two
photos are the same or a label is wrong is decided by looking.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import _html
from .._io import TEXT_ERRORS, atomic_files, csv_text
from .checks import FEW_IMAGES, IMBALANCE_RATIO, KINDS, TITLES
from .folder import Inspection, summary_lines

__all__ = ["CSV_COLUMNS", "write_inspection"]

CSV_COLUMNS = ("kind", "severity", "path", "split", "label", "suggested", "other_path", "other_split",
               "other_label", "score", "detail")
_SHOWN = 100  # findings per section of the HTML page with thumbnails; the CSV has them all


def write_inspection(result: Inspection, out: str | Path) -> tuple[Path, Path]:
    """Write ``inspect.csv`` (one row per finding) and ``inspect.html`` into ``out``, together."""
    out = Path(out)
    rows = ([getattr(f, c) if c != "score" else ("" if f.score is None else f"{f.score:.4f}")
             for c in CSV_COLUMNS] for f in result.findings)
    csv_path, html_path = out / "inspect.csv", out / "inspect.html"
    text, page = csv_text(CSV_COLUMNS, rows), _html_page(result)
    with atomic_files(out) as new:
        new(csv_path.name).write_text(text, encoding="utf-8", errors=TEXT_ERRORS)
        new(html_path.name).write_text(page, encoding="utf-8", errors=TEXT_ERRORS)
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
        groups = len({f.other_path for f in loud})
        parts.append(f'<div class="alert"><strong>{len(loud)} file(s) duplicating {groups} other(s) across splits '
                     "or with conflicting labels</strong> (listed first below). A photo in both training and validation/test inflates the measured "
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
    # The leaks (across splits, or under two labels) first: a long table must not bury them.
    found = sorted(result.of_kind(kind), key=lambda f: not f.leak)
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
