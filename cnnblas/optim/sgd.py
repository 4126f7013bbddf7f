"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cnnblas.checks import check_bool
from cnnblas.optim._checks import non_negative, unit_interval
from cnnblas.optim.optimizer import Optimizer


def sgd_update(param: np.ndarray, grad: np.ndarray, state: dict, lr: float, momentum: float,
               dampening: float, nesterov: bool, weight_decay: float) -> None:
    """One step of ``torch.optim.SGD`` on ``param``, in place.

    With ``g = grad + weight_decay * param``:

    - no momentum: ``param -= lr * g``;
    - momentum: ``b = g`` on the first step, then
      ``b = momentum * b + (1 - dampening) * g``, and
      ``param -= lr * (g + momentum * b)`` (Nesterov) or ``param -= lr * b``.

    Parameters
    ----------
    param : numpy.ndarray, float32 or float64
        Updated in place.
    grad : numpy.ndarray, shape and dtype of ``param``
    state : dict
        ``state["momentum_buffer"]`` is ``b`` (shape and dtype of ``param``),
        created here at the first step with momentum and updated in place.
    lr, momentum, dampening, weight_decay : float
    nesterov : bool
    """
    step = grad
    if weight_decay != 0.0:
        step = grad + weight_decay * param
    if momentum != 0.0:
        buffer = state.get("momentum_buffer")
        if buffer is None:
            buffer = state["momentum_buffer"] = np.array(step, copy=True)
        else:
            buffer *= momentum
            buffer += (1.0 - dampening) * step
        step = step + momentum * buffer if nesterov else buffer
    param -= lr * step


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

    The update of ``torch.optim.SGD`` (see :func:`sgd_update`).

    Parameters
    ----------
    params : iterable of parameter objects
        See :class:`~cnnblas.optim.Optimizer`.
    lr : float
        Learning rate, > 0.
    momentum : float, default 0.0
        Momentum factor, >= 0.
    nesterov : bool, default False
        Use Nesterov momentum; requires ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float, default 0.0
        L2 penalty coefficient, >= 0 (added to the gradient).
    dampening : float, default 0.0
        Dampening of the momentum, in [0, 1].

    Notes
    -----
    State: one momentum buffer per parameter (same shape and dtype as
    ``.data``), created at the parameter's first update; state-dict keys
    ``"momentum.<index>"``, present only for buffers that exist.
    """

    kind = "SGD"
    hyperparameter_names = ("lr", "momentum", "nesterov", "weight_decay", "dampening")
    buffer_keys = {"momentum_buffer": "momentum"}
    lazy_buffers = True

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, dampening: float = 0.0):
        super().__init__(params, lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, dampening=dampening)

    def _check_hyperparameters(self, values: dict) -> dict:
        checked = {
            "lr": non_negative(values["lr"], "lr"),
            "momentum": non_negative(values["momentum"], "momentum"),
            "weight_decay": non_negative(values["weight_decay"], "weight_decay"),
            "dampening": unit_interval(values["dampening"], "dampening", closed=True),
            "nesterov": check_bool(values["nesterov"], "nesterov"),
        }
        if checked["nesterov"] and (checked["momentum"] <= 0.0 or checked["dampening"] != 0.0):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening == 0, got "
                f"momentum={checked['momentum']!r}, dampening={checked['dampening']!r}"
            )
        return checked

    def _update(self, data: np.ndarray, grad: np.ndarray, state: dict) -> None:
        sgd_update(data, grad, state, self.lr, self.momentum, self.dampening, self.nesterov,
                   self.weight_decay)
