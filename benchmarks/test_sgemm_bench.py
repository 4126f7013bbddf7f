"""pytest-benchmark: the machine's own limit, a 2048^3 float32 ``numpy.matmul``."""

from __future__ import annotations

import numpy as np

SIZE = 2048


def test_sgemm_2048(benchmark):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    b = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    out = np.empty((SIZE, SIZE), np.float32)
    np.matmul(a, b, out=out)  # warm-up
    benchmark.group = "sgemm"
    benchmark(np.matmul, a, b, out=out)
    flops = 2.0 * SIZE**3
    benchmark.extra_info["flops"] = flops
    if getattr(benchmark, "stats", None) is not None:
        benchmark.extra_info["gflops_best"] = flops / benchmark.stats.stats.min / 1e9
