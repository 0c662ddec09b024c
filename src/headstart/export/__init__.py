"""Exported models: one table of formats, each a name, a file suffix, what writes such a file, what
checks it against the trained model, and what runs it.

``headstart export --format NAME`` writes with the row :func:`format_named` finds;
``predict``, ``evaluate`` and ``serve`` open a file with the row its suffix names
(:func:`format_for_file`), and a run folder with PyTorch. A row's modules are imported
when it is used, never by reading the table: opening an exported model imports neither
PyTorch nor another format's runtime.

Each format is one module that writes it (with PyTorch) and one that runs it without PyTorch:
ONNX (:mod:`.onnx`, :mod:`.onnx_runtime`, and :mod:`.quantize` for its int8 copies), OpenVINO
IR (:mod:`.openvino`, :mod:`.openvino_runtime`) and TFLite (:mod:`.tflite`,
:mod:`.tflite_runtime`); Core ML (:mod:`.coreml`) is written and checked, but runs only on
Apple devices. What every runtime shares (the metadata every file carries: classes,
preprocessing, thresholds) is :mod:`.runtime`; every format's metadata is the ONNX file's
(:mod:`.source`).

Every export is proof-checked before it is moved into place (:mod:`.files`): the exported model
runs against PyTorch on the run's held-out photos (:mod:`.parity`), and fails below
:data:`MIN_AGREEMENT` top-1 agreement or above its format's probability tolerance. The check
is recorded in ``export.json`` beside the file.

Adding a format is one module and one :func:`register_format` call. The module holds the
format's exporter, ``(clf, path, console)``, which writes a fitted
:class:`~headstart.model.ImageClassifier` to ``path`` (in a scratch folder, moved once
checked), and its opener, ``(path)``, which opens such a file as a
:class:`~headstart.predictor.Predictor` (a class whose ``__init__`` takes the path will do;
:class:`.runtime.ExportedClassifier` does the shared part). A format that cannot run here
gives its own ``parity``, ``(clf, path, check, console)``, returning :meth:`Parity.unmeasured`.
The call adds the row, at the end of this file for a format of headstart's own (naming the
module's functions through ``_OnCall``, so that the module loads only when used), or, for a
format of your own, anywhere before it is used::

    register_format(ExportFormat("name", ".suffix", exporter=write, opener=Runtime,
                                 runtime="what a deployment installs"))
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExportCheckError, HeadstartError, ModelFileError, UsageError
from ..runfolder import MODEL_FILE
from .files import (MIN_AGREEMENT, PARITY_TOLERANCE, Check, Parity, companion_paths, read_export_record, record_export,
                    staged)

if TYPE_CHECKING:
    from .._console import Console
    from ..predictor import Predictor

__all__ = ["ExportFormat", "Parity", "FORMATS", "register_format", "format_named", "format_for_file",
           "MIN_AGREEMENT", "PARITY_TOLERANCE"]

@dataclass(frozen=True)
class ExportFormat:
    """One row of the table: how a trained model becomes a file of this format, and back.

    ``exporter(clf, path, console)`` writes the file (and its ``companions``, the same name with
    those suffixes; a ``folder`` format writes a folder); ``opener(path)`` opens one as a
    :class:`~headstart.predictor.Predictor` (what ``predict`` and ``serve`` run), and by default
    the export is measured by running it against ``clf`` within ``tolerance``; ``parity(clf,
    path, check, console)`` replaces that measure for a format that cannot run here.
    ``quantizer``, where the format has one, writes its int8 copy (``export --int8``);
    ``runtime`` names what a deployment installs to run the file.
    """

    name: str
    suffix: str
    exporter: Callable[..., None]
    opener: Callable[[Path], Predictor]
    runtime: str
    parity: Callable[..., Parity] | None = None
    quantizer: Callable[..., Any] | None = None
    companions: tuple[str, ...] = ()
    folder: bool = False
    tolerance: float = PARITY_TOLERANCE

    def export(self, clf, path: str | Path, check: Check, console: Console, force: bool = False) -> Parity:
        """Write ``clf`` (a fitted ImageClassifier) to ``path``, moved into place only when the
        exported model agrees with PyTorch on the held-out photos of ``check`` (or with
        ``force``); the check is recorded in ``export.json`` beside it."""
        path = Path(path)
        read_export_record(path.parent)  # a damaged record is refused before any work
        with staged(path, self.companions) as tmp:
            self._convert(clf, tmp, console)
            parity = (self.parity or self._measure)(clf, tmp, check, console)
            console.info(parity.summary())
            problem = parity.problem()
            if problem and not force:
                raise ExportCheckError(f"{problem}: {path} not written (--force writes it anyway)")
            if problem:
                console.warn(f"{problem}: {path} written anyway (--force)")
        record_export(path, parity.entry(self.name, forced=problem is not None))
        return parity

    def _convert(self, clf, path: Path, console: Console) -> None:
        try:
            self.exporter(clf, path, console)
        except HeadstartError:
            raise
        except Exception as exc:  # a converter's own error on an operator it cannot translate
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise ModelFileError(f"--format {self.name}: the converter failed on this network "
                                 f"({type(exc).__name__}: {reason}); --traceback shows where") from exc

    def _measure(self, clf, path: Path, check: Check, console: Console) -> Parity:
        from .parity import check_parity

        return check_parity(clf, self.opener(path), check, self.tolerance, console)

    def files(self, path: Path) -> list[Path]:
        """``path`` and its companions: what one export of this format writes."""
        return companion_paths(path, self.companions)


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
    for fmt in FORMATS.values():
        if path.name.lower().endswith(fmt.suffix) and (fmt.folder or not path.is_dir()):
            return fmt
    if path.is_dir():
        return None
    if not path.exists() or path.suffix.lower() in ("", Path(MODEL_FILE).suffix):
        return None
    suffixes = " or ".join(fmt.suffix for fmt in FORMATS.values())
    raise ModelFileError(f"{path}: not a model headstart can open; expected a run folder or a file ending in "
                         f"{suffixes}")


register_format(ExportFormat(
    "onnx", ".onnx", exporter=_OnCall("headstart.export.onnx", "write_onnx"),
    opener=_OnCall("headstart.export.onnx_runtime", "OnnxClassifier"),
    runtime="onnxruntime, numpy, pillow", quantizer=_OnCall("headstart.export.quantize", "quantize_int8")))
register_format(ExportFormat(
    "openvino", ".xml", exporter=_OnCall("headstart.export.openvino", "write_openvino"),
    opener=_OnCall("headstart.export.openvino_runtime", "OpenVinoClassifier"),
    runtime='openvino, numpy, pillow (pip install "headstart[openvino]")', companions=(".bin",),
    quantizer=_OnCall("headstart.export.openvino", "quantize_openvino")))
register_format(ExportFormat(
    "tflite", ".tflite", exporter=_OnCall("headstart.export.tflite", "write_tflite"),
    opener=_OnCall("headstart.export.tflite_runtime", "TfliteClassifier"),
    runtime='ai-edge-litert, numpy, pillow (pip install "headstart[tflite]")'))
register_format(ExportFormat(
    "coreml", ".mlpackage", exporter=_OnCall("headstart.export.coreml", "write_coreml"),
    opener=_OnCall("headstart.export.coreml", "open_coreml"), parity=_OnCall("headstart.export.coreml", "check_coreml"),
    runtime="Core ML, on an Apple device", folder=True))
