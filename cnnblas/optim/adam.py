"""Adam (Kingma & Ba, 2015)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from cnnblas.optim._checks import non_negative, unit_interval
from cnnblas.optim.optimizer import Optimizer


def adam_update(param: np.ndarray, grad: np.ndarray, state: dict, lr: float, beta1: float,
                beta2: float, eps: float, weight_decay: float) -> None:
    """One step of ``torch.optim.Adam`` on ``param``, in place.

    At step ``t`` (``state["step"]`` after it is incremented here), with
    ``g = grad + weight_decay * param``::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        param -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    param : numpy.ndarray, float32 or float64
        Updated in place.
    grad : numpy.ndarray, shape and dtype of ``param``
    state : dict
        ``"step"`` (int, the updates so far), ``"exp_avg"`` (``m``) and
        ``"exp_avg_sq"`` (``v``), arrays of ``param``'s shape and dtype; all
        three are updated in place.
    lr, beta1, beta2, eps, weight_decay : float
    """
    state["step"] += 1
    step = state["step"]
    if weight_decay != 0.0:
        grad = grad + weight_decay * param
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg += (1.0 - beta1) * (grad - exp_avg)  # torch's lerp(grad, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * grad * grad
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    denom = np.sqrt(exp_avg_sq)
    denom /= bias_correction2_sqrt
    denom += eps
    np.divide(exp_avg, denom, out=denom)
    denom *= lr / bias_correction1
    param -= denom


class Adam(Optimizer):
    """Adam, with the update of ``torch.optim.Adam`` (see :func:`adam_update`).

    Parameters
    ----------
    params : iterable of parameter objects
        See :class:`~cnnblas.optim.Optimizer`.
    lr : float, default 1e-3
        Learning rate, > 0.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, >= 0.
    weight_decay : float, default 0.0
        L2 penalty coefficient, >= 0 (added to the gradient, not decoupled).

    Notes
    -----
    State: per parameter, ``"exp_avg.<index>"`` and ``"exp_avg_sq.<index>"``
    (arrays of the parameter's shape and dtype, zero before its first step);
    and ``"step"``, an int64 array of shape ``(num_params,)`` counting each
    parameter's updates (parameters whose grad was ``None`` are not counted).
    """

    kind = "Adam"
    hyperparameter_names = ("lr", "beta1", "beta2", "eps", "weight_decay")
    buffer_keys = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}
    counter_keys = ("step",)

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        super().__init__(params, lr, beta1=betas[0], beta2=betas[1], eps=eps,
                         weight_decay=weight_decay)

    @property
    def betas(self) -> tuple[float, float]:
        return self.beta1, self.beta2

    def _check_hyperparameters(self, values: dict) -> dict:
        return {
            "lr": non_negative(values["lr"], "lr"),
            "beta1": unit_interval(values["beta1"], "betas[0]", closed=False),
            "beta2": unit_interval(values["beta2"], "betas[1]", closed=False),
            "eps": non_negative(values["eps"], "eps"),
            "weight_decay": non_negative(values["weight_decay"], "weight_decay"),
        }

    def _initial_state(self, data: np.ndarray) -> dict:
        return {"step": 0, "exp_avg": np.zeros_like(data), "exp_avg_sq": np.zeros_like(data)}

    def _update(self, data: np.ndarray, grad: np.ndarray, state: dict) -> None:
        adam_update(data, grad, state, self.lr, self.beta1, self.beta2, self.eps,
                    self.weight_decay)
