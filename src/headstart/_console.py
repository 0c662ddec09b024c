"""All terminal output goes through one :class:`Console`.

stderr carries progress and messages; stdout carries results only, so
``headstart predict ... | sort`` pipes cleanly. Progress bars appear on a
terminal and in Jupyter (tqdm's notebook widget, when IPython runs the code);
elsewhere (CI logs, files) each epoch is one plain line. A result printed while
a bar is showing clears the bar first and redraws it below, so a result line
never carries a piece of the bar.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO, TypeVar

__all__ = ["Console", "in_notebook"]

T = TypeVar("T")

# Control characters but newline and tab: a file or class name holding an escape sequence could
# clear the screen or retitle the terminal, a carriage return overwrite the line; shown as \xNN.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
WARNINGS_SHOWN = 20  # of one kind, before the rest are counted in one line
PROGRESS_EVERY_S = 30.0  # between progress lines where no bar can show


def in_notebook() -> bool:
    """Whether a Jupyter kernel runs this code (where stderr is no terminal, yet a bar shows)."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return bool(get and get() is not None and type(get()).__name__ == "ZMQInteractiveShell")


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
        self._bars = 0  # progress bars showing now
        self.progress_every_s = PROGRESS_EVERY_S

    @property
    def interactive(self) -> bool:
        return bool(getattr(self.err, "isatty", lambda: False)())

    def info(self, message: str) -> None:
        if self.verbosity >= 1:
            self._print(message, self.err)

    def warn(self, message: str) -> None:
        if self.verbosity >= 0:
            self._print(f"headstart: warning: {message}", self.err)

    def warn_each(self, messages: Sequence[str], listed_in: str = "") -> None:
        """One warning per message, the first :data:`WARNINGS_SHOWN`; the rest counted in one line
        (a million bad rows in a label file are not a million lines), naming where all are listed."""
        for message in messages[:WARNINGS_SHOWN]:
            self.warn(message)
        if len(messages) > WARNINGS_SHOWN:
            where = f": {listed_in} lists them all" if listed_in else ""
            self.warn(f"... and {len(messages) - WARNINGS_SHOWN} more like these{where}")

    def error(self, message: str) -> None:
        self._print(f"headstart: error: {self.where}{message}", self.err)

    def result(self, text: str) -> None:
        if self.verbosity >= 0:
            self._print(text, self.out)

    def _progress_lines(self, items: Iterable[T], total: int | None, desc: str) -> Iterator[T]:
        """``items``, with a line every :attr:`progress_every_s` seconds saying how far they are:
        minutes of extraction or of a fine-tuning epoch are not silent in a log."""
        started = last = time.monotonic()
        for done, item in enumerate(items, start=1):
            yield item
            now = time.monotonic()
            if now - last >= self.progress_every_s and (total is None or done < total):
                last = now
                left = f", about {(now - started) / done * (total - done):.0f} s left" if total else ""
                of = f"/{total} ({done / total:.0%})" if total else ""
                self.info(f"{desc}: {done}{of} after {now - started:.0f} s{left}")

    def _print(self, text: str, stream: TextIO) -> None:
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
        try:
            self._write(text, stream)
        except UnicodeEncodeError:
            # A file name that is not valid UTF-8 (surrogate escapes), on a strict stream:
            # shown with its odd bytes as \xNN rather than losing the line.
            self._write(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), stream)

    def _write(self, text: str, stream: TextIO) -> None:
        if self._bars:
            from tqdm import tqdm

            # Clears every bar, writes the line, redraws the bars below it.
            tqdm.write(text, file=stream)
            stream.flush()
        else:
            print(text, file=stream, flush=True)

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
        """A progress bar over ``items`` on a terminal or in a notebook; the items alone otherwise.

        The clock starts again after the first item: its time is mostly warm-up (workers
        starting, a model's first call), and counting it would inflate the ETA many times.
        """
        notebook = in_notebook()
        if self.verbosity < 1:
            yield from items
            return
        if not (self.interactive or notebook):  # a log file or CI: a plain line now and then
            yield from self._progress_lines(items, total, desc)
            return
        if notebook:  # the widget where ipywidgets is installed, else tqdm's text bar
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        bar = tqdm(total=total, desc=desc, file=None if notebook else self.err, leave=False,
                   dynamic_ncols=True, smoothing=0.1)
        self._bars += 1
        try:
            for i, item in enumerate(items):
                yield item
                if i == 0:
                    bar.reset(total=total)
                bar.update(1)
        finally:
            self._bars -= 1
            bar.close()
