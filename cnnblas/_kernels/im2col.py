"""im2col and col2im on NCHW arrays (Numba).

Column layout (one image at a time, the same as ``torch.nn.functional.unfold``):
``cols[n, r, l]`` with row ``r = (c * kernel_h + i) * kernel_w + j`` over input
channel ``c`` and kernel offset ``(i, j)``, and column ``l = oh * out_w + ow`` over
output positions, row-major. The entry is the input pixel

    x[n, c, oh * stride_h - pad_top + i * dilation_h,
            ow * stride_w - pad_left + j * dilation_w]

or 0 when that pixel lies in the zero padding. With this layout ``W @ cols[n]``
lands directly in NCHW order, with no transpose.

Geometry is passed as small tuples: ``kernel = (kernel_h, kernel_w)``,
``stride = (stride_h, stride_w)``, ``pad = (pad_top, pad_left)`` (the bottom and
right padding only enter through the output size), ``dilation = (dilation_h,
dilation_w)``, ``out = (out_h, out_w)``.
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


@numba.njit(cache=True, parallel=True)
def im2col_into(x, kernel, stride, pad, dilation, out, cols):
    """Fill ``cols`` (N, C*kh*kw, out_h*out_w) from ``x`` (N, C, H, W).

    Parallel over the N*C*kh*kw rows: each task writes one row, so there are
    no write conflicts. Every element of ``cols`` is written (zeros included).
    """
    n_images, channels, height, width = x.shape
    kernel_h, kernel_w = kernel
    stride_h, stride_w = stride
    pad_top, pad_left = pad
    dilation_h, dilation_w = dilation
    out_h, out_w = out
    rows = channels * kernel_h * kernel_w
    for task in prange(n_images * rows):
        n = task // rows
        row = task - n * rows
        c = row // (kernel_h * kernel_w)
        i = (row // kernel_w) % kernel_h
        j = row % kernel_w
        col_offset = j * dilation_w - pad_left
        ow_lo, ow_hi = _valid_range(col_offset, stride_w, width, out_w)
        dst = cols[n, row]
        for oh in range(out_h):
            ih = oh * stride_h - pad_top + i * dilation_h
            base = oh * out_w
            if ih < 0 or ih >= height:
                for ow in range(out_w):
                    dst[base + ow] = 0
                continue
            src = x[n, c, ih]
            for ow in range(ow_lo):
                dst[base + ow] = 0
            for ow in range(ow_lo, ow_hi):
                dst[base + ow] = src[ow * stride_w + col_offset]
            for ow in range(ow_hi, out_w):
                dst[base + ow] = 0


@numba.njit(cache=True, parallel=True)
def col2im_into(cols, kernel, stride, pad, dilation, out, x):
    """Sum ``cols`` (N, C*kh*kw, out_h*out_w) back into ``x`` (N, C, H, W).

    The adjoint of :func:`im2col_into`: overlapping windows add up; padding
    positions are dropped. ``x`` is overwritten (zeroed first). Parallel over
    the N*C image planes: each task owns one plane, so there are no races.
    """
    n_images, channels, height, width = x.shape
    kernel_h, kernel_w = kernel
    stride_h, stride_w = stride
    pad_top, pad_left = pad
    dilation_h, dilation_w = dilation
    out_h, out_w = out
    for task in prange(n_images * channels):
        n = task // channels
        c = task - n * channels
        plane = x[n, c]
        plane[:, :] = 0
        for i in range(kernel_h):
            for j in range(kernel_w):
                row = (c * kernel_h + i) * kernel_w + j
                src = cols[n, row]
                col_offset = j * dilation_w - pad_left
                ow_lo, ow_hi = _valid_range(col_offset, stride_w, width, out_w)
                for oh in range(out_h):
                    ih = oh * stride_h - pad_top + i * dilation_h
                    if ih < 0 or ih >= height:
                        continue
                    dst = plane[ih]
                    base = oh * out_w
                    for ow in range(ow_lo, ow_hi):
                        dst[ow * stride_w + col_offset] += src[base + ow]
