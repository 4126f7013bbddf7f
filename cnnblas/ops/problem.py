"""A validated convolution and the column buffers of its images.

:func:`check_conv` turns the arguments of :func:`cnnblas.conv2d` into a
:class:`ConvProblem`: contiguous arrays plus the window geometry. Every backend
(:mod:`cnnblas.ops.gemm`, :mod:`cnnblas.ops.winograd`, :mod:`cnnblas.ops.direct`)
takes one. The problem also knows how to split a range of images into chunks
whose buffers fit the workspace budget and how to unfold a chunk into columns;
:func:`fold_columns` is the way back (col2im, by the faster of two kernels).

Column layout (the one :func:`cnnblas.im2col` documents): rows ordered
(c, i, j) row-major, columns by output position row-major, the columns of the
``b`` images of a chunk side by side, (C*kh*kw, b*L), so that one GEMM covers
the chunk.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from cnnblas._kernels.im2col import (
    col2im_into,
    col2im_into_serial,
    col2im_scatter_into,
    col2im_scatter_into_serial,
    im2col_into,
    im2col_into_serial,
    window_offsets,
)
from cnnblas.checks import ConvGeometry, check_float_array, check_groups, conv_geometry
from cnnblas.ops import workspace
from cnnblas.ops.workspace import Slot


def all_finite(*arrays: np.ndarray) -> bool:
    """Whether every value of the float ``arrays`` is finite.

    By their sums: one inf or NaN makes a sum inf or NaN, so a finite sum
    proves all values finite; a sum that overflows from finite values says
    False, which only sends the layer to the exact (slower) path. One read
    of each array and no boolean temporary (1.1 ms against 2-7 ms for
    ``np.isfinite(a).all()`` on a 32x64x56x56 float32 array).
    """
    return all(bool(np.isfinite(array.sum())) for array in arrays)


def kernel_args(geom: ConvGeometry):
    """The geometry tuples the Numba kernels take (kernel, stride, pad, dilation, out)."""
    return (
        (geom.kernel_h, geom.kernel_w),
        (geom.stride_h, geom.stride_w),
        (geom.pad_top, geom.pad_left),
        (geom.dilation_h, geom.dilation_w),
        (geom.out_h, geom.out_w),
    )


@functools.lru_cache(maxsize=32)
def gather_args(geom: ConvGeometry):
    """(offsets, pad, padded) for the gather kernels; computed once per geometry.

    One cached array serves every call, so callers get a read-only view (whose
    flag, unlike the owner's, cannot be switched back). The cache holds the
    last 32 geometries: 4 bytes per window element and output position each,
    e.g. 0.11 MiB for res56's layer.
    """
    kernel, stride, pad, dilation, out = kernel_args(geom)
    offsets, padded = window_offsets(kernel, stride, pad, dilation, out, (geom.in_h, geom.in_w))
    view = offsets.view()
    view.flags.writeable = False
    return view, pad, padded


# col2im by rows (vectorised copies) pays from rows this long at unit stride;
# below, or with a stride, the scatter through the gather offsets is faster
# (see benchmarks/LOG.md).
_COL2IM_MIN_ROW = 24


def fold_columns(cols: np.ndarray, geom: ConvGeometry, x: np.ndarray, serial: bool) -> None:
    """x = col2im(cols) for cols (C*kh*kw, N, L) and x (N, C, H, W), by the faster kernel."""
    if geom.stride_w == 1 and geom.dilation_w == 1 and geom.out_w >= _COL2IM_MIN_ROW:
        kernel = col2im_into_serial if serial else col2im_into
        kernel(cols, *kernel_args(geom), x)
    else:
        kernel = col2im_scatter_into_serial if serial else col2im_scatter_into
        kernel(cols, *gather_args(geom), x)


class ConvProblem(NamedTuple):
    """A validated convolution: contiguous arrays plus the derived sizes."""

    x: np.ndarray  # (N, C, H, W), C-contiguous (a placeholder: see input_grad_problem)
    weight: np.ndarray  # (K, C/groups, kh, kw), C-contiguous
    geom: ConvGeometry
    groups: int

    @property
    def n_images(self) -> int:
        return self.x.shape[0]

    @property
    def n_out(self) -> int:
        """K, the output channels."""
        return self.weight.shape[0]

    @property
    def rows_per_group(self) -> int:
        """C/groups * kh * kw: the GEMM's inner dimension."""
        return self.weight[0].size

    @property
    def n_positions(self) -> int:
        return self.geom.out_h * self.geom.out_w

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """(N, K, out_h, out_w)."""
        return self.n_images, self.n_out, self.geom.out_h, self.geom.out_w

    @property
    def flops(self) -> float:
        """Multiply-adds times two of one pass: 2*N*K*(C/groups)*kh*kw*out_h*out_w."""
        return 2.0 * self.n_images * self.weight.size * self.n_positions

    def backward_flops(self, input_grad: bool) -> float:
        """:attr:`flops` of the weight gradient, plus the input gradient's if wanted."""
        return self.flops * (2 if input_grad else 1)

    @property
    def grouped_weight(self) -> np.ndarray:
        """``weight`` viewed as (groups, K/groups, C/groups*kh*kw)."""
        return self.weight.reshape(self.groups, -1, self.rows_per_group)

    def chunks(self, start: int, stop: int, buffers: int, max_bytes: int | None = None):
        """Split images [start, stop) into chunks whose ``buffers`` column buffers,
        plus the (K, b*L) output/dY reorder buffer, fit the workspace budget (and
        ``max_bytes`` when given, still at least one image per chunk); yield
        (chunk_start, chunk_stop)."""
        rows = buffers * self.groups * self.rows_per_group + self.n_out
        bytes_per_image = rows * self.n_positions * self.x.dtype.itemsize
        step = workspace.images_per_chunk(stop - start, bytes_per_image)
        if max_bytes is not None:
            step = min(step, max(1, max_bytes // bytes_per_image))
        for chunk_start in range(start, stop, step):
            yield chunk_start, min(chunk_start + step, stop)

    def columns(self, start: int, stop: int, serial: bool) -> np.ndarray:
        """im2col of images [start, stop) into the workspace, as (groups, CgRS, b*L)."""
        cols = workspace.scratch(
            (self.groups * self.rows_per_group, stop - start, self.n_positions),
            self.x.dtype, Slot.COLUMNS,
        )
        kernel = im2col_into_serial if serial else im2col_into
        kernel(self.x[start:stop], *gather_args(self.geom), cols)
        return cols.reshape(self.groups, self.rows_per_group, -1)


def input_grad_problem(n_images: int, weight: np.ndarray, geom: ConvGeometry,
                       groups: int) -> ConvProblem:
    """A :class:`ConvProblem` for the input-gradient pass alone, which needs the
    input's shape but never its values.

    ``x`` is a read-only, zero-strided view of a single zero with the input's
    shape (N, weight.shape[1]*groups, geom.in_h, geom.in_w) and ``weight``'s
    dtype: it costs no memory, and the backends' ``input_grad`` functions read
    only its shape and dtype. ``weight`` must be C-contiguous and ``geom``
    validated (its ``out_h``, ``out_w`` are the output gradient's size).
    """
    shape = (n_images, weight.shape[1] * groups, geom.in_h, geom.in_w)
    return ConvProblem(np.broadcast_to(np.zeros((), weight.dtype), shape), weight, geom, groups)


def argument_key(value):
    """A hashable key for call arguments made of ints, strings and tuples of them,
    equal only for arguments of the same types and values (``True`` and ``1``,
    ``np.int64(1)`` and ``1`` differ); None for anything else (a list, a float, an
    array), which the caller then validates afresh. Lets a per-shape cache skip
    the checks without letting an argument they would refuse through."""
    kind = type(value)
    if kind is tuple:
        parts = tuple(map(argument_key, value))
        return None if None in parts else (tuple, parts)
    if kind is int or kind is str or isinstance(value, np.integer):
        return kind, value
    return None


def check_conv(x, weight, stride, padding, dilation, groups) -> ConvProblem:
    """Validate :func:`cnnblas.conv2d`'s x, weight and window arguments."""
    check_float_array(x, "x", ndim=4)
    check_float_array(weight, "weight", ndim=4, dtype=x.dtype)
    groups = check_groups(groups, x.shape[1], weight.shape[0], weight.shape[1])
    geom = conv_geometry((x.shape[2], x.shape[3]), weight.shape[2:], stride, padding, dilation,
                         kernel_name="weight kernel")
    return ConvProblem(np.ascontiguousarray(x), np.ascontiguousarray(weight), geom, groups)
