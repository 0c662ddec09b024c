"""Which photos an embedding covers: a labelled set (class folders, split folders or a label
file) with each photo's split and label, or a folder of unlabelled photos.

A folder whose visible subfolders are two or more and which holds no photo of its own is
read as training reads it (one folder per class, or train/ val/ test/); any other folder is a
pile of unlabelled photos, searched recursively. Paths are absolute and resolved, as
training resolves them, so the features it cached are found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import LABEL_SEP
from ..data.dataset import Skipped
from ..data.images import IMAGE_EXTENSIONS, collect_images, is_hidden
from ..data.labels import load_split
from ..errors import DataError, UsageError

__all__ = ["Photo", "Photos", "find_photos"]


@dataclass(frozen=True)
class Photo:
    """One photo, with its split and label where known (empty strings where not)."""

    path: Path
    split: str = ""
    label: str = ""


@dataclass
class Photos:
    """The photos of a folder or label file, in order, and the files left out with the reason."""

    photos: list[Photo]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [p.path for p in self.photos]


def find_photos(data: str | Path | None, labels: str | Path | None = None, label_sep: str = LABEL_SEP) -> Photos:
    """The photos of the folder ``data`` or of the label file ``labels`` (see the module's docstring)."""
    if labels is None:
        if data is None:
            raise UsageError("give the image folder DATA, or --labels CSV")
        data = Path(data)
        if not data.is_dir():
            raise DataError(f"no such folder: {data}")
        if not _is_labelled(data):
            unusable: dict[Path, str] = {}
            paths = collect_images([data.resolve()], unusable)
            return Photos([Photo(p) for p in paths], [Skipped(p, why) for p, why in unusable.items()])
    split = load_split(data, labels, label_sep)
    photos = [Photo(s.path, name, split.label_names(s)) for name, samples in split.splits().items() for s in samples]
    return Photos(photos, list(split.skipped))


def _is_labelled(folder: Path) -> bool:
    entries = [p for p in folder.iterdir() if not is_hidden(p.name)]
    loose = any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in entries)
    return not loose and sum(p.is_dir() for p in entries) >= 2
