"""Weight initialisers and random-generator handling.

The default initialisation of :class:`~cnnblas.nn.Conv2d` and
:class:`~cnnblas.nn.Linear` is PyTorch's: ``kaiming_uniform_(a=sqrt(5))`` for
the weight, which reduces to ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and the
same bound for the bias.
"""

from __future__ import annotations

import math

import numpy as np

from cnnblas.checks import FLOAT_DTYPES, is_int


def as_rng(rng) -> np.random.Generator:
    """``rng`` as a Generator: a Generator is used as is, an int seeds a new one,
    None gives an unseeded one (different numbers every run)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or is_int(rng):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")


def as_float_dtype(dtype) -> np.dtype:
    """``dtype`` as float32 or float64, else TypeError."""
    try:
        # np.dtype(None) would silently mean float64: reject None explicitly.
        resolved = None if dtype is None else np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output unit: ``in_features`` for a ``(out, in)``
    weight, ``C/groups * kh * kw`` for a ``(K, C/groups, kh, kw)`` one."""
    return int(np.prod(shape[1:]))


def uniform(shape, bound: float, dtype=np.float32, rng=None) -> np.ndarray:
    """Samples of ``U(-bound, bound)`` with the given shape and dtype."""
    return as_rng(rng).uniform(-bound, bound, size=shape).astype(as_float_dtype(dtype))


def kaiming_uniform(shape, a: float = math.sqrt(5), dtype=np.float32, rng=None) -> np.ndarray:
    """He/Kaiming uniform samples for a leaky-ReLU gain with slope ``a``.

    ``bound = sqrt(2 / (1 + a**2)) * sqrt(3 / fan_in)``; PyTorch's default
    ``a = sqrt(5)`` gives ``bound = 1 / sqrt(fan_in)``.
    """
    gain = math.sqrt(2.0 / (1.0 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in(shape))
    return uniform(shape, bound, dtype, rng)


def fan_out(shape: tuple[int, ...]) -> int:
    """Output units one input feeds: ``out_features`` for a ``(out, in)`` weight,
    ``K * kh * kw`` for a ``(K, C/groups, kh, kw)`` one (PyTorch's rule)."""
    return int(shape[0] * np.prod(shape[2:]))


def kaiming_normal_fan_out(shape, dtype=np.float32, rng=None) -> np.ndarray:
    """He et al. (2015) normal samples for ReLU networks, scaled by the fan-out.

    ``N(0, std²)`` with ``std = sqrt(2 / fan_out)``: PyTorch's
    ``kaiming_normal_(w, mode="fan_out", nonlinearity="relu")``, the
    initialisation of torchvision's ResNet convolutions. Scaling by the fan-out
    keeps the variance of the back-propagated gradient constant across layers.
    """
    std = math.sqrt(2.0 / fan_out(shape))
    return (as_rng(rng).standard_normal(size=shape) * std).astype(as_float_dtype(dtype))


__all__ = ["as_rng", "as_float_dtype", "fan_in", "fan_out", "uniform", "kaiming_uniform",
           "kaiming_normal_fan_out"]
