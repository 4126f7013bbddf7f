"""2-D convolution: the public functions, and the dispatch to a backend.

Shapes (NCHW throughout, the same conventions as PyTorch, Caffe and Chainer):

- ``x``: (N, C, H, W); ``weight``: (K, C/groups, kh, kw); ``bias``: (K,);
- ``y``, ``dy``: (N, K, out_h, out_w) with, per axis,
  ``out = (in + pad_before + pad_after - dilation*(k - 1) - 1) // stride + 1``.

"Convolution" is cross-correlation, as in every framework. :func:`conv2d` and
:func:`conv2d_backward` validate their arguments into a
:class:`~cnnblas.ops.problem.ConvProblem` and hand it to the backend
:func:`~cnnblas.ops.algorithms.choose_algorithm` names: the im2col GEMMs
(:mod:`cnnblas.ops.gemm`, where the three GEMMs are written next to each
other), Winograd (:mod:`cnnblas.ops.winograd`) or the direct kernels
(:mod:`cnnblas.ops.direct`). :func:`conv2d_input_grad` runs the input-gradient
pass alone, from the input's size instead of the input (the transposed
convolution of :mod:`cnnblas.ops.conv_transpose` is that pass). :func:`im2col`
and :func:`col2im` expose the column transform itself.
"""

from __future__ import annotations

import numpy as np

from cnnblas._kernels.im2col import im2col_into
from cnnblas.checks import (
    ConvGeometry,
    as_pair,
    check_float_array,
    check_groups,
    check_int,
    check_shape,
    conv_geometry,
)
from cnnblas.ops.algorithms import BACKENDS, choose_algorithm
from cnnblas.ops.problem import (
    ConvProblem,
    argument_key,
    check_conv,
    fold_columns,
    gather_args,
    input_grad_problem,
)

# Validated geometry and algorithm per (shapes, window arguments, algorithm):
# the checks and the choice cost ~25 us per call, a tenth of a ResNet-20 layer
# at batch 1. Cleared when full; a network has a few dozen distinct layers.
_SETUPS: dict = {}
_SETUPS_MAX = 256


def _setup(x, weight, stride, padding, dilation, groups, algorithm) -> tuple[ConvProblem, str]:
    """The validated :class:`ConvProblem` of a :func:`conv2d` call and the backend to
    run it, from the cache when these shapes and arguments were seen before."""
    check_float_array(x, "x", ndim=4)
    check_float_array(weight, "weight", ndim=4, dtype=x.dtype)
    arguments = argument_key((stride, padding, dilation, groups, algorithm))
    key = None if arguments is None else (x.shape, weight.shape, arguments)
    found = None if key is None else _SETUPS.get(key)
    if found is None:
        problem = check_conv(x, weight, stride, padding, dilation, groups)
        chosen = choose_algorithm(x.shape, weight.shape, stride, dilation, groups, algorithm)
        if key is not None:
            if len(_SETUPS) >= _SETUPS_MAX:
                _SETUPS.clear()
            _SETUPS[key] = (problem.geom, problem.groups, chosen)
        return problem, chosen
    geom, groups, chosen = found
    return ConvProblem(np.ascontiguousarray(x), np.ascontiguousarray(weight), geom, groups), chosen


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
    # The kernel fills (rows, images, positions); a transposed view gives unfold's layout.
    im2col_into(np.ascontiguousarray(x), *gather_args(geom), cols.transpose(1, 0, 2))
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
    fold_columns(cols.transpose(1, 0, 2), geom, x, serial=False)
    return x


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1,
           padding=0, dilation=1, groups: int = 1, *, algorithm: str = "auto") -> np.ndarray:
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
    algorithm : {"auto", "gemm", "winograd2x2", "winograd4x4", "direct"}, keyword-only
        See :func:`cnnblas.choose_algorithm`.

    Returns
    -------
    y : ndarray, dtype of ``x``, shape (N, K, out_h, out_w)
    """
    problem, chosen = _setup(x, weight, stride, padding, dilation, groups, algorithm)
    if bias is not None:
        check_float_array(bias, "bias", ndim=1, dtype=x.dtype)
        check_shape(bias, (problem.n_out,), "bias")
    y = np.empty(problem.output_shape, x.dtype)
    BACKENDS[chosen].forward(problem, bias, y)
    return y


def conv2d_backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, stride=1, padding=0,
                    dilation=1, groups: int = 1, *, input_grad: bool = True,
                    algorithm: str = "auto"):
    """Gradients of ``sum(conv2d(x, weight, bias, ...) * dy)``.

    Parameters
    ----------
    dy : ndarray, dtype of ``x``, shape (N, K, out_h, out_w)
        Gradient of the loss with respect to the convolution's output.
    x, weight, stride, padding, dilation, groups : as in :func:`conv2d`
    input_grad : bool, keyword-only
        When False, ``dx`` is not computed (returned as None): the first layer
        of a network needs no input gradient.
    algorithm : {"auto", "gemm", "winograd2x2", "winograd4x4", "direct"}, keyword-only
        Algorithm for both gradients (see :func:`cnnblas.choose_algorithm`); the bias
        gradient is a plain sum of ``dy``.

    Returns
    -------
    dx : ndarray, shape of ``x`` (or None when ``input_grad`` is False)
    dweight : ndarray, shape of ``weight``
    dbias : ndarray, shape (K,)
    """
    problem, chosen = _setup(x, weight, stride, padding, dilation, groups, algorithm)
    check_float_array(dy, "dy", ndim=4, dtype=x.dtype)
    check_shape(dy, problem.output_shape, "dy")
    return BACKENDS[chosen].backward(problem, np.ascontiguousarray(dy), input_grad)


def conv2d_input_grad(dy: np.ndarray, weight: np.ndarray, input_size, stride=1, padding=0,
                      dilation=1, groups: int = 1, *, algorithm: str = "auto") -> np.ndarray:
    """Input gradient of :func:`conv2d` for an input of spatial size ``input_size``,
    without the input itself (``torch.nn.grad.conv2d_input``).

    The same ``dx`` as ``conv2d_backward(dy, x, weight, ...)[0]`` for any ``x``
    of that size, by the same backends, but without the weight gradient.

    Parameters
    ----------
    dy : ndarray, float32 or float64, shape (N, K, out_h, out_w)
        ``out_h``, ``out_w`` must be the convolution's output size for ``input_size``.
    weight : ndarray, dtype of ``dy``, shape (K, C/groups, kh, kw)
    input_size : int or (H, W)
        The forward input's spatial size; several sizes give the same output
        size when the stride is above 1, so it cannot be inferred.
    stride, padding, dilation, groups, algorithm : as in :func:`conv2d`

    Returns
    -------
    dx : ndarray, dtype of ``dy``, shape (N, C, H, W) with ``C = weight.shape[1] * groups``
    """
    check_float_array(dy, "dy", ndim=4)
    check_float_array(weight, "weight", ndim=4, dtype=dy.dtype)
    groups = check_int(groups, "groups", minimum=1)
    check_groups(groups, weight.shape[1] * groups, weight.shape[0])
    geom = conv_geometry(as_pair(input_size, "input_size"), weight.shape[2:], stride, padding,
                         dilation, kernel_name="weight kernel")
    check_shape(dy, (dy.shape[0], weight.shape[0], geom.out_h, geom.out_w), "dy")
    problem = input_grad_problem(dy.shape[0], np.ascontiguousarray(weight), geom, groups)
    return input_grad_pass(problem, np.ascontiguousarray(dy), algorithm)


def input_grad_pass(problem: ConvProblem, dy: np.ndarray, algorithm: str = "auto") -> np.ndarray:
    """dx of a validated ``problem`` (see :func:`~cnnblas.ops.problem.input_grad_problem`)
    for a C-contiguous ``dy`` (N, K, out_h, out_w), by the backend
    :func:`~cnnblas.ops.algorithms.choose_algorithm` names for its shape."""
    geom = problem.geom
    chosen = choose_algorithm(problem.x.shape, problem.weight.shape,
                              (geom.stride_h, geom.stride_w),
                              (geom.dilation_h, geom.dilation_w), problem.groups, algorithm)
    dx = np.empty(problem.x.shape, dy.dtype)
    BACKENDS[chosen].input_grad(problem, dy, dx)
    return dx
