"""A network's probabilities for image files, in order, streamed batch by batch (constant memory).

On a CPU, decoding threads share the cores with the forward pass: worker processes would
take them too, and pay to start and to ship every batch (3x slower on small files). On a GPU,
the data loader's worker processes decode while the device computes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import HeadSpec, Preprocessing
from ..data.images import predict_in_batches
from ..data.loader import ImageDataset, make_loader
from .head import ClassifierNet, probabilities

__all__ = ["stream_probabilities"]

Runtime = tuple[ClassifierNet, torch.device, torch.dtype]  # the network on its device, and its compute dtype


def stream_probabilities(runtime: Runtime, head: HeadSpec, paths: Sequence[Path], pre: Preprocessing,
                         batch_size: int, tta: bool = False, workers: int | None = None
                         ) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """(path, probabilities, error) for each of ``paths``, in order; with ``tta``, each image's
    probabilities averaged with its mirror image's. ``workers``: decoding threads on a CPU,
    loader processes on a GPU (None: chosen for the machine)."""
    if runtime[1].type == "cpu":
        def run(batch: np.ndarray) -> np.ndarray:
            return probabilities(*runtime, torch.from_numpy(batch), False, head)

        threads = max(workers, 1) if workers is not None else None
        yield from predict_in_batches(paths, pre, run, batch_size, tta, threads)
        return
    loader = make_loader(ImageDataset.for_eval(paths, None, pre), batch_size, workers=workers,
                         gpu=runtime[1].type == "cuda")
    for batch in loader:
        probs = dict(zip(batch.indices, probabilities(*runtime, batch.images, tta, head))) if batch.indices else {}
        errors = dict(batch.failed)
        for index in sorted([*probs, *errors]):
            yield paths[index], probs.get(index), errors.get(index)
