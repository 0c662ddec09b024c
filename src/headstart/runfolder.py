"""How a run folder looks: every file name in it, its CSV files, and the rules for output folders.

A run folder is what ``headstart train`` writes and every other command reads:

========================  ==========================================================
``model.safetensors``     the weights, backbone and head
``config.json``           :class:`headstart.config.ModelConfig`: enough to rebuild it
``metrics.json``          validation and test metrics, stage 1 vs fine-tuning, timings
``history.csv``           one row per epoch
``split.csv``             which image went where (paths relative to the data folder)
``predictions.csv``       every validation and test image's probabilities
``skipped.csv``           files left out, and why
``run.json``              what was asked for: the data folder and every setting
``checkpoint.safetensors``  the last completed epoch, while training
``run.lock``              while training: the writer's process id, and its lock
``report.html``, plots/   the run's page
``backbones.csv``         with ``--backbone auto``: the backbones compared, and the one chosen
``tensorboard/``          with ``--track tensorboard``: TensorBoard's event files
========================  ==========================================================

This module is the one place that knows those names, and writes and reads the CSV
files back; the JSON files are the run record's (:mod:`headstart.record`). It
imports nothing heavy.

A run being written is locked (:func:`lock_run`: ``flock`` on ``run.lock``, which
holds the writer's pid), so a second ``train`` into the same folder is refused with
the running process named, and a command on a run that has no model yet says whether
it is still training or was interrupted (:func:`check_finished`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import TEXT_ERRORS, csv_text, csv_value
from .config import LABEL_SEP
from .errors import ModelFileError, UsageError

__all__ = [
    "MODEL_FILE", "CONFIG_FILE", "METRICS_FILE", "HISTORY_FILE", "SPLIT_FILE", "PREDICTIONS_FILE",
    "SKIPPED_FILE", "RUN_FILE", "CHECKPOINT_FILE", "REPORT_FILE", "PLOTS_DIR",
    "HISTORY_COLUMNS", "BACKBONES_FILE", "BACKBONES_COLUMNS", "TENSORBOARD_DIR", "LOCK_FILE", "history_csv",
    "backbones_csv", "split_csv", "prediction_row", "predictions_csv", "skipped_csv", "read_csv_file",
    "prepare_output_dir", "new_run_dir", "relative_path", "lock_run",
    "lock_owner", "check_finished",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
SPLIT_FILE = "split.csv"
PREDICTIONS_FILE = "predictions.csv"
SKIPPED_FILE = "skipped.csv"
RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
LOCK_FILE = "run.lock"
BACKBONES_FILE = "backbones.csv"  # the comparison of `headstart backbones`, and of train's --backbone auto
TENSORBOARD_DIR = "tensorboard"  # event files of --track tensorboard

# history.csv, one row per epoch of either stage.
HISTORY_COLUMNS = ("epoch", "stage", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "lr", "seconds")
# backbones.csv, one row per backbone compared (see headstart.selection).
BACKBONES_COLUMNS = ("backbone", "weights", "architecture", "weights_source", "input_size", "parameters",
                     "weights_mb", "val_accuracy", "val_loss", "val_map", "images_per_second",
                     "seconds_per_1000_images", "features_computed", "extraction_seconds", "head_seconds",
                     "within_budget", "chosen")


def history_csv(history: Sequence[dict]) -> str:
    return csv_text(HISTORY_COLUMNS, ([row[c] for c in HISTORY_COLUMNS] for row in history))


def backbones_csv(rows: Sequence[dict]) -> str:
    return csv_text(BACKBONES_COLUMNS, ([row[c] for c in BACKBONES_COLUMNS] for row in rows))


def split_csv(rows: Iterable[tuple[str, str, str]]) -> str:
    """Which image went where, from (path relative to the data folder, class, split) rows: a valid
    label file too (a multi-label image's classes separated by ``;``)."""
    return csv_text(("path", "class", "split"), rows)


def prediction_row(path: str, split: str, true: str, proba: np.ndarray, classes: Sequence[str],
                   thresholds: Sequence[float] | None = None) -> dict[str, Any]:
    """One image's row of ``predictions.csv``: its split, true and predicted class (a multi-label
    model's label set, ``;``-separated, decided at ``thresholds``), and every class's probability;
    empty where the image could not be decoded (a NaN row)."""
    decoded = not np.isnan(proba).any()
    if not decoded:
        predicted = ""
    elif thresholds is None:
        predicted = classes[int(proba.argmax())]
    else:
        predicted = LABEL_SEP.join(c for c, p, t in zip(classes, proba, thresholds) if p >= t)
    return {"path": path, "split": split, "class": true, "predicted": predicted,
            **{f"p_{c}": (float(p) if decoded else "") for c, p in zip(classes, proba)}}


def predictions_csv(classes: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    """``predictions.csv`` from :func:`prediction_row` rows, so a report can be rebuilt without the model."""
    header = ("path", "split", "class", "predicted", *(f"p_{c}" for c in classes))
    return csv_text(header, ([f"{v:.6g}" if isinstance(v, float) else v for v in row.values()] for row in rows))


def skipped_csv(rows: Iterable[tuple[str, str]]) -> str:
    """The files left out, from (path, reason) rows."""
    return csv_text(("path", "reason"), rows)


def read_csv_file(run: Path, name: str, required: bool = True) -> list[dict] | None:
    """The rows of a CSV file of the run folder; None when it is absent and not ``required``."""
    path = Path(run) / name
    if not path.is_file():
        if required:
            raise ModelFileError(f"not a run folder: {path} is missing")
        return None
    try:
        with path.open(newline="", encoding="utf-8", errors=TEXT_ERRORS) as f:
            return [{k: csv_value(v) if isinstance(v, str) else v for k, v in row.items()}
                    for row in csv.DictReader(f)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ModelFileError(f"{path} is not a readable CSV file: {exc}") from None


def prepare_output_dir(directory: str | Path, overwrite: bool) -> Path:
    """Create ``directory``; refuse one that holds files unless ``overwrite``: nothing is lost silently."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"output {directory} exists and is not a folder")
    if directory.is_dir() and any(p.name != LOCK_FILE for p in directory.iterdir()) and not overwrite:
        raise UsageError(f"output folder {directory} is not empty: choose another --out or pass --overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def new_run_dir(prefix: str = "") -> Path:
    """A fresh ``runs/<prefix><timestamp>`` path (numbered when a run started the same second)."""
    stamp = prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path("runs") / stamp, 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{stamp}-{n}"
    return path


def relative_path(path: Path, root: Path) -> str:
    """``path`` as the run's CSV files write it: relative to the data folder when inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# The lock descriptors this process holds. A forked child (a decoding worker) would share each
# one's lock, and keep the run folder locked after its parent was killed: children close them.
_HELD_LOCKS: set[int] = set()


def _drop_locks_in_child() -> None:
    for fd in _HELD_LOCKS:
        os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


@contextlib.contextmanager
def lock_run(directory: str | Path) -> Iterator[Path]:
    """Hold the run folder ``directory`` (created if needed) for writing, or refuse naming its writer.

    The lock is ``flock``'s: the kernel drops it when the process ends, however it
    ends, so a killed run never leaves a stale lock behind; ``run.lock`` itself
    only says who holds it.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"output {directory} exists and is not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = lock_owner(directory)
            raise UsageError(f"{directory} is being written by another headstart process"
                             f"{f' (pid {owner})' if owner else ''}: wait for it to end, or stop it") from None
        # The previous holder may have removed the file between our open and our lock:
        # then we hold a lock on a file nobody else sees; take the one on disk instead.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    _HELD_LOCKS.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield directory
    finally:
        path.unlink(missing_ok=True)
        _HELD_LOCKS.discard(fd)
        os.close(fd)  # closing releases the lock


def lock_owner(directory: str | Path) -> int | None:
    """The pid of the process writing the run folder ``directory``, or None when none is."""
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # a file left by nothing that still runs
    finally:
        os.close(fd)


def check_finished(run: str | Path) -> None:
    """Refuse a run folder whose model is not written yet, saying why and what to do.

    A run still training names its process; an interrupted one gets its resume command.
    """
    run = Path(run)
    if any((run / name).is_file() for name in (CONFIG_FILE, MODEL_FILE, METRICS_FILE)):
        return  # written together when training ends: with one of them there, the rest is damage, not a run to resume
    if not (run / RUN_FILE).is_file():
        return  # not a run started by `headstart train`: the caller's own error says what is missing
    owner = lock_owner(run)
    if owner is not None:
        who = f" (pid {owner})" if owner > 0 else ""
        raise ModelFileError(f"{run} is still training{who}: its model is written when training ends")
    raise ModelFileError(f"{run} is unfinished: training stopped before its model was written; "
                         f"finish it with: headstart train --resume {run}")
