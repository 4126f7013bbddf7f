"""im2col and col2im on NCHW arrays (Numba).

Column layout: ``cols[r, n, l]``, shape (C*kh*kw, N, L), with row
``r = (c * kernel_h + i) * kernel_w + j`` over input channel ``c`` and kernel
offset ``(i, j)``, image ``n``, and column ``l = oh * out_w + ow`` over output
positions, row-major. Viewed as a (C*kh*kw, N*L) matrix it holds the whole
batch's windows side by side, so one GEMM serves the whole batch. The public
:func:`cnnblas.im2col` passes a transposed view of an (N, C*kh*kw, L) array,
which gives exactly ``torch.nn.functional.unfold``'s layout. The entry is the
input pixel

    x[n, c, oh * stride_h - pad_top + i * dilation_h,
            ow * stride_w - pad_left + j * dilation_w]

or 0 when that pixel lies in the zero padding.

Geometry is passed as small tuples: ``kernel = (kernel_h, kernel_w)``,
``stride = (stride_h, stride_w)``, ``pad = (pad_top, pad_left)`` (the bottom and
right padding only enter through the output size), ``dilation = (dilation_h,
dilation_w)``, ``out = (out_h, out_w)``.

Each kernel comes in two drivers around one inlined task body: ``*_into``
spreads the tasks over Numba's threads (``prange``); ``*_into_serial`` runs
them in the calling thread with the GIL released, for the engine's
batch-parallel mode where each Python worker thread owns a slice of images.
"""

from __future__ import annotations

import numba
from numba import prange


@numba.njit(cache=True, inline="always")
def _valid_range(offset, stride, size, out_size):
    """Output indices ``o`` with ``0 <= o * stride + offset < size``, as ``[lo, hi)``."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    last = size - 1 - offset
    hi = 0 if last < 0 else min(out_size, last // stride + 1)
    if hi < lo:
        hi = lo
    return lo, hi


@numba.njit(cache=True, inline="always")
def _im2col_task(x, kernel, stride, pad, dilation, out, cols, task):
    """Fill one row of one image: ``cols[row, n]`` with ``task = row * N + n``."""
    n_images, channels, height, width = x.shape
    kernel_h, kernel_w = kernel
    stride_h, stride_w = stride
    pad_top, pad_left = pad
    dilation_h, dilation_w = dilation
    out_h, out_w = out
    row = task // n_images
    n = task - row * n_images
    c = row // (kernel_h * kernel_w)
    i = (row // kernel_w) % kernel_h
    j = row % kernel_w
    row_offset = i * dilation_h - pad_top
    col_offset = j * dilation_w - pad_left
    oh_lo, oh_hi = _valid_range(row_offset, stride_h, height, out_h)
    ow_lo, ow_hi = _valid_range(col_offset, stride_w, width, out_w)
    first = ow_lo * stride_w + col_offset  # input column of output column ow_lo
    count = ow_hi - ow_lo
    dst = cols[row, n]
    dst[: oh_lo * out_w] = 0  # output rows whose window row is in the padding
    dst[oh_hi * out_w :] = 0
    for oh in range(oh_lo, oh_hi):
        dst_row = dst[oh * out_w : (oh + 1) * out_w]
        dst_row[:ow_lo] = 0
        dst_row[ow_hi:] = 0
        src_row = x[n, c, oh * stride_h + row_offset]
        # Index slices with the bare loop counter: no negative-index checks,
        # so LLVM vectorises the unit-stride copy.
        inner = dst_row[ow_lo:ow_hi]
        if stride_w == 1:
            src = src_row[first : first + count]
            for t in range(count):
                inner[t] = src[t]
        else:
            for t in range(count):
                inner[t] = src_row[first + t * stride_w]


@numba.njit(cache=True, parallel=True)
def im2col_into(x, kernel, stride, pad, dilation, out, cols):
    """Fill ``cols`` (C*kh*kw, N, out_h*out_w) from ``x`` (N, C, H, W).

    Parallel over the C*kh*kw*N rows: each task writes one row, so there are
    no write conflicts. Every element of ``cols`` is written (zeros included).
    """
    for task in prange(cols.shape[0] * cols.shape[1]):
        _im2col_task(x, kernel, stride, pad, dilation, out, cols, task)


@numba.njit(cache=True, nogil=True)
def im2col_into_serial(x, kernel, stride, pad, dilation, out, cols):
    """:func:`im2col_into` in the calling thread, without the GIL."""
    for task in range(cols.shape[0] * cols.shape[1]):
        _im2col_task(x, kernel, stride, pad, dilation, out, cols, task)


@numba.njit(cache=True, inline="always")
def _col2im_task(cols, kernel, stride, pad, dilation, out, x, task):
    """Rebuild one image plane ``x[n, c]`` with ``task = n * C + c``."""
    n_images, channels, height, width = x.shape
    kernel_h, kernel_w = kernel
    stride_h, stride_w = stride
    pad_top, pad_left = pad
    dilation_h, dilation_w = dilation
    out_h, out_w = out
    n = task // channels
    c = task - n * channels
    plane = x[n, c]
    plane[:, :] = 0
    for i in range(kernel_h):
        row_offset = i * dilation_h - pad_top
        oh_lo, oh_hi = _valid_range(row_offset, stride_h, height, out_h)
        for j in range(kernel_w):
            src = cols[(c * kernel_h + i) * kernel_w + j, n]
            col_offset = j * dilation_w - pad_left
            ow_lo, ow_hi = _valid_range(col_offset, stride_w, width, out_w)
            first = ow_lo * stride_w + col_offset
            count = ow_hi - ow_lo
            for oh in range(oh_lo, oh_hi):
                src_row = src[oh * out_w + ow_lo : oh * out_w + ow_hi]
                dst_row = plane[oh * stride_h + row_offset]
                if stride_w == 1:
                    dst = dst_row[first : first + count]
                    for t in range(count):
                        dst[t] += src_row[t]
                else:
                    for t in range(count):
                        dst_row[first + t * stride_w] += src_row[t]


@numba.njit(cache=True, parallel=True)
def col2im_into(cols, kernel, stride, pad, dilation, out, x):
    """Sum ``cols`` (C*kh*kw, N, out_h*out_w) back into ``x`` (N, C, H, W).

    The adjoint of :func:`im2col_into`: overlapping windows add up; padding
    positions are dropped. ``x`` is overwritten (zeroed first). Parallel over
    the N*C image planes: each task owns one plane, so there are no races.
    """
    for task in prange(x.shape[0] * x.shape[1]):
        _col2im_task(cols, kernel, stride, pad, dilation, out, x, task)


@numba.njit(cache=True, nogil=True)
def col2im_into_serial(cols, kernel, stride, pad, dilation, out, x):
    """:func:`col2im_into` in the calling thread, without the GIL."""
    for task in range(x.shape[0] * x.shape[1]):
        _col2im_task(cols, kernel, stride, pad, dilation, out, x, task)
