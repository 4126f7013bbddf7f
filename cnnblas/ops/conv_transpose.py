"""Transposed 2-D convolution: a convolution's passes run the other way round.

Shapes (NCHW, PyTorch's ``conv_transpose2d`` layout):

- ``x``: (N, C_in, H, W); ``weight``: (C_in, C_out/groups, kh, kw); ``bias``: (C_out,);
- ``y``, ``dy``: (N, C_out, out_h, out_w) with, per axis,
  ``out = (in - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``.

Read as a convolution weight, ``weight`` is (K, C/groups, kh, kw) with K = C_in
and C = C_out: the weight of the convolution that maps a (N, C_out, out_h,
out_w) image to a (N, C_in, H, W) one with the same stride, padding and
dilation. The transposed convolution is that convolution's adjoint, so no new
engine is needed (Caffe's deconvolution layer and PyTorch's do the same):

==============================  ==================================================
transposed convolution          convolution (input ``y``-sized, output ``x``-sized)
==============================  ==================================================
forward ``y``                   input gradient with ``dy = x``: ``col2im(Wmᵀ @ x)``
input gradient ``dx``           forward of ``dy``: ``Wm @ im2col(dy)``
weight gradient ``dweight``     weight gradient with input ``dy``, output gradient ``x``
bias gradient ``dbias``         ``dy`` summed over N, out_h, out_w
==============================  ==================================================

Each pass goes to the backend :func:`cnnblas.choose_algorithm` picks for that
convolution (the im2col GEMMs, Winograd or the direct kernels).

``output_padding`` only adds rows and columns at the bottom and right of
``y``, and must be smaller than the stride or the dilation. When it is smaller
than the stride, the convolution's geometry on the enlarged output gives back
x's size unchanged. When it is not (possible only with dilation > stride), the
last ``output_padding - stride + 1`` rows (columns) lie in no window: the
geometry carries them as a negative bottom (right) padding, which the im2col
and col2im kernels, reading only the top and left padding, handle as they are;
only the GEMM backend supports dilation, so no other backend sees it.
"""

from __future__ import annotations

import numpy as np

from cnnblas.checks import ConvGeometry, Pair, as_pair, check_float_array, check_int, check_shape
from cnnblas.ops.algorithms import BACKENDS, choose_algorithm
from cnnblas.ops.conv import input_grad_pass
from cnnblas.ops.problem import ConvProblem, input_grad_problem


def check_output_padding(output_padding, stride: Pair, dilation: Pair) -> Pair:
    """``output_padding`` as an (h, w) pair of ints, each >= 0 and smaller than the
    stride or the dilation of its axis (PyTorch's rule); ValueError otherwise."""
    pair = as_pair(output_padding, "output_padding", minimum=0)
    if any(pair[a] >= max(stride[a], dilation[a]) for a in range(2)):
        raise ValueError(
            f"output_padding {pair} must be smaller than either stride {stride} or dilation "
            f"{dilation} on every axis"
        )
    return pair


def transposed_geometry(in_size: Pair, kernel: Pair, stride, padding, output_padding,
                        dilation) -> ConvGeometry:
    """Validate the window arguments of a transposed convolution of an ``in_size``
    (H, W) input and return the geometry of the convolution it transposes.

    That convolution's input is the transposed output (``in_h``, ``in_w`` are
    out_h, out_w of the module docstring) and its output is ``in_size``
    (``out_h``, ``out_w``). ``padding`` is an int or an (h, w) pair: PyTorch's
    transposed convolution takes neither strings nor per-side padding.

    Raises
    ------
    TypeError, ValueError
        For a non-positive stride or dilation, a negative padding or output
        padding, an output padding not smaller than stride or dilation, or an
        output size below 1; each message names the argument and the values.
    """
    stride = as_pair(stride, "stride")
    dilation = as_pair(dilation, "dilation")
    padding = as_pair(padding, "padding", minimum=0)
    output_padding = check_output_padding(output_padding, stride, dilation)
    out = tuple(
        (in_size[a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1)
        + output_padding[a] + 1
        for a in range(2)
    )
    if min(out) < 1:
        raise ValueError(
            f"output size {out[0]}x{out[1]} is not positive: (in - 1)*stride - 2*padding + "
            f"dilation*(kernel - 1) + output_padding + 1 per axis, with input "
            f"{in_size[0]}x{in_size[1]}, kernel {kernel[0]}x{kernel[1]}, stride {stride}, "
            f"padding {padding}, dilation {dilation}, output_padding {output_padding}"
        )
    # Bottom/right padding giving exactly in_size windows (negative: rows in no window).
    bottom, right = (padding[a] - max(0, output_padding[a] - stride[a] + 1) for a in range(2))
    return ConvGeometry(out[0], out[1], kernel[0], kernel[1], stride[0], stride[1],
                        padding[0], bottom, padding[1], right, dilation[0], dilation[1],
                        in_size[0], in_size[1])


def _check(x, weight, stride, padding, output_padding, groups, dilation):
    """Validate the arguments of both passes; return (weight, geometry, groups)."""
    check_float_array(x, "x", ndim=4)
    check_float_array(weight, "weight", ndim=4, dtype=x.dtype)
    groups = check_int(groups, "groups", minimum=1)
    if x.shape[1] != weight.shape[0]:
        raise ValueError(
            f"weight of shape {weight.shape} (in_channels, out_channels/groups, kh, kw) expects "
            f"x with {weight.shape[0]} channels; x has {x.shape[1]} (shape {x.shape})"
        )
    if x.shape[1] % groups:
        raise ValueError(f"input channels ({x.shape[1]}) must be divisible by groups ({groups})")
    geom = transposed_geometry(x.shape[2:], weight.shape[2:], stride, padding, output_padding,
                               dilation)
    return np.ascontiguousarray(weight), geom, groups


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
                     stride=1, padding=0, output_padding=0, groups: int = 1, dilation=1, *,
                     algorithm: str = "auto") -> np.ndarray:
    """Transposed 2-D convolution, the same as ``torch.nn.functional.conv_transpose2d``.

    Every input pixel adds itself times the kernel (taps ``dilation`` apart)
    to the output, the pixels ``stride`` apart; then ``padding`` rows and
    columns are cut from each side and ``output_padding`` rows and columns
    added at the bottom and right.

    Parameters
    ----------
    x : ndarray, float32 or float64, shape (N, C_in, H, W)
    weight : ndarray, dtype of ``x``, shape (C_in, C_out/groups, kh, kw)
    bias : ndarray, dtype of ``x``, shape (C_out,), optional
    stride, dilation : int or (h, w), each >= 1
    padding : int or (h, w), each >= 0
    output_padding : int or (h, w), each >= 0 and smaller than the stride or the
        dilation of its axis
    groups : int
        C_in and C_out are split into ``groups`` independent blocks.
    algorithm : {"auto", "gemm", "winograd2x2", "winograd4x4", "direct"}, keyword-only
        The algorithm of the convolution this one transposes (see
        :func:`cnnblas.choose_algorithm`, asked about a (N, C_out, out_h, out_w)
        input and this weight).

    Returns
    -------
    y : ndarray, dtype of ``x``, shape (N, C_out, out_h, out_w)
        ``out = (in - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``.

    Examples
    --------
    2x upsampling by the bilinear kernel (stride 2, kernel 4, padding 1): the
    inner pixels are bilinear interpolations, the border ones lack the
    neighbours outside the image.

    >>> import numpy as np, cnnblas as cb
    >>> taps = np.array([0.25, 0.75, 0.75, 0.25])
    >>> weight = np.outer(taps, taps).reshape(1, 1, 4, 4)
    >>> x = np.array([[[[0.0, 4.0], [8.0, 12.0]]]])
    >>> cb.conv_transpose2d(x, weight, stride=2, padding=1)[0, 0]
    array([[0.  , 0.75, 2.25, 2.25],
           [1.5 , 3.  , 5.  , 4.5 ],
           [4.5 , 7.  , 9.  , 7.5 ],
           [4.5 , 6.75, 8.25, 6.75]])
    """
    weight, geom, groups = _check(x, weight, stride, padding, output_padding, groups, dilation)
    n_out = weight.shape[1] * groups
    if bias is not None:
        check_float_array(bias, "bias", ndim=1, dtype=x.dtype)
        check_shape(bias, (n_out,), "bias")
    problem = input_grad_problem(x.shape[0], weight, geom, groups)
    y = input_grad_pass(problem, np.ascontiguousarray(x), algorithm)
    if bias is not None:
        y += bias[:, None, None]
    return y


def conv_transpose2d_backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, stride=1,
                              padding=0, output_padding=0, groups: int = 1, dilation=1, *,
                              input_grad: bool = True, algorithm: str = "auto"):
    """Gradients of ``sum(conv_transpose2d(x, weight, bias, ...) * dy)``.

    Parameters
    ----------
    dy : ndarray, dtype of ``x``, shape (N, C_out, out_h, out_w)
        Gradient of the loss with respect to the transposed convolution's output.
    x, weight, stride, padding, output_padding, groups, dilation, algorithm :
        as in :func:`conv_transpose2d`
    input_grad : bool, keyword-only
        When False, ``dx`` is not computed (returned as None).

    Returns
    -------
    dx : ndarray, shape of ``x`` (or None when ``input_grad`` is False)
        The convolution of ``dy`` by ``weight`` (read as (K, C/groups, kh, kw)).
    dweight : ndarray, shape of ``weight``
    dbias : ndarray, shape (C_out,)
    """
    weight, geom, groups = _check(x, weight, stride, padding, output_padding, groups, dilation)
    check_float_array(dy, "dy", ndim=4, dtype=x.dtype)
    check_shape(dy, (x.shape[0], weight.shape[1] * groups, geom.in_h, geom.in_w), "dy")
    # The convolution whose input is dy and whose output (gradient) is x.
    problem = ConvProblem(np.ascontiguousarray(dy), weight, geom, groups)
    chosen = choose_algorithm(dy.shape, weight.shape, (geom.stride_h, geom.stride_w),
                              (geom.dilation_h, geom.dilation_w), groups, algorithm)
    backend = BACKENDS[chosen]
    _, dweight, _ = backend.backward(problem, np.ascontiguousarray(x), False)
    dx = None
    if input_grad:
        dx = np.empty(x.shape, x.dtype)
        backend.forward(problem, None, dx)
    return dx, dweight, dy.sum(axis=(0, 2, 3))
