"""Where each convolution's time goes: the profile behind the report's gaps.

For every shape and pass (forward; backward = dx, dweight and dbias from a
fixed dy) the report times, in the same run:

- **cnnblas** and **PyTorch** at the report's thread count T, in alternation;
- **one worker**: cnnblas with one thread on the ceil(N/T) images that one
  worker thread gets when the batch is split (:mod:`cnnblas.ops.parallel`).
  It is what T threads would take if splitting the batch cost nothing;
- **GEMMs alone**: that worker's BLAS products by themselves, one thread:
  ``numpy.matmul`` on C-contiguous random operands of the shapes the
  algorithm multiplies (:func:`gemm_operands`), one stacked call per product
  over all the worker's images. The engine multiplies the same flops in
  smaller chunks (and per image for 1x1 layers); per-chunk products measured
  8-18 % apart from these, either way, on res56, res_s2 and pw1x1.

Two differences follow. *Other stages* = one worker − GEMMs alone: im2col,
col2im, the Winograd transforms, reorders and, for the direct kernels, all
of the work. *Split cost* = cnnblas − one worker: everything splitting the
batch adds, i.e. handing the images to the worker thread (through the GIL:
30-70 µs a call on this VM), the serial steps that stay in the calling
thread (summing the workers' weight gradients, the GEMM path's dW
transpose), and two cores sharing caches and memory bandwidth. The GEMMs'
one-thread rate is compared with the run's T-thread SGEMM rate divided by T.

Reading it: where **GEMMs alone** already take as long as PyTorch's whole
pass, no im2col or Winograd bookkeeping can close the gap; only fewer flops
(a fast algorithm) or a faster BLAS can.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from benchmarks.common import (
    ConvInputs,
    ConvShape,
    conv_function,
    measure_interleaved,
    set_threads,
    torch_available,
)
from cnnblas.checks import ceil_div
from cnnblas.ops.algorithms import WINOGRAD_TILES

BOUND_PASSES = ("forward", "backward")


def gemm_operands(shape: ConvShape, algorithm: str, images: int,
                  pass_name: str) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (a, b) operand shapes of the products ``algorithm`` runs for ``pass_name``
    on ``images`` images; each is one stacked ``numpy.matmul(a, b)``.

    - "gemm": per group g, forward (K/g × CRS/g)·(CRS/g × n·L); backward
      dWᵀ = cols·dYᵀ, (CRS/g × n·L)·(n·L × K/g), and dcols = Wᵀ·dY,
      (CRS/g × K/g)·(K/g × n·L); CRS = C·kh·kw, L = out_h·out_w.
    - "winograd2x2"/"winograd4x4" (tile m, P = (m + 2)² points, T tiles with one
      junk tile per tile row): forward (P, K, C)·(P, C, T); backward
      dUᵀ = V·dMᵀ, (P, C, T)·(P, T, K), and dX, a forward with K and C
      swapped over the input's tiles.
    - "direct": none (no GEMM).
    """
    groups = shape.groups
    n_out, channels = shape.out_channels // groups, shape.in_channels // groups
    if algorithm == "gemm":
        rows = channels * shape.kernel_h * shape.kernel_w
        columns = images * shape.out_h * shape.out_w
        if pass_name == "forward":
            return [((groups, n_out, rows), (groups, rows, columns))]
        return [((groups, rows, columns), (groups, columns, n_out)),
                ((groups, rows, n_out), (groups, n_out, columns))]
    if algorithm in WINOGRAD_TILES:
        tile = WINOGRAD_TILES[algorithm]
        points = (tile + 2) ** 2

        def tiles(height: int, width: int) -> int:
            return images * ceil_div(height, tile) * (ceil_div(width, tile) + 1)

        out_tiles = tiles(shape.out_h, shape.out_w)
        if pass_name == "forward":
            return [((points, n_out, channels), (points, channels, out_tiles))]
        in_tiles = tiles(shape.height, shape.width)
        return [((points, channels, out_tiles), (points, out_tiles, n_out)),
                ((points, channels, n_out), (points, n_out, in_tiles))]
    return []


def gemm_flops(operands) -> float:
    """2·M·N·K summed over the stacked products."""
    return sum(2.0 * a[0] * a[1] * a[2] * b[2] for a, b in operands)


def _gemm_function(operands, rng: np.random.Generator) -> Callable[[], None] | None:
    if not operands:
        return None
    arrays = [(rng.standard_normal(a, dtype=np.float32), rng.standard_normal(b, dtype=np.float32),
               np.empty(a[:2] + b[2:], np.float32)) for a, b in operands]

    def products():
        for a, b, out in arrays:
            np.matmul(a, b, out=out)
    return products


def measure_bounds(shape: ConvShape, inputs: ConvInputs, threads: int, budget: float,
                   rounds: int, min_repeats: int) -> list[dict]:
    """One record per pass of :data:`BOUND_PASSES`: the timings described in
    the module docstring, in seconds (None where not measured), plus
    ``worker_images`` and ``gemm_flops``. Leaves the thread setting at ``threads``."""
    algorithm = shape.auto_algorithm()
    worker_images = ceil_div(shape.batch, threads)
    worker_shape = shape.with_batch(worker_images)
    worker_inputs = ConvInputs(np.ascontiguousarray(inputs.x[:worker_images]), inputs.weight,
                               inputs.bias, np.ascontiguousarray(inputs.dy[:worker_images]))
    rng = np.random.default_rng(0)
    operands = {p: gemm_operands(shape, algorithm, worker_images, p) for p in BOUND_PASSES}

    full = {}
    for pass_name in BOUND_PASSES:
        full[f"gemm {pass_name}"] = conv_function("gemm", pass_name, shape, inputs)
        if torch_available():
            full[f"torch {pass_name}"] = conv_function("torch", pass_name, shape, inputs)
    timings = measure_interleaved(full, budget, rounds=rounds, min_repeats=min_repeats)

    one_thread = {}
    for pass_name in BOUND_PASSES:
        one_thread[f"worker {pass_name}"] = conv_function("gemm", pass_name, worker_shape,
                                                          worker_inputs)
        products = _gemm_function(operands[pass_name], rng)
        if products is not None:
            one_thread[f"gemms {pass_name}"] = products
    set_threads(1)
    try:
        timings.update(measure_interleaved(one_thread, budget, rounds=rounds,
                                           min_repeats=min_repeats))
    finally:
        set_threads(threads)

    medians = {name: timing.median for name, timing in timings.items()}
    return [dict(shape=shape.name, pass_name=pass_name, algorithm=algorithm,
                 worker_images=worker_images, gemm_flops=gemm_flops(operands[pass_name]),
                 **{key: medians.get(f"{kind} {pass_name}") for key, kind in
                    (("cnnblas", "gemm"), ("torch", "torch"), ("worker", "worker"),
                     ("gemms", "gemms"))})
            for pass_name in BOUND_PASSES]
