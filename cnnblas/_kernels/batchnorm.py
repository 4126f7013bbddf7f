"""Batch normalisation, with an optional residual sum and ReLU, in few passes (Numba).

Every kernel works on a stack of planes of shape ``(planes, size)``: an NCHW
tensor ``(N, C, H, W)`` viewed without a copy as ``(N * C, H * W)``, so plane
``p`` belongs to channel ``p % channels``. A kernel computes the planes
``[start, stop)`` in the calling thread with the GIL released; the callers in
:mod:`cnnblas.ops.batchnorm` split the planes across threads and combine the
per-plane results (float64) per channel. A plane (4 KB for 32x32 float32) stays
in L1 cache while a kernel makes its inner passes over it, so each kernel
reads its inputs from memory once.

The float64 reductions are functions of their own compiled with
``fastmath={"reassoc"}`` only (not inlined: the flag is the compiled
function's, so an inlined copy would lose it): LLVM may then reorder the
additions into several vector accumulators, as a pairwise sum does, and keeps
IEEE semantics otherwise (NaN and infinity propagate). Without it each sum is
one serial chain of additions, 5x slower. The
element-wise outputs are computed in the input's dtype, in the order of the
plain NumPy formulas they replace, so the results are the same bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_REASSOC = {"reassoc"}


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _row_sum(row):
    total = 0.0
    for i in range(row.size):
        total += np.float64(row[i])
    return total


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _row_squared_deviation(row, mean):
    total = 0.0
    for i in range(row.size):
        deviation = np.float64(row[i]) - mean
        total += deviation * deviation
    return total


@njit(cache=True, nogil=True)
def plane_moments(x, start, stop, mean, m2):
    """Mean and sum of squared deviations of each plane, in float64, two passes per plane.

    Parameters
    ----------
    x : ndarray, shape (planes, size), float32 or float64, C-contiguous
    start, stop : int
        The planes to compute.
    mean, m2 : ndarray, shape (planes,), float64, written
        ``mean[p] = Σ x[p] / size`` and ``m2[p] = Σ (x[p] - mean[p])²``.
    """
    size = x.shape[1]
    for p in range(start, stop):
        row = x[p]
        plane_mean = _row_sum(row) / size
        mean[p] = plane_mean
        m2[p] = _row_squared_deviation(row, plane_mean)


@njit(cache=True, nogil=True)
def normalize_planes(x, mean, inv_std, weight, bias, residual, add_residual, relu, y,
                     start, stop):
    """``y = relu(((x - mean) * inv_std) * weight + bias + residual)`` per channel.

    Parameters
    ----------
    x : ndarray, shape (planes, size), float32 or float64, C-contiguous
    mean, inv_std, weight, bias : ndarray, shape (channels,), dtype of ``x``
    residual : ndarray, shape of ``x``, dtype of ``x``
        Added when ``add_residual`` (otherwise ignored: pass ``x``).
    add_residual, relu : bool
        ``relu`` applies ``numpy.maximum(v, 0)``'s rule (NaN propagates).
    y : ndarray, shape of ``x``, dtype of ``x``, written
    start, stop : int
        The planes to compute.
    """
    channels = mean.size
    for p in range(start, stop):
        c = p % channels
        m, s, g, b = mean[c], inv_std[c], weight[c], bias[c]
        # One loop per case, each simple enough for LLVM to vectorise.
        if add_residual and relu:
            _normalize_add_relu_row(x[p], m, s, g, b, residual[p], y[p])
        elif add_residual:
            _normalize_add_row(x[p], m, s, g, b, residual[p], y[p])
        elif relu:
            _normalize_relu_row(x[p], m, s, g, b, y[p])
        else:
            _normalize_row(x[p], m, s, g, b, y[p])


@njit(cache=True, inline="always")
def _relu(value, zero):
    """``numpy.maximum(value, 0)``: NaN propagates, -0.0 gives 0.0."""
    return value if (value > 0 or value != value) else zero


@njit(cache=True, inline="always")
def _normalize_row(x_row, m, s, g, b, y_row):
    for i in range(x_row.size):
        y_row[i] = ((x_row[i] - m) * s) * g + b


@njit(cache=True, inline="always")
def _normalize_relu_row(x_row, m, s, g, b, y_row):
    zero = y_row.dtype.type(0)
    for i in range(x_row.size):
        y_row[i] = _relu(((x_row[i] - m) * s) * g + b, zero)


@njit(cache=True, inline="always")
def _normalize_add_row(x_row, m, s, g, b, r_row, y_row):
    for i in range(x_row.size):
        y_row[i] = (((x_row[i] - m) * s) * g + b) + r_row[i]


@njit(cache=True, inline="always")
def _normalize_add_relu_row(x_row, m, s, g, b, r_row, y_row):
    zero = y_row.dtype.type(0)
    for i in range(x_row.size):
        y_row[i] = _relu((((x_row[i] - m) * s) * g + b) + r_row[i], zero)


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _row_gradient_sums(g_row, x_row, mean):
    """(Σ g, Σ g·(x - mean)) of one plane, accumulated in float64."""
    sum_g = 0.0
    sum_gx = 0.0
    for i in range(g_row.size):
        g = np.float64(g_row[i])
        sum_g += g
        sum_gx += g * (np.float64(x_row[i]) - mean)
    return sum_g, sum_gx


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _row_masked_gradient_sums(dy_row, y_row, x_row, mean):
    """As :func:`_row_gradient_sums` for ``g = dy`` where ``y > 0``, else 0."""
    sum_g = 0.0
    sum_gx = 0.0
    for i in range(dy_row.size):
        g = np.float64(dy_row[i]) if y_row[i] > 0 else 0.0
        sum_g += g
        sum_gx += g * (np.float64(x_row[i]) - mean)
    return sum_g, sum_gx


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _row_masked_gradient_sums_into(dy_row, y_row, x_row, mean, g_row):
    """As :func:`_row_masked_gradient_sums`, also writing ``g`` (exactly 0 where
    masked, never ``0 * dy``) into ``g_row``."""
    zero = g_row.dtype.type(0)
    sum_g = 0.0
    sum_gx = 0.0
    for i in range(dy_row.size):
        value = dy_row[i] if y_row[i] > 0 else zero
        g_row[i] = value
        g = np.float64(value)
        sum_g += g
        sum_gx += g * (np.float64(x_row[i]) - mean)
    return sum_g, sum_gx


@njit(cache=True, nogil=True)
def plane_gradient_sums(dy, x, mean, y, mask, masked, write_masked, start, stop,
                        sum_dy, sum_dy_centered):
    """Per-plane sums of the gradient reaching the normalisation, in float64.

    Parameters
    ----------
    dy : ndarray, shape (planes, size), float32 or float64, C-contiguous
    x : ndarray, shape of ``dy``, dtype of ``dy``
        The forward input.
    mean : ndarray, shape (channels,), float64
    y : ndarray, shape of ``dy``
        The forward output; read only when ``mask``.
    mask : bool
        When True the output went through a ReLU: the gradient is ``dy`` where
        ``y > 0``, else 0.
    masked : ndarray, shape of ``dy``
        Written with that masked gradient when ``write_masked`` (otherwise
        ignored: pass ``dy``).
    write_masked : bool
    start, stop : int
        The planes to compute.
    sum_dy, sum_dy_centered : ndarray, shape (planes,), float64, written
        ``Σ g`` and ``Σ g·(x - mean)`` over each plane, ``g`` the (masked) gradient.
    """
    channels = mean.size
    for p in range(start, stop):
        m = mean[p % channels]
        if not mask:
            sums = _row_gradient_sums(dy[p], x[p], m)
        elif write_masked:
            sums = _row_masked_gradient_sums_into(dy[p], y[p], x[p], m, masked[p])
        else:
            sums = _row_masked_gradient_sums(dy[p], y[p], x[p], m)
        sum_dy[p], sum_dy_centered[p] = sums


@njit(cache=True, nogil=True)
def plane_input_grad(dy, x, y, mask, mean, mean_dy, k, inv_std, weight, dx, start, stop):
    """``dx = ((g - mean_dy) - (x - mean) * k) * inv_std * weight`` per channel.

    ``g`` is ``dy``, or ``dy`` where ``y > 0`` (else 0) when ``mask``. With
    ``mean_dy = Σg / m`` and ``k = inv_std² Σ g·(x - mean) / m`` this is the
    batch-norm input gradient, in PyTorch's order of operations (so that
    float32 results round alike).

    Parameters
    ----------
    dy, x : ndarray, shape (planes, size), float32 or float64, C-contiguous
    y : ndarray, shape of ``dy``; read only when ``mask`` (pass ``dy`` otherwise)
    mask : bool
    mean, mean_dy, k, inv_std, weight : ndarray, shape (channels,), dtype of ``dy``
    dx : ndarray, shape of ``dy``, written
    start, stop : int
        The planes to compute.
    """
    channels = mean.size
    size = dy.shape[1]
    for p in range(start, stop):
        c = p % channels
        m, a, kc, s, w = mean[c], mean_dy[c], k[c], inv_std[c], weight[c]
        x_row, dy_row, dx_row = x[p], dy[p], dx[p]
        if mask:
            y_row = y[p]
            zero = dy.dtype.type(0)
            for i in range(size):
                g = dy_row[i] if y_row[i] > 0 else zero
                dx_row[i] = ((g - a) - (x_row[i] - m) * kc) * s * w
        else:
            for i in range(size):
                dx_row[i] = ((dy_row[i] - a) - (x_row[i] - m) * kc) * s * w
