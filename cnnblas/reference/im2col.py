"""The engine's three GEMMs written plainly: im2col columns and ``@``, image by image."""

from __future__ import annotations

import numpy as np

from cnnblas.reference._common import check_dy, conv_setup
from cnnblas.reference.loops import col2im_loops, im2col_loops


def conv2d_im2col(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution as a matrix product over :func:`im2col_loops` columns.

    The plain twin of the engine's GEMM path (:mod:`cnnblas.ops.gemm`): per
    image and group, ``Y = Wm @ cols`` with ``Wm = weight.reshape(K, -1)`` and
    ``cols`` the group's rows of ``im2col_loops(x)``, plus the bias. Same
    contract as :func:`conv2d_loops`; computed in float64.
    """
    x, weight, bias, geo, groups = conv_setup(x, weight, bias, stride, padding, dilation,
                                               groups)
    cols = _grouped_columns(x, geo, groups)  # (N, groups, C/groups*kh*kw, L)
    wm = weight.astype(np.float64).reshape(groups, -1, cols.shape[2])
    y = np.empty((x.shape[0], groups, wm.shape[1], cols.shape[3]))
    for n in range(x.shape[0]):
        for g in range(groups):
            y[n, g] = wm[g] @ cols[n, g]  # Y = Wm @ cols
    y = y.reshape(x.shape[0], weight.shape[0], geo.out_h, geo.out_w)
    if bias is not None:
        y += bias.astype(np.float64)[:, None, None]
    return y.astype(x.dtype)


def conv2d_backward_im2col(dy, x, weight, *, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of a convolution by matrix products over :func:`im2col_loops` columns.

    Per image and group, with ``dY`` the (K/groups, L) error and ``cols`` as in
    :func:`conv2d_im2col`: ``dW = Σ dY @ colsᵀ`` over the images and
    ``dX = col2im(Wmᵀ @ dY)`` (:func:`col2im_loops`); ``db`` sums ``dy``.
    Computed in float64.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dweight : ndarray, shape (K, C/groups, kernel_h, kernel_w)
    dbias : ndarray, shape (K,)
    All in the dtype of ``x``.
    """
    x, weight, _, geo, groups = conv_setup(x, weight, None, stride, padding, dilation, groups)
    dy = check_dy(dy, x, weight, geo).astype(np.float64)
    n_images = x.shape[0]
    cols = _grouped_columns(x, geo, groups)  # (N, groups, C/groups*kh*kw, L)
    wm = weight.astype(np.float64).reshape(groups, -1, cols.shape[2])
    dy_grouped = dy.reshape(n_images, groups, -1, cols.shape[3])  # (N, groups, K/groups, L)
    dweight = np.zeros(wm.shape)
    dcols = np.empty(cols.shape)
    for n in range(n_images):
        for g in range(groups):
            dweight[g] += dy_grouped[n, g] @ cols[n, g].T  # dW = Σ dY @ colsᵀ
            dcols[n, g] = wm[g].T @ dy_grouped[n, g]  # dcols = Wmᵀ @ dY
    # dX = col2im(dcols)
    dx = col2im_loops(dcols.reshape(n_images, -1, cols.shape[3]), x.shape[2:],
                      weight.shape[2:], stride=stride, padding=padding, dilation=dilation)
    dbias = dy.sum(axis=(0, 2, 3))
    dweight = dweight.reshape(weight.shape)
    return dx.astype(x.dtype), dweight.astype(x.dtype), dbias.astype(x.dtype)


def _grouped_columns(x, geo, groups):
    """:func:`im2col_loops` of ``x`` in float64, viewed as (N, groups, C/groups*kh*kw, L)."""
    cols = im2col_loops(x.astype(np.float64), (geo.kernel_h, geo.kernel_w),
                        stride=(geo.stride_h, geo.stride_w), padding=geo.padding,
                        dilation=(geo.dilation_h, geo.dilation_w))
    return cols.reshape(x.shape[0], groups, -1, cols.shape[2])
