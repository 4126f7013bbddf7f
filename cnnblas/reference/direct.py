"""The plain loops compiled with Numba: the "Numba direct loop" benchmark baseline."""

from __future__ import annotations

import numpy as np

from cnnblas._kernels import reference_direct as _direct
from cnnblas.reference._common import check_dy, conv_setup


def _kernel_geometry(geo):
    return ((geo.stride_h, geo.stride_w), (geo.pad_top, geo.pad_left),
            (geo.dilation_h, geo.dilation_w))


def conv2d_direct(x, weight, bias=None, *, stride, padding, dilation, groups):
    """2-D convolution by direct loops compiled with Numba (no im2col, no GEMM).

    Same contract as :func:`conv2d_loops`; computes in the dtype of ``x``
    (``weight`` and ``bias`` are cast to it). See :mod:`cnnblas._kernels.reference_direct`.

    Returns
    -------
    ndarray, shape (N, K, out_h, out_w)
    """
    x, weight, bias, geo, groups = conv_setup(x, weight, bias, stride, padding, dilation,
                                               groups)
    dtype = x.dtype
    x = np.ascontiguousarray(x)
    weight = np.ascontiguousarray(weight, dtype=dtype)
    if bias is None:
        bias = np.zeros(weight.shape[0], dtype=dtype)
    bias = np.ascontiguousarray(bias, dtype=dtype)
    out = np.empty((x.shape[0], weight.shape[0], geo.out_h, geo.out_w), dtype=dtype)
    _direct.conv2d_forward(x, weight, bias, out, *_kernel_geometry(geo), groups)
    return out


def conv2d_backward_direct(dy, x, weight, *, stride, padding, dilation, groups):
    """Gradients of a convolution by direct Numba loops.

    Parameters
    ----------
    dy : ndarray, shape (N, K, out_h, out_w)
        Gradient of the loss w.r.t. the convolution's output.
    x : ndarray, shape (N, C, H, W)
    weight : ndarray, shape (K, C/groups, kernel_h, kernel_w)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dweight : ndarray, shape (K, C/groups, kernel_h, kernel_w)
    dbias : ndarray, shape (K,)
        ``dy`` summed over images and positions.
    All in the dtype of ``x``.
    """
    x, weight, _, geo, groups = conv_setup(x, weight, None, stride, padding, dilation, groups)
    dy = check_dy(dy, x, weight, geo)
    dtype = x.dtype
    x = np.ascontiguousarray(x)
    weight = np.ascontiguousarray(weight, dtype=dtype)
    dy = np.ascontiguousarray(dy, dtype=dtype)
    dx = np.empty_like(x)
    dweight = np.empty_like(weight)
    _direct.conv2d_backward_input(dy, weight, dx, *_kernel_geometry(geo), groups)
    _direct.conv2d_backward_weight(dy, x, dweight, *_kernel_geometry(geo), groups)
    dbias = dy.sum(axis=(0, 2, 3), dtype=np.float64).astype(dtype)
    return dx, dweight, dbias
