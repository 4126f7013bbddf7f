"""pytest-benchmark: the whole-network training steps (LeNet-5, ResNet-20), cnnblas and PyTorch.

The same steps as the report's *Whole networks* rows (:mod:`benchmarks.netmodels`),
but both engines in this one process, each step timed by pytest-benchmark:
for numbers to quote use ``python -m benchmarks.report --networks-only``,
which runs each engine in a process of its own. Both start from cnnblas's
initial weights; PyTorch is skipped when it is not installed.
"""

from __future__ import annotations

import pytest

from benchmarks import netmodels
from benchmarks.common import torch_available
from benchmarks.netmodels import NETWORKS


def _step(engine: str, name: str):
    network = NETWORKS[name]
    model = netmodels.cnnblas_model(name, rng=0)
    images, labels = netmodels.make_batch(network, network.batch)
    if engine == "cnnblas":
        return netmodels.cnnblas_training_step(network, model, images, labels)
    import torch

    twin = netmodels.torch_model(torch, name, model.state_dict())
    return netmodels.torch_training_step(torch, network, twin, images, labels)


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("engine", ["cnnblas", "torch"])
def test_training_step(benchmark, engine, name):
    if engine == "torch" and not torch_available():
        pytest.skip("PyTorch is not installed")
    step = _step(engine, name)
    step()  # warm-up
    benchmark.group = f"{NETWORKS[name].label} training step"
    benchmark(step)
