"""Where an export's files go: written in a scratch folder beside their place, moved there only once
checked, and recorded in ``export.json`` beside them. No PyTorch here.

A format may write several files (OpenVINO's ``.xml`` and ``.bin``) or a folder (Core ML's
``.mlpackage``): each is written under its own name in the scratch folder, so that a file that
names its companion by name (the ``.xml`` its ``.bin``) still finds it once moved.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._io import read_json, write_json
from ..errors import ModelFileError

__all__ = ["EXPORT_RECORD", "staged", "record_export", "read_export_record"]

EXPORT_RECORD = "export.json"
_RECORD_VERSION = 1


def companion_paths(path: Path, companions: Sequence[str]) -> list[Path]:
    """``path`` and the files written with it (its name with each of ``companions`` as suffix)."""
    return [path] + [path.with_suffix(suffix) for suffix in companions]


@contextlib.contextmanager
def staged(path: Path, companions: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a path named like ``path`` in a scratch folder beside it; when the block ends without
    error, that file (or folder) and its companions replace ``path`` and theirs. On any error
    nothing is moved, and the scratch folder is removed."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent) as scratch:
        tmp = Path(scratch) / path.name
        yield tmp
        for written, target in zip(companion_paths(tmp, companions), companion_paths(path, companions)):
            if written.is_dir():
                # A folder cannot replace another in one step: the old one goes first.
                if target.is_dir():
                    shutil.rmtree(target)
            else:
                with open(written, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(written, target)


def read_export_record(folder: Path) -> dict[str, Any]:
    """The exports recorded in ``folder/export.json``, by file name; empty when there is none."""
    path = Path(folder) / EXPORT_RECORD
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format_version") != _RECORD_VERSION \
            or not isinstance(data.get("exports"), dict):
        raise ModelFileError(f"{path} is damaged: expected a headstart export record (format_version "
                             f"{_RECORD_VERSION}); remove it and export again")
    return data["exports"]


def record_export(path: Path, entry: dict[str, Any]) -> Path:
    """Add (or replace) the entry of the exported file ``path`` in ``export.json`` beside it: one
    record per folder, so exports of several formats to one run folder are all there."""
    path = Path(path)
    exports = read_export_record(path.parent)
    exports[path.name] = entry
    write_json(path.parent / EXPORT_RECORD, {"format_version": _RECORD_VERSION, "exports": exports})
    return path.parent / EXPORT_RECORD
