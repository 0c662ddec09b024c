"""A run folder's files, parsed: what every page of the report is made of, and the small
formatting rules its sections share (report.page and report.multilabel both build on them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFileError
from ..runfolder import (BACKBONES_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE, PREDICTIONS_FILE, RUN_FILE,
                         SKIPPED_FILE, check_finished, read_csv_file, read_run_file)

__all__ = ["RunRecord", "read_run"]


@dataclass
class RunRecord:
    """A run folder's files, parsed: what the report is made of."""

    directory: Path
    config: dict
    metrics: dict
    history: list[dict]
    predictions: list[dict] | None  # None for a run saved before predictions.csv existed
    skipped: list[dict]
    data_root: Path | None
    # The comparison --backbone auto chose the backbone from; empty otherwise (and for evaluate's page).
    backbones: list[dict] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])


def read_run(directory: str | Path) -> RunRecord:
    """Parse a run folder written by training; a missing or damaged file is named in the error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"no such run folder: {directory}")
    check_finished(directory)
    config = read_run_file(directory, CONFIG_FILE)
    metrics = read_run_file(directory, METRICS_FILE)
    run = read_run_file(directory, RUN_FILE, required=False)
    predictions = read_csv_file(directory, PREDICTIONS_FILE, required=False)
    history = [{k: v if k == "stage" else _float(v) for k, v in row.items()}
               for row in read_csv_file(directory, HISTORY_FILE, required=False) or []]
    skipped = read_csv_file(directory, SKIPPED_FILE, required=False) or []
    backbones = read_csv_file(directory, BACKBONES_FILE, required=False) or []
    return RunRecord(directory, config, metrics, history, predictions, skipped,
                     Path(run["data"]) if run and "data" in run else None, backbones)


def _image_path(run: RunRecord, path: str) -> Path:
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
