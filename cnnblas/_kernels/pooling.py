"""Numba kernels for 2-D max and average pooling, forward and backward.

Every kernel works on a stack of independent planes ``x`` of shape
``(planes, in_h, in_w)`` (``planes = N * C`` of an NCHW tensor viewed without a
copy) and runs one plane per ``prange`` iteration. A plane's backward pass only
writes into its own plane of ``dx``, so overlapping windows (stride < kernel)
accumulate without races.

Window geometry is passed as small ``(h, w)`` tuples of ints:

- ``kernel = (kernel_h, kernel_w)``
- ``stride = (stride_h, stride_w)``
- ``padding = (pad_top, pad_left)``: implicit padding before each axis. Padding
  after the input is implied by ``out_size``: a window is clipped to the real
  input, so padded positions are never read. For max pooling they act as
  ``-inf`` (never selected); for average pooling they act as zeros that still
  count in the divisor ``kernel_h * kernel_w`` (PyTorch's default
  ``count_include_pad=True``).
- ``out_size = (out_h, out_w)``.

The callers in :mod:`cnnblas.ops.pooling` validate shapes, dtypes and sizes and
pass C-contiguous arrays. Even so, no kernel reads or writes out of bounds: the
window is clipped to the input, and an arg-max index outside the plane is
skipped by the backward pass.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def max_pool2d_forward(x, kernel, stride, padding, out_size):
    """Max pooling of each plane, with the flat arg-max of every window.

    Parameters
    ----------
    x : ndarray, shape (planes, in_h, in_w), float32 or float64, C-contiguous
    kernel, stride, padding, out_size : tuple of int
        See the module docstring.

    Returns
    -------
    y : ndarray, shape (planes, out_h, out_w), dtype of ``x``
    argmax : ndarray, shape (planes, out_h, out_w), int64
        Flat index ``h * in_w + w`` into the input plane of the selected
        element. Ties go to the first maximum in row-major window order; a NaN
        wins over any number (the first NaN, so NaN propagates as in PyTorch).
        A window with no element inside the input (impossible after validation)
        yields ``-inf`` and index ``-1``.
    """
    planes, in_h, in_w = x.shape
    kernel_h, kernel_w = kernel
    stride_h, stride_w = stride
    pad_top, pad_left = padding
    out_h, out_w = out_size
    y = np.empty((planes, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((planes, out_h, out_w), dtype=np.int64)
    for plane in prange(planes):
        for oh in range(out_h):
            top = oh * stride_h - pad_top
            h_start = max(top, 0)
            h_end = min(top + kernel_h, in_h)
            for ow in range(out_w):
                left = ow * stride_w - pad_left
                w_start = max(left, 0)
                w_end = min(left + kernel_w, in_w)
                if h_start >= h_end or w_start >= w_end:
                    y[plane, oh, ow] = -np.inf
                    argmax[plane, oh, ow] = -1
                    continue
                best = x[plane, h_start, w_start]
                best_index = h_start * in_w + w_start
                for h in range(h_start, h_end):
                    for w in range(w_start, w_end):
                        value = x[plane, h, w]
                        # Strict ">" keeps the first maximum on ties; the NaN
                        # test (value != value) lets the first NaN win once.
                        if value > best or (value != value and best == best):
                            best = value
                            best_index = h * in_w + w
                y[plane, oh, ow] = best
                argmax[plane, oh, ow] = best_index
    return y, argmax


@njit(cache=True, parallel=True)
def max_pool2d_backward(dy, argmax, in_size):
    """Scatter ``dy`` to the arg-max positions recorded by the forward pass.

    Parameters
    ----------
    dy : ndarray, shape (planes, out_h, out_w), float32 or float64
    argmax : ndarray, shape (planes, out_h, out_w), int64
        Flat indices into an ``in_h * in_w`` plane; others are skipped.
    in_size : tuple of int
        ``(in_h, in_w)``.

    Returns
    -------
    dx : ndarray, shape (planes, in_h, in_w), dtype of ``dy``
        Sum of the gradients routed to each input element (an element that is
        the maximum of several overlapping windows receives all of them).
    """
    planes, out_h, out_w = dy.shape
    in_h, in_w = in_size
    plane_size = in_h * in_w
    dx = np.zeros((planes, plane_size), dtype=dy.dtype)
    for plane in prange(planes):
        for oh in range(out_h):
            for ow in range(out_w):
                index = argmax[plane, oh, ow]
                if 0 <= index < plane_size:
                    dx[plane, index] += dy[plane, oh, ow]
    return dx.reshape((planes, in_h, in_w))


@njit(cache=True, parallel=True)
def avg_pool2d_forward(x, kernel, stride, padding, out_size):
    """Average pooling of each plane, padding counted as zeros.

    Parameters
    ----------
    x : ndarray, shape (planes, in_h, in_w), float32 or float64, C-contiguous
    kernel, stride, padding, out_size : tuple of int
        See the module docstring.

    Returns
    -------
    y : ndarray, shape (planes, out_h, out_w), dtype of ``x``
        Sum of the window's elements inside the input divided by
        ``kernel_h * kernel_w``. The sum is accumulated in float64.
    """
    planes, in_h, in_w = x.shape
    kernel_h, kernel_w = kernel
    stride_h, stride_w = stride
    pad_top, pad_left = padding
    out_h, out_w = out_size
    inv_count = 1.0 / (kernel_h * kernel_w)
    y = np.empty((planes, out_h, out_w), dtype=x.dtype)
    for plane in prange(planes):
        for oh in range(out_h):
            top = oh * stride_h - pad_top
            h_start = max(top, 0)
            h_end = min(top + kernel_h, in_h)
            for ow in range(out_w):
                left = ow * stride_w - pad_left
                w_start = max(left, 0)
                w_end = min(left + kernel_w, in_w)
                total = 0.0
                for h in range(h_start, h_end):
                    for w in range(w_start, w_end):
                        total += x[plane, h, w]
                y[plane, oh, ow] = total * inv_count
    return y


@njit(cache=True, parallel=True)
def avg_pool2d_backward(dy, kernel, stride, padding, in_size):
    """Spread each ``dy / (kernel_h * kernel_w)`` over its window's real inputs.

    Parameters
    ----------
    dy : ndarray, shape (planes, out_h, out_w), float32 or float64
    kernel, stride, padding : tuple of int
        See the module docstring.
    in_size : tuple of int
        ``(in_h, in_w)``.

    Returns
    -------
    dx : ndarray, shape (planes, in_h, in_w), dtype of ``dy``
    """
    planes, out_h, out_w = dy.shape
    in_h, in_w = in_size
    kernel_h, kernel_w = kernel
    stride_h, stride_w = stride
    pad_top, pad_left = padding
    inv_count = 1.0 / (kernel_h * kernel_w)
    dx = np.zeros((planes, in_h, in_w), dtype=dy.dtype)
    for plane in prange(planes):
        for oh in range(out_h):
            top = oh * stride_h - pad_top
            h_start = max(top, 0)
            h_end = min(top + kernel_h, in_h)
            for ow in range(out_w):
                left = ow * stride_w - pad_left
                w_start = max(left, 0)
                w_end = min(left + kernel_w, in_w)
                share = dy[plane, oh, ow] * inv_count
                for h in range(h_start, h_end):
                    for w in range(w_start, w_end):
                        dx[plane, h, w] += share
    return dx
