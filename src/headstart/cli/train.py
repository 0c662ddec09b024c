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
from ..errors import ExitStatus, HeadstartError, StorageError, UsageError

if TYPE_CHECKING:
    from ..model import ImageClassifier
    from ..record import RunRequest

__all__ = ["train_command"]


def train_command(args: argparse.Namespace, console: Console) -> ExitStatus:
    from .. import distributed
    from ..features.cache import CacheLayout
    from ..model import ImageClassifier
    from ..runfolder import CHECKPOINT_FILE, lock_run, prepare_output_dir
    from ..tracking import create_trackers

    # Rank 0 alone reads and writes the run folder: the other ranks of a data-parallel run (maybe on
    # other machines, where it does not exist) get the settings and the folder's name from it.
    out, request = distributed.broadcast(_plan(args) if distributed.is_main() else None)
    clf = ImageClassifier(**request.params, verbose=console.verbosity)
    data = _training_data(request, clf)  # a bad label file fails before the run folder is made
    main, fresh = distributed.is_main(), args.resume is None
    # Both held until the model is saved: a second `train` into this folder is refused, naming
    # this process, and `cache clear` refuses while the run may still read or write features.
    with lock_run(out) if main else contextlib.nullcontext(), CacheLayout(clf.cache_dir).in_use():
        if main and fresh:  # a full folder is refused before anything is logged or written
            prepare_output_dir(out, args.overwrite)
        trackers = create_trackers(args.track or (), out, console) if main else []  # a tracker's store is checked
        if main and fresh:
            _start(out, request)
        try:
            with _terminate_as_interrupt():
                clf.fit(data, console=console, checkpoint_dir=out, callbacks=trackers)
        except KeyboardInterrupt:
            if main:
                console.error(f"interrupted: {out} keeps the last completed epoch; "
                              f"continue with: headstart train --resume {out}")
            return ExitStatus.INTERRUPTED
        if main:
            _save(clf, out)
            (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    if main:
        console.info(_summary(clf, out))
    return ExitStatus.SUCCESS


def _plan(args: argparse.Namespace) -> tuple[Path, RunRequest]:
    """The run folder and what to run in it: a new run's, or the one ``--resume`` names."""
    from ..model import ImageClassifier
    from ..record import label_root
    from ..runfolder import new_run_dir

    if args.resume is not None:
        return args.resume, _resume_request(args.resume)
    if args.data is None and args.labels is None:
        raise UsageError("train: give the image folder DATA (or --labels CSV), or --resume RUN")
    clf = ImageClassifier(**_training_kwargs(args))
    clf.training_config()  # a bad option fails before any work
    root = label_root(args.data, args.labels)
    return args.out or new_run_dir(), clf.run_request(root, args.labels, args.label_sep)


def _save(clf: ImageClassifier, out: Path) -> None:
    """Save the trained model; a failure (a full disk) says how to finish the run without retraining
    it all: the checkpoint and ``run.json`` stay in ``out``."""
    try:
        clf.save(out, overwrite=True)
    except (OSError, HeadstartError) as exc:
        reason = str(exc) if isinstance(exc, HeadstartError) else f"{exc.filename or out}: {exc.strerror or exc}"
        error = StorageError(f"the model could not be saved ({reason}); once that is fixed, finish with: "
                             f"headstart train --resume {out}")
        error.exit_status = exc.exit_status if isinstance(exc, HeadstartError) else ExitStatus.IO
        raise error from None


def _start(out: Path, request: RunRequest) -> None:
    """A new run in ``out``: its ``run.json`` first, and no checkpoint (--overwrite starts afresh)."""
    from .._io import write_text
    from ..record import record_text
    from ..runfolder import CHECKPOINT_FILE, RUN_FILE

    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    write_text(out / RUN_FILE, record_text(request))


def _training_kwargs(args: argparse.Namespace) -> dict:
    from ..model import ImageClassifier

    names = ImageClassifier().get_params()
    return {k: v for k, v in vars(args).items() if k in names and k != "verbose"}


def _training_data(request: RunRequest, clf: ImageClassifier):
    """The data folder of ``request``, or the images and labels of its label file, split as the settings say."""
    if request.labels is None:
        return request.data
    from ..data.labels import read_label_file

    config = clf.training_config()
    return read_label_file(request.labels, request.data, request.label_sep, multi_label=config.multi_label,
                           val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed)


def _resume_request(run: Path) -> RunRequest:
    """``run.json`` of the run to resume; its errors name ``--resume``, the option at fault."""
    from ..model import ImageClassifier
    from ..record import read_request
    from ..runfolder import RUN_FILE

    if not (run / RUN_FILE).is_file():
        raise UsageError(f"--resume: {run / RUN_FILE} not found: not a run folder written by 'headstart train'")
    request = read_request(run)
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

    m = clf.record_.metrics
    lines = ["", "done:"]
    # x == x fails for NaN only: a stage-1 accuracy that was not measured is not printed.
    if m.stage1 and m.stage1.val_accuracy == m.stage1.val_accuracy:
        lines.append(f"  stage 1 (frozen backbone): val accuracy {m.stage1.val_accuracy:.2%}")
    if m.fine_tune:
        lines.append(f"  fine-tuning: val accuracy {m.fine_tune.val_accuracy:.2%} ({m.fine_tune.verdict()})")
        if m.fine_tune.likely_cause:
            lines.append(f"    likely cause: {m.fine_tune.likely_cause}")
    for split, scores in m.splits().items():
        if scores.multi_label:
            lines.append(f"  final model: {split} mAP {scores.mean_ap:.4f}, macro F1 {scores.macro_f1:.4f}")
        else:
            lines.append(f"  final model: {split} accuracy {scores.accuracy:.2%}")
    if warning := m.disagreement():
        lines.append(f"  warning: {warning}")
    if m.skipped:
        lines.append(f"  {m.skipped} file(s) skipped: see {out / SKIPPED_FILE}")
    lines.append(f"  training time {m.train_seconds:.0f} s; model saved in {out}")
    lines.append(f"  see what it learned: {out / REPORT_FILE}")
    lines.append(f"  predict with: headstart predict {out} IMAGES...")
    return "\n".join(lines)
