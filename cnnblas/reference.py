"""Slow, obviously-correct twins of the convolution ops.

Four independent ways of computing the same 2-D convolution, used by the
tests to check the engine's backends, by the notebooks, and as the naive side
of the benchmarks. None of them imports :mod:`cnnblas.ops`, and the window
geometry (padding, output size) is computed here, not taken from the engine,
so that a mistake there could not hide in both; only the parsing of the
arguments is shared (:mod:`cnnblas.checks`).

* ``*_loops``: plain Python nested loops, the tutorial's Algorithm 3.1
  ("A beginner tutorial for CNN") generalised to batches, channels, groups,
  stride, padding and dilation. Also ``im2col_loops``/``col2im_loops``, and
  ``conv_transpose2d_loops``, the transposed convolution as a scatter.
* ``*_im2col``: those columns and ``@``, a few lines per image: the three
  GEMMs of the engine's im2col path (forward ``Y = Wm @ cols``, weight
  gradient ``dW = Σ dY @ colsᵀ``, input gradient ``dX = col2im(Wmᵀ @ dY)``)
  written plainly.
* ``*_direct``: the same loops compiled with Numba
  (:mod:`cnnblas._kernels.reference_direct`); the "Numba direct loop"
  benchmark baseline.
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
every axis and side, ``padding=(pad_h, pad_w)`` means symmetric padding, and
``"valid"``/``"same"`` mean what they mean to :func:`cnnblas.conv2d`.

Every function accepts float32 or float64 and returns the input's dtype. The
loop, im2col and scipy versions compute in float64 internally; the direct version
computes in the input's dtype (weight gradients accumulate in float64).
Validation is minimal (these are test tools), but a wrong rank or inconsistent
channel counts raise ``ValueError`` rather than returning garbage.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from cnnblas._kernels import reference_direct as _direct
from cnnblas.checks import FLOAT_DTYPES, as_pair, check_groups, check_shape, is_int

__all__ = [
    "conv2d_loops", "conv_transpose2d_loops", "im2col_loops", "col2im_loops",
    "conv2d_im2col", "conv2d_backward_im2col",
    "conv2d_direct", "conv2d_backward_direct",
    "conv2d_scipy", "conv2d_backward_scipy",
    "max_pool2d_loops",
]

# --------------------------------------------------------------------------- argument checks

def _float_array(array, name: str, ndim: int) -> np.ndarray:
    """``array`` (any array-like, empty allowed) as a float32/float64 ndarray of rank ``ndim``."""
    array = np.asarray(array)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {array.shape}")
    return array


def _axis_padding(padding, in_size: int, kernel: int, stride: int, dilation: int,
                  axis: int) -> tuple[int, int]:
    """(before, after) padding of one axis from any accepted form of ``padding``."""
    if padding == "valid":
        return 0, 0
    if padding == "same":  # output ceil(in / stride), the odd pixel after
        out = -(-in_size // stride)
        total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - in_size, 0)
        return total // 2, total - total // 2
    if is_int(padding):
        return int(padding), int(padding)
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        side = padding[axis]
        if is_int(side):
            return int(side), int(side)
        if isinstance(side, (tuple, list)) and len(side) == 2 and all(map(is_int, side)):
            return int(side[0]), int(side[1])
    raise TypeError(f"padding must be an int, (h, w), ((top, bottom), (left, right)), "
                    f"'valid' or 'same'; got {padding!r}")


class _Geometry:
    """The window geometry of one convolution (plain ints), computed independently
    of the engine's :func:`cnnblas.checks.conv_geometry`."""

    def __init__(self, in_size, kernel_size, stride, padding, dilation):
        self.in_h, self.in_w = in_size
        self.kernel_h, self.kernel_w = as_pair(kernel_size, "kernel_size")
        self.stride_h, self.stride_w = as_pair(stride, "stride")
        self.dilation_h, self.dilation_w = as_pair(dilation, "dilation")
        self.pad_top, self.pad_bottom = _axis_padding(
            padding, self.in_h, self.kernel_h, self.stride_h, self.dilation_h, 0)
        self.pad_left, self.pad_right = _axis_padding(
            padding, self.in_w, self.kernel_w, self.stride_w, self.dilation_w, 1)
        if min(self.pad_top, self.pad_bottom, self.pad_left, self.pad_right) < 0:
            raise ValueError(f"padding must be non-negative, got {padding!r}")
        padded_h = self.in_h + self.pad_top + self.pad_bottom
        padded_w = self.in_w + self.pad_left + self.pad_right
        extent_h = self.dilation_h * (self.kernel_h - 1) + 1
        extent_w = self.dilation_w * (self.kernel_w - 1) + 1
        if extent_h > padded_h or extent_w > padded_w:
            raise ValueError(f"dilated kernel {extent_h}x{extent_w} is larger than the padded "
                             f"input {padded_h}x{padded_w}")
        self.out_h = (padded_h - extent_h) // self.stride_h + 1
        self.out_w = (padded_w - extent_w) // self.stride_w + 1

    @property
    def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.pad_top, self.pad_bottom), (self.pad_left, self.pad_right)


def _conv_setup(x, weight, bias, stride, padding, dilation, groups):
    """Check a convolution's arrays; return (x, weight, bias or None, geometry, groups)."""
    x = _float_array(x, "x", 4)
    weight = _float_array(weight, "weight", 4)
    groups = check_groups(groups, x.shape[1], weight.shape[0], weight.shape[1])
    if bias is not None:
        bias = _float_array(bias, "bias", 1)
        check_shape(bias, weight.shape[:1], "bias")
    geometry = _Geometry(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return x, weight, bias, geometry, groups


def _check_dy(dy, x, weight, geometry):
    dy = _float_array(dy, "dy", 4)
    check_shape(dy, (x.shape[0], weight.shape[0], geometry.out_h, geometry.out_w), "dy")
    return dy


def _taps(geo):
    """(row, position, h, w) for every window tap that reads an input pixel:
    ``cols[row, position]`` of one channel holds ``x[h, w]``, with ``row = i*kw + j``
    for tap (i, j) and ``position = oh*out_w + ow``; taps in the padding are skipped."""
    for i in range(geo.kernel_h):
        for j in range(geo.kernel_w):
            for oh in range(geo.out_h):
                h = oh * geo.stride_h + i * geo.dilation_h - geo.pad_top
                if not 0 <= h < geo.in_h:
                    continue
                for ow in range(geo.out_w):
                    w = ow * geo.stride_w + j * geo.dilation_w - geo.pad_left
                    if 0 <= w < geo.in_w:
                        yield i * geo.kernel_w + j, oh * geo.out_w + ow, h, w


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
    x = _float_array(x, "x", 4)
    weight = _float_array(weight, "weight", 4)
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
    x = _float_array(x, "x", 4)
    n_images, channels = x.shape[:2]
    geo = _Geometry(x.shape[2:], kernel_size, stride, padding, dilation)
    window = geo.kernel_h * geo.kernel_w
    cols = np.zeros((n_images, channels * window, geo.out_h * geo.out_w), dtype=x.dtype)
    for n in range(n_images):
        for c in range(channels):
            for row, position, h, w in _taps(geo):
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
    cols = _float_array(cols, "cols", 3)
    in_h, in_w = as_pair(output_size, "output_size")
    geo = _Geometry((in_h, in_w), kernel_size, stride, padding, dilation)
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
            for row, position, h, w in _taps(geo):
                image[n, c, h, w] += source[n, c * window + row, position]
    return image.astype(cols.dtype)


# --------------------------------------------------------------------------- im2col and @

def conv2d_im2col(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution as a matrix product over :func:`im2col_loops` columns.

    The plain twin of the engine's GEMM path (:mod:`cnnblas.ops.gemm`): per
    image and group, ``Y = Wm @ cols`` with ``Wm = weight.reshape(K, -1)`` and
    ``cols`` the group's rows of ``im2col_loops(x)``, plus the bias. Same
    contract as :func:`conv2d_loops`; computed in float64.
    """
    x, weight, bias, geo, groups = _conv_setup(x, weight, bias, stride, padding, dilation,
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
    x, weight, _, geo, groups = _conv_setup(x, weight, None, stride, padding, dilation, groups)
    dy = _check_dy(dy, x, weight, geo).astype(np.float64)
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


# --------------------------------------------------------------------------- Numba direct loops

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
