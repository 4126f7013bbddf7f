"""Direct stride-1 convolution for layers with very few weights (``algorithm="direct"``).

For a layer like LeNet-5's first (1 -> 6 channels, 5x5) the im2col GEMM is
(6 x 25)·(25 x L): too thin for BLAS to run well, after an im2col that writes
25 times the input. The kernels of :mod:`cnnblas._kernels.direct_conv` skip
both: one long vectorised multiply-add per weight element over a whole image.
They pay off while the weight is small (measured in benchmarks/NOTES.md:
3x faster than the GEMM path on 150 weights, 1.0-1.4x on 500-864, 2x slower
on 2,400), hence :data:`MAX_AUTO_WEIGHTS`.

Inputs are assumed validated by :func:`cnnblas.conv2d` /
:func:`cnnblas.conv2d_backward`; the batch is split across worker threads by
:func:`cnnblas.ops.parallel.map_image_ranges`.
"""

from __future__ import annotations

import numpy as np

from cnnblas._kernels.direct_conv import direct_backward, direct_forward
from cnnblas.ops import parallel
from cnnblas.ops._checks import ConvGeometry, as_pair

#: ``algorithm="auto"`` takes the direct kernels for stride-1 layers with at
#: most this many weight elements (K * C * kh * kw).
MAX_AUTO_WEIGHTS = 1024


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


def backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry,
             input_grad: bool, flops: float):
    """(dx or None, dweight, dbias) for C-contiguous ``dy``, ``x`` and ``weight``.

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
