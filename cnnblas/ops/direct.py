"""Direct stride-1 convolution for layers with very few weights (``algorithm="direct"``).

For a layer like LeNet-5's first (1 -> 6 channels, 5x5) the im2col GEMM is
(6 x 25)·(25 x L): too thin for BLAS to run well, after an im2col that writes
25 times the input. The kernels of :mod:`cnnblas._kernels.direct_conv` skip
both: one long vectorised multiply-add per weight element over a whole image.
They pay off while the weight is small and the image rows are long
(benchmarks/LOG.md: forward+backward 0.32-0.64x the GEMM path's time
on 150-864 weights, 0.5x on a 16 -> 16 3x3 layer, where they also beat
Winograd; but 1.24x on LeNet-5's second layer, 2,400 weights on 10-wide
rows, 3x on 25,000 weights, and 1.2-1.3x on 1x1 layers, which the GEMM
computes without im2col), hence :func:`direct_preferred`.

Inputs are assumed validated by :func:`cnnblas.conv2d` /
:func:`cnnblas.conv2d_backward`; the batch is split across worker threads by
:func:`cnnblas.ops.parallel.map_image_ranges`.
"""

from __future__ import annotations

import numpy as np

from cnnblas._kernels.direct_conv import direct_backward, direct_forward
from cnnblas.checks import ConvGeometry, as_pair
from cnnblas.ops import parallel

#: ``algorithm="auto"`` takes the direct kernels for stride-1 layers with at
#: most this many weight elements (K * C * kh * kw: a 16 -> 16 3x3 layer)...
MAX_AUTO_WEIGHTS = 2304
#: ...and input rows at least this many times (kw - 1) wide, so that the
#: kw - 1 columns computed and dropped per row stay a small share.
MIN_WIDTH_PER_EXTRA_COLUMN = 4


def direct_preferred(x_shape, weight_shape) -> bool:
    """The ``algorithm="auto"`` rule for a layer the direct kernels support."""
    kernel_h, kernel_w = weight_shape[2:]
    if kernel_h == kernel_w == 1:  # the GEMM needs no im2col there and was faster
        return False
    return (int(np.prod(weight_shape)) <= MAX_AUTO_WEIGHTS
            and x_shape[3] >= MIN_WIDTH_PER_EXTRA_COLUMN * (kernel_w - 1))


def direct_supported(weight_shape, stride=1, dilation=1, groups: int = 1) -> bool:
    """True when the direct kernels can compute this layer: stride 1, dilation 1,
    one group (any kernel size and padding)."""
    return (
        len(weight_shape) == 4
        and as_pair(stride, "stride") == (1, 1)
        and as_pair(dilation, "dilation") == (1, 1)
        and groups == 1
    )


def forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geom: ConvGeometry,
            y: np.ndarray, flops: float) -> None:
    """Fill ``y`` (N, K, out_h, out_w) with the convolution of C-contiguous ``x``."""
    if bias is None:
        bias = np.zeros(weight.shape[0], x.dtype)
    pad = (geom.pad_top, geom.pad_left)
    parallel.map_image_ranges(
        lambda start, stop, serial: direct_forward(x, weight, bias, pad, y, start, stop),
        x.shape[0], flops)


def inputs_finite(x: np.ndarray, weight: np.ndarray) -> bool:
    """Whether the backward kernels give exact results for these arrays.

    They multiply the zeros of the dropped columns by input and weight values,
    which is harmless for finite values but turns an inf into NaN where no
    real output used it; :func:`cnnblas.conv2d_backward` takes the GEMM path
    when this is False.
    """
    return bool(np.isfinite(x).all() and np.isfinite(weight).all())


def backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry,
             input_grad: bool, flops: float):
    """(dx or None, dweight, dbias) for C-contiguous ``dy``, ``x`` and ``weight``,
    which must pass :func:`inputs_finite`.

    The weight and bias gradients are accumulated in float64 per worker and
    returned in ``x``'s dtype.
    """
    dx = np.empty_like(x) if input_grad else np.empty((0, 0, 0, 0), x.dtype)
    pad = (geom.pad_top, geom.pad_left)
    partials = parallel.map_image_ranges(
        lambda start, stop, serial: direct_backward(x, weight, dy, pad, dx, input_grad,
                                                    start, stop),
        x.shape[0], flops)
    dweight = np.sum([part[0] for part in partials], axis=0)
    dbias = np.sum([part[1] for part in partials], axis=0)
    return (dx if input_grad else None), dweight.astype(x.dtype), dbias.astype(x.dtype)
