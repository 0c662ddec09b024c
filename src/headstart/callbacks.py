"""Callbacks: code of yours that :meth:`headstart.ImageClassifier.fit` calls as it trains.

As in Keras and fastai, a callback is an object with hooks; subclass :class:`Callback`
and override the ones you need::

    class PrintValLoss(Callback):
        def on_epoch_end(self, epoch, logs):
            print(epoch, logs["stage"], logs["val_loss"])

    clf.fit("photos/", callbacks=[PrintValLoss()])

The trackers of ``headstart train --track`` (:mod:`headstart.tracking`) are callbacks too.
A hook that raises stops the fit, as any error in training would.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .record import RunRecord, RunRequest

__all__ = ["Callback", "CallbackList"]


class Callback:
    """The hooks of a fit, called in this order; each does nothing unless overridden."""

    def on_fit_start(self, request: RunRequest) -> None:
        """Training begins on the data and with the settings of ``request`` (what ``run.json`` records)."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """An epoch ended. ``epoch`` counts from 1 across stage 1 and fine-tuning; ``logs`` is its
        ``history.csv`` row: ``stage``, ``train_loss``, ``train_accuracy``, ``val_loss``,
        ``val_accuracy``, ``lr``, ``seconds`` (the lightweight head's fit is one epoch)."""

    def on_fit_end(self, record: RunRecord) -> None:
        """Training ended: ``record`` is what the run folder's ``metrics.json``, ``config.json`` and
        ``run.json`` will hold (``ImageClassifier.record_``)."""

    def on_interrupt(self) -> None:
        """Ctrl-C (or ``kill``, under ``headstart train``) stopped the fit before it ended."""

    def on_error(self, error: BaseException) -> None:
        """The fit failed with ``error``, which is raised once every callback has been told."""

    def on_save(self, directory: Path) -> None:
        """The fitted model was saved in the run folder ``directory`` (:meth:`ImageClassifier.save`)."""


class CallbackList(Callback):
    """Several callbacks called as one, in the order given."""

    def __init__(self, callbacks: Sequence[Callback] = ()):
        self.callbacks = list(callbacks)

    def on_fit_start(self, request: RunRequest) -> None:
        for callback in self.callbacks:
            callback.on_fit_start(request)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_fit_end(self, record: RunRecord) -> None:
        for callback in self.callbacks:
            callback.on_fit_end(record)

    def on_interrupt(self) -> None:
        for callback in self.callbacks:
            callback.on_interrupt()

    def on_error(self, error: BaseException) -> None:
        for callback in self.callbacks:
            callback.on_error(error)

    def on_save(self, directory: Path) -> None:
        for callback in self.callbacks:
            callback.on_save(directory)
