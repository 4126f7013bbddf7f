"""Direct stride-1 convolution for layers with very few weights (``algorithm="direct"``).

For a layer like LeNet-5's first (1 -> 6 channels, 5x5) the im2col GEMM is
(6 x 25)·(25 x L): too thin for BLAS to run well, after an im2col that writes
25 times the input. The kernels of :mod:`cnnblas._kernels.direct_fast` skip
both: one long vectorised multiply-add per weight element over a whole image.
They pay off while the weight is small and the image rows are long; when
``algorithm="auto"`` takes them is decided in :mod:`cnnblas.ops.algorithms`.

Inputs are assumed validated by :func:`cnnblas.conv2d` /
:func:`cnnblas.conv2d_backward`; the batch is split across worker threads by
:func:`cnnblas.ops.parallel.map_image_ranges`.
"""

from __future__ import annotations

import numpy as np

from cnnblas._kernels.direct_fast import direct_backward, direct_forward
from cnnblas.checks import as_pair
from cnnblas.ops import gemm, parallel
from cnnblas.ops.problem import ConvProblem, all_finite


def supports(weight_shape, stride=1, dilation=1, groups: int = 1) -> bool:
    """True when the direct kernels can compute this layer: stride 1, dilation 1,
    one group (any kernel size and padding)."""
    return (
        len(weight_shape) == 4
        and as_pair(stride, "stride") == (1, 1)
        and as_pair(dilation, "dilation") == (1, 1)
        and groups == 1
    )


def forward(problem: ConvProblem, bias: np.ndarray | None, y: np.ndarray) -> None:
    """Fill ``y`` (N, K, out_h, out_w) with the convolution of ``problem``, plus ``bias``."""
    x, weight = problem.x, problem.weight
    if bias is None:
        bias = np.zeros(weight.shape[0], x.dtype)
    pad = (problem.geom.pad_top, problem.geom.pad_left)
    parallel.map_image_ranges(
        lambda start, stop, serial: direct_forward(x, weight, bias, pad, y, start, stop),
        problem.n_images, problem.flops)


def input_grad(problem: ConvProblem, dy: np.ndarray, dx: np.ndarray) -> None:
    """Fill ``dx`` (N, C, H, W) with the input gradient of ``problem`` for a
    C-contiguous ``dy``, without the weight gradient; ``problem.x`` is not read.

    For stride 1 the input gradient is itself a stride-1 convolution: ``dy``
    correlated with the weight rotated by 180° and transposed to (C, K, kh, kw),
    padded by ``k - 1 - p`` for each forward padding ``p``, which the forward
    kernel computes. A padding of ``k`` or more would crop ``dy`` instead; the
    GEMM backend handles that case.
    """
    geom = problem.geom
    if (max(geom.pad_top, geom.pad_bottom) >= geom.kernel_h
            or max(geom.pad_left, geom.pad_right) >= geom.kernel_w):
        gemm.input_grad(problem, dy, dx)
        return
    flipped = np.ascontiguousarray(problem.weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    no_bias = np.zeros(flipped.shape[0], dy.dtype)
    pad = (geom.kernel_h - 1 - geom.pad_top, geom.kernel_w - 1 - geom.pad_left)
    parallel.map_image_ranges(
        lambda start, stop, serial: direct_forward(dy, flipped, no_bias, pad, dx, start, stop),
        problem.n_images, problem.flops)


def inputs_finite(x: np.ndarray, weight: np.ndarray) -> bool:
    """Whether the backward kernels give exact results for these arrays.

    They multiply the zeros of the dropped columns by input and weight values,
    which is harmless for finite values but turns an inf into NaN where no
    real output used it; :func:`backward` runs the GEMM backend instead when
    this is False.
    """
    return all_finite(x, weight)


def backward(problem: ConvProblem, dy: np.ndarray, input_grad: bool):
    """(dx or None, dweight, dbias) of ``problem`` for a C-contiguous ``dy``.

    The weight and bias gradients are accumulated in float64 per worker and
    returned in ``x``'s dtype. Given non-finite inputs (:func:`inputs_finite`),
    the GEMM backend computes the gradients instead.
    """
    x, weight = problem.x, problem.weight
    if not inputs_finite(x, weight):
        return gemm.backward(problem, dy, input_grad)
    dx = np.empty_like(x) if input_grad else np.empty((0, 0, 0, 0), x.dtype)
    pad = (problem.geom.pad_top, problem.geom.pad_left)
    partials = parallel.map_image_ranges(
        lambda start, stop, serial: direct_backward(x, weight, dy, pad, dx, input_grad,
                                                    start, stop),
        problem.n_images, problem.backward_flops(input_grad))
    dweight = np.sum([part[0] for part in partials], axis=0)
    dbias = np.sum([part[1] for part in partials], axis=0)
    return (dx if input_grad else None), dweight.astype(x.dtype), dbias.astype(x.dtype)
