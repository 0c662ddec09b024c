"""Run tracking in TensorBoard (``headstart train --track tensorboard``).

Event files go into the run folder's ``tensorboard/`` (``tensorboard --logdir RUN/tensorboard``):
each epoch's losses, accuracies and learning rate as scalars with the epoch as step, and at
the end the settings as hyper-parameters beside the final metrics (TensorBoard's HPARAMS
tab compares runs by them). Written by PyTorch's ``SummaryWriter``; it needs the
``tensorboard`` package (``pip install "headstart[track]"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._console import Console
from ..callbacks import Callback
from ..errors import UsageError
from ..runfolder import TENSORBOARD_DIR
from . import epoch_metrics, final_metrics

if TYPE_CHECKING:
    from ..record import RunRecord, RunRequest

__all__ = ["TensorBoardTracker"]


class TensorBoardTracker(Callback):
    """One headstart training run, written as TensorBoard event files into ``log_dir``."""

    def __init__(self, writer_class, log_dir: Path, console: Console | None = None):
        self.writer_class = writer_class
        self.log_dir = Path(log_dir)
        self.console = console or Console(0)
        self.writer = None
        self.params: dict[str, str | float | int | bool] = {}

    @classmethod
    def create(cls, directory: Path, console: Console | None = None) -> TensorBoardTracker:
        """A tracker writing into ``directory``'s ``tensorboard/`` folder."""
        try:
            import tensorboard  # noqa: F401  (SummaryWriter needs it, and says so less clearly)
            from torch.utils.tensorboard import SummaryWriter
        except ModuleNotFoundError:
            raise UsageError("--track tensorboard needs TensorBoard: pip install 'headstart[track]'") from None
        return cls(SummaryWriter, Path(directory) / TENSORBOARD_DIR, console)

    def on_fit_start(self, request: RunRequest) -> None:
        self.writer = self.writer_class(log_dir=str(self.log_dir))
        # TensorBoard's hyper-parameters are numbers, strings or booleans: None and lists become text.
        self.params = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                       for k, v in request.params.items() if k != "cache_dir"}
        self.params["data"] = str(request.data)
        self.console.info(f"tracking in TensorBoard: tensorboard --logdir {self.log_dir}")

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for name, value in epoch_metrics(logs).items():
            self.writer.add_scalar(name, value, global_step=epoch)

    def on_fit_end(self, record: RunRecord) -> None:
        # run_name "." keeps the hyper-parameters in log_dir, beside the scalars, not in a timestamped subfolder.
        self.writer.add_hparams(self.params, final_metrics(record.metrics), run_name=".")
        self._close()

    def on_interrupt(self) -> None:
        self._close()

    def on_error(self, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
