"""Which backend computes a convolution: the names, the checks and the per-shape choice.

=================  =========================================  ==================================
algorithm          backend                                    computes
=================  =========================================  ==================================
``"gemm"``         :mod:`cnnblas.ops.gemm` (im2col + GEMM)    every layer
``"winograd2x2"``  :mod:`cnnblas.ops.winograd`, F(2x2, 3x3)   3x3, stride 1, dilation 1, 1 group
``"winograd4x4"``  :mod:`cnnblas.ops.winograd`, F(4x4, 3x3)   3x3, stride 1, dilation 1, 1 group
``"direct"``       :mod:`cnnblas.ops.direct` (no im2col)      stride 1, dilation 1, 1 group
=================  =========================================  ==================================

``"auto"`` picks one per layer shape with :func:`choose_algorithm`, from the
thresholds below; each says why it is where it is (the measurements are in
benchmarks/LOG.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from cnnblas.ops import direct, gemm, winograd

ALGORITHMS = ("auto", "gemm", "winograd2x2", "winograd4x4", "direct")

#: Winograd algorithm name -> output tile side (F(2x2, 3x3) or F(4x4, 3x3)).
WINOGRAD_TILES = {"winograd2x2": 2, "winograd4x4": 4}

# "auto" takes Winograd for 3x3 stride-1 layers only where it was measured to
# pay (2 threads, forward+backward): both channel counts at least this large
# (with C = 3 the GEMMs are too thin and the transforms dominate: the direct
# kernels win) ...
_WINOGRAD_MIN_CHANNELS = 8
# ... and images at least this large (a 4x4 image is one tile plus a junk
# tile per tile row: the im2col GEMM was 1.5-2.6x faster).
_WINOGRAD_MIN_SIZE = 8
# F(4x4, 3x3) up to this many weights per 3x3 position (K*C), F(2x2, 3x3) above:
# 256 -> 256 layers on 14x14 images ran 1.9x slower with F(4x4, 3x3), whose
# (36, K, C) transformed weights no longer fit the caches.
_WINOGRAD4_MAX_CHANNEL_PAIRS = 128 * 128

# A single image (inference at batch 1) runs serially, its GEMMs only as wide as
# the image: there F(4x4, 3x3)'s fixed costs (weight transform, P = 36 thin GEMMs
# of 6-20 tile columns) lost to the direct kernels on layers they take and to
# the im2col GEMM on images under this many pixels (ResNet-20's 16x16 and 8x8
# stages: 0.22 vs 0.16 ms and 0.42 vs 0.14 ms, 1 thread; 32x32 32 -> 32: 0.38
# Winograd vs 0.47 GEMM).
_WINOGRAD_MIN_PIXELS_ONE_IMAGE = 1024

# "auto" takes the direct kernels for stride-1 layers with at most this many
# weight elements (K * C * kh * kw: a 16 -> 16 3x3 layer): there forward and
# backward took 0.3-0.65x the GEMM path's time, while LeNet-5's second layer
# (2,400 weights on 10-wide rows) took 1.24x and 25,000 weights 3x ...
_DIRECT_MAX_WEIGHTS = 2304
# ... and input rows at least this many times (kw - 1) wide, so that the
# kw - 1 columns the direct kernels compute and drop per row stay a small share.
_DIRECT_MIN_WIDTH_PER_EXTRA_COLUMN = 4


class Backend(NamedTuple):
    """What :func:`cnnblas.conv2d` needs of an algorithm: the same three functions
    in every backend module."""

    supports: Callable  # (weight_shape, stride, dilation, groups) -> bool
    forward: Callable  # (problem, bias, y) -> None, fills y
    backward: Callable  # (problem, dy, input_grad) -> (dx or None, dweight, dbias)
    input_grad: Callable  # (problem, dy, dx) -> None, fills dx; problem.x is not read
    needs: str  # what ``supports`` asks for, for the error message ("" when it takes all)


_WINOGRAD_NEEDS = "a 3x3 kernel, stride 1, dilation 1 and groups 1"

BACKENDS = {
    "gemm": Backend(gemm.supports, gemm.forward, gemm.backward, gemm.input_grad, ""),
    **{name: Backend(winograd.supports, functools.partial(winograd.forward, tile=tile),
                     functools.partial(winograd.backward, tile=tile),
                     functools.partial(winograd.input_grad, tile=tile), _WINOGRAD_NEEDS)
       for name, tile in WINOGRAD_TILES.items()},
    "direct": Backend(direct.supports, direct.forward, direct.backward, direct.input_grad,
                      "stride 1, dilation 1 and groups 1"),
}


def check_algorithm(weight_shape, stride=1, dilation=1, groups: int = 1,
                    algorithm: str = "auto") -> None:
    """Raise unless ``algorithm`` is one of :data:`ALGORITHMS` and can compute a
    layer with this (K, C/groups, kh, kw) weight and geometry: TypeError for a
    non-string, ValueError for an unknown name or a forced "winograd2x2",
    "winograd4x4" or "direct" on a layer it cannot compute. Needs no input,
    so layers check it when they are built."""
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a str, one of {ALGORITHMS}; got {algorithm!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    backend = BACKENDS.get(algorithm)
    if backend is not None and not backend.supports(weight_shape, stride, dilation, groups):
        raise ValueError(
            f"algorithm={algorithm!r} needs {backend.needs}; got weight shape "
            f"{tuple(weight_shape)}, stride {stride!r}, dilation {dilation!r}, groups {groups}"
        )


def _direct_preferred(x_shape, weight_shape) -> bool:
    """The ``"auto"`` rule for a layer the direct kernels support."""
    kernel_w = weight_shape[3]
    if weight_shape[2] == kernel_w == 1:  # the GEMM needs no im2col there and was faster
        return False
    return (int(np.prod(weight_shape)) <= _DIRECT_MAX_WEIGHTS
            and x_shape[3] >= _DIRECT_MIN_WIDTH_PER_EXTRA_COLUMN * (kernel_w - 1))


def choose_algorithm(x_shape, weight_shape, stride=1, dilation=1, groups: int = 1,
                     algorithm: str = "auto") -> str:
    """The algorithm :func:`cnnblas.conv2d` runs for this layer: "gemm",
    "winograd2x2", "winograd4x4" or "direct".

    ``algorithm="auto"`` picks, for 3x3, stride-1, dilation-1, ungrouped
    layers with at least 8 input and output channels on images at least 8x8,
    Winograd F(4x4, 3x3) ("winograd4x4"), or F(2x2, 3x3) ("winograd2x2") when
    K·C > 128² (for a single image: only on images of at least 32x32 pixels,
    and not where the direct kernels apply); otherwise the direct kernels for
    stride-1, dilation-1, ungrouped layers with at most 2,304 weight elements,
    input rows at least 4·(kw − 1) wide and kernels larger than 1x1 (LeNet-5's
    first layer, 3 -> 32 3x3 layers); and the im2col GEMM otherwise. The other names force
    a choice, checked by :func:`check_algorithm`. (Given non-finite inputs, the
    backward pass of a "direct" layer and every pass of a Winograd layer run
    the GEMM instead, which gives PyTorch's inf/NaN pattern; see
    :func:`cnnblas.ops.direct.inputs_finite` and
    :func:`cnnblas.ops.problem.all_finite`.)

    Parameters
    ----------
    x_shape : (N, C, H, W)
    weight_shape : (K, C/groups, kh, kw)
    stride, dilation, groups : as in :func:`cnnblas.conv2d`
    algorithm : {"auto", "gemm", "winograd2x2", "winograd4x4", "direct"}

    Returns
    -------
    str

    Examples
    --------
    >>> import cnnblas
    >>> cnnblas.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3))
    'winograd4x4'
    >>> cnnblas.choose_algorithm((8, 1, 28, 28), (6, 1, 5, 5))
    'direct'
    >>> cnnblas.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), stride=2)
    'gemm'
    """
    check_algorithm(weight_shape, stride, dilation, groups, algorithm)
    if algorithm != "auto":
        return algorithm
    direct_preferred = (direct.supports(weight_shape, stride, dilation, groups)
                        and _direct_preferred(x_shape, weight_shape))
    one_image = x_shape[0] == 1
    if one_image and direct_preferred:
        return "direct"
    n_out, channels = weight_shape[:2]
    if (winograd.supports(weight_shape, stride, dilation, groups)
            and min(channels, n_out) >= _WINOGRAD_MIN_CHANNELS
            and min(x_shape[2:4]) >= _WINOGRAD_MIN_SIZE
            and not (one_image and x_shape[2] * x_shape[3] < _WINOGRAD_MIN_PIXELS_ONE_IMAGE)):
        if n_out * channels <= _WINOGRAD4_MAX_CHANNEL_PAIRS:
            return "winograd4x4"
        return "winograd2x2"
    return "direct" if direct_preferred else "gemm"
