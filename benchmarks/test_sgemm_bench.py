"""pytest-benchmark: the machine's own limit, a 2048^3 float32 ``numpy.matmul``."""

from __future__ import annotations

import numpy as np

from benchmarks.common import sgemm_operands

SIZE = 2048


def test_sgemm_2048(benchmark):
    a, b, out = sgemm_operands(SIZE)
    benchmark.group = "sgemm"
    benchmark(np.matmul, a, b, out=out)
    flops = 2.0 * SIZE**3
    benchmark.extra_info["flops"] = flops
    if getattr(benchmark, "stats", None) is not None:
        benchmark.extra_info["gflops_best"] = flops / benchmark.stats.stats.min / 1e9
