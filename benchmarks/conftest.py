"""Fixtures for the pytest-benchmark suites (``pytest benchmarks --benchmark-enable``).

Environment knobs (all optional):

- ``CNNBLAS_BENCH_THREADS``: thread count for Numba, BLAS and PyTorch
  (default: cnnblas's setting, i.e. every core);
- ``CNNBLAS_BENCH_SHAPES``: comma-separated subset of ``shapes.csv`` names.

Every convolution benchmark first asks :func:`agreed` for its (shape, pass):
the first request runs every implementation once and checks that they agree
(:func:`benchmarks.common.check_agreement`), so a wrong kernel fails instead of
being timed.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.common import (
    IMPLEMENTATIONS,
    check_agreement,
    conv_function,
    load_shapes,
    make_inputs,
    set_threads,
)

NAIVE_CHANNELS = 1


def bench_shapes():
    """The shapes to benchmark (``CNNBLAS_BENCH_SHAPES`` or all of shapes.csv)."""
    names = os.environ.get("CNNBLAS_BENCH_SHAPES")
    return load_shapes(names.split(",") if names else None)


@pytest.fixture(scope="session", autouse=True)
def bench_threads() -> int:
    threads = os.environ.get("CNNBLAS_BENCH_THREADS")
    return set_threads(int(threads) if threads else None)


@pytest.fixture(scope="session")
def conv_inputs():
    """shape -> its ConvInputs, built once per session."""
    cache = {}

    def get(shape):
        if shape.name not in cache:
            cache[shape.name] = make_inputs(shape)
        return cache[shape.name]

    return get


@pytest.fixture(scope="session")
def agreed(conv_inputs):
    """(shape, pass) -> worst relative error per impl; raises if implementations disagree."""
    cache = {}

    def check(shape, pass_name):
        key = (shape.name, pass_name)
        if key not in cache:
            inputs = conv_inputs(shape)
            outputs = {}
            for impl in IMPLEMENTATIONS:
                fn = conv_function(impl, pass_name, shape, inputs, NAIVE_CHANNELS)
                if fn is not None:
                    outputs[impl] = fn()
            cache[key] = check_agreement(shape, pass_name, outputs, NAIVE_CHANNELS)
        return cache[key]

    return check
