"""The optimizer base class: parameters, learning rate, per-parameter state and
its one save / load / validate path.

A subclass declares what it keeps and supplies the update:

- ``hyperparameter_names`` and :meth:`Optimizer._check_hyperparameters`
  (the names are attributes of the optimizer and scalar state-dict entries);
- ``buffer_keys``: per-parameter arrays in ``self.state[index]``, each of the
  parameter's shape and dtype, saved as ``"<prefix>.<index>"``;
- ``counter_keys``: per-parameter step counts in ``self.state[index]``, saved
  together as one int64 array of shape ``(num_params,)``;
- ``lazy_buffers``: True when the buffers appear at a parameter's first update
  (so a state dict may lack some), False when :meth:`Optimizer._initial_state`
  creates them all;
- :meth:`Optimizer._update`, which calls the update rule of its module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np

from cnnblas.optim._checks import check_keys, non_negative, positive, read_scalar

_HEADER_KEYS = ("optimizer", "num_params")


def _checked_params(params: Iterable) -> list:
    """The parameters as a list: non-empty, no duplicates, float ``.data`` and a ``.grad``."""
    if callable(getattr(params, "parameters", None)):  # a model given for its parameters
        raise TypeError(f"params must be an iterable of parameters, got a "
                        f"{type(params).__name__} module: pass model.parameters()")
    try:
        params = list(params)
    except TypeError as error:
        raise TypeError(f"params must be an iterable of parameters (such as "
                        f"model.parameters()), got {type(params).__name__}") from error
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
    return params


def _check_grad(index: int, param) -> None:
    """``param.grad`` must be an array of the data's shape and dtype."""
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
    **hyperparameters
        The subclass's other hyperparameters, checked by
        :meth:`_check_hyperparameters`.

    Attributes
    ----------
    params : list
        The parameters, in the order given; state keys use these indices.
    state : list of dict
        ``state[index]`` holds the buffers (arrays of the parameter's shape and
        dtype) and step counts (ints) of ``params[index]``, by name.
    """

    #: Name stored under ``"optimizer"`` in the state dict, checked on load.
    kind: ClassVar[str] = "Optimizer"
    #: Hyperparameters: attributes, and scalar state-dict entries in this order.
    hyperparameter_names: ClassVar[tuple[str, ...]] = ("lr",)
    #: Per-parameter arrays: key in ``state[index]`` -> state-dict prefix.
    buffer_keys: ClassVar[dict[str, str]] = {}
    #: Per-parameter step counts, each saved as one int64 array ``(num_params,)``.
    counter_keys: ClassVar[tuple[str, ...]] = ()
    #: True when the buffers appear at a parameter's first update, not at construction.
    lazy_buffers: ClassVar[bool] = False

    def __init__(self, params: Iterable, lr: float, **hyperparameters):
        self.params = _checked_params(params)
        positive(lr, "lr")
        self._set_hyperparameters(self._check_hyperparameters({"lr": lr, **hyperparameters}))
        self.state: list[dict] = [self._initial_state(param.data) for param in self.params]

    # The learning rate may reach 0 under a schedule (cosine with eta_min=0).
    @property
    def lr(self) -> float:
        """Current learning rate (a Python float)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = non_negative(value, "lr")

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
            _check_grad(index, param)
            self._update(param.data, param.grad, self.state[index])

    # ---- what a subclass supplies

    def _check_hyperparameters(self, values: dict) -> dict:
        """Return ``values`` (one per ``hyperparameter_names``) checked and normalised.

        Raises TypeError or ValueError naming the hyperparameter.
        """
        return {"lr": non_negative(values["lr"], "lr")}

    def _initial_state(self, data: np.ndarray) -> dict:
        """The state of a parameter with value ``data`` before its first update."""
        return {}

    def _update(self, data: np.ndarray, grad: np.ndarray, state: dict) -> None:
        """Update ``data`` in place from ``grad``, reading and updating ``state``."""
        raise NotImplementedError

    # ---- state

    def _set_hyperparameters(self, values: dict) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def state_dict(self) -> dict:
        """Return the optimizer state as a flat, ``np.savez``-storable dict.

        Returns
        -------
        dict of str to numpy.ndarray or scalar
            ``"optimizer"`` (class name), ``"num_params"``, the hyperparameters
            (``"lr"``, ...), per-parameter buffers ``"<prefix>.<index>"``
            (copies, in the parameters' dtypes) and step counts (int64 arrays
            of shape ``(num_params,)``).
        """
        state: dict = {"optimizer": np.array(self.kind), "num_params": len(self.params)}
        state.update((name, getattr(self, name)) for name in self.hyperparameter_names)
        for key, prefix in self.buffer_keys.items():
            for index, entries in enumerate(self.state):
                if key in entries:
                    state[f"{prefix}.{index}"] = entries[key].copy()
        for key in self.counter_keys:
            state[key] = np.array([entries[key] for entries in self.state], dtype=np.int64)
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state produced by :meth:`state_dict` (possibly via ``np.load``).

        Everything is validated before anything is changed.

        Raises
        ------
        ValueError
            On a different optimizer class or parameter count, missing or
            unexpected keys, a buffer whose shape differs from its parameter's,
            that is not floating-point or holds NaN or Inf, a negative or
            misshapen step count, or an invalid hyperparameter; the message
            names the key.
        """
        try:
            self._check_header(state)
            hyperparameters = self._check_hyperparameters(
                {name: read_scalar(state, name) for name in self.hyperparameter_names})
            param_state = self._read_param_state(state)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{type(self).__name__}.load_state_dict: {err}") from err
        self._set_hyperparameters(hyperparameters)
        self.state = param_state

    def _buffer_state_keys(self) -> set[str]:
        return {f"{prefix}.{index}" for prefix in self.buffer_keys.values()
                for index in range(len(self.params))}

    def _check_header(self, state: Mapping) -> None:
        """Optimizer class, parameter count and the set of keys."""
        for key in _HEADER_KEYS:
            if key not in state:
                raise ValueError(f"missing key {key!r}")
        kind = read_scalar(state, "optimizer")
        if kind != self.kind:
            raise ValueError(f"state_dict['optimizer'] is {kind!r}, expected {self.kind!r}")
        num_params = read_scalar(state, "num_params")
        if num_params != len(self.params):
            raise ValueError(
                f"state_dict['num_params'] is {num_params}, but this optimizer has "
                f"{len(self.params)} parameters"
            )
        required = {*_HEADER_KEYS, *self.hyperparameter_names, *self.counter_keys}
        buffers = self._buffer_state_keys()
        if self.lazy_buffers:
            check_keys(state, required, buffers)
        else:
            check_keys(state, required | buffers)

    def _read_param_state(self, state: Mapping) -> list[dict]:
        """New per-parameter state dicts from the checked entries of ``state``."""
        counters = {key: self._read_counter(state, key) for key in self.counter_keys}
        param_state = []
        for index, param in enumerate(self.params):
            entries = {key: int(counts[index]) for key, counts in counters.items()}
            for key, prefix in self.buffer_keys.items():
                name = f"{prefix}.{index}"
                if name in state:
                    entries[key] = self._read_buffer(state, name, index, param.data)
            param_state.append(entries)
        return param_state

    @staticmethod
    def _read_buffer(state: Mapping, key: str, index: int, data: np.ndarray) -> np.ndarray:
        """A copy of ``state[key]`` in ``data``'s dtype: a float array of its shape.

        Non-finite values load as they are: an optimizer whose state overflowed
        (Adam's ``exp_avg_sq`` under a huge gradient) while its parameters stayed
        finite must still resume from its own checkpoint, and a failed restore
        must be able to put the previous state back.
        """
        value = np.asarray(state[key])
        if value.shape != data.shape:
            raise ValueError(
                f"state_dict[{key!r}] has shape {value.shape}, expected {data.shape} (the "
                f"shape of params[{index}].data)"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(
                f"state_dict[{key!r}] has dtype {value.dtype}, expected a floating-point dtype"
            )
        return value.astype(data.dtype, copy=True)

    def _read_counter(self, state: Mapping, key: str) -> np.ndarray:
        """``state[key]``: an int array of shape ``(num_params,)``, every count >= 0."""
        counts = np.asarray(state[key])
        if counts.shape != (len(self.params),) or not np.issubdtype(counts.dtype, np.integer):
            raise ValueError(
                f"state_dict[{key!r}] must be an int array of shape ({len(self.params)},), "
                f"got dtype {counts.dtype} and shape {counts.shape}"
            )
        if counts.min() < 0:
            raise ValueError(f"state_dict[{key!r}] must be >= 0, got {counts}")
        return counts
