"""Callbacks of :meth:`cnnblas.train.Trainer.fit`: what happens around the training steps.

A :class:`Callback` is called at fixed points of every epoch::

    on_epoch_begin(trainer, epoch, num_batches)
        for each step:  on_train_loss(trainer, epoch, step, loss)      # before backward
                        on_train_batch_end(trainer, step, mean_loss)   # after the update
    on_train_batches_end(trainer)                                      # also on an error
    on_epoch_end(trainer, record)       # the epoch is in trainer.history

``fit`` builds its own from its arguments (:func:`fit_callbacks`); those
passed as ``callbacks`` come after them.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cnnblas.train.history import format_record

__all__ = ["Callback", "StopOnNonFiniteLoss", "ProgressBar", "SaveCheckpoint", "EpochLog",
           "checkpoint_note", "isatty", "fit_callbacks"]


def checkpoint_note(checkpoint: str | os.PathLike | None, epoch: int) -> str:
    """What became of ``checkpoint`` when training stops after ``epoch`` good epochs."""
    if checkpoint is None:
        return "no checkpoint was being written"
    if epoch == 0 or not Path(checkpoint).exists():
        return f"no checkpoint was written to {checkpoint}"
    return f"the checkpoint {checkpoint} of epoch {epoch} was left untouched"


class Callback:
    """A hook into :meth:`~cnnblas.train.Trainer.fit`; every method does nothing by default."""

    def on_epoch_begin(self, trainer, epoch: int, num_batches: int) -> None:
        """Before the first training step of ``epoch`` (1-based), which has ``num_batches``."""

    def on_train_loss(self, trainer, epoch: int, step: int, loss: float) -> None:
        """After the forward pass of ``step`` (1-based), before its backward pass.

        Raising here stops training before the step changes the weights.
        """

    def on_train_batch_end(self, trainer, step: int, mean_loss: float) -> None:
        """After the optimizer step of ``step``; ``mean_loss`` is this rank's mean so far."""

    def on_train_batches_end(self, trainer) -> None:
        """After the epoch's last training step, or when a step raised."""

    def on_epoch_end(self, trainer, record: dict) -> None:
        """After the epoch is complete: validated, counted in ``trainer.epoch`` and recorded."""


class StopOnNonFiniteLoss(Callback):
    """Raise :class:`FloatingPointError` at the first NaN or infinite training loss.

    The message names the epoch, the step, the learning rate and what became
    of ``checkpoint`` (the last good one is never overwritten).
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None):
        self.checkpoint = checkpoint

    def on_train_loss(self, trainer, epoch: int, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training diverged: the loss is {loss} at epoch {epoch}, step {step} "
                f"(learning rate {trainer.optimizer.lr:g}); "
                f"{checkpoint_note(self.checkpoint, trainer.epoch)}"
            )


def isatty(stream) -> bool:
    """True when ``stream`` is a terminal (where a progress bar belongs)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr, with the running mean loss; gone when the epoch ends."""

    def __init__(self):
        self._bar = None

    def on_epoch_begin(self, trainer, epoch: int, num_batches: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=num_batches, desc=f"epoch {epoch}", unit="batch", leave=False,
                         file=sys.stderr, dynamic_ncols=True)

    def on_train_batch_end(self, trainer, step: int, mean_loss: float) -> None:
        self._bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
        self._bar.update(1)

    def on_train_batches_end(self, trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class SaveCheckpoint(Callback):
    """Write the full training state to ``path`` after every epoch (see ``save_checkpoint``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = path

    def on_epoch_end(self, trainer, record: dict) -> None:
        trainer.save_checkpoint(self.path)


class EpochLog(Callback):
    """Pass one line per epoch (:func:`~cnnblas.train.history.format_record`) to ``log``."""

    def __init__(self, log: Callable[[str], object], val_name: str | None = None):
        self.log, self.val_name = log, val_name

    def on_epoch_end(self, trainer, record: dict) -> None:
        self.log(format_record(record, self.val_name))


def fit_callbacks(checkpoint: str | os.PathLike | None, progress: bool,
                  log: Callable[[str], object] | None,
                  val_name: str | None = None) -> list[Callback]:
    """The callbacks of ``Trainer.fit(checkpoint=, progress=, log=)``, in calling order.

    :class:`StopOnNonFiniteLoss` always; :class:`ProgressBar` when
    ``progress`` and stderr is a terminal; :class:`SaveCheckpoint` with a
    ``checkpoint``; :class:`EpochLog` with a ``log`` (the checkpoint is
    written before the epoch's line is logged).
    """
    callbacks: list[Callback] = [StopOnNonFiniteLoss(checkpoint)]
    if progress and isatty(sys.stderr):
        callbacks.append(ProgressBar())
    if checkpoint is not None:
        callbacks.append(SaveCheckpoint(checkpoint))
    if log is not None:
        callbacks.append(EpochLog(log, val_name))
    return callbacks
