"""The derivations' formulas with :mod:`scipy.signal`: forward = valid correlation,
input gradient = full convolution with the 180°-rotated kernel, weight gradient =
valid correlation of input and error."""

from __future__ import annotations

import numpy as np
from scipy import signal

from cnnblas.reference._common import check_dy, conv_setup


def _dilate(kernel, dilation_h, dilation_w):
    """Insert ``dilation - 1`` zeros between the taps of a 2-D kernel."""
    kh, kw = kernel.shape
    dilated = np.zeros((dilation_h * (kh - 1) + 1, dilation_w * (kw - 1) + 1))
    dilated[::dilation_h, ::dilation_w] = kernel
    return dilated


def _upsample(err, geo):
    """Place a (out_h, out_w) error map on the stride-1 output grid, zeros in between.

    The grid has the size a stride-1 valid correlation of the padded input
    would produce, ``padded - extent + 1`` per axis; positions the strided
    windows skipped, including any trailing rows/columns when
    ``padded - extent`` is not a multiple of the stride, stay 0.
    """
    grid_h = geo.in_h + geo.pad_top + geo.pad_bottom - geo.dilation_h * (geo.kernel_h - 1)
    grid_w = geo.in_w + geo.pad_left + geo.pad_right - geo.dilation_w * (geo.kernel_w - 1)
    grid = np.zeros((grid_h, grid_w))
    grid[::geo.stride_h, ::geo.stride_w] = err
    return grid


def conv2d_scipy(x, weight, bias=None, *, stride, padding, dilation, groups):
    """2-D convolution from the derivations' formula, with ``scipy.signal``.

    Per image and output channel ``k``: the sum over the input channels of its
    group of ``correlate2d(xpad, dilated kernel, 'valid')`` (a stride-1 valid
    cross-correlation of the zero-padded input), subsampled by the stride, plus
    the bias. Computed in float64.

    Returns
    -------
    ndarray, shape (N, K, out_h, out_w), dtype of ``x``
    """
    x, weight, bias, geo, groups = conv_setup(x, weight, bias, stride, padding, dilation,
                                               groups)
    n_images = x.shape[0]
    out_channels, group_channels = weight.shape[:2]
    group_out = out_channels // groups
    xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0)) + geo.padding)
    y = np.zeros((n_images, out_channels, geo.out_h, geo.out_w))
    for n in range(n_images):
        for k in range(out_channels):
            first_in = (k // group_out) * group_channels
            for c in range(group_channels):
                kernel = _dilate(weight[k, c].astype(np.float64), geo.dilation_h, geo.dilation_w)
                full = signal.correlate2d(xpad[n, first_in + c], kernel, mode="valid")
                y[n, k] += full[::geo.stride_h, ::geo.stride_w]
            if bias is not None:
                y[n, k] += float(bias[k])
    return y.astype(x.dtype)


def conv2d_backward_scipy(dy, x, weight, *, stride, padding, dilation, groups):
    """Gradients of a convolution from the derivations' formulas, with ``scipy.signal``.

    With ``dy_up`` the error upsampled by the stride (:func:`_upsample`):

    * input gradient: ``convolve2d(dy_up, dilated kernel, 'full')``, i.e. the
      full correlation with the kernel rotated by 180° ("Convolutional Neural
      Networks backpropagation: from intuition to derivation"), summed over the
      output channels of the group; this has the padded input's size and is
      cropped by the padding;
    * weight gradient: ``correlate2d(xpad, dy_up, 'valid')`` summed over the
      images, which has the dilated kernel's extent, subsampled by the dilation;
    * bias gradient: ``dy`` summed over images and positions.

    Computed in float64; returns ``(dx, dweight, dbias)`` in the dtype of ``x``
    with the shapes of ``x``, ``weight`` and ``(K,)``.
    """
    x, weight, _, geo, groups = conv_setup(x, weight, None, stride, padding, dilation, groups)
    dy = check_dy(dy, x, weight, geo)
    n_images, in_channels, in_h, in_w = x.shape
    out_channels, group_channels = weight.shape[:2]
    group_out = out_channels // groups
    xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0)) + geo.padding)
    kernels = [[_dilate(weight[k, c].astype(np.float64), geo.dilation_h, geo.dilation_w)
                for c in range(group_channels)] for k in range(out_channels)]
    dxpad = np.zeros(xpad.shape)
    dweight = np.zeros(weight.shape)
    for n in range(n_images):
        for k in range(out_channels):
            first_in = (k // group_out) * group_channels
            err = _upsample(dy[n, k].astype(np.float64), geo)
            for c in range(group_channels):
                dxpad[n, first_in + c] += signal.convolve2d(err, kernels[k][c], mode="full")
                grad = signal.correlate2d(xpad[n, first_in + c], err, mode="valid")
                dweight[k, c] += grad[::geo.dilation_h, ::geo.dilation_w]
    dx = dxpad[:, :, geo.pad_top:geo.pad_top + in_h, geo.pad_left:geo.pad_left + in_w]
    dbias = dy.astype(np.float64).sum(axis=(0, 2, 3))
    return dx.astype(x.dtype), dweight.astype(x.dtype), dbias.astype(x.dtype)
