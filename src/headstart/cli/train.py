"""``headstart train``: a new run, or ``--resume`` of an interrupted one, and the summary it ends with.

Training is the one long command, so it is the one that must stop well: Ctrl-C and ``kill``
(SIGTERM) both leave the last completed epoch in the run folder, and ``--resume`` continues
from it with the settings ``run.json`` recorded. Under torchrun, which passes Ctrl-C and
SIGTERM on to every rank, each rank stops, and rank 0's folder is the one to resume. PyTorch and the model are imported by the
handler, not here: ``import headstart.cli`` stays light for the other commands.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .._console import Console
from ..errors import ExitStatus, UsageError

if TYPE_CHECKING:
    from ..model import ImageClassifier
    from ..runfolder import RunRequest

__all__ = ["train_command"]


def train_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .. import distributed
    from ..model import ImageClassifier
    from ..runfolder import CHECKPOINT_FILE

    # Rank 0 alone reads and writes the run folder: the other ranks of a data-parallel run (maybe on
    # other machines, where it does not exist) get the settings and the folder's name from it.
    out, request = distributed.broadcast(_start(args) if distributed.is_main() else None)
    clf = ImageClassifier(**request.params, verbose=console.verbosity)
    try:
        with _terminate_as_interrupt():
            clf.fit(request.data, console=console, checkpoint_dir=out)
    except KeyboardInterrupt:
        if distributed.is_main():
            console.error(f"interrupted: {out} keeps the last completed epoch; "
                          f"continue with: headstart train --resume {out}")
        return ExitStatus.INTERRUPTED
    if distributed.is_main():
        clf.save(out, overwrite=True)
        (out / CHECKPOINT_FILE).unlink(missing_ok=True)
        console.info(_summary(clf, out))
    return ExitStatus.SUCCESS


def _start(args: argparse.Namespace) -> tuple[Path, RunRequest]:
    """The run folder and what to run in it: a new run's, made ready, or the one ``--resume`` names."""
    from .._io import write_text
    from ..model import ImageClassifier
    from ..runfolder import CHECKPOINT_FILE, RUN_FILE, new_run_dir, prepare_output_dir, run_json_text

    if args.resume is not None:
        return args.resume, _resume_request(args.resume)
    if args.data is None:
        raise UsageError("train: give the image folder DATA, or --resume RUN")
    clf = ImageClassifier(**_training_kwargs(args))
    clf.training_config()  # a bad option fails before any work
    out = prepare_output_dir(args.out or new_run_dir(), args.overwrite)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # --overwrite starts afresh, never resumes
    request = clf.run_request(args.data)
    write_text(out / RUN_FILE, run_json_text(request))
    return out, request


def _training_kwargs(args: argparse.Namespace) -> dict:
    from ..model import ImageClassifier

    names = ImageClassifier().get_params()
    return {k: v for k, v in vars(args).items() if k in names and k != "verbose"}


def _resume_request(run: Path) -> RunRequest:
    """``run.json`` of the run to resume; its errors name ``--resume``, the option at fault."""
    from ..model import ImageClassifier
    from ..runfolder import RUN_FILE, read_run_request

    try:
        request = read_run_request(run)
    except UsageError as exc:
        raise UsageError(f"--resume: {exc}") from None
    unknown = set(request.params) - set(ImageClassifier().get_params())
    if unknown:
        raise UsageError(f"--resume: {run / RUN_FILE} has unknown settings: {', '.join(sorted(unknown))}")
    return request


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """``kill`` (SIGTERM) stops training like Ctrl-C: cleanly, with the last epoch kept."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _summary(clf: ImageClassifier, out: Path) -> str:
    from ..runfolder import REPORT_FILE, SKIPPED_FILE

    m = clf.metrics_
    lines = ["", "done:"]
    # x == x fails for NaN only: a stage-1 accuracy that was not measured is not printed.
    if m["stage1"] and m["stage1"]["val_accuracy"] == m["stage1"]["val_accuracy"]:
        lines.append(f"  stage 1 (frozen backbone): val accuracy {m['stage1']['val_accuracy']:.2%}")
    if m["fine_tune"]:
        verdict = "kept" if m["fine_tune"]["kept"] else "not kept: stage-1 weights restored"
        lines.append(f"  fine-tuning: val accuracy {m['fine_tune']['val_accuracy']:.2%} ({verdict})")
    if "val" in m:
        lines.append(f"  final model: val accuracy {m['val']['accuracy']:.2%}")
    if "test" in m:
        lines.append(f"  final model: test accuracy {m['test']['accuracy']:.2%}")
    if m["skipped"]:
        lines.append(f"  {m['skipped']} file(s) skipped: see {out / SKIPPED_FILE}")
    lines.append(f"  training time {m['train_seconds']:.0f} s; model saved in {out}")
    lines.append(f"  see what it learned: {out / REPORT_FILE}")
    lines.append(f"  predict with: headstart predict {out} IMAGES...")
    return "\n".join(lines)
