"""Argument checks and the window geometry shared by the reference implementations.

The geometry (padding, output size) is worked out here, independently of the
engine's :func:`cnnblas.checks.conv_geometry`, so that a mistake there could
not hide in both.
"""

from __future__ import annotations

import numpy as np

from cnnblas.checks import FLOAT_DTYPES, as_pair, check_groups, check_shape, is_int


def float_array(array, name: str, ndim: int) -> np.ndarray:
    """``array`` (any array-like, empty allowed) as a float32/float64 ndarray of rank ``ndim``."""
    array = np.asarray(array)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {array.shape}")
    return array


def axis_padding(padding, in_size: int, kernel: int, stride: int, dilation: int,
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


class Geometry:
    """The window geometry of one convolution (plain ints), computed independently
    of the engine's :func:`cnnblas.checks.conv_geometry`."""

    def __init__(self, in_size, kernel_size, stride, padding, dilation):
        self.in_h, self.in_w = in_size
        self.kernel_h, self.kernel_w = as_pair(kernel_size, "kernel_size")
        self.stride_h, self.stride_w = as_pair(stride, "stride")
        self.dilation_h, self.dilation_w = as_pair(dilation, "dilation")
        self.pad_top, self.pad_bottom = axis_padding(
            padding, self.in_h, self.kernel_h, self.stride_h, self.dilation_h, 0)
        self.pad_left, self.pad_right = axis_padding(
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


def conv_setup(x, weight, bias, stride, padding, dilation, groups):
    """Check a convolution's arrays; return (x, weight, bias or None, geometry, groups)."""
    x = float_array(x, "x", 4)
    weight = float_array(weight, "weight", 4)
    groups = check_groups(groups, x.shape[1], weight.shape[0], weight.shape[1])
    if bias is not None:
        bias = float_array(bias, "bias", 1)
        check_shape(bias, weight.shape[:1], "bias")
    geometry = Geometry(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return x, weight, bias, geometry, groups


def check_dy(dy, x, weight, geometry):
    dy = float_array(dy, "dy", 4)
    check_shape(dy, (x.shape[0], weight.shape[0], geometry.out_h, geometry.out_w), "dy")
    return dy


def taps(geo):
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
