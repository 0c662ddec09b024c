"""The errors headstart raises on purpose, and the exit status each maps to.

Every failure a user can cause (a bad folder, a bad option, a damaged model
file) is a :class:`HeadstartError`: the CLI prints its message on one line and
exits with its status, never with a traceback.
"""

from __future__ import annotations

import enum

__all__ = [
    "ExitStatus",
    "HeadstartError",
    "UsageError",
    "DataError",
    "BackboneError",
    "ModelFileError",
    "ExportCheckError",
    "NotFittedError",
    "StorageError",
    "DistributedError",
]


class ExitStatus(enum.IntEnum):
    """Exit codes of the ``headstart`` command (documented in the README)."""

    SUCCESS = 0
    ERROR = 1  # an unexpected failure: a bug, please report it
    USAGE = 2  # a bad option or argument (argparse uses 2 as well)
    DATA = 3  # the image folder or an input file cannot be used
    BACKBONE = 4  # the backbone or its weights cannot be had
    MODEL = 5  # a saved model is missing, damaged or inconsistent
    IO = 6  # a file cannot be written or read: a full disk, a read-only folder
    CHECK = 7  # an export failed its check against the trained model (--force writes it anyway)
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class HeadstartError(Exception):
    """Base class: a problem the user can fix, reported in one line."""

    exit_status = ExitStatus.ERROR


class UsageError(HeadstartError, ValueError):
    """An option or argument has a value headstart cannot use."""

    exit_status = ExitStatus.USAGE


class DataError(HeadstartError):
    """The dataset folder or an image cannot be used."""

    exit_status = ExitStatus.DATA


class BackboneError(HeadstartError):
    """The backbone name is unknown or its weights cannot be loaded."""

    exit_status = ExitStatus.BACKBONE


class ModelFileError(HeadstartError):
    """A saved model (``config.json`` + ``model.safetensors``) is unusable."""

    exit_status = ExitStatus.MODEL


class ExportCheckError(HeadstartError):
    """An exported model was measured and refused: it disagrees with the trained model, or its
    int8 copy loses more validation accuracy than ``--max-drop`` allows. Nothing is damaged:
    the trained model is intact, and ``--force`` writes the export anyway."""

    exit_status = ExitStatus.CHECK


class NotFittedError(HeadstartError, ValueError, AttributeError):
    """``predict`` was called on an :class:`ImageClassifier` before ``fit``.

    Like scikit-learn's, it is both a ``ValueError`` and an ``AttributeError``.
    """

    exit_status = ExitStatus.USAGE


class StorageError(HeadstartError):
    """A file cannot be written or read as the command needs: a cache in use, a run that
    could not be saved."""

    exit_status = ExitStatus.IO


class DistributedError(HeadstartError):
    """A data-parallel run cannot go on: the process group cannot be joined, or another rank
    failed or was stopped (its own error says why)."""

    exit_status = ExitStatus.ERROR
