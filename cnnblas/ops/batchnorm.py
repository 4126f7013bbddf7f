"""Batch normalisation of NCHW arrays, optionally fused with a residual sum and a ReLU.

The statistics are per channel over ``(N, H, W)``. The four functions are the
steps of a training step, so that a caller (``cnnblas.nn.BatchNorm2d``, the
synchronised layer of :mod:`cnnblas.distributed`) can combine or reduce the
per-channel numbers between them:

1. :func:`batch_norm_statistics`: mean and biased variance (float64);
2. :func:`batch_norm_apply`: ``y = relu(x̂ * weight + bias + residual)`` with
   ``x̂ = (x - mean) * inv_std``, the sum and the ReLU optional, one pass;
3. :func:`batch_norm_grad_sums`: ``Σ g`` and ``Σ g·x̂`` (float64), ``g`` the
   output gradient, masked by ``y > 0`` when a ReLU was fused (and, for a
   residual sum, written out: it is also the residual's gradient);
4. :func:`batch_norm_input_grad`:
   ``dx = weight * inv_std * (g - Σg / m - x̂ Σ(g·x̂) / m)``, ``m`` the count.

Each step is one pass over memory in :mod:`cnnblas._kernels.batchnorm`, the
planes split over the thread setting's threads. The statistics are exact to
float64 rounding: each ``(n, c)`` plane's mean and squared deviations are
computed in two passes in cache, then combined per channel (the sum of the
planes' squared deviations plus ``H*W`` times their means' squared deviations).
Backward caches the input ``x`` (which the previous layer made anyway) and,
with a fused ReLU, the output ``y`` (which the next layer caches anyway): no
``x̂`` array is ever stored.
"""

from __future__ import annotations

import numpy as np

from cnnblas._kernels import batchnorm as _kernels
from cnnblas.checks import check_float_array, check_shape
from cnnblas.ops import parallel

#: Work estimate per element handed to :func:`cnnblas.ops.parallel.map_image_ranges`.
_FLOPS_PER_ELEMENT = 4


def _planes(x) -> np.ndarray:
    """``(N, C, H, W)`` as ``(N * C, H * W)``, C-contiguous (a view when it already was)."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x).reshape(n * c, h * w)


def _check_channel_vector(values, name: str, channels: int) -> None:
    if not isinstance(values, np.ndarray) or values.shape != (channels,):
        raise ValueError(
            f"{name} must be an ndarray of shape ({channels},) (one value per channel), got "
            f"{getattr(values, 'shape', type(values).__name__)}"
        )


def _per_channel(values, dtype) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=dtype)


def _run(kernel, planes: int, elements: int) -> None:
    """``kernel(start, stop)`` over ``range(planes)``, split across the threads."""
    parallel.map_image_ranges(lambda start, stop, serial: kernel(start, stop), planes,
                              flops=_FLOPS_PER_ELEMENT * elements)


def batch_norm_statistics(x):
    """Per-channel mean and biased variance of ``x`` over (N, H, W), in float64.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64, not empty

    Returns
    -------
    mean, var : ndarray, shape (C,), float64
        ``var`` is the biased variance ``Σ (x - mean)² / (N*H*W)``.
    """
    check_float_array(x, "x", ndim=4)
    n, c, h, w = x.shape
    planes = _planes(x)
    plane_mean = np.empty(n * c, np.float64)
    plane_m2 = np.empty(n * c, np.float64)
    _run(lambda start, stop: _kernels.plane_moments(planes, start, stop, plane_mean, plane_m2),
         n * c, x.size)
    plane_mean = plane_mean.reshape(n, c)
    mean = plane_mean.mean(axis=0)
    spread = np.square(plane_mean - mean).sum(axis=0)
    var = (plane_m2.reshape(n, c).sum(axis=0) + (h * w) * spread) / (n * h * w)
    return mean, var


def batch_norm_apply(x, mean, inv_std, weight, bias, residual=None, relu=False):
    """``y = relu((x - mean) * inv_std * weight + bias + residual)`` per channel, one pass.

    Computed in ``x``'s dtype as ``((x - mean) * inv_std) * weight + bias``:
    centring first keeps a large mean from cancelling digits (``x * scale +
    shift`` would lose them when ``|mean| >> std``).

    Training uses the batch statistics, evaluation the running ones
    (``inv_std = 1 / sqrt(running_var + eps)``).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    mean, inv_std, weight, bias : ndarray, shape (C,), any float dtype
    residual : ndarray, shape and dtype of ``x``, optional
        Added after the affine map (a residual block's shortcut).
    relu : bool, default False
        Apply ``max(·, 0)`` last (NaN propagates).

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    """
    check_float_array(x, "x", ndim=4)
    c = x.shape[1]
    for name, values in [("mean", mean), ("inv_std", inv_std), ("weight", weight),
                         ("bias", bias)]:
        _check_channel_vector(values, name, c)
    vectors = [_per_channel(values, x.dtype) for values in (mean, inv_std, weight, bias)]
    if residual is not None:
        check_float_array(residual, "residual", dtype=x.dtype)
        check_shape(residual, x.shape, "residual (it must match x)")
    planes = _planes(x)
    residual_planes = planes if residual is None else _planes(residual)
    y = np.empty(x.shape, x.dtype)
    y_planes = y.reshape(planes.shape)
    _run(lambda start, stop: _kernels.normalize_planes(
        planes, *vectors, residual_planes, residual is not None, bool(relu), y_planes,
        start, stop), planes.shape[0], x.size)
    return y


def _check_backward(dy, x, y):
    check_float_array(x, "x", ndim=4)
    check_float_array(dy, "dy", dtype=x.dtype)
    check_shape(dy, x.shape, "dy (it must match x)")
    if y is not None:
        check_float_array(y, "y", dtype=x.dtype)
        check_shape(y, x.shape, "y (it must match x)")


def batch_norm_grad_sums(dy, x, mean, y=None, masked_out=False):
    """Per-channel ``Σ g`` and ``Σ g·(x - mean)`` over (N, H, W), in float64.

    ``g`` is ``dy``, or, when ``y`` (the forward output of a fused ReLU) is
    given, ``dy`` where ``y > 0`` and exactly 0 elsewhere. ``Σ g`` is the bias
    gradient; ``inv_std * Σ g·(x - mean)`` is ``Σ g·x̂``, the weight gradient.

    Parameters
    ----------
    dy : ndarray, shape (N, C, H, W), float32 or float64
    x : ndarray, shape and dtype of ``dy``
        The forward input.
    mean : ndarray, shape (C,)
        The batch mean the forward pass used (float64 from
        :func:`batch_norm_statistics`).
    y : ndarray, shape and dtype of ``dy``, optional
        The forward output, when a ReLU was fused.
    masked_out : bool, default False
        With ``y``: also return ``g`` as an array (a fused residual sum's input
        gradient).

    Returns
    -------
    sum_dy, sum_dy_centered : ndarray, shape (C,), float64
    masked : ndarray, shape and dtype of ``dy``, only when ``masked_out``
    """
    _check_backward(dy, x, y)
    if masked_out and y is None:
        raise ValueError("masked_out=True needs y, the output of the fused ReLU")
    n, c = x.shape[:2]
    _check_channel_vector(mean, "mean", c)
    dy_planes, x_planes = _planes(dy), _planes(x)
    y_planes = dy_planes if y is None else _planes(y)
    masked = np.empty(dy.shape, dy.dtype) if masked_out else dy
    masked_planes = masked.reshape(dy_planes.shape) if masked_out else dy_planes
    mean = _per_channel(mean, np.float64)
    sums = np.empty((2, n * c), np.float64)
    _run(lambda start, stop: _kernels.plane_gradient_sums(
        dy_planes, x_planes, mean, y_planes, y is not None, masked_planes, bool(masked_out),
        start, stop, sums[0], sums[1]), n * c, 2 * x.size)
    sum_dy, sum_dy_centered = sums.reshape(2, n, c).sum(axis=1)
    return (sum_dy, sum_dy_centered, masked) if masked_out else (sum_dy, sum_dy_centered)


def batch_norm_input_grad(dy, x, mean, inv_std, weight, sum_dy, sum_dy_x_hat, count, y=None):
    """Gradient of the normalisation with respect to its input ``x``.

    ``dx = weight * inv_std * (g - Σg / count - x̂ · Σ(g·x̂) / count)`` with
    ``x̂ = (x - mean) * inv_std``; ``g`` as in :func:`batch_norm_grad_sums`.
    Computed per element as ``(g - Σg / count - (x - mean) * k) * inv_std *
    weight``, ``k = inv_std Σ(g·x̂) / count``, as PyTorch does.

    Parameters
    ----------
    dy, x : ndarray, shape (N, C, H, W), float32 or float64, same dtype
    mean, inv_std, weight : ndarray, shape (C,)
        As the forward pass used them.
    sum_dy, sum_dy_x_hat : ndarray, shape (C,)
        ``Σ g`` and ``Σ g·x̂`` over the ``count`` values the statistics came
        from (all ranks' for synchronised BatchNorm).
    count : int or float
        Values per channel behind the statistics, > 0.
    y : ndarray, optional
        The forward output of a fused ReLU (``g`` is then masked by ``y > 0``).

    Returns
    -------
    dx : ndarray, shape and dtype of ``x``
    """
    _check_backward(dy, x, y)
    c = x.shape[1]
    for name, values in [("mean", mean), ("inv_std", inv_std), ("weight", weight),
                         ("sum_dy", sum_dy), ("sum_dy_x_hat", sum_dy_x_hat)]:
        _check_channel_vector(values, name, c)
    if not count > 0:
        raise ValueError(f"count must be > 0, got {count!r}")
    inv_std64 = np.asarray(inv_std, np.float64)
    k = np.asarray(sum_dy_x_hat, np.float64) * inv_std64 / count  # Σ g·(x - mean) inv_std² / m
    vectors = [_per_channel(values, x.dtype) for values in (
        mean, np.asarray(sum_dy, np.float64) / count, k, inv_std, weight)]
    dy_planes, x_planes = _planes(dy), _planes(x)
    y_planes = dy_planes if y is None else _planes(y)
    dx = np.empty(x.shape, x.dtype)
    dx_planes = dx.reshape(x_planes.shape)
    _run(lambda start, stop: _kernels.plane_input_grad(
        dy_planes, x_planes, y_planes, y is not None, *vectors, dx_planes, start, stop),
        x_planes.shape[0], 2 * x.size)
    return dx


def run_every_kernel(x) -> None:
    """Run each batch-norm kernel once on ``x`` (N, C, H, W): compiles them, or loads
    them from the cache, for ``x``'s dtype (:func:`cnnblas.info.warm_up`)."""
    mean, var = batch_norm_statistics(x)
    inv_std = 1 / np.sqrt(var + 1e-5)
    ones = np.ones(x.shape[1])
    y = batch_norm_apply(x, mean, inv_std, ones, ones, x, relu=True)
    sum_dy, sum_centered, masked = batch_norm_grad_sums(x, x, mean, y, masked_out=True)
    batch_norm_input_grad(masked, x, mean, inv_std, ones, sum_dy, sum_centered, x.size, y)


__all__ = ["batch_norm_statistics", "batch_norm_apply", "batch_norm_grad_sums",
           "batch_norm_input_grad"]
