"""All terminal output goes through one :class:`Console`.

stderr carries progress and messages; stdout carries results only, so
``headstart predict ... | sort`` pipes cleanly. Progress bars appear only on
a terminal; elsewhere (CI logs, files) each epoch is one plain line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm.auto import tqdm

__all__ = ["Console"]

T = TypeVar("T")


class Console:
    """Verbosity 0 prints only results and errors; 1 adds progress and summaries; -1 errors alone
    (the ranks of a data-parallel run other than rank 0). ``where`` starts every error message,
    e.g. ``rank 1 of 4: ``, so the process at fault is named."""

    def __init__(self, verbosity: int = 1, err: TextIO | None = None, out: TextIO | None = None,
                 where: str = ""):
        self.verbosity = verbosity
        self.where = where
        self.err = err if err is not None else sys.stderr
        self.out = out if out is not None else sys.stdout

    @property
    def interactive(self) -> bool:
        return bool(getattr(self.err, "isatty", lambda: False)())

    def info(self, message: str) -> None:
        if self.verbosity >= 1:
            print(message, file=self.err, flush=True)

    def warn(self, message: str) -> None:
        if self.verbosity >= 0:
            print(f"headstart: warning: {message}", file=self.err, flush=True)

    def error(self, message: str) -> None:
        print(f"headstart: error: {self.where}{message}", file=self.err, flush=True)

    def result(self, text: str) -> None:
        if self.verbosity >= 0:
            print(text, file=self.out, flush=True)

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
        """A progress bar over ``items`` on a terminal; the items alone otherwise."""
        if self.verbosity < 1 or not self.interactive:
            yield from items
            return
        with tqdm(items, total=total, desc=desc, file=self.err, leave=False, dynamic_ncols=True) as bar:
            yield from bar

