"""The linear op's GEMMs on one BLAS thread (small) or the thread setting (large)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from cnnblas import threads
from cnnblas.ops import linear as linear_module
from cnnblas.ops.linear import linear, linear_backward
from tests.conftest import assert_close


@pytest.mark.parametrize("serial_flops", [0.0, float("inf")], ids=["threaded", "one-thread"])
def test_linear_matches_float64_sums_on_either_blas_setting(serial_flops, monkeypatch):
    monkeypatch.setattr(linear_module, "SERIAL_GEMM_FLOPS", serial_flops)
    rng = np.random.default_rng(0)
    x, weight, bias, dy = (rng.standard_normal(shape) for shape in
                           ((64, 40), (12, 40), (12,), (64, 12)))
    want_y = np.einsum("ni,oi->no", x, weight) + bias
    want = (np.einsum("no,oi->ni", dy, weight), np.einsum("no,ni->oi", dy, x), dy.sum(axis=0))
    f32 = [a.astype(np.float32) for a in (x, weight, bias, dy)]
    assert_close(linear(*f32[:3]), want_y, rtol=1e-5)
    for got, expected in zip(linear_backward(f32[3], f32[0], f32[1]), want, strict=True):
        assert_close(got, expected, rtol=1e-5)


def test_small_linear_gemms_hold_blas_at_one_thread(monkeypatch):
    """LeNet-5's fc layers: no multi-threaded BLAS call, so OpenBLAS's sleeping
    pool is never woken for a product shorter than the wake-up."""
    entered = []

    @contextlib.contextmanager
    def recording():
        entered.append(True)
        yield

    monkeypatch.setattr(threads, "single_threaded_blas", recording)
    x = np.ones((64, 400), np.float32)
    weight = np.ones((120, 400), np.float32)
    linear(x, weight)
    linear_backward(np.ones((64, 120), np.float32), x, weight)
    assert len(entered) == 2
    big = np.ones((2048, 2048), np.float32)
    linear(big, big)  # 17 GFLOP: the thread setting
    assert len(entered) == 2
