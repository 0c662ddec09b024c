"""How many processes decode images: one answer for training, extraction and prediction.

No PyTorch here: the ONNX runtime and the decode-ahead children ask too.
"""

from __future__ import annotations

import os

__all__ = ["available_cores", "default_workers", "extraction_workers"]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under a container's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(gpu: bool = False) -> int:
    """Decoding processes for a model on the CPU (``gpu`` False) or on a GPU.

    Beside a model on the CPU they share its cores: one per core, at most 4.
    Beside a GPU, decoding is what bounds throughput (a GPU runs the backbone
    50 times faster than a core decodes photos): every core but the main
    process's, at most 16.
    """
    cores = available_cores()
    return max(1, min(16, cores - 1)) if gpu else max(1, min(4, cores))


def extraction_workers(workers: int | None, gpu: bool) -> int:
    """Decoding processes while extracting features (``workers`` when set). On a CPU, decoding
    costs about a fifth of the backbone: half the usual workers keep it fed and leave the cores
    to the engine. Beside a GPU, decoding is the bottleneck."""
    if workers is not None:
        return workers
    return default_workers(gpu) if gpu else max(1, default_workers() // 2)
