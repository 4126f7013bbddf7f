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

from cnnblas.reference.direct import conv2d_backward_direct, conv2d_direct
from cnnblas.reference.formulas import conv2d_backward_scipy, conv2d_scipy
from cnnblas.reference.im2col import conv2d_backward_im2col, conv2d_im2col
from cnnblas.reference.loops import (
    col2im_loops,
    conv2d_loops,
    conv_transpose2d_loops,
    im2col_loops,
    max_pool2d_loops,
)

__all__ = [
    "conv2d_loops", "conv_transpose2d_loops", "im2col_loops", "col2im_loops",
    "conv2d_im2col", "conv2d_backward_im2col",
    "conv2d_direct", "conv2d_backward_direct",
    "conv2d_scipy", "conv2d_backward_scipy",
    "max_pool2d_loops",
]
