"""Exported models: one table of formats, each a name, a file suffix, what writes such a file, what
checks it against the trained model, and what runs it.

``headstart export --format NAME`` writes with the row :func:`format_named` finds;
``predict``, ``evaluate`` and ``serve`` open a file with the row its suffix names
(:func:`format_for_file`), and a run folder with PyTorch. A row's modules are imported
when it is used, never by reading the table: opening an exported model imports neither
PyTorch nor another format's runtime.

ONNX is the one format so far: :mod:`.onnx` writes it (with PyTorch) and checks it,
:mod:`.onnx_runtime` runs it with ONNX Runtime, NumPy and Pillow alone, and
:mod:`.quantize` makes its int8 copies.

Adding a format is one module and one :func:`register_format` call. The module holds the
format's exporter, ``(clf, path, console)``, which writes a fitted
:class:`~headstart.model.ImageClassifier` to ``path`` (a temporary name, renamed once
checked); its parity check, ``(clf, exported, images, console)``, which returns the
:class:`Parity` of the opened file against PyTorch on those images; and its opener,
``(path)``, which opens such a file as a :class:`~headstart.predictor.Predictor` (a class
whose ``__init__`` takes the path will do).
The call adds the row, at the end of this file for a format of headstart's own (naming the
module's functions through ``_OnCall``, so that the module loads only when used), or, for a
format of your own, anywhere before it is used::

    register_format(ExportFormat("name", ".suffix", exporter=write, opener=Runtime, parity=check,
                                 runtime="what a deployment installs"))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_files
from ..errors import ModelFileError, UsageError
from ..runfolder import MODEL_FILE

if TYPE_CHECKING:
    from .._console import Console
    from ..predictor import Predictor

__all__ = ["ExportFormat", "Parity", "FORMATS", "register_format", "format_named", "format_for_file"]


@dataclass(frozen=True)
class Parity:
    """An exported model against the trained one (PyTorch fp32), on the same decoded images."""

    images: int
    max_difference: float  # the largest difference of one class probability
    top1_agreement: float
    tolerance: float  # the largest difference the format accepts

    @property
    def ok(self) -> bool:
        return self.max_difference <= self.tolerance


@dataclass(frozen=True)
class ExportFormat:
    """One row of the table: how a trained model becomes a file of this format, and back.

    ``exporter(clf, path, console)`` writes the file; ``opener(path)`` opens one as a
    :class:`~headstart.predictor.Predictor` (what ``predict`` and ``serve`` run);
    ``parity(clf, exported, images, console)`` measures the opened file against ``clf``;
    ``quantizer``, where the format has one, writes its int8 copy (``export --int8``);
    ``runtime`` names what a deployment installs to run the file.
    """

    name: str
    suffix: str
    exporter: Callable[..., None]
    opener: Callable[[Path], Predictor]
    parity: Callable[..., Parity]
    runtime: str
    quantizer: Callable[..., Any] | None = None

    def export(self, clf, path: str | Path, check_images: Sequence[Path], console: Console) -> Parity:
        """Write ``clf`` (a fitted ImageClassifier) to ``path``, renamed into place only when the
        exported model agrees with PyTorch on ``check_images`` within the format's tolerance."""
        path = Path(path)
        with atomic_files(path.parent) as new:
            tmp = new(path.name)
            self.exporter(clf, tmp, console)
            parity = self.parity(clf, self.opener(tmp), check_images, console)
            console.info(f"parity on {parity.images} image(s): largest probability difference "
                         f"{parity.max_difference:.2e} (tolerance {parity.tolerance:g}), "
                         f"top-1 agreement {parity.top1_agreement:.2%}")
            if not parity.ok:
                raise ModelFileError(f"the exported model differs from PyTorch by {parity.max_difference:.2e} "
                                     f"(tolerance {parity.tolerance:g}): {path} not written")
        return parity


@dataclass(frozen=True)
class _OnCall:
    """``module.attribute``, imported when first called: a row names its code without loading it
    (an exporter imports PyTorch, a runtime its own library)."""

    module: str
    attribute: str

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module(self.module), self.attribute)(*args, **kwargs)


FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` to the table (replacing a row of the same name): ``export --format`` writes it,
    and ``predict``, ``evaluate`` and ``serve`` open files ending in its suffix."""
    FORMATS[fmt.name] = fmt
    return fmt


def format_named(name: str) -> ExportFormat:
    """The row for ``headstart export --format name``."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"--format {name}: not a format headstart can export; expected one of "
                         f"{', '.join(sorted(FORMATS))}") from None


def format_for_file(path: str | Path) -> ExportFormat | None:
    """The format that runs the model file ``path``, by its suffix; None for a run folder (and
    for its model.safetensors, or a path that is not there), which PyTorch opens.

    An existing file of no known format is refused: no runtime could read it.
    """
    path = Path(path)
    if path.is_dir():
        return None
    for fmt in FORMATS.values():
        if path.name.lower().endswith(fmt.suffix):
            return fmt
    if not path.exists() or path.suffix.lower() in ("", Path(MODEL_FILE).suffix):
        return None
    suffixes = " or ".join(fmt.suffix for fmt in FORMATS.values())
    raise ModelFileError(f"{path}: not a model headstart can open; expected a run folder or a file ending in "
                         f"{suffixes}")


register_format(ExportFormat(
    "onnx", ".onnx", exporter=_OnCall("headstart.export.onnx", "write_onnx"),
    opener=_OnCall("headstart.export.onnx_runtime", "OnnxClassifier"),
    parity=_OnCall("headstart.export.onnx", "check_parity"),
    runtime="onnxruntime, numpy, pillow", quantizer=_OnCall("headstart.export.quantize", "quantize_int8")))
