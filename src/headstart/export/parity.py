"""An exported model against the trained one, on the run's own held-out photos: every format that
runs on this machine is measured this way before its file is moved into place.

Both models see the same decoded pixels (the exported runtime's own decoding), so a difference
comes from the exported network alone: an operator translated wrongly, a precision lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .._console import Console
from ..errors import DataError
from . import Parity
from .onnx import _Probabilities

__all__ = ["check_parity"]


def _decisions(proba: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """What the model answers per image: its top class, or a multi-label model's set of classes
    (one row of booleans)."""
    return proba.argmax(1)[:, None] if thresholds is None else proba >= thresholds


def check_parity(clf, exported, check: Mapping[str, Sequence[tuple[Path, int]]], tolerance: float,
                 console: Console, batch_size: int = 32) -> Parity:
    """``exported`` (a format's runtime, opened) against ``clf``'s PyTorch fp32 on the images of
    ``check`` ({split: [(image, label)]}; label -1 where an image has not exactly one class).

    Images that cannot be read are skipped: they tell nothing about the network.
    """
    module = _Probabilities.of(clf)
    thresholds = exported.thresholds_ if exported.multi_label_ else None
    worst, agree, right, labelled = 0.0, 0, np.zeros(2, dtype=int), 0
    counts = {}
    for split, items in check.items():
        starts = range(0, len(items), batch_size)
        counts[split] = 0
        for start in console.progress(starts, total=len(starts), desc=f"check against PyTorch ({split} batches)"):
            pixels, labels = [], []
            for image, label in items[start:start + batch_size]:
                try:
                    pixels.append(exported.pixels(image))
                except Exception:
                    continue
                labels.append(label)
            if not pixels:
                continue
            batch, labels = np.stack(pixels), np.asarray(labels)
            with torch.inference_mode():
                reference = module(torch.from_numpy(batch)).numpy()
            got = exported.run(batch)
            worst = max(worst, float(np.abs(got - reference).max()))
            agree += int((_decisions(got, thresholds) == _decisions(reference, thresholds)).all(1).sum())
            known = labels >= 0
            labelled += int(known.sum())
            right += [int((p.argmax(1)[known] == labels[known]).sum()) for p in (reference, got)]
            counts[split] += len(batch)
    images = sum(counts.values())
    if images == 0:
        raise DataError("no readable image to check the exported model on")
    accuracy = (right / labelled).tolist() if labelled and thresholds is None else (None, None)
    return Parity(images, worst, agree / images, tolerance, trained_accuracy=accuracy[0],
                  exported_accuracy=accuracy[1], splits=counts)
