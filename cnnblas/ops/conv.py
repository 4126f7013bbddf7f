"""2-D convolution as GEMMs over im2col columns: forward, weight and input gradients.

Shapes (NCHW throughout, the same conventions as PyTorch, Caffe and Chainer):

- ``x``: (N, C, H, W); ``weight``: (K, C/groups, kh, kw); ``bias``: (K,);
- ``y``, ``dy``: (N, K, out_h, out_w) with, per axis,
  ``out = (in + pad_before + pad_after - dilation*(k - 1) - 1) // stride + 1``.

"Convolution" is cross-correlation, as in every framework. With
``cols = im2col(x[n])`` of shape (C*kh*kw, L = out_h*out_w) and
``Wm = weight.reshape(K, -1)`` the three passes are one GEMM each (per group):

====================  ==============================  ===========================
pass                  GEMM                            shapes
====================  ==============================  ===========================
forward               ``Y = Wm @ cols (+ bias)``      (K x CRS) (CRS x L)
weight gradient       ``dW = sum_n dY @ colsᵀ``        (K x L) (L x CRS)
input gradient        ``dX = col2im(Wmᵀ @ dY)``        (CRS x K) (K x L)
====================  ==============================  ===========================

Stride, padding and dilation live entirely in im2col/col2im; the GEMMs never
change. The 180-degree kernel rotation of the backpropagation derivations is
exactly what ``Wmᵀ`` followed by col2im computes. Groups split C and K into
independent blocks: one GEMM per block.

The batch is processed in chunks of ``b`` images whose column buffers fit the
workspace budget (:func:`cnnblas.set_workspace_limit`); the buffers are reused
across calls. Within a chunk the columns of all ``b`` images sit side by side,
(C*kh*kw, b*L), so each pass is one large GEMM rather than ``b`` small ones;
only the (much smaller) output and ``dy`` are reordered between (b, K, L) and
(K, b*L). A 1x1, stride-1, unpadded convolution skips im2col: each image
already is its (C, H*W) column matrix.

3x3 stride-1 layers with 8 or more channels on images of 8x8 or more use
Winograd F(4x4, 3x3) or F(2x2, 3x3) instead (:mod:`cnnblas.ops.winograd`),
and other stride-1 layers with very few weights a direct kernel without
im2col (:mod:`cnnblas.ops.direct`); :func:`choose_algorithm` decides. With several
threads, the batch is split across worker threads that each run the whole
pipeline on their own images (:mod:`cnnblas.ops.parallel`).
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
from cnnblas._kernels.transpose import transpose_into
from cnnblas.checks import (
    ConvGeometry,
    as_pair,
    check_float_array,
    check_groups,
    check_shape,
    conv_geometry,
)
from cnnblas.ops import direct, parallel, winograd, workspace


def _kernel_args(geom: ConvGeometry):
    """The geometry tuples the Numba kernels take (kernel, stride, pad, dilation, out)."""
    return (
        (geom.kernel_h, geom.kernel_w),
        (geom.stride_h, geom.stride_w),
        (geom.pad_top, geom.pad_left),
        (geom.dilation_h, geom.dilation_w),
        (geom.out_h, geom.out_w),
    )


@functools.lru_cache(maxsize=32)
def _gather_args(geom: ConvGeometry):
    """(offsets, pad, padded) for the gather kernels; computed once per geometry.

    One cached array serves every call, so callers get a read-only view (whose
    flag, unlike the owner's, cannot be switched back). The cache holds the
    last 32 geometries: 4 bytes per window element and output position each,
    e.g. 0.11 MiB for res56's layer.
    """
    kernel, stride, pad, dilation, out = _kernel_args(geom)
    offsets, padded = window_offsets(kernel, stride, pad, dilation, out, (geom.in_h, geom.in_w))
    view = offsets.view()
    view.flags.writeable = False
    return view, pad, padded


# col2im by rows (vectorised copies) pays from rows this long at unit stride;
# below, or with a stride, the scatter through the gather offsets is faster
# (lenet1, 24-wide rows: 0.25 vs 0.39 ms; lenet2, 8-wide: 6.3 vs 1.1 ms).
_COL2IM_MIN_ROW = 24


def _col2im(cols: np.ndarray, geom: ConvGeometry, x: np.ndarray, serial: bool) -> None:
    """x = col2im(cols) for cols (C*kh*kw, N, L) and x (N, C, H, W), by the faster kernel."""
    if geom.stride_w == 1 and geom.dilation_w == 1 and geom.out_w >= _COL2IM_MIN_ROW:
        kernel = col2im_into_serial if serial else col2im_into
        kernel(cols, *_kernel_args(geom), x)
    else:
        kernel = col2im_scatter_into_serial if serial else col2im_scatter_into
        kernel(cols, *_gather_args(geom), x)


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
    im2col_into(np.ascontiguousarray(x), *_gather_args(geom), cols.transpose(1, 0, 2))
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
    _col2im(cols.transpose(1, 0, 2), geom, x, serial=False)
    return x


class _ConvProblem(NamedTuple):
    """A validated convolution: contiguous arrays plus the derived sizes."""

    x: np.ndarray
    weight: np.ndarray
    geom: ConvGeometry
    groups: int

    @property
    def n_images(self) -> int:
        return self.x.shape[0]

    @property
    def rows_per_group(self) -> int:
        """C/groups * kh * kw: the GEMM's inner dimension."""
        return self.weight[0].size

    @property
    def n_positions(self) -> int:
        return self.geom.out_h * self.geom.out_w

    @property
    def flops(self) -> float:
        """Multiply-adds times two of one pass: 2*N*K*(C/groups)*kh*kw*out_h*out_w."""
        return 2.0 * self.n_images * self.weight.size * self.n_positions

    @property
    def grouped_weight(self) -> np.ndarray:
        """``weight`` viewed as (groups, K/groups, C/groups*kh*kw)."""
        return self.weight.reshape(self.groups, -1, self.rows_per_group)

    def chunks(self, start: int, stop: int, buffers: int, max_bytes: int | None = None):
        """Split images [start, stop) into chunks whose ``buffers`` column buffers,
        plus the (K, b*L) output/dY reorder buffer, fit the workspace budget (and
        ``max_bytes`` when given, still at least one image per chunk); yield
        (chunk_start, chunk_stop)."""
        rows = buffers * self.groups * self.rows_per_group + self.weight.shape[0]
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
            self.x.dtype, slot=0,
        )
        kernel = im2col_into_serial if serial else im2col_into
        kernel(self.x[start:stop], *_gather_args(self.geom), cols)
        return cols.reshape(self.groups, self.rows_per_group, -1)


# The forward's columns and output of a chunk stay within this many bytes even
# when the workspace budget is larger: the GEMM then reads columns im2col has
# just written to L2. 2 MiB gave 10-12 % faster forwards than 16 MiB (lenet1,
# lenet2, res_s2, alex1; benchmarks/LOG.md). The backward passes keep the
# full budget: there smaller chunks were as often slower as faster.
_FORWARD_CHUNK_BYTES = 2 * 2**20

ALGORITHMS = ("auto", "gemm", "winograd", "winograd4x4", "direct")

#: Winograd algorithm name -> output tile side (F(2x2, 3x3) or F(4x4, 3x3)).
WINOGRAD_TILES = {"winograd": 2, "winograd4x4": 4}

# "auto" takes Winograd for 3x3 stride-1 layers only where it was measured to
# pay (2 threads, forward+backward; benchmarks/LOG.md): both channel
# counts at least this large (with C = 3 the GEMMs are too thin and the
# transforms dominate: the direct kernels win) ...
_WINOGRAD_MIN_CHANNELS = 8
# ... and images at least this large (a 4x4 image is one tile plus a junk
# tile per tile row: the im2col GEMM was 1.5-2.6x faster).
_WINOGRAD_MIN_SIZE = 8
# F(4x4, 3x3) up to this many weights per 3x3 position (K*C), F(2x2, 3x3) above:
# 256 -> 256 layers on 14x14 images ran 1.9x slower with F(4x4, 3x3), whose
# (36, K, C) transformed weights no longer fit the caches.
_WINOGRAD4_MAX_CHANNEL_PAIRS = 128 * 128


def check_algorithm(weight_shape, stride=1, dilation=1, groups: int = 1,
                    algorithm: str = "auto") -> None:
    """Raise unless ``algorithm`` is one of :data:`ALGORITHMS` and can compute a
    layer with this (K, C/groups, kh, kw) weight and geometry: TypeError for a
    non-string, ValueError for an unknown name or a forced "winograd",
    "winograd4x4" or "direct" on a layer it cannot compute. Needs no input,
    so layers check it when they are built."""
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a str, one of {ALGORITHMS}; got {algorithm!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if (algorithm in WINOGRAD_TILES
            and not winograd.winograd_supported(weight_shape, stride, dilation, groups)):
        raise ValueError(
            f"algorithm={algorithm!r} needs a 3x3 kernel, stride 1, dilation 1 and groups 1; got "
            f"weight shape {tuple(weight_shape)}, stride {stride!r}, dilation {dilation!r}, "
            f"groups {groups}"
        )
    if algorithm == "direct" and not direct.direct_supported(weight_shape, stride, dilation,
                                                             groups):
        raise ValueError(
            "algorithm='direct' needs stride 1, dilation 1 and groups 1; got "
            f"stride {stride!r}, dilation {dilation!r}, groups {groups}"
        )


def choose_algorithm(x_shape, weight_shape, stride=1, dilation=1, groups: int = 1,
                     algorithm: str = "auto") -> str:
    """The algorithm :func:`conv2d` uses for this layer: "gemm", "winograd",
    "winograd4x4" or "direct".

    ``algorithm="auto"`` picks, for 3x3, stride-1, dilation-1, ungrouped
    layers with at least 8 input and output channels on images at least 8x8,
    Winograd F(4x4, 3x3) ("winograd4x4", :mod:`cnnblas.ops.winograd`), or
    F(2x2, 3x3) ("winograd") when K·C > 128²; otherwise the direct kernels
    (:mod:`cnnblas.ops.direct`) for stride-1, dilation-1, ungrouped layers with
    at most 2,304 weight elements, input rows at least 4·(kw − 1) wide and
    kernels larger than 1x1 (LeNet-5's first layer, 3 -> 32 3x3 layers;
    :func:`cnnblas.ops.direct.direct_preferred`); and the im2col GEMM otherwise.

    The other names force a choice, checked by :func:`check_algorithm`.
    (Given non-finite inputs, the backward pass of a "direct" layer runs the
    GEMM instead; see :func:`cnnblas.ops.direct.inputs_finite`.)
    """
    check_algorithm(weight_shape, stride, dilation, groups, algorithm)
    if algorithm != "auto":
        return algorithm
    n_out, channels = weight_shape[:2]
    if (winograd.winograd_supported(weight_shape, stride, dilation, groups)
            and min(channels, n_out) >= _WINOGRAD_MIN_CHANNELS
            and min(x_shape[2:4]) >= _WINOGRAD_MIN_SIZE):
        return "winograd4x4" if n_out * channels <= _WINOGRAD4_MAX_CHANNEL_PAIRS else "winograd"
    if (direct.direct_supported(weight_shape, stride, dilation, groups)
            and direct.direct_preferred(x_shape, weight_shape)):
        return "direct"
    return "gemm"


def _check_conv(x, weight, stride, padding, dilation, groups) -> _ConvProblem:
    check_float_array(x, "x", ndim=4)
    check_float_array(weight, "weight", ndim=4, dtype=x.dtype)
    groups = check_groups(groups, x.shape[1], weight.shape[0], weight.shape[1])
    geom = conv_geometry((x.shape[2], x.shape[3]), weight.shape[2:], stride, padding, dilation,
                         kernel_name="weight kernel")
    return _ConvProblem(np.ascontiguousarray(x), np.ascontiguousarray(weight), geom, groups)


def _per_batch_group(images: np.ndarray, groups: int) -> np.ndarray:
    """Images (b, channels, h, w) viewed as (b, groups, channels/groups, h*w); b may
    be 0. The callers' arrays are C-contiguous, so this is a view, never a copy:
    ``out=`` arguments are written through it."""
    count, channels, height, width = images.shape
    return images.reshape(count, groups, channels // groups, height * width)


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
    algorithm : {"auto", "gemm", "winograd", "winograd4x4", "direct"}, keyword-only
        See :func:`choose_algorithm`.

    Returns
    -------
    y : ndarray, dtype of ``x``, shape (N, K, out_h, out_w)
    """
    problem = _check_conv(x, weight, stride, padding, dilation, groups)
    n_out = weight.shape[0]
    if bias is not None:
        check_float_array(bias, "bias", ndim=1, dtype=x.dtype)
        check_shape(bias, (n_out,), "bias")
    y = np.empty((problem.n_images, n_out, problem.geom.out_h, problem.geom.out_w), x.dtype)
    chosen = choose_algorithm(x.shape, weight.shape, stride, dilation, groups, algorithm)
    if chosen == "direct":
        direct.forward(problem.x, problem.weight, bias, problem.geom, y, problem.flops)
    elif chosen in WINOGRAD_TILES:
        plan = winograd.forward_plan(problem.x, problem.weight, bias, problem.geom.padding,
                                     WINOGRAD_TILES[chosen])
        parallel.map_image_ranges(lambda start, stop, serial: plan.run(start, stop, y, serial),
                                  problem.n_images, problem.flops)
    else:
        parallel.map_image_ranges(
            lambda start, stop, serial: _gemm_forward(problem, bias, y, start, stop, serial),
            problem.n_images, problem.flops)
    return y


def _gemm_forward(problem: _ConvProblem, bias, y: np.ndarray, start: int, stop: int,
                  serial: bool) -> None:
    """y[start:stop] = conv(x[start:stop]) by im2col and GEMMs (one per group)."""
    geom, groups = problem.geom, problem.groups
    n_out = y.shape[1]
    w_grouped = problem.grouped_weight
    if geom.is_pointwise:
        # Y = Wm @ X: each image already is its (C x H*W) column matrix. One
        # stacked matmul per group over the range, rather than one call per
        # image, holds the GIL less often while the other worker runs (pw1x1
        # forward 0.304 -> 0.294 ms, grouped 1x1 0.098 -> 0.056 ms at 2 threads;
        # benchmarks/LOG.md).
        x_range = _per_batch_group(problem.x[start:stop], groups)
        y_range = _per_batch_group(y[start:stop], groups)
        for g in range(groups):
            np.matmul(w_grouped[g], x_range[:, g], out=y_range[:, g])
        if bias is not None:
            y[start:stop] += bias[:, None, None]
        return
    for chunk_start, chunk_stop in problem.chunks(start, stop, buffers=1,
                                                  max_bytes=_FORWARD_CHUNK_BYTES):
        cols = problem.columns(chunk_start, chunk_stop, serial)
        count = chunk_stop - chunk_start
        y_chunk = y[chunk_start:chunk_stop].reshape(count, n_out, -1)
        # One image: the GEMM can write straight into NCHW. Several: (K, b*L) scratch.
        one_image = count == 1
        out = y_chunk[0] if one_image else workspace.scratch((n_out, cols.shape[2]), y.dtype, 2)
        out_grouped = out.reshape(groups, -1, cols.shape[2])
        for g in range(groups):
            # Y = Wm @ cols
            np.matmul(w_grouped[g], cols[g], out=out_grouped[g])
        if one_image:
            if bias is not None:
                out += bias[:, None]
        else:
            reordered = out.reshape(n_out, count, -1).transpose(1, 0, 2)
            if bias is None:
                np.copyto(y_chunk, reordered)
            else:
                np.add(reordered, bias[:, None], out=y_chunk)


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
    algorithm : {"auto", "gemm", "winograd", "winograd4x4", "direct"}, keyword-only
        Algorithm for both gradients (see :func:`choose_algorithm`); the bias
        gradient is a plain sum of ``dy``.

    Returns
    -------
    dx : ndarray, shape of ``x`` (or None when ``input_grad`` is False)
    dweight : ndarray, shape of ``weight``
    dbias : ndarray, shape (K,)
    """
    problem = _check_conv(x, weight, stride, padding, dilation, groups)
    geom, groups = problem.geom, problem.groups
    n_out = weight.shape[0]
    check_float_array(dy, "dy", ndim=4, dtype=x.dtype)
    check_shape(dy, (problem.n_images, n_out, geom.out_h, geom.out_w), "dy")
    dy = np.ascontiguousarray(dy)
    chosen = choose_algorithm(x.shape, weight.shape, stride, dilation, groups, algorithm)
    n_images = problem.n_images
    if chosen == "direct" and not direct.inputs_finite(problem.x, problem.weight):
        chosen = "gemm"  # the direct kernels would turn 0 * inf into NaN (see ops.direct)
    if chosen == "direct":
        return direct.backward(dy, problem.x, problem.weight, geom, input_grad,
                               problem.flops * (2 if input_grad else 1))
    dx = np.empty_like(problem.x) if input_grad else None
    if chosen in WINOGRAD_TILES:
        # dW: GEMMs of transformed dY and input tiles; dX: a 3x3 correlation of dY.
        tile = WINOGRAD_TILES[chosen]
        weight_plan = winograd.weight_grad_plan(problem.x, dy, geom.padding, tile)
        input_plan = (winograd.input_grad_plan(dy, problem.weight, geom.padding, x.shape[2:],
                                               tile) if input_grad else None)

        def winograd_backward(start, stop, serial):
            """(dU, db) of images [start, stop), and their dx: one hand-off per call,
            and db summed by the worker that owns the images."""
            du = weight_plan.run(start, stop, serial)
            if input_plan is not None:
                input_plan.run(start, stop, dx, serial)
            return du, dy[start:stop].sum(axis=(0, 2, 3))

        partials = parallel.map_image_ranges(winograd_backward, n_images,
                                             problem.flops * (2 if input_grad else 1))
        dweight = weight_plan.finish([du for du, _ in partials])
        dbias = np.sum([db for _, db in partials], axis=0)
    else:
        partials = parallel.map_image_ranges(
            lambda start, stop, serial: _gemm_backward(problem, dy, dx, start, stop, serial),
            n_images, problem.flops * (2 if input_grad else 1))
        dweight_t, dbias = partials[0]
        for other_dweight_t, other_dbias in partials[1:]:
            dweight_t += other_dweight_t
            dbias += other_dbias
        # One blocked transpose of the sum, (groups, CRS/g, K/g) -> (groups, K/g, CRS/g).
        dweight = np.empty(dweight_t.shape[:1] + dweight_t.shape[:0:-1], dy.dtype)
        for g in range(groups):
            transpose_into(dweight_t[g], dweight[g])
    return dx, dweight.reshape(weight.shape), dbias


def _gemm_backward(problem: _ConvProblem, dy: np.ndarray, dx: np.ndarray | None, start: int,
                   stop: int, serial: bool) -> tuple[np.ndarray, np.ndarray]:
    """(dWᵀ, db) summed over images [start, stop): dWᵀ as (groups, CRS/g, K/g), db
    as (K,); fills dx[start:stop] too unless ``dx`` is None.

    dW is computed and summed transposed, dWᵀ = cols @ dYᵀ: OpenBLAS ran that
    10-40% faster than dW = dY @ colsᵀ on these long-inner-dimension shapes,
    and adding each block's product to a (K/g, CRS/g) sum through a transposed
    view cost 0.45 ms per chunk on res_s2; the caller transposes the total once.
    db is summed from the (K, b*L) dY matrix each chunk builds anyway, in the
    worker that owns the images, instead of in a separate pass over all of dY.
    """
    geom, groups = problem.geom, problem.groups
    n_out = dy.shape[1]
    w_grouped = problem.grouped_weight
    # Every block but the first adds to dWᵀ; an empty range returns zeros.
    dweight_t = np.zeros((groups, w_grouped.shape[2], w_grouped.shape[1]), dy.dtype)
    dbias = np.zeros(n_out, dy.dtype)
    product_t = np.empty(dweight_t.shape[1:], dy.dtype)

    def add_weight_grad(g, first, columns, dy_g):
        """dWᵀ[g] (+)= columns @ dY[g]ᵀ: written in place by the first block."""
        if first:
            np.matmul(columns, dy_g.T, out=dweight_t[g])
        else:
            dweight_t[g] += np.matmul(columns, dy_g.T, out=product_t)

    if geom.is_pointwise:
        x_range = _per_batch_group(problem.x[start:stop], groups)
        dy_range = _per_batch_group(dy[start:stop], groups)
        dx_range = None if dx is None else _per_batch_group(dx[start:stop], groups)
        for g in range(groups):
            for image in range(stop - start):
                # dWᵀ += X @ dYᵀ
                add_weight_grad(g, image == 0, x_range[image, g], dy_range[image, g])
            if dx_range is not None:
                # dX = Wmᵀ @ dY (no col2im: the columns are the image), one stacked call.
                np.matmul(w_grouped[g].T, dy_range[:, g], out=dx_range[:, g])
        dbias += dy_range.sum(axis=(0, 3)).reshape(n_out)
        return dweight_t, dbias
    for chunk_start, chunk_stop in problem.chunks(start, stop, buffers=1 if dx is None else 2):
        cols = problem.columns(chunk_start, chunk_stop, serial)
        count = chunk_stop - chunk_start
        # dy for these images as the (K, b*L) matrix the GEMMs need.
        dy_chunk = dy[chunk_start:chunk_stop].reshape(count, n_out, -1)
        if count == 1:
            dy_matrix = dy_chunk[0]
        else:
            dy_matrix = workspace.scratch((n_out, count, dy_chunk.shape[2]), dy.dtype, slot=2)
            np.copyto(dy_matrix, dy_chunk.transpose(1, 0, 2))
        dbias += dy_matrix.reshape(n_out, -1).sum(axis=1)
        dy_grouped = dy_matrix.reshape(groups, -1, cols.shape[2])
        dcols = None if dx is None else workspace.scratch(cols.shape, dy.dtype, slot=1)
        for g in range(groups):
            add_weight_grad(g, chunk_start == start, cols[g], dy_grouped[g])  # dWᵀ += cols @ dYᵀ
            if dcols is not None:
                # dcols = Wmᵀ @ dY
                np.matmul(w_grouped[g].T, dy_grouped[g], out=dcols[g])
        if dcols is not None:
            # dX = col2im(dcols)
            _col2im(dcols.reshape(-1, count, problem.n_positions), geom,
                    dx[chunk_start:chunk_stop], serial)
    return dweight_t, dbias
