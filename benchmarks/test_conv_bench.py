"""pytest-benchmark: every shape of shapes.csv, both passes, every implementation.

Groups are ``<pass> <shape>`` so ``--benchmark-group-by=group`` compares the
implementations of one convolution side by side. ``extra_info`` carries the
flops of the pass and, when timing is enabled, the GFLOP/s of the median.
The naive loops run on the documented subsample (image 0, one output
channel; see :mod:`benchmarks.common`) with ``extra_info["scale"]`` the factor
that turns the subsample's time into the full shape's.
"""

from __future__ import annotations

import pytest

from benchmarks.common import PASS_LABELS, PASSES, conv_function, naive_sample
from benchmarks.conftest import NAIVE_CHANNELS, bench_shapes

SHAPES = bench_shapes()
SHAPE_IDS = [shape.name for shape in SHAPES]


def _record_rate(benchmark, flops: float, scale: float = 1.0) -> None:
    benchmark.extra_info["flops"] = flops
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gflops"] = flops / (stats.stats.median * scale) / 1e9


@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("impl", ["direct", "gemm", "torch"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_conv(benchmark, shape, impl, pass_name, conv_inputs, agreed):
    fn = conv_function(impl, pass_name, shape, conv_inputs(shape))
    if fn is None:
        pytest.skip(f"{impl} is not available")
    errors = agreed(shape, pass_name)
    fn()  # warm-up outside the timed region (JIT compilation, workspace)
    benchmark.group = f"{PASS_LABELS[pass_name]} {shape.name}"
    benchmark.extra_info["max_rel_error"] = errors.get(impl, 0.0)
    benchmark(fn)
    _record_rate(benchmark, shape.flops(pass_name))


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_naive_forward_subsample(benchmark, shape, conv_inputs, agreed):
    fn = conv_function("naive", "forward", shape, conv_inputs(shape), NAIVE_CHANNELS)
    agreed(shape, "forward")
    scale = naive_sample(shape, NAIVE_CHANNELS).scale(shape)
    benchmark.group = f"{PASS_LABELS['forward']} {shape.name}"
    benchmark.extra_info["scale"] = scale
    # Plain Python: nothing to warm up, and a few rounds are enough at seconds per call.
    benchmark.pedantic(fn, rounds=3, iterations=1)
    _record_rate(benchmark, shape.flops("forward"), scale)
