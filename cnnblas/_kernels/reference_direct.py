"""Direct (no im2col, no GEMM) 2-D convolution loops, compiled with Numba.

These are the "Numba direct loop" baseline of the benchmarks and one of the
independent references in :mod:`cnnblas.reference`. They compute, for NCHW
input ``x``, weight ``(K, C/groups, kernel_h, kernel_w)`` and output channel
``k`` in group ``g = k // (K/groups)``::

    y[n, k, oh, ow] = b[k] + sum_{c, i, j} w[k, c, i, j]
                      * x[n, g*C/groups + c, oh*stride_h - pad_top + i*dilation_h,
                                             ow*stride_w - pad_left + j*dilation_w]

where input pixels outside ``x`` (the zero padding) contribute nothing. No
padded copy is made: for each kernel tap ``(i, j)`` the range of output rows and
columns whose input pixel lies inside ``x`` is computed once
(:func:`_tap_range`), so no index ever leaves the arrays. The bottom and right
padding only enter through the output size, i.e. the shape of ``out``/``dy``.

Geometry is passed as small tuples of ints: ``stride = (stride_h, stride_w)``,
``pad = (pad_top, pad_left)``, ``dilation = (dilation_h, dilation_w)``.

Loop order: the innermost loop always runs along an output row (``ow``), which
is contiguous in ``y``/``dy`` and has stride ``stride_w`` in ``x``/``dx``. Work is
split with ``prange`` so that no two threads write the same element: forward
over (image, output channel), input gradient over (image, input channel),
weight gradient over output channels.

Arrays must be C-contiguous and of one floating dtype; the wrappers in
:mod:`cnnblas.reference` check shapes. The kernels re-check the channel/group
bookkeeping that could otherwise send an index out of bounds.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


@numba.njit(cache=True)
def _tap_range(offset, stride, in_size, out_size):
    """Output indices ``o`` in ``[lo, hi)`` with ``0 <= o*stride + offset < in_size``.

    ``offset`` is the input coordinate of the tap for output 0 (``i*dilation -
    pad_before``); the result is clipped to ``[0, out_size)`` and may be empty.
    """
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    last = in_size - 1 - offset
    hi = 0
    if last >= 0:
        hi = min(out_size, last // stride + 1)
    if hi < lo:
        hi = lo
    return lo, hi


@numba.njit(cache=True)
def _check_channels(in_channels, out_channels, group_channels, groups, n_images, dy_images,
                    dy_channels):
    if groups < 1 or group_channels * groups != in_channels or out_channels % groups != 0:
        raise ValueError("direct conv kernel: channels do not match groups")
    if dy_images != n_images or dy_channels != out_channels:
        raise ValueError("direct conv kernel: output/dy shape does not match x and weight")


@numba.njit(cache=True, parallel=True)
def conv2d_forward(x, weight, bias, out, stride, pad, dilation, groups):
    """Fill ``out`` (N, K, out_h, out_w) with the convolution of ``x`` by ``weight`` plus ``bias``.

    ``bias`` has shape (K,) (pass zeros for no bias). Sums accumulate in the
    arrays' dtype, as a float32 framework would.
    """
    n_images, in_channels, in_h, in_w = x.shape
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    out_h, out_w = out.shape[2], out.shape[3]
    _check_channels(in_channels, out_channels, group_channels, groups, n_images,
                    out.shape[0], out.shape[1])
    if bias.shape[0] != out_channels:
        raise ValueError("direct conv kernel: bias length does not match weight")
    stride_h, stride_w = stride
    pad_top, pad_left = pad
    dilation_h, dilation_w = dilation
    group_out = out_channels // groups

    for task in prange(n_images * out_channels):
        n = task // out_channels
        k = task % out_channels
        first_in = (k // group_out) * group_channels
        plane = out[n, k]
        plane[:, :] = bias[k]
        for c in range(group_channels):
            image = x[n, first_in + c]
            for i in range(kernel_h):
                offset_h = i * dilation_h - pad_top
                oh_lo, oh_hi = _tap_range(offset_h, stride_h, in_h, out_h)
                for j in range(kernel_w):
                    offset_w = j * dilation_w - pad_left
                    ow_lo, ow_hi = _tap_range(offset_w, stride_w, in_w, out_w)
                    tap = weight[k, c, i, j]
                    for oh in range(oh_lo, oh_hi):
                        row = image[oh * stride_h + offset_h]
                        out_row = plane[oh]
                        for ow in range(ow_lo, ow_hi):
                            out_row[ow] += tap * row[ow * stride_w + offset_w]


@numba.njit(cache=True, parallel=True)
def conv2d_backward_input(dy, weight, dx, stride, pad, dilation, groups):
    """Fill ``dx`` (N, C, H, W) with the gradient of the loss w.r.t. the input.

    ``dx[n, c]`` collects ``dy[n, k] * w[k, c_local, i, j]`` over the output
    channels ``k`` of its group, at the pixels the forward pass read: the
    transpose of :func:`conv2d_forward`. Each (image, input channel) plane is
    owned by one thread, so there are no write races. Pixels that no window
    reached keep gradient 0.
    """
    n_images, in_channels, in_h, in_w = dx.shape
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    _check_channels(in_channels, out_channels, group_channels, groups, n_images,
                    dy.shape[0], dy.shape[1])
    stride_h, stride_w = stride
    pad_top, pad_left = pad
    dilation_h, dilation_w = dilation
    group_out = out_channels // groups

    for task in prange(n_images * in_channels):
        n = task // in_channels
        c_in = task % in_channels
        group = c_in // group_channels
        c = c_in % group_channels
        target = dx[n, c_in]
        target[:, :] = 0
        for k in range(group * group_out, (group + 1) * group_out):
            err = dy[n, k]
            for i in range(kernel_h):
                offset_h = i * dilation_h - pad_top
                oh_lo, oh_hi = _tap_range(offset_h, stride_h, in_h, out_h)
                for j in range(kernel_w):
                    offset_w = j * dilation_w - pad_left
                    ow_lo, ow_hi = _tap_range(offset_w, stride_w, in_w, out_w)
                    tap = weight[k, c, i, j]
                    for oh in range(oh_lo, oh_hi):
                        row = target[oh * stride_h + offset_h]
                        err_row = err[oh]
                        for ow in range(ow_lo, ow_hi):
                            row[ow * stride_w + offset_w] += tap * err_row[ow]


@numba.njit(cache=True, parallel=True)
def conv2d_backward_weight(dy, x, grad_weight, stride, pad, dilation, groups):
    """Fill ``grad_weight`` (K, C/groups, kh, kw) with the weight gradient.

    ``grad_weight[k, c, i, j]`` is the sum over images and output positions of
    ``dy[n, k, oh, ow]`` times the input pixel tap ``(i, j)`` of that window read.
    One thread per output channel; each sum is accumulated in float64 because it
    runs over the whole batch.
    """
    n_images, in_channels, in_h, in_w = x.shape
    out_channels, group_channels, kernel_h, kernel_w = grad_weight.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    _check_channels(in_channels, out_channels, group_channels, groups, n_images,
                    dy.shape[0], dy.shape[1])
    stride_h, stride_w = stride
    pad_top, pad_left = pad
    dilation_h, dilation_w = dilation
    group_out = out_channels // groups

    for k in prange(out_channels):
        first_in = (k // group_out) * group_channels
        for c in range(group_channels):
            for i in range(kernel_h):
                offset_h = i * dilation_h - pad_top
                oh_lo, oh_hi = _tap_range(offset_h, stride_h, in_h, out_h)
                for j in range(kernel_w):
                    offset_w = j * dilation_w - pad_left
                    ow_lo, ow_hi = _tap_range(offset_w, stride_w, in_w, out_w)
                    total = np.float64(0.0)
                    for n in range(n_images):
                        image = x[n, first_in + c]
                        err = dy[n, k]
                        for oh in range(oh_lo, oh_hi):
                            row = image[oh * stride_h + offset_h]
                            err_row = err[oh]
                            for ow in range(ow_lo, ow_hi):
                                total += err_row[ow] * row[ow * stride_w + offset_w]
                    grad_weight[k, c, i, j] = total
