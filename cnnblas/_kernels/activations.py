"""Backward passes of the piecewise-linear activations (Numba).

``numpy.where(mask, dy, 0)`` runs at about 4 ns per element here (1.2 ms for
LeNet-5's first ReLU, 301,056 elements), against 0.03 ms for these loops,
which LLVM vectorises into masked selects. The kernels take flat, C-contiguous
1-D arrays of equal length; the callers in :mod:`cnnblas.ops.activations`
check and flatten them.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def relu_gradient_into(dy, positive, dx):
    """``dx = dy`` where ``positive``, else exactly 0 (PyTorch's rule; never ``0 * dy``,
    which would turn an infinite ``dy`` into NaN).

    Parameters
    ----------
    dy : ndarray, shape (size,), float32 or float64
    positive : ndarray, shape (size,), bool
        Where the forward input was > 0.
    dx : ndarray, shape (size,), dtype of ``dy``, written
    """
    for i in range(dy.size):
        dx[i] = dy[i] if positive[i] else 0.0


@njit(cache=True, nogil=True)
def leaky_relu_gradient_into(dy, positive, negative_slope, dx):
    """``dx = dy`` where ``positive``, else ``negative_slope * dy``.

    Parameters
    ----------
    dy : ndarray, shape (size,), float32 or float64
    positive : ndarray, shape (size,), bool
    negative_slope : scalar of ``dy``'s dtype
        Passed in that dtype so that float32 gradients are multiplied in float32.
    dx : ndarray, shape (size,), dtype of ``dy``, written
    """
    for i in range(dy.size):
        dx[i] = dy[i] if positive[i] else dy[i] * negative_slope


@njit(cache=True, nogil=True)
def relu_forward_into(x, y, positive):
    """``y = max(x, 0)`` with ``numpy.maximum``'s results (NaN propagates, -0.0
    gives 0.0), and ``positive = x > 0``, in one pass.

    Parameters
    ----------
    x : ndarray, shape (size,), float32 or float64
    y : ndarray, shape (size,), dtype of ``x``, written
    positive : ndarray, shape (size,), bool, written
    """
    for i in range(x.size):
        value = x[i]
        y[i] = value if (value > 0 or value != value) else 0.0
        positive[i] = value > 0


@njit(cache=True, nogil=True)
def leaky_relu_forward_into(x, negative_slope, y, positive):
    """``y = x`` where ``x > 0``, else ``negative_slope * x``; ``positive = x > 0``.

    ``negative_slope`` is a scalar of ``x``'s dtype, as in
    :func:`leaky_relu_gradient_into`.
    """
    for i in range(x.size):
        value = x[i]
        above = value > 0
        y[i] = value if above else value * negative_slope
        positive[i] = above
