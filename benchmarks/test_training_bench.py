"""pytest-benchmark: one LeNet-5 training step (batch 64), cnnblas and PyTorch.

See :mod:`benchmarks.training`; skipped when cnnblas.nn is not importable.
"""

from __future__ import annotations

import pytest

from benchmarks import training

pytestmark = pytest.mark.skipif(not training.available(),
                                reason="cnnblas.nn / cnnblas.optim.SGD not available")


@pytest.fixture(scope="module")
def steps():
    steps, _ = training.training_steps()  # checks one step of each agrees first
    return steps


@pytest.mark.parametrize("impl", training.TRAINING_IMPLS)
def test_lenet5_step(benchmark, steps, impl):
    if impl not in steps:
        pytest.skip(f"{impl} is not available")
    step = steps[impl]
    step()  # warm-up
    benchmark.group = "LeNet-5 training step"
    benchmark.extra_info["flops"] = training.lenet5_flops()
    benchmark(step)
