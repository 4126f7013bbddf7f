"""Slow, obviously-correct twins of the convolution ops.

Three independent ways of computing the same 2-D convolution, used by the
tests to check the im2col + GEMM path, by the notebooks, and as the naive side
of the benchmarks. None of them imports :mod:`cnnblas.ops`.

* ``*_loops``: plain Python nested loops, the tutorial's Algorithm 3.1
  ("A beginner tutorial for CNN") generalised to batches, channels, groups,
  stride, padding and dilation. Also ``im2col_loops``/``col2im_loops``.
* ``*_direct``: the same loops compiled with Numba
  (:mod:`cnnblas._kernels.direct`); the "Numba direct loop" benchmark baseline.
* ``*_scipy``: the formulas of the derivations ("Convolutional Neural Networks
  backpropagation: from intuition to derivation"; "Backpropagation In
  Convolutional Neural Networks") written with :mod:`scipy.signal`: forward =
  valid correlation, input gradient = full convolution (the 180°-rotated
  kernel), weight gradient = valid correlation of input and error.

Conventions (DESIGN.md)
-----------------------
Layout NCHW; weight ``(K, C/groups, kernel_h, kernel_w)``; bias ``(K,)``.
"Convolution" is cross-correlation, as in PyTorch::

    y[n, k, oh, ow] = b[k] + sum_{c, i, j} w[k, c, i, j]
                      * xpad[n, g*C/groups + c, oh*stride_h + i*dilation_h,
                                                ow*stride_w + j*dilation_w]

with ``g = k // (K/groups)`` and ``xpad`` the input zero-padded by
``((pad_top, pad_bottom), (pad_left, pad_right))``. Output size per axis::

    out = (in + pad_before + pad_after - dilation*(kernel - 1) - 1) // stride + 1

Geometry arguments are already normalised: ``stride=(stride_h, stride_w)``,
``padding=((top, bottom), (left, right))``, ``dilation=(dilation_h,
dilation_w)``, ``groups=int``. For convenience an int means the same value on
every axis and side, and ``padding=(pad_h, pad_w)`` means symmetric padding.

Every function accepts float32 or float64 and returns the input's dtype. The
loop and scipy versions compute in float64 internally; the direct version
computes in the input's dtype (weight gradients accumulate in float64).
Validation is minimal (these are test tools), but a wrong rank or inconsistent
channel counts raise ``ValueError`` rather than returning garbage.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import signal

from cnnblas._kernels import direct as _direct

__all__ = [
    "conv2d_loops", "im2col_loops", "col2im_loops",
    "conv2d_direct", "conv2d_backward_direct",
    "conv2d_scipy", "conv2d_backward_scipy",
    "max_pool2d_loops",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- geometry helpers

def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_int, value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or an (h, w) pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {value!r}")
    return pair


def _padding(value) -> tuple[tuple[int, int], tuple[int, int]]:
    """``p``, ``(pad_h, pad_w)`` or ``((top, bottom), (left, right))`` -> the last form."""
    if _is_int(value):
        result = ((int(value),) * 2, (int(value),) * 2)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        if all(map(_is_int, value)):
            result = ((int(value[0]),) * 2, (int(value[1]),) * 2)
        else:
            result = (_pair(value[0], "padding[0]", 0), _pair(value[1], "padding[1]", 0))
    else:
        raise TypeError(
            f"padding must be an int, (h, w) or ((top, bottom), (left, right)), got {value!r}"
        )
    if min(result[0] + result[1]) < 0:
        raise ValueError(f"padding must be non-negative, got {value!r}")
    return result


def _float_array(array, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype not in _FLOATS:
        raise TypeError(f"{name} must have dtype float32 or float64, got {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {array.shape}")
    return array


class _Geometry:
    """Normalised window geometry of one convolution (plain ints)."""

    def __init__(self, in_size, kernel_size, stride, padding, dilation):
        self.in_h, self.in_w = in_size
        self.kernel_h, self.kernel_w = _pair(kernel_size, "kernel_size", 1)
        self.stride_h, self.stride_w = _pair(stride, "stride", 1)
        (self.pad_top, self.pad_bottom), (self.pad_left, self.pad_right) = _padding(padding)
        self.dilation_h, self.dilation_w = _pair(dilation, "dilation", 1)
        self.padded_h = self.in_h + self.pad_top + self.pad_bottom
        self.padded_w = self.in_w + self.pad_left + self.pad_right
        self.extent_h = self.dilation_h * (self.kernel_h - 1) + 1
        self.extent_w = self.dilation_w * (self.kernel_w - 1) + 1
        if self.extent_h > self.padded_h or self.extent_w > self.padded_w:
            raise ValueError(
                f"dilated kernel {self.extent_h}x{self.extent_w} is larger than the padded "
                f"input {self.padded_h}x{self.padded_w}"
            )
        self.out_h = (self.padded_h - self.extent_h) // self.stride_h + 1
        self.out_w = (self.padded_w - self.extent_w) // self.stride_w + 1

    @property
    def padding(self):
        return (self.pad_top, self.pad_bottom), (self.pad_left, self.pad_right)


def _conv_setup(x, weight, bias, stride, padding, dilation, groups):
    """Check a convolution's arrays; return (x, weight, bias or None, geometry, groups)."""
    x = _float_array(x, "x", 4)
    weight = _float_array(weight, "weight", 4)
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    groups = int(groups)
    out_channels, group_channels = weight.shape[:2]
    if out_channels % groups or group_channels * groups != x.shape[1]:
        raise ValueError(
            f"weight {weight.shape} with groups={groups} does not fit x with "
            f"{x.shape[1]} channels"
        )
    if bias is not None:
        bias = _float_array(bias, "bias", 1)
        if bias.shape[0] != out_channels:
            raise ValueError(f"bias must have shape ({out_channels},), got {bias.shape}")
    geometry = _Geometry(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return x, weight, bias, geometry, groups


def _check_dy(dy, x, weight, geometry):
    dy = _float_array(dy, "dy", 4)
    expected = (x.shape[0], weight.shape[0], geometry.out_h, geometry.out_w)
    if dy.shape != expected:
        raise ValueError(f"dy must have shape {expected}, got {dy.shape}")
    return dy


# --------------------------------------------------------------------------- plain loops

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
    x, weight, bias, geo, groups = _conv_setup(x, weight, bias, stride, padding, dilation,
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
    x = _float_array(x, "x", 4)
    n_images, channels, in_h, in_w = x.shape
    geo = _Geometry((in_h, in_w), kernel_size, stride, padding, dilation)
    kh, kw = geo.kernel_h, geo.kernel_w
    cols = np.zeros((n_images, channels * kh * kw, geo.out_h * geo.out_w), dtype=x.dtype)
    for n in range(n_images):
        for c in range(channels):
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    for oh in range(geo.out_h):
                        for ow in range(geo.out_w):
                            h = oh * geo.stride_h + i * geo.dilation_h - geo.pad_top
                            w = ow * geo.stride_w + j * geo.dilation_w - geo.pad_left
                            if 0 <= h < in_h and 0 <= w < in_w:
                                cols[n, row, oh * geo.out_w + ow] = x[n, c, h, w]
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
    cols = _float_array(cols, "cols", 3)
    in_h, in_w = _pair(output_size, "output_size", 1)
    geo = _Geometry((in_h, in_w), kernel_size, stride, padding, dilation)
    kh, kw = geo.kernel_h, geo.kernel_w
    n_images, rows, positions = cols.shape
    if rows % (kh * kw) or positions != geo.out_h * geo.out_w:
        raise ValueError(
            f"cols must have shape (N, C*{kh}*{kw}, {geo.out_h * geo.out_w}), got {cols.shape}"
        )
    channels = rows // (kh * kw)
    source = cols.astype(np.float64)
    image = np.zeros((n_images, channels, in_h, in_w))
    for n in range(n_images):
        for c in range(channels):
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    for oh in range(geo.out_h):
                        for ow in range(geo.out_w):
                            h = oh * geo.stride_h + i * geo.dilation_h - geo.pad_top
                            w = ow * geo.stride_w + j * geo.dilation_w - geo.pad_left
                            if 0 <= h < in_h and 0 <= w < in_w:
                                image[n, c, h, w] += source[n, row, oh * geo.out_w + ow]
    return image.astype(cols.dtype)


# --------------------------------------------------------------------------- Numba direct loops

def _kernel_geometry(geo):
    return ((geo.stride_h, geo.stride_w), (geo.pad_top, geo.pad_left),
            (geo.dilation_h, geo.dilation_w))


def conv2d_direct(x, weight, bias=None, *, stride, padding, dilation, groups):
    """2-D convolution by direct loops compiled with Numba (no im2col, no GEMM).

    Same contract as :func:`conv2d_loops`; computes in the dtype of ``x``
    (``weight`` and ``bias`` are cast to it). See :mod:`cnnblas._kernels.direct`.

    Returns
    -------
    ndarray, shape (N, K, out_h, out_w)
    """
    x, weight, bias, geo, groups = _conv_setup(x, weight, bias, stride, padding, dilation,
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
    x, weight, _, geo, groups = _conv_setup(x, weight, None, stride, padding, dilation, groups)
    dy = _check_dy(dy, x, weight, geo)
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


# --------------------------------------------------------------------------- scipy.signal formulas

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
    grid = np.zeros((geo.padded_h - geo.extent_h + 1, geo.padded_w - geo.extent_w + 1))
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
    x, weight, bias, geo, groups = _conv_setup(x, weight, bias, stride, padding, dilation,
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
    x, weight, _, geo, groups = _conv_setup(x, weight, None, stride, padding, dilation, groups)
    dy = _check_dy(dy, x, weight, geo)
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


# --------------------------------------------------------------------------- max pooling

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
    x = _float_array(x, "x", 4)
    kernel_h, kernel_w = _pair(kernel_size, "kernel_size", 1)
    stride_h, stride_w = _pair(kernel_size if stride is None else stride, "stride", 1)
    pad_h, pad_w = _pair(padding, "padding", 0)
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
