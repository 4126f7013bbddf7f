"""Epoch-wise learning-rate schedules, with the values of
``torch.optim.lr_scheduler.StepLR`` and ``CosineAnnealingLR``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import ClassVar

from cnnblas.checks import check_int
from cnnblas.optim._checks import (
    check_keys,
    non_negative,
    positive,
    read_scalar,
)
from cnnblas.optim.optimizer import Optimizer


class LRScheduler:
    """Base class of the epoch-wise learning-rate schedules.

    On construction the optimizer's current ``lr`` becomes ``base_lr`` and the
    schedule's value at epoch 0 is applied; each :meth:`step` (call it once per
    epoch, after the epoch's optimizer steps) advances ``last_epoch`` by one and
    sets ``optimizer.lr``. Values are computed in closed form from ``base_lr``
    and ``last_epoch``, so restoring a state dict reproduces them exactly.

    A subclass declares its settings in :attr:`settings` (each becomes an
    attribute and a state-dict entry) and gives :meth:`lr_at`.

    Parameters
    ----------
    optimizer : Optimizer
    **settings
        One value per entry of :attr:`settings`.

    Attributes
    ----------
    optimizer : Optimizer
    base_lr : float
    last_epoch : int
        Number of :meth:`step` calls so far.
    """

    #: Setting name -> check ``(value, name) -> normalised value``, raising
    #: TypeError or ValueError.
    settings: ClassVar[dict[str, Callable]] = {}

    def __init__(self, optimizer: Optimizer, **settings):
        self._set_settings(self._check_settings(settings))
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a cnnblas.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of the schedule at ``epoch`` (``epoch >= 0``)."""
        raise NotImplementedError

    @property
    def lr(self) -> float:
        """Learning rate the schedule last set (``get_last_lr()`` in PyTorch)."""
        return self.lr_at(self.last_epoch)

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def _check_settings(self, values: Mapping) -> dict:
        return {name: check(values[name], name) for name, check in self.settings.items()}

    def _set_settings(self, values: dict) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def state_dict(self) -> dict:
        """Return ``{"last_epoch", "base_lr", <settings>}`` as Python scalars."""
        return {"last_epoch": self.last_epoch, "base_lr": self.base_lr,
                **{name: getattr(self, name) for name in self.settings}}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state from :meth:`state_dict` and apply its learning rate.

        Raises
        ------
        ValueError
            On missing or unexpected keys or invalid values, naming the key.
        """
        try:
            check_keys(state, {"last_epoch", "base_lr", *self.settings})
            values = {key: read_scalar(state, key) for key in state.keys()}
            settings = self._check_settings(values)
            last_epoch = check_int(values["last_epoch"], "last_epoch", minimum=0)
            base_lr = positive(values["base_lr"], "base_lr")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{type(self).__name__}.load_state_dict: {err}") from err
        self._set_settings(settings)
        self.last_epoch, self.base_lr = last_epoch, base_lr
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    ``lr(epoch) = base_lr * gamma ** (epoch // step_size)``, as
    ``torch.optim.lr_scheduler.StepLR``.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        Period in epochs, >= 1.
    gamma : float, default 0.1
        Multiplicative factor, > 0.
    """

    settings = {"step_size": partial(check_int, minimum=1), "gamma": positive}

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer, step_size=step_size, gamma=gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``base_lr`` down to ``eta_min`` over ``t_max`` epochs.

    ``lr(epoch) = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / t_max)) / 2``,
    the closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR`` (which,
    like this one, rises again after ``t_max``: the period is ``2 * t_max``).

    Parameters
    ----------
    optimizer : Optimizer
    t_max : int
        Number of epochs of the half period, >= 1.
    eta_min : float, default 0.0
        Minimum learning rate, >= 0.
    """

    settings = {"t_max": partial(check_int, minimum=1), "eta_min": non_negative}

    def __init__(self, optimizer: Optimizer, t_max: int, eta_min: float = 0.0):
        super().__init__(optimizer, t_max=t_max, eta_min=eta_min)

    def lr_at(self, epoch: int) -> float:
        cosine = (1.0 + math.cos(math.pi * epoch / self.t_max)) / 2.0
        return self.eta_min + (self.base_lr - self.eta_min) * cosine
