"""Data-parallel runs on PyTorch's own engine: torchrun starts the processes, ``torch.distributed``
joins them (NCCL between GPUs, gloo between CPUs). One home for the idea of "more than one process".

torchrun (``python -m torch.distributed.run``) starts one process per GPU or CPU share, on one
machine or several, and gives each its ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and rendezvous
address in the environment. The command line reads them (:func:`launched`) and opens the process
group with :func:`process_group`; the library then asks :func:`world` where it stands and uses the
collectives below. Without torchrun, :func:`world` is one process and every collective is the
identity, so single-process runs import no PyTorch here.

Failure ends the job, never hangs it: every collective has the group's timeout (NCCL's errors
are raised asynchronously and abort the communicator), a rank whose peer died raises
:class:`~headstart.errors.DistributedError` (the command line names the rank), and torchrun stops the other ranks
when one exits with an error.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .errors import DistributedError, UsageError

__all__ = ["World", "launched", "world", "is_main", "process_group", "shard_bounds", "shard", "map_shards",
           "gather_arrays", "gather_objects", "all_gather_objects", "broadcast", "all_sum", "data_parallel", "DEFAULT_TIMEOUT"]

T = TypeVar("T")

# How long a collective may wait for the slowest rank. Feature extraction and an epoch run between
# collectives, so this bounds how unequal two ranks' shares may be, and how long a rank that hangs
# (rather than dies: a dead peer is noticed at once) can hold the others.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
# The environment torchrun gives every process it starts.
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Rows per message when gathering arrays: a bounded buffer whatever the number of images.
_ROWS_PER_MESSAGE = 16384


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among ``size`` processes, and on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and talks to the user."""
        return self.rank == 0

    def label(self) -> str:
        return f"rank {self.rank} of {self.size}"


_SINGLE = World()
_current = _SINGLE
_backend: str | None = None


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by torchrun (or anything else that sets its variables)."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in _TORCHRUN_VARIABLES)


def world() -> World:
    """This process's place in the process group: rank 0 of 1 outside a distributed run."""
    return _current


def is_main() -> bool:
    return _current.is_main


@contextlib.contextmanager
def process_group(device: str = "auto", timeout: datetime.timedelta = DEFAULT_TIMEOUT,
                  environ: Mapping[str, str] | None = None) -> Iterator[World]:
    """Join torchrun's process group for the body, then leave it; a single process without torchrun.

    Each rank takes its GPU from ``LOCAL_RANK`` (NCCL); on CPUs (gloo) the ranks of a machine
    split its cores between them, so two ranks never fight over one core.
    """
    global _current, _backend
    environ = os.environ if environ is None else environ
    if not launched(environ):
        yield _SINGLE
        return
    import torch
    import torch.distributed as dist

    here = World(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"]),
                 int(environ.get("LOCAL_WORLD_SIZE", environ["WORLD_SIZE"])))
    if device.startswith("cuda:") and here.local_size > 1:
        raise UsageError(f"--device {device}: under torchrun each process takes its GPU from LOCAL_RANK; "
                         "use --device auto or cuda (CUDA_VISIBLE_DEVICES or --devices choose the GPUs)")
    gpu = device != "cpu" and torch.cuda.is_available()
    if gpu and here.local_size > torch.cuda.device_count():
        raise UsageError(f"{here.local_size} processes on this machine but {torch.cuda.device_count()} GPU(s): "
                         "start one process per GPU, or pass --device cpu")
    if gpu:
        torch.cuda.set_device(here.local_rank)
        # A failed NCCL collective aborts the communicator and raises, instead of hanging until the timeout.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
    _share_cores(here)
    try:
        dist.init_process_group("nccl" if gpu else "gloo", timeout=timeout,
                                device_id=torch.device("cuda", torch.cuda.current_device()) if gpu else None)
    except Exception as exc:  # torch raises several untyped errors for a failed rendezvous
        raise DistributedError(f"cannot join the process group: {exc}") from None
    _current, _backend = here, ("nccl" if gpu else "gloo")
    try:
        yield here
    finally:
        _current, _backend = _SINGLE, None
        # After another rank's failure the group may be broken: leaving it cannot fail the run.
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _share_cores(here: World) -> None:
    """Give this rank its share of the machine's cores (CPU affinity and PyTorch's threads): every
    core count the rest of headstart takes (ONNX Runtime's runs, decoding workers) follows."""
    if here.local_size < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < here.local_size:
        return
    share = cores[here.local_rank::here.local_size]
    os.sched_setaffinity(0, share)
    import torch

    torch.set_num_threads(len(share))


# -- work split ---------------------------------------------------------------------------------
def shard_bounds(count: int, align: int = 1) -> tuple[int, int]:
    """This rank's contiguous share ``[start, stop)`` of ``count`` items, in rank order.

    Boundaries fall on multiples of ``align``: batches of that size are then made of the same
    items as in a one-process run, so their numbers come out the same to the last bit.
    """
    here = _current
    blocks = -(-count // align)

    def boundary(rank: int) -> int:
        return min(count, blocks * rank // here.size * align)

    return boundary(here.rank), boundary(here.rank + 1)


def shard(items: Sequence[T], align: int = 1) -> Sequence[T]:
    start, stop = shard_bounds(len(items), align)
    return items[start:stop]


def map_shards(compute: Callable[[Sequence[T]], np.ndarray], items: Sequence[T], align: int = 1) -> np.ndarray:
    """``compute(items)``, each rank computing its shard: every rank gets the whole result, in order."""
    if _current.size == 1:
        return compute(items)
    return np.concatenate(_all_gather_arrays(compute(shard(items, align))))


def data_parallel(module: Any) -> Any:
    """``module`` in DistributedDataParallel on several ranks (its gradients averaged over them at
    each step, its replicas made equal to rank 0's first); ``module`` itself in one process."""
    if _current.size == 1:
        return module
    import torch
    from torch.nn.parallel import DistributedDataParallel

    devices = [torch.cuda.current_device()] if _backend == "nccl" else None
    # Buffers (BatchNorm's frozen statistics) are made equal once, here, and never change after:
    # syncing them before every forward pass would only cost time. PyTorch 2.14 renamed the option.
    sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False})
    with _collective():
        return DistributedDataParallel(module, device_ids=devices, **sync)


# -- collectives --------------------------------------------------------------------------------
@contextlib.contextmanager
def _collective() -> Iterator[None]:
    """A collective's failure means another rank failed or stopped: say so, naming this rank."""
    try:
        yield
    except (RuntimeError, ValueError) as exc:  # DistBackendError is a RuntimeError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DistributedError(f"stopped, as another rank failed or was stopped (see its error): {reason}") from None


def _tensor(array: np.ndarray):
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.cuda() if _backend == "nccl" else tensor


def gather_arrays(array: np.ndarray) -> list[np.ndarray]:
    """Every rank's ``array`` (same dtype and trailing shape, any number of rows) on rank 0, in rank
    order; an empty list on the other ranks. Sent in bounded messages."""
    if _current.size == 1:
        return [array]
    import torch.distributed as dist

    if array.dtype == bool:  # sent as bytes: not every backend reduces or gathers booleans
        return [part.astype(bool) for part in gather_arrays(array.view(np.uint8))]
    lengths = [int(n) for n in all_gather_objects(len(array))]
    parts: list[list[np.ndarray]] = [[] for _ in lengths]
    with _collective():
        for start in range(0, max(lengths), _ROWS_PER_MESSAGE):
            block = np.zeros((_ROWS_PER_MESSAGE, *array.shape[1:]), dtype=array.dtype)
            mine = array[start:start + _ROWS_PER_MESSAGE]
            block[:len(mine)] = mine
            received = [_tensor(np.empty_like(block)) for _ in lengths] if _current.is_main else None
            dist.gather(_tensor(block), received, dst=0)
            if _current.is_main:
                for rank, tensor in enumerate(received):
                    rows = max(0, min(_ROWS_PER_MESSAGE, lengths[rank] - start))
                    parts[rank].append(tensor.cpu().numpy()[:rows])
    if not _current.is_main:
        return []
    return [np.concatenate(p) if p else array[:0] for p in parts]


def _all_gather_arrays(array: np.ndarray) -> list[np.ndarray]:
    """Every rank's ``array`` on every rank, in rank order."""
    gathered = gather_arrays(array)
    return broadcast(gathered if _current.is_main else None)


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable) on rank 0, in rank order; an empty list elsewhere."""
    if _current.size == 1:
        return [value]
    import torch.distributed as dist

    received = [None] * _current.size if _current.is_main else None
    with _collective():
        dist.gather_object(value, received, dst=0)
    return received if _current.is_main else []


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` on every rank, in rank order."""
    if _current.size == 1:
        return [value]
    import torch.distributed as dist

    received = [None] * _current.size
    with _collective():
        dist.all_gather_object(received, value)
    return received


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank: a decision taken once, so every rank acts on the same one."""
    if _current.size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    with _collective():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: Sequence[float]) -> np.ndarray:
    """The element-wise sum of ``values`` over the ranks, in float64, the same on every rank."""
    array = np.asarray(values, dtype=np.float64)
    if _current.size == 1:
        return array
    import torch.distributed as dist

    tensor = _tensor(array)
    with _collective():
        dist.all_reduce(tensor)
    return tensor.cpu().numpy()
