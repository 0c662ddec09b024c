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

__all__ = ["atomic_path", "atomic_files", "write_text", "write_json", "json_text", "csv_text", "read_json", "file_digest"]


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
    return json.dumps(_nan_to_none(data), indent=2, ensure_ascii=False) + "\n"


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | Path, data: Any) -> None:
    write_text(target, json_text(data))


def read_json(path: str | Path) -> Any:
    """A JSON file headstart wrote; a damaged one is a :class:`ModelFileError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON: {exc}") from None


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
