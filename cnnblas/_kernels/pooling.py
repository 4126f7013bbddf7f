"""Numba kernels for 2-D max and average pooling, forward and backward.

Every kernel works on a stack of independent planes ``x`` of shape
``(planes, in_h, in_w)`` (``planes = N * C`` of an NCHW tensor viewed without a
copy). The max-pooling kernels compute a range of planes in the calling
thread with the GIL released (the caller splits the planes across threads);
the average-pooling kernels run one plane per ``prange`` iteration. A plane's
backward pass only writes into its own plane of ``dx``, so overlapping windows
(stride < kernel) accumulate without races.

Window geometry is passed as small ``(h, w)`` tuples of ints:

- ``kernel = (kernel_h, kernel_w)``
- ``stride = (stride_h, stride_w)``
- ``padding = (pad_top, pad_left)``: implicit padding on both sides of each
  axis (the same amount before and after). A window is clipped to the real
  input, so padded positions are never read. For max pooling they act as
  ``-inf`` (never selected); for average pooling they act as zeros that still
  count in the divisor (PyTorch's default ``count_include_pad=True``). The
  divisor is the window's size clipped to the padded image: the full
  ``kernel_h * kernel_w`` except for the partial last windows of ceil mode,
  whose positions past the padded image do not count.
- ``out_size = (out_h, out_w)``.

The callers in :mod:`cnnblas.ops.pooling` validate shapes, dtypes and sizes and
pass C-contiguous arrays. Even so, no kernel reads or writes out of bounds: the
window is clipped to the input, and an arg-max index outside the plane is
skipped by the backward pass.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _window(position, stride, pad, kernel, size):
    """[start, end) of output ``position``'s window along one axis, clipped to
    the real input ``range(size)`` (empty when it lies wholly in the padding)."""
    first = position * stride - pad
    return max(first, 0), min(first + kernel, size)


@njit(cache=True, inline="always")
def _padded_extent(position, stride, pad, kernel, size):
    """Length of output ``position``'s window along one axis clipped to the
    padded image ``[-pad, size + pad)``: ``kernel`` except for a ceil-mode
    window that runs past the padding."""
    first = position * stride - pad
    return min(first + kernel, size + pad) - first


@njit(cache=True, inline="always")
def _max_pool_plane(x, kernel, stride, padding, y, argmax, plane):
    """Any window geometry: one plane of :func:`max_pool2d_forward_planes`, element by element."""
    in_h, in_w = x.shape[1], x.shape[2]
    kernel_h, kernel_w = kernel
    stride_h, stride_w = stride
    pad_top, pad_left = padding
    out_h, out_w = y.shape[1], y.shape[2]
    for oh in range(out_h):
        h_start, h_end = _window(oh, stride_h, pad_top, kernel_h, in_h)
        for ow in range(out_w):
            w_start, w_end = _window(ow, stride_w, pad_left, kernel_w, in_w)
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


@njit(cache=True, inline="always")
def _max_pool_plane_2x2(x, y, argmax, plane):
    """2x2 windows, stride 2, no padding: one plane, vectorised along each output row.

    Compares with a plain ``>``, so it is exact only for NaN-free planes;
    returns True when the plane holds a NaN (the caller then redoes the plane
    with :func:`_max_pool_plane`). The window offsets are int32 on purpose:
    mixing them with 64-bit arithmetic stopped LLVM from vectorising the row
    loop (4x slower on LeNet's first pooling layer; see benchmarks/LOG.md).
    """
    in_w = x.shape[2]
    out_h, out_w = y.shape[1], y.shape[2]
    right, below, diagonal = np.int32(1), np.int32(in_w), np.int32(in_w + 1)
    saw_nan = False
    for oh in range(out_h):
        upper = x[plane, 2 * oh]
        lower = x[plane, 2 * oh + 1]
        y_row = y[plane, oh]
        argmax_row = argmax[plane, oh]
        row_start = np.int32(2 * oh * in_w)
        for ow in range(out_w):
            a, b = upper[2 * ow], upper[2 * ow + 1]
            c, d = lower[2 * ow], lower[2 * ow + 1]
            saw_nan |= (a != a) | (b != b) | (c != c) | (d != d)
            best, offset = a, np.int32(0)
            take = b > best
            best = b if take else best
            offset = right if take else offset
            take = c > best
            best = c if take else best
            offset = below if take else offset
            take = d > best
            best = d if take else best
            offset = diagonal if take else offset
            y_row[ow] = best
            argmax_row[ow] = row_start + np.int32(2 * ow) + offset
    return saw_nan


@njit(cache=True, nogil=True)
def max_pool2d_forward_planes(x, kernel, stride, padding, y, argmax, start, stop):
    """Max pooling of planes [start, stop), with the flat arg-max of every window.

    Parameters
    ----------
    x : ndarray, shape (planes, in_h, in_w), float32 or float64, C-contiguous
    kernel, stride, padding : tuple of int
        See the module docstring; ``out_size`` is ``y``'s last two axes.
    y : ndarray, shape (planes, out_h, out_w), dtype of ``x``, written
    argmax : ndarray, shape (planes, out_h, out_w), int64, written
        Flat index ``h * in_w + w`` into the input plane of the selected
        element. Ties go to the first maximum in row-major window order; a NaN
        wins over any number (the first NaN, so NaN propagates as in PyTorch).
        A window with no element inside the input (impossible after validation)
        yields ``-inf`` and index ``-1``.
    start, stop : int
        The planes to compute; the GIL is released, so Python threads can
        each take a range.

    The common 2x2, stride-2, unpadded case takes a vectorised path for every
    NaN-free plane; the result is the same element for element.
    """
    out_h, out_w = y.shape[1], y.shape[2]
    two_by_two = (kernel[0] == 2 and kernel[1] == 2 and stride[0] == 2 and stride[1] == 2
                  and padding[0] == 0 and padding[1] == 0
                  and 2 * out_h <= x.shape[1] and 2 * out_w <= x.shape[2]
                  and x.shape[1] * x.shape[2] < 2**31)  # its offsets are int32
    for plane in range(start, stop):
        if not two_by_two or _max_pool_plane_2x2(x, y, argmax, plane):
            _max_pool_plane(x, kernel, stride, padding, y, argmax, plane)


@njit(cache=True, nogil=True)
def max_pool2d_backward_planes(dy, argmax, dx, start, stop):
    """Scatter ``dy`` to the arg-max positions recorded by the forward pass.

    Parameters
    ----------
    dy : ndarray, shape (planes, out_h, out_w), float32 or float64
    argmax : ndarray, shape (planes, out_h, out_w), int64
        Flat indices into an ``in_h * in_w`` plane; others are skipped.
    dx : ndarray, shape (planes, in_h * in_w), dtype of ``dy``, written
        Sum of the gradients routed to each input element (an element that is
        the maximum of several overlapping windows receives all of them).
    start, stop : int
        The planes to compute (GIL released, as in the forward pass).
    """
    out_h, out_w = dy.shape[1], dy.shape[2]
    plane_size = dx.shape[1]
    for plane in range(start, stop):
        dx_plane = dx[plane]
        dx_plane[:] = 0
        for oh in range(out_h):
            for ow in range(out_w):
                index = argmax[plane, oh, ow]
                if 0 <= index < plane_size:
                    dx_plane[index] += dy[plane, oh, ow]


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
        Sum of the window's elements inside the input divided by the window's
        size within the padded image (``kernel_h * kernel_w`` unless a
        ceil-mode window runs past it). The sum is accumulated in float64.
    """
    planes, in_h, in_w = x.shape
    kernel_h, kernel_w = kernel
    stride_h, stride_w = stride
    pad_top, pad_left = padding
    out_h, out_w = out_size
    y = np.empty((planes, out_h, out_w), dtype=x.dtype)
    for plane in prange(planes):
        for oh in range(out_h):
            h_start, h_end = _window(oh, stride_h, pad_top, kernel_h, in_h)
            count_h = _padded_extent(oh, stride_h, pad_top, kernel_h, in_h)
            for ow in range(out_w):
                w_start, w_end = _window(ow, stride_w, pad_left, kernel_w, in_w)
                count = count_h * _padded_extent(ow, stride_w, pad_left, kernel_w, in_w)
                total = 0.0
                for h in range(h_start, h_end):
                    for w in range(w_start, w_end):
                        total += x[plane, h, w]
                y[plane, oh, ow] = total / count
    return y


@njit(cache=True, parallel=True)
def avg_pool2d_backward(dy, kernel, stride, padding, in_size):
    """Spread each ``dy / divisor`` over its window's real inputs (divisor as in the forward pass).

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
    dx = np.zeros((planes, in_h, in_w), dtype=dy.dtype)
    for plane in prange(planes):
        for oh in range(out_h):
            h_start, h_end = _window(oh, stride_h, pad_top, kernel_h, in_h)
            count_h = _padded_extent(oh, stride_h, pad_top, kernel_h, in_h)
            for ow in range(out_w):
                w_start, w_end = _window(ow, stride_w, pad_left, kernel_w, in_w)
                count = count_h * _padded_extent(ow, stride_w, pad_left, kernel_w, in_w)
                share = dy[plane, oh, ow] / count
                for h in range(h_start, h_end):
                    for w in range(w_start, w_end):
                        dx[plane, h, w] += share
    return dx
