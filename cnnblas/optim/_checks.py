"""Range checks of hyperparameters and readers of saved scalars, shared by the
optimizers and the schedules.

The type checks are :func:`cnnblas.checks.check_real` and
:func:`cnnblas.checks.check_int`; these add the ranges. Every value comes
back as a Python ``float``/``int``/``bool`` (never a NumPy scalar, so nothing
upcasts a float32 update).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from cnnblas.checks import check_real


def finite_real(value, name: str) -> float:
    """``value`` as a finite float; TypeError for a non-number, ValueError for NaN/Inf."""
    value = check_real(value, name)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def positive(value, name: str) -> float:
    """``value`` as a finite float > 0."""
    value = finite_real(value, name)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def non_negative(value, name: str) -> float:
    """``value`` as a finite float >= 0."""
    value = finite_real(value, name)
    if value < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def unit_interval(value, name: str, closed: bool) -> float:
    """``value`` as a float in [0, 1] (``closed``) or [0, 1)."""
    value = finite_real(value, name)
    if value < 0.0 or value > 1.0 or (not closed and value == 1.0):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def read_scalar(state: Mapping, key: str):
    """``state[key]`` as a Python scalar (accepts the 0-d arrays ``np.load`` gives)."""
    value = np.asarray(state[key])
    if value.shape != ():
        raise ValueError(f"state_dict[{key!r}] must be a scalar, got shape {value.shape}")
    return value.item()


def check_keys(state: Mapping, required: set[str], optional: set[str] = frozenset()) -> None:
    """ValueError listing the missing and the unexpected keys of ``state``, if any."""
    keys = set(state.keys())
    missing = sorted(required - keys)
    unexpected = sorted(keys - required - optional)
    parts = []
    if missing:
        parts.append(f"missing keys {missing}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected}")
    if parts:
        raise ValueError("; ".join(parts))
