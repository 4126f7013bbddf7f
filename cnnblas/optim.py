"""Optimizers and learning-rate schedules (NumPy only).

An optimizer holds a list of parameter objects, each with a ``.data`` and a
``.grad`` NumPy array of the same shape and dtype (``cnnblas.nn.Parameter``, or
anything shaped like it). :meth:`Optimizer.step` reads every ``.grad`` and
updates ``.data`` in place; parameters whose ``.grad`` is ``None`` are skipped,
as in PyTorch. Nothing upcasts: a float32 parameter keeps float32 state and is
updated in float32.

The update rules are those of ``torch.optim.SGD`` and ``torch.optim.Adam``
(without ``maximize``, ``amsgrad`` or parameter groups), and the schedules give
the values of ``torch.optim.lr_scheduler.StepLR`` and ``CosineAnnealingLR``.

State dictionaries are flat ``{str: numpy array or scalar}`` mappings with no
object arrays and no nesting, so ``np.savez(path, **opt.state_dict())`` and
``opt.load_state_dict(np.load(path, allow_pickle=False))`` round-trip exactly.
Per-parameter entries are keyed ``"<name>.<index>"`` with ``index`` the
position of the parameter in the list given to the optimizer, e.g.
``"momentum.3"`` or ``"exp_avg_sq.0"``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "LRScheduler", "StepLR", "CosineAnnealingLR"]


# --------------------------------------------------------------------------- checks


def _real(value, name: str) -> float:
    """Return ``value`` as a finite Python float (never a NumPy scalar: no upcasts)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _positive(value, name: str) -> float:
    value = _real(value, name)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def _non_negative(value, name: str) -> float:
    value = _real(value, name)
    if value < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _unit_interval(value, name: str, closed: bool) -> float:
    """``value`` in [0, 1] (``closed``) or [0, 1)."""
    value = _real(value, name)
    if value < 0.0 or value > 1.0 or (not closed and value == 1.0):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def _scalar(state: Mapping, key: str):
    """Read ``state[key]`` as a Python scalar (accepts 0-d arrays, as ``np.load`` gives)."""
    value = np.asarray(state[key])
    if value.shape != ():
        raise ValueError(f"state_dict[{key!r}] must be a scalar, got shape {value.shape}")
    return value.item()


def _check_keys(state: Mapping, required: set[str], optional: set[str], owner: str) -> None:
    keys = set(state.keys())
    missing = sorted(required - keys)
    unexpected = sorted(keys - required - optional)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise ValueError(f"{owner}.load_state_dict: " + "; ".join(parts))


# --------------------------------------------------------------------------- optimizers


class Optimizer:
    """Base class: holds the parameters, the learning rate and per-parameter state.

    Parameters
    ----------
    params : iterable of parameter objects
        Each has ``.data`` (a floating-point ``numpy.ndarray``, updated in place)
        and ``.grad`` (an array of the same shape and dtype, or ``None`` to skip
        the parameter). Must be non-empty and contain no duplicates.
    lr : float
        Learning rate, > 0. Schedules overwrite :attr:`lr` between epochs.

    Attributes
    ----------
    params : list
        The parameters, in the order given; state keys use these indices.
    """

    #: Name stored under ``"optimizer"`` in the state dict, checked on load.
    kind = "Optimizer"

    def __init__(self, params: Iterable, lr: float):
        params = list(params)
        if not params:
            raise ValueError("params must contain at least one parameter, got an empty list")
        seen: set[int] = set()
        for index, param in enumerate(params):
            data = getattr(param, "data", None)
            if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.floating):
                raise TypeError(
                    f"params[{index}].data must be a floating-point numpy.ndarray, got "
                    f"{type(data).__name__}"
                    + (f" of dtype {data.dtype}" if isinstance(data, np.ndarray) else "")
                )
            if not hasattr(param, "grad"):
                raise TypeError(f"params[{index}] has no .grad attribute")
            if id(param) in seen:
                raise ValueError(f"params[{index}] appears more than once in params")
            seen.add(id(param))
        self.params = params
        self._lr = _positive(lr, "lr")

    # The learning rate may reach 0 under a schedule (cosine with eta_min=0).
    @property
    def lr(self) -> float:
        """Current learning rate (a Python float)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _non_negative(value, "lr")

    def zero_grad(self) -> None:
        """Set every gradient array to zero in place (``None`` gradients stay ``None``)."""
        for param in self.params:
            if param.grad is not None:
                param.grad.fill(0)

    def step(self) -> None:
        """Apply one update to every parameter whose ``.grad`` is not ``None``."""
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            self._check_grad(index, param)
            self._update(index, param.data, param.grad)

    def _update(self, index: int, data: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError

    @staticmethod
    def _check_grad(index: int, param) -> None:
        grad = param.grad
        if not isinstance(grad, np.ndarray):
            raise TypeError(
                f"params[{index}].grad must be a numpy.ndarray or None, got {type(grad).__name__}"
            )
        if grad.shape != param.data.shape:
            raise ValueError(
                f"params[{index}].grad has shape {grad.shape}, expected the data's shape "
                f"{param.data.shape}"
            )
        if grad.dtype != param.data.dtype:
            raise TypeError(
                f"params[{index}].grad has dtype {grad.dtype}, expected the data's dtype "
                f"{param.data.dtype}"
            )

    # ---- state

    def _hyperparameters(self) -> dict[str, float | bool]:
        raise NotImplementedError

    def _set_hyperparameters(self, values: dict) -> None:
        raise NotImplementedError

    def _buffer_names(self) -> tuple[str, ...]:
        """Names of the per-parameter array buffers (keys ``"<name>.<index>"``)."""
        raise NotImplementedError

    def _buffers(self, name: str) -> list[np.ndarray | None]:
        raise NotImplementedError

    def _required_buffers(self) -> bool:
        """True when every buffer key must be present in a state dict."""
        return True

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {}

    def _extra_keys(self) -> set[str]:
        return set()

    def _load_extra_state(self, state: Mapping) -> None:
        pass

    def state_dict(self) -> dict:
        """Return the optimizer state as a flat, ``np.savez``-storable dict.

        Returns
        -------
        dict of str to numpy.ndarray or scalar
            ``"optimizer"`` (class name), ``"num_params"``, the hyperparameters
            (``"lr"``, ...) and per-parameter buffers ``"<name>.<index>"``.
            Arrays are copies, in the parameters' dtypes.
        """
        state: dict = {"optimizer": np.array(self.kind), "num_params": len(self.params)}
        state.update(self._hyperparameters())
        for name in self._buffer_names():
            for index, buffer in enumerate(self._buffers(name)):
                if buffer is not None:
                    state[f"{name}.{index}"] = buffer.copy()
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state produced by :meth:`state_dict` (possibly via ``np.load``).

        Everything is validated before anything is changed.

        Raises
        ------
        ValueError
            On a different optimizer class or parameter count, missing or
            unexpected keys, a buffer whose shape differs from its parameter's,
            or an invalid hyperparameter; the message names the key.
        """
        owner = type(self).__name__
        buffer_keys = {
            f"{name}.{index}" for name in self._buffer_names() for index in range(len(self.params))
        }
        required = {"optimizer", "num_params"} | set(self._hyperparameters()) | self._extra_keys()
        if self._required_buffers():
            required |= buffer_keys
            optional: set[str] = set()
        else:
            optional = buffer_keys
        for key in ("optimizer", "num_params"):
            if key not in state:
                raise ValueError(f"{owner}.load_state_dict: missing key {key!r}")
        kind = _scalar(state, "optimizer")
        if kind != self.kind:
            raise ValueError(
                f"{owner}.load_state_dict: state_dict['optimizer'] is {kind!r}, expected "
                f"{self.kind!r}"
            )
        num_params = _scalar(state, "num_params")
        if num_params != len(self.params):
            raise ValueError(
                f"{owner}.load_state_dict: state_dict['num_params'] is {num_params}, but this "
                f"optimizer has {len(self.params)} parameters"
            )
        _check_keys(state, required, optional, owner)

        hyper = {key: _scalar(state, key) for key in self._hyperparameters()}
        buffers: dict[str, np.ndarray] = {}
        for key in sorted(buffer_keys & set(state.keys())):
            index = int(key.rsplit(".", 1)[1])
            data = self.params[index].data
            value = np.asarray(state[key])
            if value.shape != data.shape:
                raise ValueError(
                    f"{owner}.load_state_dict: state_dict[{key!r}] has shape {value.shape}, "
                    f"expected {data.shape} (the shape of params[{index}].data)"
                )
            if not np.issubdtype(value.dtype, np.floating):
                raise ValueError(
                    f"{owner}.load_state_dict: state_dict[{key!r}] has dtype {value.dtype}, "
                    f"expected a floating-point dtype"
                )
            buffers[key] = value.astype(data.dtype, copy=True)
        # Validate hyperparameters on a scratch copy so a bad value leaves self untouched.
        probe = object.__new__(type(self))
        probe.__dict__.update(self.__dict__)
        try:
            probe._set_hyperparameters(hyper)
            probe._load_extra_state(state)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{owner}.load_state_dict: {err}") from err

        self.__dict__.update(probe.__dict__)
        for name in self._buffer_names():
            slots = self._buffers(name)
            for index in range(len(self.params)):
                slots[index] = buffers.get(f"{name}.{index}")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

    The update of ``torch.optim.SGD``: with ``g = grad + weight_decay * w``,

    - no momentum: ``w -= lr * g``;
    - momentum: ``b = g`` on the first step, then
      ``b = momentum * b + (1 - dampening) * g``, and
      ``w -= lr * (g + momentum * b)`` (Nesterov) or ``w -= lr * b``.

    Parameters
    ----------
    params : iterable of parameter objects
        See :class:`Optimizer`.
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

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, dampening: float = 0.0):
        super().__init__(params, lr)
        self._set_hyperparameters({
            "lr": self._lr, "momentum": momentum, "nesterov": nesterov,
            "weight_decay": weight_decay, "dampening": dampening,
        })
        self._momentum: list[np.ndarray | None] = [None] * len(self.params)

    def _set_hyperparameters(self, values: dict) -> None:
        lr = _non_negative(values["lr"], "lr")
        momentum = _non_negative(values["momentum"], "momentum")
        weight_decay = _non_negative(values["weight_decay"], "weight_decay")
        dampening = _unit_interval(values["dampening"], "dampening", closed=True)
        nesterov = values["nesterov"]
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {nesterov!r}")
        nesterov = bool(nesterov)
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening == 0, got "
                f"momentum={momentum!r}, dampening={dampening!r}"
            )
        self._lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay, self.dampening = weight_decay, dampening

    def _hyperparameters(self) -> dict:
        return {"lr": self._lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "dampening": self.dampening}

    def _buffer_names(self) -> tuple[str, ...]:
        return ("momentum",)

    def _buffers(self, name: str) -> list[np.ndarray | None]:
        return self._momentum

    def _required_buffers(self) -> bool:
        return False

    def _update(self, index: int, data: np.ndarray, grad: np.ndarray) -> None:
        step = grad
        if self.weight_decay != 0.0:
            step = grad + self.weight_decay * data
        if self.momentum != 0.0:
            buffer = self._momentum[index]
            if buffer is None:
                buffer = self._momentum[index] = np.array(step, copy=True)
            else:
                buffer *= self.momentum
                buffer += (1.0 - self.dampening) * step
            step = step + self.momentum * buffer if self.nesterov else buffer
        data -= self._lr * step


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with the update of ``torch.optim.Adam``.

    At step ``t`` (counted per parameter), with ``g = grad + weight_decay * w``::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        w -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    params : iterable of parameter objects
        See :class:`Optimizer`.
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

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self._set_hyperparameters({"lr": self._lr, "beta1": betas[0], "beta2": betas[1],
                                   "eps": eps, "weight_decay": weight_decay})
        self._exp_avg: list[np.ndarray | None] = [np.zeros_like(p.data) for p in self.params]
        self._exp_avg_sq: list[np.ndarray | None] = [np.zeros_like(p.data) for p in self.params]
        self._steps = np.zeros(len(self.params), dtype=np.int64)

    @property
    def betas(self) -> tuple[float, float]:
        return self.beta1, self.beta2

    def _set_hyperparameters(self, values: dict) -> None:
        lr = _non_negative(values["lr"], "lr")
        beta1 = _unit_interval(values["beta1"], "betas[0]", closed=False)
        beta2 = _unit_interval(values["beta2"], "betas[1]", closed=False)
        eps = _non_negative(values["eps"], "eps")
        weight_decay = _non_negative(values["weight_decay"], "weight_decay")
        self._lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.eps, self.weight_decay = eps, weight_decay

    def _hyperparameters(self) -> dict:
        return {"lr": self._lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _buffer_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _buffers(self, name: str) -> list[np.ndarray | None]:
        return self._exp_avg if name == "exp_avg" else self._exp_avg_sq

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {"step": self._steps.copy()}

    def _extra_keys(self) -> set[str]:
        return {"step"}

    def _load_extra_state(self, state: Mapping) -> None:
        steps = np.asarray(state["step"])
        if steps.shape != (len(self.params),) or not np.issubdtype(steps.dtype, np.integer):
            raise ValueError(
                f"state_dict['step'] must be an int array of shape ({len(self.params)},), "
                f"got dtype {steps.dtype} and shape {steps.shape}"
            )
        if steps.min() < 0:
            raise ValueError(f"state_dict['step'] must be >= 0, got {steps}")
        self._steps = steps.astype(np.int64, copy=True)

    def _update(self, index: int, data: np.ndarray, grad: np.ndarray) -> None:
        self._steps[index] += 1
        step = int(self._steps[index])
        if self.weight_decay != 0.0:
            grad = grad + self.weight_decay * data
        exp_avg, exp_avg_sq = self._exp_avg[index], self._exp_avg_sq[index]
        exp_avg += (1.0 - self.beta1) * (grad - exp_avg)  # torch's lerp(grad, 1 - beta1)
        exp_avg_sq *= self.beta2
        exp_avg_sq += (1.0 - self.beta2) * grad * grad
        bias_correction1 = 1.0 - self.beta1**step
        bias_correction2_sqrt = math.sqrt(1.0 - self.beta2**step)
        denom = np.sqrt(exp_avg_sq)
        denom /= bias_correction2_sqrt
        denom += self.eps
        np.divide(exp_avg, denom, out=denom)
        denom *= self._lr / bias_correction1
        data -= denom


# --------------------------------------------------------------------------- schedules


class LRScheduler:
    """Base class of the epoch-wise learning-rate schedules.

    On construction the optimizer's current ``lr`` becomes ``base_lr`` and the
    schedule's value at epoch 0 is applied; each :meth:`step` (call it once per
    epoch, after the epoch's optimizer steps) advances ``last_epoch`` by one and
    sets ``optimizer.lr``. Values are computed in closed form from ``base_lr``
    and ``last_epoch``, so restoring a state dict reproduces them exactly.

    Attributes
    ----------
    optimizer : Optimizer
    base_lr : float
    last_epoch : int
        Number of :meth:`step` calls so far.
    """

    def __init__(self, optimizer: Optimizer):
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

    def _config(self) -> dict:
        raise NotImplementedError

    def _set_config(self, values: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Return ``{"last_epoch", "base_lr", <configuration>}`` as Python scalars."""
        return {"last_epoch": self.last_epoch, "base_lr": self.base_lr, **self._config()}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state from :meth:`state_dict` and apply its learning rate.

        Raises
        ------
        ValueError
            On missing or unexpected keys or invalid values, naming the key.
        """
        owner = type(self).__name__
        _check_keys(state, set(self.state_dict()), set(), owner)
        values = {key: _scalar(state, key) for key in state.keys()}
        probe = object.__new__(type(self))
        probe.__dict__.update(self.__dict__)
        try:
            probe._set_config(values)
            probe.last_epoch = _int(values["last_epoch"], "last_epoch", 0)
            probe.base_lr = _positive(values["base_lr"], "base_lr")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{owner}.load_state_dict: {err}") from err
        self.__dict__.update(probe.__dict__)
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

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self._set_config({"step_size": step_size, "gamma": gamma})
        super().__init__(optimizer)

    def _set_config(self, values: dict) -> None:
        self.step_size = _int(values["step_size"], "step_size", 1)
        self.gamma = _positive(values["gamma"], "gamma")

    def _config(self) -> dict:
        return {"step_size": self.step_size, "gamma": self.gamma}

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

    def __init__(self, optimizer: Optimizer, t_max: int, eta_min: float = 0.0):
        self._set_config({"t_max": t_max, "eta_min": eta_min})
        super().__init__(optimizer)

    def _set_config(self, values: dict) -> None:
        self.t_max = _int(values["t_max"], "t_max", 1)
        self.eta_min = _non_negative(values["eta_min"], "eta_min")

    def _config(self) -> dict:
        return {"t_max": self.t_max, "eta_min": self.eta_min}

    def lr_at(self, epoch: int) -> float:
        cosine = (1.0 + math.cos(math.pi * epoch / self.t_max)) / 2.0
        return self.eta_min + (self.base_lr - self.eta_min) * cosine
