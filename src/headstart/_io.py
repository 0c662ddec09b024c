"""Atomic file writes: a crash or a full disk never leaves a half-written file behind.

Each file is written to a temporary name in the same folder, flushed to disk,
then renamed over the target in one step (``os.replace``). Files that belong
together (a model's weights and its config) are all written first and renamed
only once every one of them is complete.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import ModelFileError

__all__ = ["atomic_path", "atomic_files", "write_text", "write_json", "json_text", "json_line", "csv_text", "csv_cell",
           "csv_value", "read_json", "file_digest", "file_problem", "TEXT_ERRORS"]

# How text files are encoded: UTF-8, except that a file name that is not valid UTF-8 (Python
# holds its bytes as surrogate escapes) is written back as its own bytes, so the name in a CSV
# file is the file's real name and reads back to it; "strict" would fail after all the work.
TEXT_ERRORS = "surrogateescape"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: setting the umask to read it is not thread-safe.
_FILE_MODE = 0o666 & ~_umask()


def _temporary(target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_files(directory: str | Path) -> Iterator[Callable[[str], Path]]:
    """Yield ``new(name)``, a temporary path standing for ``directory/name``.

    When the block ends without error, every file is synced and renamed into
    place; on any error (a full disk) none is, and the temporaries are removed,
    so the previous files stay as they were.
    """
    directory = Path(directory)
    pending: list[tuple[Path, Path]] = []

    def new(name: str) -> Path:
        tmp = _temporary(directory / name)
        pending.append((tmp, directory / name))
        return tmp

    try:
        yield new
        for tmp, _ in pending:
            _fsync(tmp)
            # A temporary file is private (0600, or whatever a writer like safetensors
            # chose): give the result the mode the user's other files get, so a shared
            # model folder stays readable.
            os.chmod(tmp, _FILE_MODE)
        for tmp, target in pending:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` atomically."""
    target = Path(target)
    with atomic_files(target.parent) as new:
        yield new(target.name)


def json_text(data: Any) -> str:
    # NaN is not JSON: write null so any JSON reader (a browser, jq) accepts the file.
    return _escape_surrogates(json.dumps(_nan_to_none(data), indent=2, ensure_ascii=False)) + "\n"


def json_line(data: Any) -> str:
    """One JSON value on one line, as :func:`json_text` writes it."""
    return _escape_surrogates(json.dumps(data, ensure_ascii=False))


def _escape_surrogates(text: str) -> str:
    # A non-UTF-8 file name holds lone surrogates, which only JSON strings can hold: written
    # as the escape "\udcff", which is JSON's own, the file stays valid UTF-8 and reads back.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# A cell starting with one of these is run as a formula by Excel, LibreOffice and Google
# Sheets (OWASP: CSV injection); tab and carriage return are read as such starts too.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows as text: a string that would start a formula
    gets a leading ``'`` (so does one already made of quotes before such a start, which keeps
    :func:`csv_value` its exact inverse). Numbers are never formulas and stay as they are."""
    if not isinstance(value, str) or not value.lstrip("'").startswith(_FORMULA_START) or _is_number(value):
        return value
    return "'" + value


def csv_value(cell: str) -> str:
    """The value :func:`csv_cell` wrote as ``cell``."""
    if cell.startswith("'") and cell.lstrip("'").startswith(_FORMULA_START) and not _is_number(cell):
        return cell[1:]
    return cell


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text, every cell made safe for spreadsheets by :func:`csv_cell`, the header's too."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(h) for h in header])
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", errors=TEXT_ERRORS)


def write_json(target: str | Path, data: Any) -> None:
    write_text(target, json_text(data))


def read_json(path: str | Path) -> Any:
    """A JSON file headstart wrote; a damaged one is a :class:`ModelFileError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser's stack: no file of ours is
        raise ModelFileError(f"{path} is not a file headstart wrote: its JSON is nested too deeply") from None


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a regular file ("is missing", "is a FIFO", ...), or None.

    A FIFO or a link to a device (``/dev/zero``) would block or never end when read: refused
    before opening, with what it is rather than as missing.
    """
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a broken link" if path.is_symlink() else "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    kind = next((name for test, name in kinds if test(mode)), "neither a file nor a folder")
    via = " (through a link)" if path.is_symlink() else ""
    return f"is {kind}{via}, not a regular file"


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
