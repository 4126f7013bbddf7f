"""Plain Python nested loops: the tutorial's Algorithm 3.1 generalised, im2col and
col2im element by element, the transposed convolution as a scatter, max pooling."""

from __future__ import annotations

import numpy as np

from cnnblas.checks import as_pair
from cnnblas.reference._common import Geometry, conv_setup, float_array, taps


def conv2d_loops(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) by plain Python loops.

    The tutorial's Algorithm 3.1 ("A beginner tutorial for CNN": for every
    output pixel, set it to zero and add image times mask over the mask window)
    generalised to a batch, input/output channels, groups, stride, asymmetric
    zero padding and dilation. Window taps that fall in the padding are skipped,
    which is the same as reading a zero there. Slow: for small shapes only.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    weight : ndarray, shape (K, C/groups, kernel_h, kernel_w)
    bias : ndarray, shape (K,), optional
    stride, padding, dilation, groups : see the module docstring.

    Returns
    -------
    ndarray, shape (N, K, out_h, out_w), dtype of ``x``
        ``out = (in + pad_before + pad_after - dilation*(kernel - 1) - 1) // stride + 1``.
    """
    x, weight, bias, geo, groups = conv_setup(x, weight, bias, stride, padding, dilation,
                                               groups)
    n_images, _, in_h, in_w = x.shape
    out_channels, group_channels = weight.shape[:2]
    group_out = out_channels // groups
    image = x.astype(np.float64).tolist()
    kernel = weight.astype(np.float64).tolist()
    y = np.zeros((n_images, out_channels, geo.out_h, geo.out_w))
    for n in range(n_images):
        for k in range(out_channels):
            first_in = (k // group_out) * group_channels
            for oh in range(geo.out_h):
                for ow in range(geo.out_w):
                    total = 0.0 if bias is None else float(bias[k])
                    for c in range(group_channels):
                        for i in range(geo.kernel_h):
                            h = oh * geo.stride_h + i * geo.dilation_h - geo.pad_top
                            if not 0 <= h < in_h:
                                continue
                            for j in range(geo.kernel_w):
                                w = ow * geo.stride_w + j * geo.dilation_w - geo.pad_left
                                if 0 <= w < in_w:
                                    total += kernel[k][c][i][j] * image[n][first_in + c][h][w]
                    y[n, k, oh, ow] = total
    return y.astype(x.dtype)


def conv_transpose2d_loops(x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                           groups=1, dilation=1):
    """Transposed 2-D convolution by plain Python loops: every input pixel is
    scattered into the output, times the kernel.

    Input pixel ``(h, w)`` of channel ``c`` adds ``x * weight[c, o, i, j]`` to
    output pixel ``(h*stride_h - pad_h + i*dilation_h, w*stride_w - pad_w +
    j*dilation_w)`` of channel ``g*C_out/groups + o`` (``g`` the group of ``c``),
    when that pixel lies in the output. ``torch.nn.functional.conv_transpose2d``'s
    definition, written without any convolution.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    weight : ndarray, shape (C_in, C_out/groups, kernel_h, kernel_w)
    bias : ndarray, shape (C_out,), optional
    stride, dilation : int or (h, w)
    padding, output_padding : int or (h, w), cut from both sides / added at the
        bottom and right
    groups : int

    Returns
    -------
    ndarray, shape (N, C_out, out_h, out_w), dtype of ``x``
        ``out = (in - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1``.
    """
    x = float_array(x, "x", 4)
    weight = float_array(weight, "weight", 4)
    stride_h, stride_w = as_pair(stride, "stride")
    pad_h, pad_w = as_pair(padding, "padding", minimum=0)
    extra_h, extra_w = as_pair(output_padding, "output_padding", minimum=0)
    dilation_h, dilation_w = as_pair(dilation, "dilation")
    n_images, in_channels, in_h, in_w = x.shape
    if weight.shape[0] != in_channels or in_channels % groups:
        raise ValueError(f"weight {weight.shape} and groups={groups} do not fit x {x.shape}")
    _, group_out, kernel_h, kernel_w = weight.shape
    group_in = in_channels // groups
    out_h = (in_h - 1) * stride_h - 2 * pad_h + dilation_h * (kernel_h - 1) + extra_h + 1
    out_w = (in_w - 1) * stride_w - 2 * pad_w + dilation_w * (kernel_w - 1) + extra_w + 1
    image = x.astype(np.float64).tolist()
    kernel = weight.astype(np.float64).tolist()
    y = np.zeros((n_images, group_out * groups, out_h, out_w))
    out = y.tolist()
    for n in range(n_images):
        for c in range(in_channels):
            first_out = (c // group_in) * group_out
            for h in range(in_h):
                for w in range(in_w):
                    value = image[n][c][h][w]
                    for o in range(group_out):
                        plane = out[n][first_out + o]
                        for i in range(kernel_h):
                            oh = h * stride_h - pad_h + i * dilation_h
                            if not 0 <= oh < out_h:
                                continue
                            for j in range(kernel_w):
                                ow = w * stride_w - pad_w + j * dilation_w
                                if 0 <= ow < out_w:
                                    plane[oh][ow] += value * kernel[c][o][i][j]
    y = np.array(out).reshape(y.shape)
    if bias is not None:
        y += np.asarray(bias, np.float64)[None, :, None, None]
    return y.astype(x.dtype)


def im2col_loops(x, kernel_size, *, stride=1, padding=0, dilation=1):
    """Unfold sliding windows into columns, by plain loops.

    ``cols[n, (c*kernel_h + i)*kernel_w + j, oh*out_w + ow]`` is the input pixel
    that tap ``(i, j)`` of window ``(oh, ow)`` reads in channel ``c``, or 0 in the
    padding: rows ordered (c, i, j) row-major, columns by output position
    row-major, the same array as ``torch.nn.functional.unfold``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size : int or (kernel_h, kernel_w)

    Returns
    -------
    ndarray, shape (N, C*kernel_h*kernel_w, out_h*out_w), dtype of ``x``
    """
    x = float_array(x, "x", 4)
    n_images, channels = x.shape[:2]
    geo = Geometry(x.shape[2:], kernel_size, stride, padding, dilation)
    window = geo.kernel_h * geo.kernel_w
    cols = np.zeros((n_images, channels * window, geo.out_h * geo.out_w), dtype=x.dtype)
    for n in range(n_images):
        for c in range(channels):
            for row, position, h, w in taps(geo):
                cols[n, c * window + row, position] = x[n, c, h, w]
    return cols


def col2im_loops(cols, output_size, kernel_size, *, stride=1, padding=0, dilation=1):
    """Fold columns back into an image, summing overlaps: the adjoint of :func:`im2col_loops`.

    Every entry of ``cols`` is added to the input pixel it was read from;
    entries that belong to the zero padding are dropped. Same result as
    ``torch.nn.functional.fold``.

    Parameters
    ----------
    cols : ndarray, shape (N, C*kernel_h*kernel_w, out_h*out_w)
    output_size : int or (H, W)
        Spatial size of the image to rebuild (the input size of im2col).
    kernel_size : int or (kernel_h, kernel_w)

    Returns
    -------
    ndarray, shape (N, C, H, W), dtype of ``cols``
    """
    cols = float_array(cols, "cols", 3)
    in_h, in_w = as_pair(output_size, "output_size")
    geo = Geometry((in_h, in_w), kernel_size, stride, padding, dilation)
    window = geo.kernel_h * geo.kernel_w
    n_images, rows, positions = cols.shape
    if rows % window or positions != geo.out_h * geo.out_w:
        raise ValueError(
            f"cols must have shape (N, C*{geo.kernel_h}*{geo.kernel_w}, "
            f"{geo.out_h * geo.out_w}), got {cols.shape}"
        )
    source = cols.astype(np.float64)
    image = np.zeros((n_images, rows // window, in_h, in_w))
    for n in range(n_images):
        for c in range(rows // window):
            for row, position, h, w in taps(geo):
                image[n, c, h, w] += source[n, c * window + row, position]
    return image.astype(cols.dtype)


def max_pool2d_loops(x, kernel_size, stride=None, padding=0):
    """Max pooling by plain loops over every window element (tutorial Section 3.3).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    kernel_size, stride, padding : int or (h, w)
        ``stride`` defaults to ``kernel_size``; padding is symmetric and never
        selected (it acts as -inf).

    Returns
    -------
    y : ndarray, shape (N, C, out_h, out_w), dtype of ``x``
    argmax : ndarray of int64, same shape
        Flat index ``h * W + w`` of the selected element: the first maximum
        in row-major window order, or the first NaN when the window holds one
        (PyTorch's rule).
    """
    x = float_array(x, "x", 4)
    kernel_h, kernel_w = as_pair(kernel_size, "kernel_size")
    stride_h, stride_w = as_pair(kernel_size if stride is None else stride, "stride")
    pad_h, pad_w = as_pair(padding, "padding", minimum=0)
    n_images, channels, height, width = x.shape
    out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1
    out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
    y = np.empty((n_images, channels, out_h, out_w), x.dtype)
    argmax = np.empty(y.shape, np.int64)
    for n in range(n_images):
        for c in range(channels):
            for oh in range(out_h):
                for ow in range(out_w):
                    best, best_at = None, -1
                    for i in range(kernel_h):
                        for j in range(kernel_w):
                            h, w = oh * stride_h - pad_h + i, ow * stride_w - pad_w + j
                            if not (0 <= h < height and 0 <= w < width):
                                continue
                            value = float(x[n, c, h, w])
                            if (best is None or value > best
                                    or (np.isnan(value) and not np.isnan(best))):
                                best, best_at = value, h * width + w
                    y[n, c, oh, ow] = best
                    argmax[n, c, oh, ow] = best_at
    return y, argmax
