"""Element-wise activations and their backward passes.

Every function accepts a float32 or float64 ndarray of any shape and returns
an array of the same shape and dtype. A backward function takes the upstream
gradient ``dy`` and whatever the derivative is cheapest to compute from: the
input ``x`` for the piecewise-linear activations (ReLU, leaky ReLU), the output
``y`` for sigmoid and tanh, whose derivatives are polynomials in ``y``.
"""

from __future__ import annotations

import numpy as np

from cnnblas._kernels.activations import (
    leaky_relu_forward_into,
    leaky_relu_gradient_into,
    relu_forward_into,
    relu_gradient_into,
)
from cnnblas.checks import check_float_array, check_real, check_shape


def _check_backward(dy, saved, saved_name: str) -> None:
    """Check a backward pass's ``dy`` against the forward array it saved (``x`` or ``y``)."""
    check_float_array(saved, saved_name)
    check_float_array(dy, "dy", dtype=saved.dtype)
    check_shape(dy, saved.shape, f"dy (it must match {saved_name})")


def _check_slope(negative_slope) -> float:
    return check_real(negative_slope, "negative_slope")


def relu(x):
    """Rectified linear unit ``y = max(x, 0)`` (tutorial Eq. 3.15).

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64

    Returns
    -------
    y : ndarray, shape and dtype of ``x``. NaN propagates.
    """
    return rectify(x)[0]


def rectify(x, negative_slope=None):
    """ReLU (``negative_slope=None``) or leaky ReLU, with the mask its backward needs.

    One pass of a Numba kernel instead of ``numpy.maximum`` (or ``numpy.where``)
    plus ``x > 0``: ``where`` ran at about 4 ns per element (see
    benchmarks/LOG.md).

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64
    negative_slope : float or None
        None: ``y = max(x, 0)`` as ``numpy.maximum`` (NaN propagates). A
        number: ``y = x`` where ``x > 0``, else ``negative_slope * x``.

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    positive : ndarray of bool, shape of ``x``
        ``x > 0``, for :func:`masked_gradient`.
    """
    check_float_array(x, "x")
    flat = np.ascontiguousarray(x).reshape(-1)
    y = np.empty(x.shape, x.dtype)
    positive = np.empty(x.shape, np.bool_)
    if negative_slope is None:
        relu_forward_into(flat, y.reshape(-1), positive.reshape(-1))
    else:
        slope = x.dtype.type(_check_slope(negative_slope))
        leaky_relu_forward_into(flat, slope, y.reshape(-1), positive.reshape(-1))
    return y, positive


def relu_backward(dy, x):
    """Gradient of :func:`relu`: ``dx = dy`` where ``x > 0``, else 0 (Eq. 3.17).

    The derivative at exactly ``x = 0`` is taken as 0, as in PyTorch.

    Parameters
    ----------
    dy : ndarray, shape and dtype of ``x``
    x : ndarray, float32 or float64
        The forward input.

    Returns
    -------
    dx : ndarray, shape and dtype of ``x``
    """
    _check_backward(dy, x, "x")
    return masked_gradient(dy, x > 0)


def masked_gradient(dy, positive, negative_slope=None):
    """``dx = dy`` where ``positive``; elsewhere 0 (ReLU) or ``negative_slope * dy``.

    The backward pass of ReLU and leaky ReLU from a mask saved by the forward
    pass (one byte per element). Runs in a Numba kernel, some 40 times faster
    than ``numpy.where`` (see benchmarks/LOG.md).

    Parameters
    ----------
    dy : ndarray, any shape, float32 or float64
    positive : ndarray of bool, shape of ``dy``
        Where the forward input was > 0.
    negative_slope : float or None, default None
        None: ReLU, exactly 0 where ``positive`` is False, even for an
        infinite ``dy``. A number: leaky ReLU, ``negative_slope * dy`` there
        (so ``0.0 * inf`` is NaN, as in PyTorch's ``leaky_relu``).

    Returns
    -------
    dx : ndarray, shape and dtype of ``dy``
    """
    check_float_array(dy, "dy")
    if not isinstance(positive, np.ndarray) or positive.dtype != np.bool_:
        raise TypeError(
            f"positive must be a bool numpy.ndarray, got "
            f"{getattr(positive, 'dtype', type(positive).__name__)}"
        )
    check_shape(positive, dy.shape, "positive (it must match dy)")
    dx = np.empty(dy.shape, dy.dtype)
    dy_flat = np.ascontiguousarray(dy).reshape(-1)
    positive_flat = np.ascontiguousarray(positive).reshape(-1)
    if negative_slope is None:
        relu_gradient_into(dy_flat, positive_flat, dx.reshape(-1))
    else:
        slope = dy.dtype.type(_check_slope(negative_slope))  # float32 stays float32
        leaky_relu_gradient_into(dy_flat, positive_flat, slope, dx.reshape(-1))
    return dx


def leaky_relu(x, negative_slope=0.01):
    """Leaky ReLU ``y = x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64
    negative_slope : float, default 0.01

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    """
    return rectify(x, negative_slope)[0]


def leaky_relu_backward(dy, x, negative_slope=0.01):
    """Gradient of :func:`leaky_relu`: ``dx = dy`` where ``x > 0``, else
    ``negative_slope * dy``; ``dy`` and ``x`` as in :func:`relu_backward`."""
    _check_backward(dy, x, "x")
    return masked_gradient(dy, x > 0, negative_slope)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))`` without overflow.

    ``exp`` is only ever evaluated at ``-|x|``, so large inputs of either sign
    neither overflow nor warn: ``y = 1 / (1 + e)`` for ``x >= 0`` and
    ``e / (1 + e)`` for ``x < 0`` with ``e = exp(-|x|)``.

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64

    Returns
    -------
    y : ndarray, shape and dtype of ``x``, values in [0, 1]
    """
    check_float_array(x, "x")
    e = np.exp(-np.abs(x))
    one = x.dtype.type(1)
    return np.where(x >= 0, one, e) / (one + e)


def sigmoid_backward(dy, y):
    """Gradient of :func:`sigmoid` from its output: ``dx = dy * y * (1 - y)``.

    Parameters
    ----------
    dy : ndarray, shape and dtype of ``y``
    y : ndarray, float32 or float64
        The forward output.

    Returns
    -------
    dx : ndarray, shape and dtype of ``y``
    """
    _check_backward(dy, y, "y")
    return dy * y * (y.dtype.type(1) - y)


def tanh(x):
    """Hyperbolic tangent (NumPy's, which saturates without overflow).

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64

    Returns
    -------
    y : ndarray, shape and dtype of ``x``, values in [-1, 1]
    """
    check_float_array(x, "x")
    return np.tanh(x)


def tanh_backward(dy, y):
    """Gradient of :func:`tanh` from its output: ``dx = dy * (1 - y**2)``; ``dy``
    and ``y`` as in :func:`sigmoid_backward`."""
    _check_backward(dy, y, "y")
    return dy * (y.dtype.type(1) - y * y)


__all__ = [
    "relu", "relu_backward", "rectify", "masked_gradient", "leaky_relu", "leaky_relu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward",
]
