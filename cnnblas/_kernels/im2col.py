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

The row kernels take the geometry as small tuples: ``kernel = (kernel_h, kernel_w)``,
``stride = (stride_h, stride_w)``, ``pad = (pad_top, pad_left)`` (the bottom and
right padding only enter through the output size), ``dilation = (dilation_h,
dilation_w)``, ``out = (out_h, out_w)``.

im2col is a gather: :func:`window_offsets` lists, once per geometry, where
each window element of each output position lies in the zero-padded plane,
and the kernel reads the plane at those offsets. That keeps the inner loop
long (out_h*out_w) whatever the row width or stride; per-row copies ran at
2-4 GB/s on 8-to-14-wide rows. col2im adds the columns back: by rows
(:func:`col2im_into`, vectorised, for long unit-stride rows) or by the same
offsets (:func:`col2im_scatter_into`, for short or strided rows). The gather
kernels take ``(offsets, pad, padded)`` from :func:`window_offsets` instead of
the geometry tuples. Every kernel expects C-contiguous ``x`` (the callers in
:mod:`cnnblas.ops.conv` guarantee it): a plane of another layout would be
flattened into a copy.

Each kernel comes in two drivers around one inlined task body: ``*_into``
spreads the tasks over Numba's threads (``prange``); ``*_into_serial`` runs
them in the calling thread with the GIL released, for the engine's
batch-parallel mode where each Python worker thread owns a slice of images.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from cnnblas._kernels.planes import copy_from_padded, copy_into_padded


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
def _padded_plane(x, n, c, pad, padded, plane):
    """The (n, c) input plane, flat and zero-padded to ``padded = (padded_h, padded_w)``.

    Without padding (an empty ``plane``, see :func:`_plane_size`) the image
    plane itself is returned; otherwise its pixels are copied into the
    interior of ``plane``, a flat scratch buffer whose border the caller keeps
    at zero.
    """
    if plane.size == 0:
        return x[n, c].ravel()
    copy_into_padded(x[n, c], plane, pad[0], pad[1], padded[1])
    return plane


@numba.njit(cache=True, inline="always")
def _im2col_task(x, offsets, pad, padded, plane, cols, task):
    """Fill the rows of one (channel, image) pair: ``cols[c*R : (c+1)*R, n]``,
    ``task = c * N + n``, by gathering the padded plane at ``offsets``."""
    n_images = x.shape[0]
    n_offsets, n_positions = offsets.shape
    c = task // n_images
    n = task - c * n_images
    source = _padded_plane(x, n, c, pad, padded, plane)
    for r in range(n_offsets):
        dst = cols[c * n_offsets + r, n]
        at = offsets[r]
        # ``at`` is unsigned: no negative-index wraparound, so LLVM emits a
        # plain gather, about 5x faster than with signed offsets (see benchmarks/LOG.md).
        for l in range(n_positions):
            dst[l] = source[at[l]]


@numba.njit(cache=True, inline="always")
def _plane_size(x_shape, padded):
    """Elements of the scratch plane: 0 when there is no padding (the image plane
    itself is used), the padded plane's size otherwise."""
    unpadded = padded[0] == x_shape[2] and padded[1] == x_shape[3]
    return 0 if unpadded else padded[0] * padded[1]


@numba.njit(cache=True, parallel=True)
def im2col_into(x, offsets, pad, padded, cols):
    """Fill ``cols`` (C*kh*kw, N, out_h*out_w) from ``x`` (N, C, H, W).

    ``offsets`` (kh*kw, out_h*out_w), unsigned: flat index into the padded
    plane of window element ``(i, j)`` (row ``i*kw + j``) for each output
    position (see :func:`window_offsets`); ``pad = (pad_top, pad_left)``;
    ``padded = (padded_h, padded_w)``. Parallel over the C*N (channel, image)
    pairs: each task writes its own rows, so there are no write conflicts.
    Every element of ``cols`` is written (zeros included).
    """
    for task in prange(x.shape[0] * x.shape[1]):
        # One scratch plane per task: tasks run concurrently.
        plane = np.zeros(_plane_size(x.shape, padded), x.dtype)
        _im2col_task(x, offsets, pad, padded, plane, cols, task)


@numba.njit(cache=True, nogil=True)
def im2col_into_serial(x, offsets, pad, padded, cols):
    """:func:`im2col_into` in the calling thread, without the GIL."""
    plane = np.zeros(_plane_size(x.shape, padded), x.dtype)
    for task in range(x.shape[0] * x.shape[1]):
        _im2col_task(x, offsets, pad, padded, plane, cols, task)


def window_offsets(kernel, stride, pad, dilation, out, size):
    """Gather offsets of every window element into the zero-padded image plane.

    Parameters
    ----------
    kernel, stride, pad, dilation, out : (h, w) tuples of int
        As in the module docstring.
    size : (height, width) of the input plane.

    Returns
    -------
    offsets : ndarray, shape (kh*kw, out_h*out_w), uint32 (uint64 for planes
        of 2**32 elements or more)
        ``offsets[i*kw + j, oh*out_w + ow] = (oh*stride_h + i*dilation_h) *
        padded_w + ow*stride_w + j*dilation_w``.
    padded : (padded_h, padded_w)
        The padded plane holds the image at (pad_top, pad_left) and every
        window element, so no offset reaches past its end.
    """
    (kernel_h, kernel_w), (stride_h, stride_w) = kernel, stride
    (dilation_h, dilation_w), (out_h, out_w) = dilation, out
    rows = np.arange(out_h)[:, None] * stride_h + np.arange(kernel_h)[None, :] * dilation_h
    columns = np.arange(out_w)[:, None] * stride_w + np.arange(kernel_w)[None, :] * dilation_w
    padded_h = max(size[0] + pad[0], int(rows.max()) + 1)
    padded_w = max(size[1] + pad[1], int(columns.max()) + 1)
    dtype = np.uint32 if padded_h * padded_w < 2**32 else np.uint64
    # (oh, i) x (ow, j) -> (i, j, oh, ow)
    flat = rows[:, :, None, None] * padded_w + columns[None, None, :, :]
    offsets = flat.transpose(1, 3, 0, 2).reshape(kernel_h * kernel_w, out_h * out_w)
    return offsets.astype(dtype), (padded_h, padded_w)


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


@numba.njit(cache=True, inline="always")
def _col2im_scatter_task(cols, offsets, pad, padded, plane, x, task):
    """Rebuild one image plane ``x[n, c]``, ``task = n * C + c``, by adding each
    column row into the padded plane at ``offsets`` (the adjoint of the gather)."""
    channels = x.shape[1]
    n_offsets, n_positions = offsets.shape
    n = task // channels
    c = task - n * channels
    unpadded = plane.size == 0  # see _plane_size
    target = x[n, c].ravel() if unpadded else plane
    target[:] = 0
    for r in range(n_offsets):
        src = cols[c * n_offsets + r, n]
        at = offsets[r]
        for l in range(n_positions):
            target[at[l]] += src[l]
    if not unpadded:
        copy_from_padded(plane, pad[0], pad[1], padded[1], x[n, c])


@numba.njit(cache=True, parallel=True)
def col2im_scatter_into(cols, offsets, pad, padded, x):
    """:func:`col2im_into` for short rows or strides > 1, from :func:`window_offsets`.

    A scalar scatter-add per column element: slower than the row copies of
    :func:`col2im_into` on long unit-stride rows, several times faster on
    short or strided ones (see benchmarks/LOG.md).
    Parallel over the N*C image planes.
    """
    for task in prange(x.shape[0] * x.shape[1]):
        plane = np.empty(_plane_size(x.shape, padded), x.dtype)
        _col2im_scatter_task(cols, offsets, pad, padded, plane, x, task)


@numba.njit(cache=True, nogil=True)
def col2im_scatter_into_serial(cols, offsets, pad, padded, x):
    """:func:`col2im_scatter_into` in the calling thread, without the GIL."""
    plane = np.empty(_plane_size(x.shape, padded), x.dtype)
    for task in range(x.shape[0] * x.shape[1]):
        _col2im_scatter_task(cols, offsets, pad, padded, plane, x, task)
