"""Direct (im2col-free) stride-1 convolution for layers with very few weights (Numba).

For a layer such as LeNet-5's first one (1 input channel, 6 output channels,
5x5) the im2col GEMM is (6 x 25)·(25 x L): far too thin for BLAS, and im2col
writes 25 times the input. These kernels instead run one long vectorised
multiply-add per weight element over a whole image:

Each image's channels are copied into a zero-padded plane ``xp`` of width
``padded_w = out_w + kw - 1``, stored flat. For stride 1, output ``(oh, ow)``
reads ``xp[(oh + i) * padded_w + ow + j]``, so with the output also stored
flat at the padded width (``t = oh * padded_w + ow``) every weight element
``(c, i, j)`` contributes ``w[k, c, i, j] * xp[c, t + i * padded_w + j]`` to
every ``t``: one contiguous loop of ``out_h * padded_w`` elements. The
``kw - 1`` extra columns of each output row are computed and dropped (4 of 32
for LeNet-5's first layer).

- forward: ``y_wide[k] += w[k, c, i, j] * xp[c, shift:shift + span]``;
- weight gradient: ``dw[k, c, i, j] += dot(dy_wide[k], xp[c, shift:shift + span])``,
  with ``dy`` spread to the padded width and zeros in the dropped columns;
- input gradient: ``dxp[c, shift:shift + span] += w[k, c, i, j] * dy_wide[k]``,
  then the interior of ``dxp`` is ``dx``.

Here ``shift = i * padded_w + j`` and ``span = out_h * padded_w``. Each kernel
runs images [start, stop) in the calling thread with the GIL released (the
engine splits the batch across worker threads), and expects validated
C-contiguous arrays; :mod:`cnnblas.ops.direct` checks and sizes them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cnnblas._kernels.planes import copy_from_padded, copy_into_padded


@njit(cache=True, nogil=True)
def direct_forward(x, weight, bias, pad, y, start, stop):
    """``y[start:stop] = conv(x, weight) + bias`` for stride 1, dilation 1, one group.

    Parameters
    ----------
    x : ndarray, (N, C, H, W), float32 or float64, C-contiguous
    weight : ndarray, (K, C, kh, kw), dtype of ``x``
    bias : ndarray, (K,), dtype of ``x`` (zeros for no bias)
    pad : (pad_top, pad_left); the bottom/right padding follows from ``y``'s size
    y : ndarray, (N, K, out_h, out_w), dtype of ``x``, written
    start, stop : int
        The images to compute.
    """
    channels = x.shape[1]
    n_out, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = y.shape[2], y.shape[3]
    padded_w = out_w + kernel_w - 1
    span = out_h * padded_w
    xp = np.zeros((channels, (out_h + kernel_h - 1) * padded_w + kernel_w), x.dtype)
    y_wide = np.empty(span, y.dtype)
    for n in range(start, stop):
        for c in range(channels):
            copy_into_padded(x[n, c], xp[c], pad[0], pad[1], padded_w)
        for k in range(n_out):
            b = bias[k]
            for t in range(span):
                y_wide[t] = b
            for c in range(channels):
                for i in range(kernel_h):
                    # Up to 4 kernel columns per pass: each output element is loaded
                    # and stored once per 4 multiply-adds instead of once per one,
                    # which bounded the one-column loop (about 1.4x faster on
                    # 5x5 and 3x3 kernels; see benchmarks/LOG.md).
                    # Written out rather than in a helper: the inlined helper ran
                    # 25 % slower.
                    row = i * padded_w
                    j = 0
                    while j + 4 <= kernel_w:
                        w0, w1 = weight[k, c, i, j], weight[k, c, i, j + 1]
                        w2, w3 = weight[k, c, i, j + 2], weight[k, c, i, j + 3]
                        src = xp[c, row + j : row + j + span + 3]
                        for t in range(span):
                            y_wide[t] += (w0 * src[t] + w1 * src[t + 1]
                                          + w2 * src[t + 2] + w3 * src[t + 3])
                        j += 4
                    if kernel_w - j == 3:
                        w0, w1 = weight[k, c, i, j], weight[k, c, i, j + 1]
                        w2 = weight[k, c, i, j + 2]
                        src = xp[c, row + j : row + j + span + 2]
                        for t in range(span):
                            y_wide[t] += w0 * src[t] + w1 * src[t + 1] + w2 * src[t + 2]
                        j += 3
                    if kernel_w - j == 2:
                        w0, w1 = weight[k, c, i, j], weight[k, c, i, j + 1]
                        src = xp[c, row + j : row + j + span + 1]
                        for t in range(span):
                            y_wide[t] += w0 * src[t] + w1 * src[t + 1]
                        j += 2
                    if kernel_w - j == 1:
                        w0 = weight[k, c, i, j]
                        src = xp[c, row + j : row + j + span]
                        for t in range(span):
                            y_wide[t] += w0 * src[t]
            for oh in range(out_h):
                dst = y[n, k, oh]
                src = y_wide[oh * padded_w : oh * padded_w + out_w]
                for t in range(out_w):
                    dst[t] = src[t]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot(a, b, length, zero):
    """Sum of ``a[:length] * b[:length]``, accumulated in the type of ``zero``.

    Reassociation (not the rest of ``fastmath``: inf and NaN must stay
    meaningful) lets LLVM split the sum over vector lanes (each lane adds
    ``length / lanes`` terms, a few dozen here). Passing the arrays' own zero
    keeps float32 sums in float32 lanes, twice as many as float64's; the
    caller adds the per-image results in float64.
    """
    total = zero
    for t in range(length):
        total += a[t] * b[t]
    return total


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _sum(a, length):
    """Sum of ``a[:length]`` in float64, vectorised like :func:`_dot`."""
    total = 0.0
    for t in range(length):
        total += a[t]
    return total


@njit(cache=True, nogil=True)
def direct_backward(x, weight, dy, pad, dx, input_grad, start, stop):
    """Weight gradient (returned) and, when ``input_grad``, input gradient of images [start, stop).

    Parameters
    ----------
    x, weight, pad : as in :func:`direct_forward`
    dy : ndarray, (N, K, out_h, out_w), dtype of ``x``
    dx : ndarray, shape of ``x``, written for images [start, stop) when ``input_grad``
    input_grad : bool
    start, stop : int

    Returns
    -------
    dweight : ndarray, (K, C, kh, kw), float64
        Summed over the images; the caller adds the workers' parts and casts.
    dbias : ndarray, (K,), float64
    """
    channels = x.shape[1]
    n_out, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    pad_top, pad_left = pad
    padded_w = out_w + kernel_w - 1
    span = out_h * padded_w
    plane = (out_h + kernel_h - 1) * padded_w + kernel_w
    xp = np.zeros((channels, plane), x.dtype)
    dxp = np.zeros((channels, plane), x.dtype)
    dy_wide = np.zeros((n_out, span), dy.dtype)  # the dropped columns stay 0
    dweight = np.zeros((n_out, channels, kernel_h, kernel_w), np.float64)
    dbias = np.zeros(n_out, np.float64)
    zero = np.zeros(1, dy.dtype)[0]  # a 0 of dy's dtype, for the per-image dot products
    for n in range(start, stop):
        for c in range(channels):
            copy_into_padded(x[n, c], xp[c], pad_top, pad_left, padded_w)
        for k in range(n_out):
            for oh in range(out_h):
                dst = dy_wide[k, oh * padded_w : oh * padded_w + out_w]
                src = dy[n, k, oh]
                for t in range(out_w):
                    dst[t] = src[t]
            dbias[k] += _sum(dy_wide[k], span)
        for k in range(n_out):  # k outermost: dy_wide[k] and the planes stay in L1
            grad = dy_wide[k]
            for c in range(channels):
                for i in range(kernel_h):
                    for j in range(kernel_w):
                        shift = i * padded_w + j
                        dweight[k, c, i, j] += _dot(grad, xp[c, shift : shift + span], span,
                                                    zero)
        if input_grad:
            dxp[:, :] = 0
            for c in range(channels):
                # Four output channels per pass, for the reason the forward takes
                # four kernel columns per pass; those four dy rows and the plane
                # stay in L1 across the kernel's (i, j).
                for k in range(0, n_out - n_out % 4, 4):
                    g0, g1 = dy_wide[k], dy_wide[k + 1]
                    g2, g3 = dy_wide[k + 2], dy_wide[k + 3]
                    for i in range(kernel_h):
                        for j in range(kernel_w):
                            w0, w1 = weight[k, c, i, j], weight[k + 1, c, i, j]
                            w2, w3 = weight[k + 2, c, i, j], weight[k + 3, c, i, j]
                            shift = i * padded_w + j
                            dst = dxp[c, shift : shift + span]
                            for t in range(span):
                                dst[t] += w0 * g0[t] + w1 * g1[t] + w2 * g2[t] + w3 * g3[t]
                for k in range(n_out - n_out % 4, n_out):
                    g0 = dy_wide[k]
                    for i in range(kernel_h):
                        for j in range(kernel_w):
                            w0 = weight[k, c, i, j]
                            shift = i * padded_w + j
                            dst = dxp[c, shift : shift + span]
                            for t in range(span):
                                dst[t] += w0 * g0[t]
            for c in range(channels):
                copy_from_padded(dxp[c], pad_top, pad_left, padded_w, dx[n, c])
    return dweight, dbias
