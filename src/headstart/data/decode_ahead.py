"""Images decoded ahead of their use by child processes: a DataLoader's workers, without PyTorch.

The lightweight workflow's run without PyTorch computes missing features with
the exported engine in ONNX Runtime; meanwhile these children decode the next
images, so both cores stay busy.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import Preprocessing
from .images import DECODE_ERRORS, decode_failure, network_input

__all__ = ["DecodeAhead"]

_PENDING, _DECODED, _FAILED = 0, 1, 2


class DecodeAhead:
    """Images decoded ahead of their use by child processes, in order, as the network takes them.

    What a DataLoader's workers do, without PyTorch: the children decode
    while the parent runs the backbone (the exported engine, in ONNX Runtime).
    Child ``k`` of ``n`` decodes images ``k``, ``k + n``, ...; each
    image goes to a slot of a ring of ``ahead`` images in an anonymous temporary
    file, read back with ``pread``, so memory does not grow with the number of
    images (150 kB per slot at 224 px). Children are forked, as PyTorch's
    DataLoader workers are on Linux (see :data:`AVAILABLE`), and stop when their
    parent dies.
    """

    AVAILABLE = sys.platform.startswith("linux")  # where forking is the norm and cheap

    def __init__(self, paths: Sequence[str | Path], pre: Preprocessing, processes: int = 1, ahead: int = 2048):
        import multiprocessing

        self.paths = [Path(p) for p in paths]
        self.pre = pre
        self._size = math.prod(pre.input_size)
        self._ahead = max(1, min(ahead, len(self.paths)))
        self._file = tempfile.TemporaryFile(prefix="headstart-pixels-")
        self._file.truncate(self._ahead * self._size)
        context = multiprocessing.get_context("fork")
        self._status = context.RawArray("b", len(self.paths))
        self._taken = context.RawValue("q", 0)  # images the parent has read: their slots are free again
        self._children = [
            context.Process(target=_decode_ahead, daemon=True,
                            args=(self._file.fileno(), self.paths, pre, self._status, self._taken, self._ahead,
                                  k, max(1, processes), os.getpid()))
            for k in range(max(1, processes))]
        for child in self._children:
            child.start()

    def take(self, start: int, stop: int) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        """Images ``start`` to ``stop - 1``, once decoded (taken in order, at most ``ahead`` at a
        time): the decoded ones as uint8 (n, 3, H, W), their positions, and the failures with
        their reasons. An image a child could not decode is tried again here, for the reason."""
        if stop - start > self._ahead:
            raise ValueError(f"cannot take {stop - start} images at once: {self._ahead} are decoded ahead")
        indices = range(start, stop)
        while any(self._status[i] == _PENDING for i in indices):
            for i in indices:  # a child that was killed leaves its images to be decoded here
                if self._status[i] == _PENDING and not self._children[i % len(self._children)].is_alive():
                    self._status[i] = _FAILED
            time.sleep(0.002)
        pixels = np.empty((len(indices), *self.pre.input_size), dtype=np.uint8)
        good, failed = [], []
        for row, i in enumerate(indices):
            try:
                if self._status[i] == _DECODED:
                    os.preadv(self._file.fileno(), [memoryview(pixels[row]).cast("B")],
                              (i % self._ahead) * self._size)
                else:
                    pixels[row] = network_input(self.paths[i], self.pre)
                good.append(row)
            except DECODE_ERRORS as exc:
                failed.append((i, decode_failure(self.paths[i], exc)))
        self._taken.value = stop
        return pixels[good], [start + row for row in good], failed

    def close(self) -> None:
        for child in self._children:
            child.terminate()
            child.join()
        self._file.close()


# A process target takes its arguments as a tuple: one per shared object the child needs.
def _decode_ahead(fd: int, paths: Sequence[Path], pre: Preprocessing, status, taken, ahead: int, first: int,
                  step: int, parent: int) -> None:
    """A child of :class:`DecodeAhead`: decode every ``step``-th image, from ``first``, into its slot."""
    # Ctrl-C reaches the whole process group, and SIGTERM would run the parent's handler (which turns
    # it into KeyboardInterrupt): the parent stops this child, which ends without a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    size = math.prod(pre.input_size)
    for i in range(first, len(paths), step):
        if os.getppid() != parent:  # the parent was killed: nobody will read what follows
            return
        while i - taken.value >= ahead:  # the ring is full: wait for the parent to read
            if os.getppid() != parent:
                return
            time.sleep(0.002)
        try:
            pixels = network_input(paths[i], pre)
        except DECODE_ERRORS:
            status[i] = _FAILED
            continue
        os.pwrite(fd, pixels.tobytes(), (i % ahead) * size)
        status[i] = _DECODED
