"""What a report page is made of: a run's record and the rows of its CSV files, and the small
formatting rules its sections share (report.page and report.multilabel both build on them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..record import RunRecord, SplitMetrics, read_record
from ..runfolder import BACKBONES_FILE, PREDICTIONS_FILE, SKIPPED_FILE, read_csv_file

__all__ = ["PageData", "read_run"]


@dataclass
class PageData:
    """A report page's material: the metrics of each split it shows (val and test, or the images
    ``headstart evaluate`` scored), their ``predictions.csv`` rows, and for a training run, its record."""

    directory: Path
    classes: tuple[str, ...]
    multi_label: bool
    splits: dict[str, SplitMetrics]
    predictions: list[dict]
    data_root: Path | None
    record: RunRecord | None = None  # None for evaluate's page
    skipped: list[dict] = field(default_factory=list)
    # The comparison --backbone auto chose the backbone from; empty otherwise.
    backbones: list[dict] = field(default_factory=list)
    # Gives the PyTorch model that maps where it looked in the mistakes shown; called only when
    # there are some (loading a model costs seconds). None: the mistakes are shown as they are.
    explainer: Callable[[], object] | None = None


def read_run(directory: str | Path) -> PageData:
    """A finished run folder's record and CSV files; a missing or damaged file is named in the error."""
    record = read_record(directory)
    directory, splits = record.directory, record.metrics.splits()
    return PageData(directory, record.classes, record.config.head.multi_label, splits,
                    read_csv_file(directory, PREDICTIONS_FILE, required=bool(splits)) or [],
                    record.request.data if record.request is not None else None, record,
                    read_csv_file(directory, SKIPPED_FILE, required=False) or [],
                    read_csv_file(directory, BACKBONES_FILE, required=False) or [])


def _image_path(run: PageData, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() or run.data_root is None else run.data_root / path


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _num(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "n/a"
