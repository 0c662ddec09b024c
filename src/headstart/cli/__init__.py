"""The ``headstart`` command: arguments in, an :class:`ExitStatus` out.

``main(argv)`` never calls ``sys.exit`` and never lets a user error escape as a
traceback: it prints ``headstart: error: ...`` on one line and returns the
error's status. ``--traceback`` shows the stack for bug reports. Only
:func:`run`, the console script, exits.

The commands are named once, in :mod:`.registry`: each one's handler, its options
(:mod:`.parser`'s grammar) and whether it runs data-parallel, under torchrun or with
``--nproc`` (:mod:`.launch`). Each handler lives with its kin (:mod:`.train`,
:mod:`.predict`, :mod:`.evaluate`, :mod:`.commands`) and imports what is heavy itself,
so ``headstart predict MODEL.onnx`` never loads PyTorch.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence

from .._console import Console
from ..errors import ExitStatus, HeadstartError
from .launch import distributed_session, relaunch, wants_relaunch
from .registry import COMMANDS, build_parser

__all__ = ["main", "run", "build_parser"]

# The modules an install may lack, and the extra of pyproject.toml that brings each.
_EXTRA_OF = {**dict.fromkeys(("torch", "torchvision", "timm", "sklearn", "scipy", "threadpoolctl", "safetensors",
                              "onnx", "platformdirs", "matplotlib"), "train"),
             **dict.fromkeys(("fastapi", "uvicorn", "multipart"), "serve"), "mlflow": "track"}


# What a shell reports for a tool killed by SIGPIPE (128 + 13), the way `yes | head` ends.
_SIGPIPE_STATUS = 141


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> ExitStatus:
    """Run the command line ``argv``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in argv
    console = console or Console()
    try:
        args = build_parser().parse_args(argv)
        if args.quiet:
            console.verbosity = 0
        if wants_relaunch(args):
            return relaunch(argv, args, console)
        with distributed_session(args, console):
            return COMMANDS[args.command].handler(args, console)
    except HeadstartError as exc:
        if show_traceback:
            raise
        console.error(str(exc))
        return exc.exit_status
    except BrokenPipeError:
        raise  # the reader of stdout has gone: run() ends quietly, as Unix tools do
    except KeyboardInterrupt:
        console.error("interrupted")
        return ExitStatus.INTERRUPTED
    except ModuleNotFoundError as exc:
        if exc.name not in _EXTRA_OF or show_traceback:
            raise
        console.error(f"this command needs {exc.name}: pip install 'headstart[{_EXTRA_OF[exc.name]}]'")
        return ExitStatus.USAGE
    except OSError as exc:  # a full disk, a read-only folder: the user's to fix, not a bug
        if show_traceback:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        console.error(f"cannot write or read{where}: {exc.strerror or exc}")
        return ExitStatus.IO
    except SystemExit as exc:  # --help and --version
        return ExitStatus(exc.code or 0)


def run() -> None:
    """Console-script entry point."""
    try:
        status = main()
        sys.stdout.flush()  # a closed pipe shows here, not at exit where Python would complain
    except BrokenPipeError:
        # `headstart predict ... | head` closed the pipe: stop quietly, as `cat` or `grep` do
        # (Python's documented recipe: stdout to devnull, so the exit-time flush cannot fail).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(_SIGPIPE_STATUS)
    # Every file is written and closed by now. At exit Python's last garbage collection
    # walks the millions of objects PyTorch, timm and SciPy created at import (1.5 s
    # measured); frozen objects are skipped, and nothing of ours waits on that collection.
    gc.freeze()
    sys.exit(int(status))
