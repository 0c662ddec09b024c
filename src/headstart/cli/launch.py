"""Running a command on several processes: under torchrun, or by starting torchrun for the user.

``torchrun --nproc-per-node N -m headstart train DATA`` (and its multi-node flags) starts the
processes itself; :func:`distributed_session` then joins each one to the process group, names
its rank in its errors and keeps every rank but 0 quiet. ``headstart train DATA --nproc N`` or
``--devices 0,1`` is the one-machine convenience, as Ultralytics offers: :func:`relaunch` runs
torchrun (``torch.distributed.run``) in this process with the same command line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Sequence

from .._console import Console
from ..errors import ExitStatus, UsageError
from .registry import COMMANDS

__all__ = ["distributed_session", "wants_relaunch", "relaunch", "rank_failure"]

_LAUNCH_OPTIONS = ("--nproc", "--devices")


@contextlib.contextmanager
def distributed_session(args: argparse.Namespace, console: Console) -> Iterator[None]:
    """The process group for the body, when torchrun started this process to run ``args.command``."""
    from .. import distributed

    if not distributed.launched():
        yield
        return
    if not COMMANDS[args.command].data_parallel:
        raise UsageError(f"{args.command} runs in one process: run it without torchrun")
    if os.environ["WORLD_SIZE"] != "1":
        console.where = f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: "
    if os.environ["RANK"] != "0":
        console.verbosity = -1  # rank 0 talks for everyone; the others speak only of their own failure
    with distributed.process_group(args.device):
        yield


def wants_relaunch(args: argparse.Namespace) -> bool:
    from .. import distributed

    asked = getattr(args, "nproc", None) is not None or getattr(args, "devices", None) is not None
    if asked and distributed.launched():
        raise UsageError("--nproc and --devices start torchrun: under torchrun already, leave them out")
    return asked


def relaunch(argv: Sequence[str], args: argparse.Namespace, console: Console) -> ExitStatus:
    """Run this command line again on ``--nproc`` processes (or one per GPU of ``--devices``), under
    torchrun on this machine; returns the exit status of the first rank that failed, if one did."""
    nproc = _process_count(args)  # before importing PyTorch: a bad option fails at once
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from ..data.workers import available_cores

    if args.devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.devices
    # torchrun would give every process one thread; on CPUs they share the cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))
    command = ["--standalone", "--nproc-per-node", str(nproc), "-m", "headstart", *_without_launch_options(argv)]
    console.info(f"starting {nproc} processes: torchrun {' '.join(command)}")
    # The ranks report their own errors, and this process the first to fail: torchrun's log
    # lines about the same failure would only repeat them.
    logging.disable(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(command))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        return rank_failure(rank, nproc, failure.exitcode, console)
    except (SignalException, KeyboardInterrupt):
        console.error("interrupted: every rank was stopped")
        return ExitStatus.INTERRUPTED
    finally:
        logging.disable(logging.NOTSET)
    return ExitStatus.SUCCESS


def rank_failure(rank: int, nproc: int, exitcode: int, console: Console) -> ExitStatus:
    """The exit status of a run whose first failed rank ended with ``exitcode``, said in one line.

    Only Ctrl-C is an interruption: a rank that the kernel or a user killed (out of memory is
    SIGKILL, a crash SIGSEGV) is a failure, named with its signal, not a run to resume quietly.
    """
    if exitcode in (ExitStatus.INTERRUPTED, -signal.SIGINT):
        return ExitStatus.INTERRUPTED
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = " (the kernel does this when memory runs out)" if -exitcode == signal.SIGKILL else ""
        console.error(f"rank {rank} of {nproc} was killed by {name}{why}")
        return ExitStatus.ERROR
    console.error(f"rank {rank} of {nproc} failed with exit status {exitcode} (its error is above)")
    return ExitStatus(exitcode) if exitcode in set(ExitStatus) else ExitStatus.ERROR


def _process_count(args: argparse.Namespace) -> int:
    if args.devices is not None:
        devices = [d for d in args.devices.split(",") if d.strip()]
        if not devices or not all(d.strip().isdigit() for d in devices):
            raise UsageError(f"--devices {args.devices}: expected GPU numbers separated by commas, e.g. 0,1")
        if args.nproc is not None and args.nproc != len(devices):
            raise UsageError(f"--nproc {args.nproc} and --devices {args.devices} disagree: one process per GPU")
        return len(devices)
    if args.nproc < 1:
        raise UsageError(f"--nproc must be at least 1. Got {args.nproc} instead.")
    return args.nproc


def _without_launch_options(argv: Sequence[str]) -> list[str]:
    """``argv`` less ``--nproc N`` and ``--devices LIST`` (in either spelling), for the ranks."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _LAUNCH_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in _LAUNCH_OPTIONS)):
            out.append(arg)
    return out
