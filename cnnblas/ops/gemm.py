"""The im2col + GEMM backend: each pass of a convolution is one GEMM per group.

With ``cols = im2col(x)`` of a chunk of ``b`` images, (C*kh*kw, b*L) per group,
and ``Wm = weight.reshape(K, -1)``:

====================  ==================================  ===========================
pass                  GEMM (per group)                    function
====================  ==================================  ===========================
forward               ``Y = Wm @ cols`` (+ bias)          :func:`forward_gemm`
weight gradient       ``dWᵀ += cols @ dYᵀ``               :func:`weight_gemm`
input gradient        ``dX = col2im(Wmᵀ @ dY)``           :func:`input_gemm`
====================  ==================================  ===========================

Stride, padding and dilation live entirely in im2col/col2im; the GEMMs never
change. The columns of the ``b`` images of a chunk sit side by side, so each
pass is one large GEMM rather than ``b`` small ones; only the (much smaller)
output and ``dy`` are reordered between (b, K, L) and (K, b*L). A 1x1,
unpadded convolution skips im2col and col2im: it is a pointwise GEMM on the
input subsampled by the stride (:mod:`cnnblas.ops.pointwise`). The batch is
split across worker threads by :func:`cnnblas.ops.parallel.map_image_ranges`.
:func:`input_grad` runs the input-gradient pass alone, for
:func:`cnnblas.ops.conv.conv2d_input_grad` and the transposed convolution
(:mod:`cnnblas.ops.conv_transpose`).
"""

from __future__ import annotations

import numpy as np

from cnnblas._kernels.transpose import transpose_into
from cnnblas.ops import parallel, pointwise, workspace
from cnnblas.ops.problem import ConvProblem, fold_columns
from cnnblas.ops.workspace import Slot


def supports(weight_shape, stride=1, dilation=1, groups: int = 1) -> bool:
    """Always True: im2col handles every kernel size, stride, dilation and grouping."""
    return True


def forward(problem: ConvProblem, bias: np.ndarray | None, y: np.ndarray) -> None:
    """Fill ``y`` (N, K, out_h, out_w) with the convolution of ``problem``, plus ``bias``."""
    parallel.map_image_ranges(
        lambda start, stop, serial: _forward_images(problem, bias, y, start, stop, serial),
        problem.n_images, problem.flops)


def backward(problem: ConvProblem, dy: np.ndarray, input_grad: bool):
    """(dx or None, dweight, dbias) of ``problem`` for a C-contiguous ``dy``.

    Each worker sums its images' dWᵀ; the total is transposed once, blocked,
    from (groups, CRS/g, K/g) to (groups, K/g, CRS/g).
    """
    dx = np.empty_like(problem.x) if input_grad else None
    partials = parallel.map_image_ranges(
        lambda start, stop, serial: _backward_images(problem, dy, dx, start, stop, serial),
        problem.n_images, problem.backward_flops(input_grad))
    dweight_t, dbias = partials[0]
    for other_dweight_t, other_dbias in partials[1:]:
        dweight_t += other_dweight_t
        dbias += other_dbias
    dweight = np.empty(dweight_t.shape[:1] + dweight_t.shape[:0:-1], dy.dtype)
    for g in range(problem.groups):
        transpose_into(dweight_t[g], dweight[g])
    return dx, dweight.reshape(problem.weight.shape), dbias


def input_grad(problem: ConvProblem, dy: np.ndarray, dx: np.ndarray) -> None:
    """Fill ``dx`` (N, C, H, W) with ``col2im(Wmᵀ @ dY)`` for a C-contiguous ``dy``:
    the input-gradient pass alone, without the weight gradient and without
    reading ``problem.x`` (which may be :func:`~cnnblas.ops.problem.input_grad_problem`'s
    placeholder). This is also the forward pass of the transposed convolution."""
    parallel.map_image_ranges(
        lambda start, stop, serial: _input_grad_images(problem, dy, dx, start, stop, serial),
        problem.n_images, problem.flops)


# --------------------------------------------------------------------------- the three GEMMs

def forward_gemm(problem: ConvProblem, bias, y: np.ndarray, start: int, stop: int,
                 serial: bool) -> None:
    """y[start:stop] = Wm @ im2col(x[start:stop]) (+ bias), one chunk."""
    n_out, groups = problem.n_out, problem.groups
    cols = problem.columns(start, stop, serial)
    count = stop - start
    y_chunk = y[start:stop].reshape(count, n_out, -1)
    # One image: the GEMM can write straight into NCHW. Several: (K, b*L) scratch.
    one_image = count == 1
    out = y_chunk[0] if one_image else workspace.scratch((n_out, cols.shape[2]), y.dtype,
                                                          Slot.REORDER)
    out_grouped = out.reshape(groups, -1, cols.shape[2])
    w_grouped = problem.grouped_weight
    for g in range(groups):
        np.matmul(w_grouped[g], cols[g], out=out_grouped[g])  # Y = Wm @ cols
    if one_image:
        if bias is not None:
            out += bias[:, None]
    else:
        reordered = out.reshape(n_out, count, -1).transpose(1, 0, 2)
        if bias is None:
            np.copyto(y_chunk, reordered)
        else:
            np.add(reordered, bias[:, None], out=y_chunk)


def weight_gemm(cols: np.ndarray, dy_matrix: np.ndarray, dweight_t: np.ndarray,
                product_t: np.ndarray, first: bool) -> None:
    """dWᵀ (+)= cols @ dYᵀ for one chunk: ``cols`` (groups, CgRS, b*L), ``dy_matrix``
    (K, b*L), ``dweight_t`` (groups, CgRS, K/g); ``first`` writes instead of adding.

    dW is computed and summed transposed: OpenBLAS ran cols @ dYᵀ 10-40 %
    faster than dY @ colsᵀ on these long-inner-dimension shapes, and adding
    each product into a (K/g, CgRS) sum through a transposed view was slow.
    """
    dy_grouped = dy_matrix.reshape(cols.shape[0], -1, cols.shape[2])
    for g in range(cols.shape[0]):
        _add_product_t(dweight_t[g], cols[g], dy_grouped[g], product_t, first)  # dWᵀ += cols @ dYᵀ


def input_gemm(problem: ConvProblem, dy_matrix: np.ndarray, dx: np.ndarray, start: int,
               stop: int, serial: bool) -> None:
    """dx[start:stop] = col2im(Wmᵀ @ dY), one chunk; ``dy_matrix`` is (K, b*L)."""
    groups, count = problem.groups, stop - start
    dcols = workspace.scratch((groups, problem.rows_per_group, count * problem.n_positions),
                              dx.dtype, Slot.COLUMN_GRADS)
    dy_grouped = dy_matrix.reshape(groups, -1, dcols.shape[2])
    w_grouped = problem.grouped_weight
    for g in range(groups):
        np.matmul(w_grouped[g].T, dy_grouped[g], out=dcols[g])  # dcols = Wmᵀ @ dY
    # dX = col2im(dcols)
    fold_columns(dcols.reshape(-1, count, problem.n_positions), problem.geom, dx[start:stop],
                 serial)


# --------------------------------------------------------------------------- per worker

def _forward_images(problem: ConvProblem, bias, y: np.ndarray, start: int, stop: int,
                    serial: bool) -> None:
    """y[start:stop] = conv(x[start:stop]), chunk by chunk (or without im2col for 1x1)."""
    if pointwise.applies(problem.geom):
        pointwise.forward_images(problem, bias, y, start, stop)
        return
    for chunk_start, chunk_stop in problem.chunks(start, stop, buffers=1,
                                                  max_bytes=workspace.CACHE_CHUNK_BYTES):
        forward_gemm(problem, bias, y, chunk_start, chunk_stop, serial)


def _backward_images(problem: ConvProblem, dy: np.ndarray, dx: np.ndarray | None, start: int,
                     stop: int, serial: bool) -> tuple[np.ndarray, np.ndarray]:
    """(dWᵀ, db) summed over images [start, stop): dWᵀ as (groups, CRS/g, K/g), db
    as (K,); fills dx[start:stop] too unless ``dx`` is None.

    db is summed from the (K, b*L) dY matrix each chunk builds anyway, in the
    worker that owns the images, instead of in a separate pass over all of dY.
    An empty range returns zeros.
    """
    groups, n_out = problem.groups, problem.n_out
    dweight_t = np.zeros((groups, problem.rows_per_group, n_out // groups), dy.dtype)
    dbias = np.zeros(n_out, dy.dtype)
    product_t = np.empty(dweight_t.shape[1:], dy.dtype)
    if pointwise.applies(problem.geom):
        pointwise.backward_images(problem, dy, dx, start, stop, dweight_t, product_t)
        dbias += pointwise.per_batch_group(dy[start:stop], groups).sum(axis=(0, 3)).reshape(n_out)
        return dweight_t, dbias
    for chunk_start, chunk_stop in problem.chunks(start, stop, buffers=1 if dx is None else 2,
                                                  max_bytes=workspace.CACHE_CHUNK_BYTES):
        cols = problem.columns(chunk_start, chunk_stop, serial)
        dy_matrix = _dy_matrix(dy, chunk_start, chunk_stop)
        dbias += dy_matrix.sum(axis=1)
        weight_gemm(cols, dy_matrix, dweight_t, product_t, first=chunk_start == start)
        if dx is not None:
            input_gemm(problem, dy_matrix, dx, chunk_start, chunk_stop, serial)
    return dweight_t, dbias


def _input_grad_images(problem: ConvProblem, dy: np.ndarray, dx: np.ndarray, start: int,
                       stop: int, serial: bool) -> None:
    """dx[start:stop] = col2im(Wmᵀ @ dY), chunk by chunk (or without col2im for 1x1)."""
    if pointwise.applies(problem.geom):
        pointwise.input_grad_images(problem, dy, dx, start, stop)
        return
    for chunk_start, chunk_stop in problem.chunks(start, stop, buffers=1,
                                                  max_bytes=workspace.CACHE_CHUNK_BYTES):
        input_gemm(problem, _dy_matrix(dy, chunk_start, chunk_stop), dx, chunk_start,
                   chunk_stop, serial)


def _dy_matrix(dy: np.ndarray, start: int, stop: int) -> np.ndarray:
    """dy of images [start, stop) as the (K, b*L) matrix the GEMMs need: a view for
    one image, a reordered copy in the workspace for several."""
    count, n_out = stop - start, dy.shape[1]
    dy_chunk = dy[start:stop].reshape(count, n_out, -1)
    if count == 1:
        return dy_chunk[0]
    dy_matrix = workspace.scratch((n_out, count, dy_chunk.shape[2]), dy.dtype, Slot.REORDER)
    np.copyto(dy_matrix, dy_chunk.transpose(1, 0, 2))
    return dy_matrix.reshape(n_out, -1)


def _add_product_t(target: np.ndarray, columns: np.ndarray, dy_g: np.ndarray,
                   product_t: np.ndarray, first: bool) -> None:
    """target (+)= columns @ dy_gᵀ: written in place when ``first``."""
    if first:
        np.matmul(columns, dy_g.T, out=target)
    else:
        target += np.matmul(columns, dy_g.T, out=product_t)
