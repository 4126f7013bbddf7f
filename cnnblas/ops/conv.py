"""2-D convolution as GEMMs over im2col columns: forward, weight and input gradients.

Shapes (NCHW throughout, the same conventions as PyTorch, Caffe and Chainer):

- ``x``: (N, C, H, W); ``weight``: (K, C/groups, kh, kw); ``bias``: (K,);
- ``y``, ``dy``: (N, K, out_h, out_w) with, per axis,
  ``out = (in + pad_before + pad_after - dilation*(k - 1) - 1) // stride + 1``.

"Convolution" is cross-correlation, as in every framework. With
``cols = im2col(x[n])`` of shape (C*kh*kw, L = out_h*out_w) and
``Wm = weight.reshape(K, -1)`` the three passes are one GEMM each (per group):

====================  ==============================  ===========================
pass                  GEMM                            shapes
====================  ==============================  ===========================
forward               ``Y = Wm @ cols (+ bias)``      (K x CRS) (CRS x L)
weight gradient       ``dW = sum_n dY @ colsᵀ``        (K x L) (L x CRS)
input gradient        ``dX = col2im(Wmᵀ @ dY)``        (CRS x K) (K x L)
====================  ==============================  ===========================

Stride, padding and dilation live entirely in im2col/col2im; the GEMMs never
change. The 180-degree kernel rotation of the backpropagation derivations is
exactly what ``Wmᵀ`` followed by col2im computes. Groups split C and K into
independent blocks, handled by one batched ``np.matmul`` (BLAS per block).
A 1x1, stride-1, unpadded convolution skips im2col: the input already is its
column matrix.

The batch is processed in chunks whose column buffers fit the workspace budget
(:func:`cnnblas.set_workspace_limit`); the buffers are reused across calls.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnnblas._kernels.im2col import col2im_into, im2col_into
from cnnblas.ops import workspace
from cnnblas.ops._checks import (
    ConvGeometry,
    as_pair,
    check_float_array,
    check_groups,
    check_shape,
    conv_geometry,
)


def _kernel_args(geom: ConvGeometry):
    """The geometry tuples the Numba kernels take (kernel, stride, pad, dilation, out)."""
    return (
        (geom.kernel_h, geom.kernel_w),
        (geom.stride_h, geom.stride_w),
        (geom.pad_top, geom.pad_left),
        (geom.dilation_h, geom.dilation_w),
        (geom.out_h, geom.out_w),
    )


def _window_geometry(x: np.ndarray, kernel_size, stride, padding, dilation) -> ConvGeometry:
    return conv_geometry((x.shape[2], x.shape[3]), kernel_size, stride, padding, dilation)


def im2col(x: np.ndarray, kernel_size, stride=1, padding=0, dilation=1) -> np.ndarray:
    """Unfold sliding windows of ``x`` into columns (``torch.nn.functional.unfold``).

    Parameters
    ----------
    x : ndarray, float32 or float64, shape (N, C, H, W)
    kernel_size, stride, dilation : int or (h, w)
    padding : int, (h, w), ((top, bottom), (left, right)), "valid" or "same"

    Returns
    -------
    cols : ndarray, shape (N, C*kh*kw, out_h*out_w), dtype of ``x``
        ``cols[n, (c*kh + i)*kw + j, oh*out_w + ow] =
        xpad[n, c, oh*stride_h + i*dilation_h, ow*stride_w + j*dilation_w]``.
    """
    check_float_array(x, "x", ndim=4)
    geom = _window_geometry(x, kernel_size, stride, padding, dilation)
    n_images, channels = x.shape[:2]
    cols = np.empty(
        (n_images, channels * geom.kernel_h * geom.kernel_w, geom.out_h * geom.out_w), x.dtype
    )
    im2col_into(np.ascontiguousarray(x), *_kernel_args(geom), cols)
    return cols


def col2im(cols: np.ndarray, output_size, kernel_size, stride=1, padding=0,
           dilation=1) -> np.ndarray:
    """Fold columns back into images, summing overlaps (``torch.nn.functional.fold``).

    The adjoint of :func:`im2col`: ``<im2col(x), c> == <x, col2im(c)>``.

    Parameters
    ----------
    cols : ndarray, float32 or float64, shape (N, C*kh*kw, L)
    output_size : int or (H, W)
        Spatial size of the image to rebuild; ``L`` must equal out_h*out_w for it.
    kernel_size, stride, padding, dilation : as in :func:`im2col`

    Returns
    -------
    x : ndarray, shape (N, C, H, W), dtype of ``cols``
    """
    check_float_array(cols, "cols", ndim=3)
    height, width = as_pair(output_size, "output_size")
    geom = conv_geometry((height, width), kernel_size, stride, padding, dilation)
    window = geom.kernel_h * geom.kernel_w
    if cols.shape[1] % window:
        raise ValueError(
            f"cols.shape[1] must be a multiple of kernel_h*kernel_w = {window}, "
            f"got {cols.shape[1]} (cols shape {cols.shape})"
        )
    n_positions = geom.out_h * geom.out_w
    if cols.shape[2] != n_positions:
        raise ValueError(
            f"cols.shape[2] must be out_h*out_w = {geom.out_h}*{geom.out_w} = {n_positions} for "
            f"output_size {(height, width)}, got {cols.shape[2]}"
        )
    x = np.empty((cols.shape[0], cols.shape[1] // window, height, width), cols.dtype)
    col2im_into(np.ascontiguousarray(cols), *_kernel_args(geom), x)
    return x


class _ConvProblem(NamedTuple):
    """A validated convolution: contiguous arrays plus the derived sizes."""

    x: np.ndarray
    weight: np.ndarray
    geom: ConvGeometry
    groups: int

    @property
    def n_images(self) -> int:
        return self.x.shape[0]

    @property
    def rows_per_group(self) -> int:
        """C/groups * kh * kw: the GEMM's inner dimension."""
        return self.weight[0].size

    @property
    def n_positions(self) -> int:
        return self.geom.out_h * self.geom.out_w

    @property
    def grouped_weight(self) -> np.ndarray:
        """``weight`` viewed as (groups, K/groups, C/groups*kh*kw)."""
        return self.weight.reshape(self.groups, -1, self.rows_per_group)

    def column_view(self, cols: np.ndarray) -> np.ndarray:
        """(b, C*kh*kw, L) columns viewed as (b, groups, C/groups*kh*kw, L)."""
        return cols.reshape(cols.shape[0], self.groups, self.rows_per_group, -1)

    def grouped(self, array: np.ndarray) -> np.ndarray:
        """An NCHW array (b, channels, h, w) viewed as (b, groups, channels/groups, h*w)."""
        return array.reshape(array.shape[0], self.groups, -1, array.shape[2] * array.shape[3])


def _check_conv(x, weight, stride, padding, dilation, groups) -> _ConvProblem:
    check_float_array(x, "x", ndim=4)
    check_float_array(weight, "weight", ndim=4, dtype=x.dtype)
    groups = check_groups(groups, x.shape[1], weight.shape[0], weight.shape[1])
    geom = conv_geometry((x.shape[2], x.shape[3]), weight.shape[2:], stride, padding, dilation,
                         kernel_name="weight kernel")
    return _ConvProblem(np.ascontiguousarray(x), np.ascontiguousarray(weight), geom, groups)


def _chunks(problem: _ConvProblem, buffers: int):
    """Yield (start, stop) image ranges whose ``buffers`` column buffers fit the budget."""
    itemsize = problem.x.dtype.itemsize
    bytes_per_image = buffers * problem.weight.shape[1] * problem.groups * (
        problem.geom.kernel_h * problem.geom.kernel_w * problem.n_positions * itemsize
    )
    step = workspace.images_per_chunk(problem.n_images, bytes_per_image)
    for start in range(0, problem.n_images, step):
        yield start, min(start + step, problem.n_images)


def _columns(problem: _ConvProblem, start: int, stop: int) -> np.ndarray:
    """im2col of images [start, stop) into the reused workspace, (b, C*kh*kw, L)."""
    cols = workspace.scratch(
        (stop - start, problem.rows_per_group * problem.groups, problem.n_positions),
        problem.x.dtype, slot=0,
    )
    im2col_into(problem.x[start:stop], *_kernel_args(problem.geom), cols)
    return cols


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1,
           padding=0, dilation=1, groups: int = 1) -> np.ndarray:
    """2-D convolution (cross-correlation), the same as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray, float32 or float64, shape (N, C, H, W)
    weight : ndarray, dtype of ``x``, shape (K, C/groups, kh, kw)
    bias : ndarray, dtype of ``x``, shape (K,), optional
    stride, dilation : int or (h, w), each >= 1
    padding : int, (h, w), ((top, bottom), (left, right)), "valid" or "same"
        "same" gives ``out = ceil(in / stride)`` per axis for any stride, with
        the odd padding pixel at the bottom/right (TensorFlow's rule; PyTorch
        accepts "same" only for stride 1, where the two agree).
    groups : int
        C and K are split into ``groups`` independent blocks.

    Returns
    -------
    y : ndarray, dtype of ``x``, shape (N, K, out_h, out_w)
    """
    problem = _check_conv(x, weight, stride, padding, dilation, groups)
    n_out = weight.shape[0]
    if bias is not None:
        check_float_array(bias, "bias", ndim=1, dtype=x.dtype)
        check_shape(bias, (n_out,), "bias")
    geom = problem.geom
    y = np.empty((problem.n_images, n_out, geom.out_h, geom.out_w), x.dtype)
    w_grouped = problem.grouped_weight
    if geom.is_pointwise:
        # Y = Wm @ X: the input already is its (C x H*W) column matrix.
        np.matmul(w_grouped, problem.grouped(problem.x), out=problem.grouped(y))
    else:
        for start, stop in _chunks(problem, buffers=1):
            cols = _columns(problem, start, stop)
            # Y = Wm @ cols, written straight into the NCHW result.
            np.matmul(w_grouped, problem.column_view(cols), out=problem.grouped(y[start:stop]))
    if bias is not None:
        y += bias.reshape(1, n_out, 1, 1)
    return y


def conv2d_backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, stride=1, padding=0,
                    dilation=1, groups: int = 1, *, input_grad: bool = True):
    """Gradients of ``sum(conv2d(x, weight, bias, ...) * dy)``.

    Parameters
    ----------
    dy : ndarray, dtype of ``x``, shape (N, K, out_h, out_w)
        Gradient of the loss with respect to the convolution's output.
    x, weight, stride, padding, dilation, groups : as in :func:`conv2d`
    input_grad : bool, keyword-only
        When False, ``dx`` is not computed (returned as None): the first layer
        of a network needs no input gradient.

    Returns
    -------
    dx : ndarray, shape of ``x`` (or None when ``input_grad`` is False)
    dweight : ndarray, shape of ``weight``
    dbias : ndarray, shape (K,)
    """
    problem = _check_conv(x, weight, stride, padding, dilation, groups)
    geom = problem.geom
    check_float_array(dy, "dy", ndim=4, dtype=x.dtype)
    check_shape(dy, (problem.n_images, weight.shape[0], geom.out_h, geom.out_w), "dy")
    dy = np.ascontiguousarray(dy)
    dx = np.empty_like(problem.x) if input_grad else None
    w_grouped_t = problem.grouped_weight.transpose(0, 2, 1)

    if geom.is_pointwise:
        dy_grouped = problem.grouped(dy)
        x_grouped = problem.grouped(problem.x)
        # dW = sum_n dY_n @ X_nᵀ
        dweight = np.matmul(dy_grouped, x_grouped.transpose(0, 1, 3, 2)).sum(axis=0)
        if dx is not None:
            # dX = Wmᵀ @ dY (no col2im: the columns are the image)
            np.matmul(w_grouped_t, dy_grouped, out=problem.grouped(dx))
    else:
        dweight = np.zeros(problem.grouped_weight.shape, x.dtype)
        for start, stop in _chunks(problem, buffers=2 if input_grad else 1):
            cols = problem.column_view(_columns(problem, start, stop))
            dy_grouped = problem.grouped(dy[start:stop])
            # dW += sum_n dY_n @ cols_nᵀ
            dweight += np.matmul(dy_grouped, cols.transpose(0, 1, 3, 2)).sum(axis=0)
            if dx is not None:
                dcols = workspace.scratch(cols.shape, x.dtype, slot=1)
                # dcols = Wmᵀ @ dY, then dX = col2im(dcols)
                np.matmul(w_grouped_t, dy_grouped, out=dcols)
                col2im_into(dcols.reshape(stop - start, -1, problem.n_positions),
                            *_kernel_args(geom), dx[start:stop])
    dbias = dy.sum(axis=(0, 2, 3))
    return dx, dweight.reshape(weight.shape), dbias
