"""An exported model against the trained one, on the run's own held-out photos: every format that
runs on this machine is measured this way before its file is moved into place.

Both models see the same decoded pixels (the exported runtime's own decoding), so a difference
comes from the exported network alone: an operator translated wrongly, a precision lost.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._console import Console
from ..errors import DataError
from .files import Parity
from .onnx import _Probabilities

__all__ = ["check_parity"]


def _agreeing(reference: np.ndarray, got: np.ndarray, thresholds: np.ndarray | None, tolerance: float) -> np.ndarray:
    """Per image, whether the exported model answers as the trained one: the same top class, or a
    multi-label model's same set of classes.

    A decision that flips within ``tolerance`` is not held against the export: a multi-label
    threshold is tuned on the very validation photos checked here, so it sits exactly at one of
    their probabilities, where a last-bit rounding difference (seen: 6e-8) changes the answer.
    """
    if thresholds is None:
        top = got.argmax(1)
        return reference[np.arange(len(top)), top] >= reference.max(1) - tolerance
    flipped = ((got >= thresholds) != (reference >= thresholds)) & (np.abs(reference - thresholds) > tolerance)
    return ~flipped.any(1)


def _readable_batches(exported, items: Sequence[tuple[Path, int]], batch_size: int
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pixels, labels) of ``items``, batch by batch, decoded by the exported runtime. An image
    that cannot be read is skipped: it tells nothing about the network."""
    for start in range(0, len(items), batch_size):
        pixels, labels = [], []
        for image, label in items[start:start + batch_size]:
            try:
                pixels.append(exported.pixels(image))
            except Exception:
                continue
            labels.append(label)
        if pixels:
            yield np.stack(pixels), np.asarray(labels)


@dataclass
class _Tally:
    """The comparison so far: the largest difference, the images both answer alike, and the
    labelled images each model gets right (PyTorch, exported)."""

    thresholds: np.ndarray | None
    tolerance: float
    worst: float = 0.0
    agree: int = 0
    labelled: int = 0
    right: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=int))

    def add(self, reference: np.ndarray, got: np.ndarray, labels: np.ndarray) -> None:
        self.worst = max(self.worst, float(np.abs(got - reference).max()))
        self.agree += int(_agreeing(reference, got, self.thresholds, self.tolerance).sum())
        known = labels >= 0
        self.labelled += int(known.sum())
        self.right += [int((p.argmax(1)[known] == labels[known]).sum()) for p in (reference, got)]

    def accuracy(self) -> tuple[float | None, float | None]:
        """Each model's accuracy, for a single-label model with labelled images."""
        if not self.labelled or self.thresholds is not None:
            return None, None
        return tuple((self.right / self.labelled).tolist())


def check_parity(clf, exported, check: Mapping[str, Sequence[tuple[Path, int]]], tolerance: float,
                 console: Console, batch_size: int = 32) -> Parity:
    """``exported`` (a format's runtime, opened) against ``clf``'s PyTorch fp32 on the images of
    ``check`` ({split: [(image, label)]}; label -1 where an image has not exactly one class)."""
    module = _Probabilities.of(clf)
    tally = _Tally(exported.thresholds_ if exported.multi_label_ else None, tolerance)
    counts = dict.fromkeys(check, 0)
    for split, items in check.items():
        batches = _readable_batches(exported, items, batch_size)
        total = -(-len(items) // batch_size)
        for batch, labels in console.progress(batches, total=total, desc=f"check against PyTorch ({split} batches)"):
            with torch.inference_mode():
                reference = module(torch.from_numpy(batch)).numpy()
            tally.add(reference, exported.run(batch), labels)
            counts[split] += len(batch)
    images = sum(counts.values())
    if images == 0:
        raise DataError("no readable image to check the exported model on")
    trained, exported_accuracy = tally.accuracy()
    return Parity(images, tally.worst, tally.agree / images, tolerance, trained_accuracy=trained,
                  exported_accuracy=exported_accuracy, splits=counts)
