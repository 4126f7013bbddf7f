"""Winograd convolution for 3x3, stride-1, dilation-1, ungrouped layers.

Two tile sizes: F(2x2, 3x3) (``tile=2``, :mod:`cnnblas._kernels.winograd_f2`)
and F(4x4, 3x3) (``tile=4``, :mod:`cnnblas._kernels.winograd_f4`). With
``m = tile`` and ``P = (m + 2)**2`` transform points, the (K x 9C)·(9C x L)
im2col GEMM becomes P GEMMs (K x C)·(C x T) over the m x m output tiles,
``T = N * ceil(out_h/m) * (ceil(out_w/m) + 1)`` (one junk tile per tile row
keeps the transforms' loops long; see the kernel modules), between an input
and an output transform; that is 9m²/P = 2.25x (m = 2) or 4x (m = 4) fewer
multiplies, the larger tile trading some float32 precision for it::

    U[xi] = (G g Gᵀ)[xi]            (P, K, C)   weights, once per call
    V[xi] = (Bᵀ d B)[xi]            (P, C, T)   input tiles        (Slot.WINOGRAD_V)
    M[xi] = U[xi] @ V[xi]           (P, K, T)   P BLAS GEMMs       (Slot.WINOGRAD_M)
    y     = Aᵀ M A (+ bias)         (N, K, out_h, out_w)

The batch is processed in chunks of images whose ``V`` and ``M`` fit the
workspace budget (:func:`cnnblas.set_workspace_limit`) and 4 MiB, at least one
image per chunk.

The input gradient of a 3x3 stride-1 convolution is itself one: ``dy``
correlated with the weight rotated by 180° and transposed to (C, K, 3, 3),
padded by ``2 - pad`` on every side (a negative value crops ``dy``), so it runs
through the same machinery.

The weight gradient runs the forward backwards, with the same ``V``::

    dM[xi] = (A dY Aᵀ)[xi]           (P, K, T)   output-gradient tiles (Slot.WINOGRAD_M)
    dU[xi] = sum_T dM[xi] V[xi]ᵀ      (P, K, C)   P BLAS GEMMs per chunk, summed
    dW     = Gᵀ dU G                 (K, C, 3, 3) once, in :meth:`WeightGradPlan.finish`

:func:`forward` and :func:`backward` are the backend :func:`cnnblas.conv2d`
dispatches to (batch split across worker threads by
:func:`cnnblas.ops.parallel.map_image_ranges`); ``winograd_conv2d*`` run one
pass on their own. Inputs are assumed validated by the caller
(:func:`cnnblas.conv2d`'s checks), except for what only Winograd needs: a 3x3
kernel and matching shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnnblas import threads
from cnnblas._kernels import winograd_f2, winograd_f4
from cnnblas.checks import Padding2d, as_pair, ceil_div, conv_geometry, normalize_padding
from cnnblas.ops import gemm, parallel, workspace
from cnnblas.ops.problem import ConvProblem, all_finite
from cnnblas.ops.workspace import Slot

# V and M of a chunk stay within this many bytes even when the workspace budget
# is larger: then they stay in L2/L3 between the transforms and the GEMMs. On
# the 2-core EPYC (2 MiB L2 per core, 32 MiB L3), 2-4 MiB chunks ran 10-40%
# faster than 16 MiB ones (cifar and ResNet-56 layers, 1 thread).
_CHUNK_BYTES = 4 * 2**20


class _Variant(NamedTuple):
    """One Winograd F(m x m, 3x3): its kernels and weight transform."""

    tile: int  # m, the output tile's side
    # (x, pad, tiles, v) -> whether x is finite; Numba's thread pool
    input_transform: object
    input_transform_serial: object  # the same in the calling thread, without the GIL
    output_transform: object  # (m, tiles, bias, y) -> None
    output_transform_serial: object
    grad_transform: object  # (dy, tiles, m) -> whether dy is finite
    grad_transform_serial: object
    gg: np.ndarray  # (P, 9) float64: row (m+2)*a + b, column 3*i + j holds G[a, i] * G[b, j]

    @property
    def points(self) -> int:
        """P = (m + 2)², the GEMMs per chunk."""
        return (self.tile + 2) ** 2


_G2 = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_G4 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])



def _checked(transform):
    """``transform`` (x or dy first), returning whether that array is finite: for
    kernels that do not check it as they read it."""
    def run(array, *args):
        finite = all_finite(array)
        transform(array, *args)
        return finite
    return run


def _variant_of(tile: int, kernels, g: np.ndarray, checks: bool) -> _Variant:
    """The variant whose transforms are ``kernels``' (a kernel module) and whose G is
    ``g``; ``checks`` says whether its input and gradient transforms return whether
    their input is finite, or need :func:`_checked`."""
    wrap = (lambda transform: transform) if checks else _checked
    return _Variant(tile, wrap(kernels.input_transform), wrap(kernels.input_transform_serial),
                    kernels.output_transform, kernels.output_transform_serial,
                    wrap(kernels.grad_transform), wrap(kernels.grad_transform_serial),
                    np.kron(g, g))


VARIANTS = {2: _variant_of(2, winograd_f2, _G2, checks=False),
            4: _variant_of(4, winograd_f4, _G4, checks=True)}


def _variant(tile) -> _Variant:
    if tile not in VARIANTS:
        raise ValueError(f"tile must be one of {tuple(VARIANTS)} (F(2x2, 3x3) or "
                         f"F(4x4, 3x3)), got {tile!r}")
    return VARIANTS[tile]


def supports(weight_shape, stride=1, dilation=1, groups: int = 1) -> bool:
    """True when :func:`winograd_conv2d` can compute this convolution.

    That is a (K, C, 3, 3) weight, stride 1, dilation 1 and one group; any
    padding and input size (odd sizes and negative input-gradient padding
    included) are handled.
    """
    return (
        len(weight_shape) == 4
        and tuple(weight_shape[2:]) == (3, 3)
        and as_pair(stride, "stride") == (1, 1)
        and as_pair(dilation, "dilation") == (1, 1)
        and groups == 1
    )


def _check_weight(weight: np.ndarray, dtype: np.dtype) -> None:
    if weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise ValueError(f"weight must have shape (K, C, 3, 3) for Winograd, got {weight.shape}")
    if weight.dtype != dtype:
        raise TypeError(f"weight must have the same dtype as the input ({dtype}), "
                        f"got {weight.dtype}")


def _transform_weight(weight: np.ndarray, variant: _Variant) -> np.ndarray:
    """U = G g Gᵀ of a (K, C, 3, 3) weight, as a new (P, K, C) array.

    One small GEMM: ``U[(a, b)] = sum_(i, j) G[a, i] G[b, j] g[i, j]`` is
    ``kron(G, G)`` (P x 9) times the weight as a (9, K*C) matrix.
    """
    n_out, channels = weight.shape[:2]
    u = np.empty((variant.points, n_out, channels), weight.dtype)
    # One thread: waking a BLAS pool for this tiny product cost 0.6 ms (2 cores).
    with threads.single_threaded_blas():
        np.matmul(variant.gg.astype(weight.dtype), weight.reshape(n_out * channels, 9).T,
                  out=u.reshape(variant.points, n_out * channels))
    return u


def _operand_rows(size: int, itemsize: int) -> int:
    """Row length of a (P, ...) transform operand holding ``size`` elements per row.

    Rounded up to an odd number of 64-byte cache lines, so that the P rows,
    which the transforms stream through side by side, map to P different
    cache sets. Rows a multiple of 4 KiB long (cifar2 and res56 chunks are)
    would all share one set: the transforms ran 4-6x slower.
    """
    per_line = 64 // itemsize
    lines = ceil_div(size, per_line)
    return (lines | 1) * per_line


class WinogradPlan(NamedTuple):
    """One Winograd convolution with its weights transformed, ready to run on
    any range of images (so that worker threads can share the transform)."""

    x: np.ndarray  # (N, C, H, W), C-contiguous
    u: np.ndarray  # (P, K, C) transformed weights
    bias: np.ndarray  # (K,)
    pad: tuple[int, int]  # (pad_top, pad_left); negative crops
    out_size: tuple[int, int]
    variant: _Variant

    def run(self, start: int, stop: int, y: np.ndarray, serial: bool = False,
            check: bool = False) -> bool:
        """Write the output of images [start, stop) into ``y[start:stop]``; return
        whether every value of ``x`` it read was finite (see :func:`forward`).
        With ``check``, stop at the first chunk that was not (``y`` is then
        partly unwritten).

        ``serial`` selects the single-threaded, GIL-free kernels (for worker
        threads); otherwise the transforms use Numba's thread pool.
        """
        channels = self.x.shape[1]
        n_out = self.u.shape[1]
        variant = self.variant
        points = variant.points
        tiles, tiles_per_image = _tiles(self.out_size, variant.tile)
        itemsize = self.x.dtype.itemsize
        step = _chunk_step(stop - start, channels, n_out, points * tiles_per_image, itemsize)
        input_transform = (variant.input_transform_serial if serial
                           else variant.input_transform)
        output_transform = (variant.output_transform_serial if serial
                            else variant.output_transform)
        finite = True
        for chunk_start in range(start, stop, step):
            chunk_stop = min(chunk_start + step, stop)
            count = (chunk_stop - chunk_start) * tiles_per_image
            v_rows = _operand_rows(channels * count, itemsize)
            m_rows = _operand_rows(n_out * count, itemsize)
            v = workspace.scratch((points, v_rows), self.x.dtype, Slot.WINOGRAD_V)
            m = workspace.scratch((points, m_rows), self.x.dtype, Slot.WINOGRAD_M)
            finite &= bool(input_transform(self.x[chunk_start:chunk_stop], self.pad, tiles, v))
            if check and not finite:
                return False
            # M[xi] = U[xi] @ V[xi] for every xi: one stacked matmul, which numpy runs
            # as P BLAS GEMMs without P Python calls (10-25% faster for short rows).
            np.matmul(self.u, v[:, : channels * count].reshape(points, channels, count),
                      out=m[:, : n_out * count].reshape(points, n_out, count))
            output_transform(m, tiles, self.bias, y[chunk_start:chunk_stop])
        return finite


def _chunk_step(count: int, channels: int, n_out: int, values_per_image: int,
                itemsize: int) -> int:
    """Images per chunk: ``V`` and ``M`` (or ``dM``), ``values_per_image`` (P·T)
    per channel and image, within the workspace budget and :data:`_CHUNK_BYTES`,
    at least one image."""
    bytes_per_image = (channels + n_out) * values_per_image * itemsize
    return min(workspace.images_per_chunk(count, bytes_per_image),
               max(1, _CHUNK_BYTES // bytes_per_image))


def _tiles(out_size: tuple[int, int], tile: int) -> tuple[tuple[int, int], int]:
    """(tiles_h, tiles_w) of tile x tile output tiles and GEMM columns per image
    (one junk tile per tile row; see the kernels' docstrings)."""
    tiles = (ceil_div(out_size[0], tile), ceil_div(out_size[1], tile))
    return tiles, tiles[0] * (tiles[1] + 1)


def forward_plan(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                 padding, tile: int = 2) -> WinogradPlan:
    """Plan ``conv2d(x, weight, bias, padding=padding)`` for a (K, C, 3, 3) weight
    with F(tile x tile, 3x3)."""
    variant = _variant(tile)
    _check_weight(weight, x.dtype)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight expects {weight.shape[1]} input channels, x has {x.shape[1]}")
    geom = conv_geometry((x.shape[2], x.shape[3]), 3, 1, padding, 1, kernel_name="weight kernel")
    if bias is None:
        bias = np.zeros(weight.shape[0], x.dtype)
    return WinogradPlan(np.ascontiguousarray(x), _transform_weight(weight, variant),
                        np.ascontiguousarray(bias, dtype=x.dtype),
                        (geom.pad_top, geom.pad_left), (geom.out_h, geom.out_w), variant)


def input_grad_plan(dy: np.ndarray, weight: np.ndarray, padding, input_hw,
                    tile: int = 2) -> WinogradPlan:
    """Plan the input gradient of a 3x3 stride-1 convolution with F(tile x tile, 3x3)
    (see :func:`winograd_conv2d_input_grad`)."""
    variant = _variant(tile)
    _check_weight(weight, dy.dtype)
    height, width = as_pair(input_hw, "input_hw")
    (top, bottom), (left, right) = normalize_padding(padding, (3, 3), (1, 1), (1, 1),
                                                     (height, width))
    expected = (dy.shape[0], weight.shape[0], height + top + bottom - 2, width + left + right - 2)
    if dy.ndim != 4 or dy.shape != expected:
        raise ValueError(f"dy must have shape {expected} for input {(height, width)} and "
                         f"padding {((top, bottom), (left, right))}, got {dy.shape}")
    flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return WinogradPlan(np.ascontiguousarray(dy), _transform_weight(flipped, variant),
                        np.zeros(weight.shape[1], dy.dtype), (2 - top, 2 - left),
                        (height, width), variant)


def winograd_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
                    padding=((1, 1), (1, 1)), tile: int = 2) -> np.ndarray:
    """3x3 stride-1 convolution by Winograd F(tile x tile, 3x3); the same as
    :func:`cnnblas.conv2d`.

    Parameters
    ----------
    x : ndarray, float32 or float64, shape (N, C, H, W)
    weight : ndarray, dtype of ``x``, shape (K, C, 3, 3)
    bias : ndarray, dtype of ``x``, shape (K,), optional
    padding : int, (h, w), ((top, bottom), (left, right)), "valid" or "same"
    tile : 2 or 4
        The output tile: F(2x2, 3x3) or F(4x4, 3x3).

    Returns
    -------
    y : ndarray, dtype of ``x``, shape (N, K, out_h, out_w)
        ``out = in + pad_before + pad_after - 2`` per axis.
    """
    plan = forward_plan(x, weight, bias, padding, tile)
    y = np.empty((x.shape[0], weight.shape[0], *plan.out_size), x.dtype)
    plan.run(0, x.shape[0], y)
    return y


def winograd_conv2d_input_grad(dy: np.ndarray, weight: np.ndarray, padding: Padding2d,
                               input_hw, tile: int = 2) -> np.ndarray:
    """Input gradient of a 3x3 stride-1 convolution, by Winograd F(tile x tile, 3x3).

    ``dx`` is ``dy`` correlated with ``weight`` rotated by 180° and transposed
    to (C, K, 3, 3), with padding ``2 - p`` for each forward padding ``p``
    (cropping ``dy`` where ``p > 2``).

    Parameters
    ----------
    dy : ndarray, float32 or float64, shape (N, K, out_h, out_w)
    weight : ndarray, dtype of ``dy``, shape (K, C, 3, 3)
    padding : the forward convolution's padding, in any form :func:`cnnblas.conv2d`
        accepts; ``((top, bottom), (left, right))`` from its geometry is typical
    input_hw : (H, W) of the forward input; ``out = in + pad_before + pad_after - 2``
    tile : 2 or 4, as in :func:`winograd_conv2d`

    Returns
    -------
    dx : ndarray, dtype of ``dy``, shape (N, C, H, W)
    """
    plan = input_grad_plan(dy, weight, padding, input_hw, tile)
    dx = np.empty((dy.shape[0], weight.shape[1], *plan.out_size), dy.dtype)
    plan.run(0, dy.shape[0], dx)
    return dx


class WeightGradPlan(NamedTuple):
    """The weight gradient of one Winograd convolution, to be run on ranges of
    images (one per worker thread) and finished once."""

    x: np.ndarray  # (N, C, H, W), C-contiguous
    dy: np.ndarray  # (N, K, out_h, out_w), C-contiguous
    pad: tuple[int, int]  # (pad_top, pad_left)
    variant: _Variant

    def run(self, start: int, stop: int, serial: bool = False,
            check: bool = False) -> np.ndarray | None:
        """``dU`` summed over images [start, stop), as (P, K, C): a transposed view
        of a new (P, C, K) array, which :meth:`finish` sums into a copy. With
        ``check``, None at the first chunk where ``x`` or ``dy`` held a non-finite
        value (see :func:`forward`).

        ``serial`` selects the single-threaded, GIL-free kernels (for worker
        threads); otherwise the transforms use Numba's thread pool.
        """
        channels = self.x.shape[1]
        n_out = self.dy.shape[1]
        dtype = self.x.dtype
        variant = self.variant
        points = variant.points
        tiles, tiles_per_image = _tiles(self.dy.shape[2:], variant.tile)
        step = _chunk_step(stop - start, channels, n_out, points * tiles_per_image,
                           dtype.itemsize)
        input_transform = (variant.input_transform_serial if serial
                           else variant.input_transform)
        grad_transform = variant.grad_transform_serial if serial else variant.grad_transform
        # Accumulated transposed, dUᵀ[xi] = sum V[xi] @ dM[xi]ᵀ (C, K). Unlike the
        # im2col dW GEMM, the orientation hardly matters here: within 2% on the
        # cifar and ResNet-56 layers, up to 10% faster for thin ones (C = K = 16).
        du_t = np.zeros((points, channels, n_out), dtype)
        product_t = np.empty((points, channels, n_out), dtype)
        for chunk_start in range(start, stop, step):
            chunk_stop = min(chunk_start + step, stop)
            count = (chunk_stop - chunk_start) * tiles_per_image
            v_rows = _operand_rows(channels * count, dtype.itemsize)
            m_rows = _operand_rows(n_out * count, dtype.itemsize)
            v = workspace.scratch((points, v_rows), dtype, Slot.WINOGRAD_V)
            dm = workspace.scratch((points, m_rows), dtype, Slot.WINOGRAD_M)
            finite = input_transform(self.x[chunk_start:chunk_stop], self.pad, tiles, v)
            finite &= grad_transform(self.dy[chunk_start:chunk_stop], tiles, dm)
            if check and not finite:
                return None
            # dU[xi] += dM[xi] @ V[xi]ᵀ, computed as dUᵀ[xi] += V[xi] @ dM[xi]ᵀ, as one
            # stacked matmul; junk and partial tiles add nothing (their dM is zero).
            v_all = v[:, : channels * count].reshape(points, channels, count)
            dm_all = dm[:, : n_out * count].reshape(points, n_out, count)
            du_t += np.matmul(v_all, dm_all.transpose(0, 2, 1), out=product_t)
        return du_t.transpose(0, 2, 1)

    def finish(self, partials) -> np.ndarray:
        """Sum the (P, K, C) ``dU`` partials of :meth:`run` and return
        ``dW = Gᵀ dU G`` as (K, C, 3, 3)."""
        du = partials[0].copy()
        for other in partials[1:]:
            du += other
        n_out, channels = du.shape[1:]
        # dW.reshape(K*C, 9) = dU.reshape(P, K*C)ᵀ @ kron(G, G): the adjoint of U = G g Gᵀ.
        gg = self.variant.gg.astype(du.dtype)
        with threads.single_threaded_blas():  # tiny product: a BLAS pool's wake-up costs more
            dweight = np.matmul(du.reshape(len(gg), n_out * channels).T, gg)
        return dweight.reshape(n_out, channels, 3, 3)


def weight_grad_plan(x: np.ndarray, dy: np.ndarray, padding, tile: int = 2) -> WeightGradPlan:
    """Plan the weight gradient of ``conv2d(x, weight, padding=padding)`` for a
    (K, C, 3, 3) weight, given the output gradient ``dy``, with F(tile x tile, 3x3)
    (see :func:`winograd_conv2d_weight_grad`)."""
    variant = _variant(tile)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {x.shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy must have the same dtype as the input ({x.dtype}), got {dy.dtype}")
    geom = conv_geometry((x.shape[2], x.shape[3]), 3, 1, padding, 1, kernel_name="weight kernel")
    if dy.ndim != 4 or dy.shape[0] != x.shape[0] or dy.shape[2:] != (geom.out_h, geom.out_w):
        raise ValueError(f"dy must have shape (N, K, out_h, out_w) = "
                         f"({x.shape[0]}, K, {geom.out_h}, {geom.out_w}) for x {x.shape} and "
                         f"padding {geom.padding}, got {dy.shape}")
    return WeightGradPlan(np.ascontiguousarray(x), np.ascontiguousarray(dy),
                          (geom.pad_top, geom.pad_left), variant)


def winograd_conv2d_weight_grad(dy: np.ndarray, x: np.ndarray, padding=((1, 1), (1, 1)),
                                tile: int = 2) -> np.ndarray:
    """Weight gradient of a 3x3 stride-1 convolution, by Winograd F(tile x tile, 3x3).

    Parameters
    ----------
    dy : ndarray, dtype of ``x``, shape (N, K, out_h, out_w)
        Gradient of the loss with respect to the convolution's output.
    x : ndarray, float32 or float64, shape (N, C, H, W)
    padding : the forward padding, in any form :func:`cnnblas.conv2d` accepts
    tile : 2 or 4, as in :func:`winograd_conv2d`

    Returns
    -------
    dweight : ndarray, dtype of ``x``, shape (K, C, 3, 3)
        The same as ``conv2d_backward(dy, x, weight, padding=padding)[1]``.
    """
    plan = weight_grad_plan(x, dy, padding, tile)
    return plan.finish([plan.run(0, x.shape[0])])


# --------------------------------------------------------------------------- the backend
#
# The transforms add and subtract input values of a whole tile: one inf there
# becomes inf - inf = NaN in outputs that a plain convolution gives as inf (or
# finite). Given any non-finite input the GEMM backend computes the layer
# instead, so results match PyTorch's. The input and gradient transforms say
# whether what they read was finite (F(4x4)'s check the copies they make anyway;
# F(2x2)'s read each array once more, :func:`_checked`), per worker and chunk.

def forward(problem: ConvProblem, bias: np.ndarray | None, y: np.ndarray, tile: int) -> None:
    """Fill ``y`` (N, K, out_h, out_w) with the convolution of ``problem``, plus ``bias``,
    by F(tile x tile, 3x3); the worker threads share one weight transform.

    Each worker's input transforms check its own images for non-finite values
    (in parallel: a serial check of the whole batch took 0.4 ms per 8 MiB, a
    separate one per worker 0.3-0.9 ms of a 6-10 ms layer); if any had one, the
    GEMM backend recomputes the layer.
    """
    if not all_finite(problem.weight):
        gemm.forward(problem, bias, y)
        return
    plan = forward_plan(problem.x, problem.weight, bias, problem.geom.padding, tile)
    if not all(parallel.map_image_ranges(lambda start, stop, serial:
                                         plan.run(start, stop, y, serial, check=True),
                                         problem.n_images, problem.flops)):
        gemm.forward(problem, bias, y)


def input_grad(problem: ConvProblem, dy: np.ndarray, dx: np.ndarray, tile: int) -> None:
    """Fill ``dx`` (N, C, H, W) with the input gradient of ``problem`` for a
    C-contiguous ``dy``, by F(tile x tile, 3x3) (:func:`input_grad_plan`), without
    the weight gradient; ``problem.x`` is not read. Non-finite values send it to
    the GEMM backend (checked per worker, as in :func:`forward`)."""
    if not all_finite(problem.weight):
        gemm.input_grad(problem, dy, dx)
        return
    geom = problem.geom
    plan = input_grad_plan(dy, problem.weight, geom.padding, (geom.in_h, geom.in_w), tile)
    if not all(parallel.map_image_ranges(lambda start, stop, serial:
                                         plan.run(start, stop, dx, serial, check=True),
                                         problem.n_images, problem.flops)):
        gemm.input_grad(problem, dy, dx)


def backward(problem: ConvProblem, dy: np.ndarray, input_grad: bool, tile: int):
    """(dx or None, dweight, dbias) of ``problem`` for a C-contiguous ``dy``, by
    F(tile x tile, 3x3): dW from GEMMs of transformed dY and input tiles, dX as a
    3x3 correlation of dY (:func:`input_grad_plan`). Non-finite values anywhere
    send the whole pass to the GEMM backend (checked per worker, as in
    :func:`forward`)."""
    if not all_finite(problem.weight):
        return gemm.backward(problem, dy, input_grad)
    geom = problem.geom
    weight_plan = weight_grad_plan(problem.x, dy, geom.padding, tile)
    input_plan = (input_grad_plan(dy, problem.weight, geom.padding, problem.x.shape[2:], tile)
                  if input_grad else None)
    dx = np.empty_like(problem.x) if input_grad else None

    def images_backward(start, stop, serial):
        """(dU, db) of images [start, stop), and their dx: one hand-off per call,
        and db summed by the worker that owns the images; None if they hold a
        non-finite value."""
        du = weight_plan.run(start, stop, serial, check=True)
        if du is None:
            return None
        if input_plan is not None:
            input_plan.run(start, stop, dx, serial)
        return du, dy[start:stop].sum(axis=(0, 2, 3))

    partials = parallel.map_image_ranges(images_backward, problem.n_images,
                                         problem.backward_flops(input_grad))
    if any(part is None for part in partials):
        return gemm.backward(problem, dy, input_grad)
    dweight = weight_plan.finish([du for du, _ in partials])
    dbias = np.sum([db for _, db in partials], axis=0)
    return dx, dweight, dbias
