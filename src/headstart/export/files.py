"""Where an export's files go: written in a scratch folder beside their place, moved there only once
checked, and recorded in ``export.json`` beside them. No PyTorch here.

A format may write several files (OpenVINO's ``.xml`` and ``.bin``) or a folder (Core ML's
``.mlpackage``): each is written under its own name in the scratch folder, so that a file that
names its companion by name (the ``.xml`` its ``.bin``) still finds it once moved.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import read_json, write_json
from ..errors import ModelFileError

__all__ = ["EXPORT_RECORD", "MIN_AGREEMENT", "PARITY_TOLERANCE", "Check", "Parity", "staged", "record_export",
           "read_export_record"]

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


# An exported fp32 model must answer as the trained one does on (nearly) every held-out photo,
# and give the probabilities PyTorch gives: a larger difference means an operator was
# translated wrongly, and the file is not written.
MIN_AGREEMENT = 0.995
PARITY_TOLERANCE = 1e-4

Check = Mapping[str, Sequence[tuple[Path, int]]]  # {split: [(image, label)]}, the held-out photos


@dataclass(frozen=True)
class Parity:
    """An exported model against the trained one (PyTorch fp32), on the same decoded images: the
    largest difference of one class probability, how often both answer the same, and the
    accuracy of each (None for a multi-label model, or where no image has a label)."""

    images: int
    max_difference: float
    top1_agreement: float
    tolerance: float  # the largest difference the format accepts
    trained_accuracy: float | None = None
    exported_accuracy: float | None = None
    splits: dict[str, int] = field(default_factory=dict)  # images checked per split
    not_measured: str | None = None  # why the exported model could not be run here

    @classmethod
    def unmeasured(cls, reason: str) -> Parity:
        """A format whose runtime does not exist on this machine: checked, but not run."""
        return cls(0, math.nan, math.nan, math.nan, not_measured=reason)

    def problem(self) -> str | None:
        """Why the exported model must not be written; None when it may."""
        if self.not_measured is not None:
            return None
        if not self.max_difference <= self.tolerance:
            return (f"the exported model differs from PyTorch by {self.max_difference:.2e} "
                    f"(tolerance {self.tolerance:g})")
        if self.top1_agreement < MIN_AGREEMENT:
            return (f"the exported model answers as PyTorch does on {self.top1_agreement:.2%} of the "
                    f"images (at least {MIN_AGREEMENT:.1%} needed)")
        return None

    @property
    def ok(self) -> bool:
        return self.problem() is None

    def summary(self) -> str:
        if self.not_measured is not None:
            return f"parity not measured: {self.not_measured}"
        accuracy = ("" if self.trained_accuracy is None else
                    f", accuracy {self.trained_accuracy:.2%} (PyTorch) / {self.exported_accuracy:.2%} (exported)")
        return (f"parity on {self.images} image(s): largest probability difference {self.max_difference:.2e} "
                f"(tolerance {self.tolerance:g}), top-1 agreement {self.top1_agreement:.2%}{accuracy}")

    def entry(self, fmt: str, forced: bool) -> dict[str, Any]:
        """This check as the exported file's entry in ``export.json``."""
        return {"format": fmt, "precision": "fp32", "measured": self.not_measured is None,
                "not_measured": self.not_measured, "images": self.splits, "top1_agreement": self.top1_agreement,
                "max_difference": self.max_difference, "tolerance": self.tolerance,
                "min_top1_agreement": MIN_AGREEMENT,
                "accuracy": {"trained": self.trained_accuracy, "exported": self.exported_accuracy},
                "passed": self.ok, "forced": forced}
