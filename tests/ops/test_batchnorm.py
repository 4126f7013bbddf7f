"""cnnblas.ops.batchnorm against the plain NumPy formulas, in float64 and float32.

The references are the textbook formulas evaluated with NumPy in float64
(``x.mean``, ``x.var``, ``x̂ = (x - mean) / sqrt(var + eps)``, the input
gradient ``w / σ (dy - mean(dy) - x̂ mean(dy·x̂))``); PyTorch comparisons of the
layer are in tests/nn/test_batchnorm.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas import functional as F
from tests.conftest import assert_close

F64 = np.float64
AXES = (0, 2, 3)


def _shape(n, c, h, w):
    return (n, c, h, w)


shapes = st.builds(_shape, st.integers(1, 5), st.integers(1, 4), st.integers(1, 7),
                   st.integers(1, 7))


def channel(values):
    return np.asarray(values).reshape(1, -1, 1, 1)


def reference_input_grad(dy, x, weight, eps):
    """dx of y = x̂ * weight + bias from the formulas, in float64."""
    mean, var = x.mean(AXES), x.var(AXES)
    x_hat = (x - channel(mean)) / channel(np.sqrt(var + eps))
    mean_dy = dy.mean(AXES)
    mean_dy_x_hat = (dy * x_hat).mean(AXES)
    return channel(weight / np.sqrt(var + eps)) * (
        dy - channel(mean_dy) - x_hat * channel(mean_dy_x_hat))


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from([1.0, 100.0]), st.integers(0, 2**16))
def test_statistics_are_float64_exact(shape, offset, seed):
    # An offset 1e4 times the spread is where a one-pass E[x²] - E[x]² loses 8 digits
    # (error ~1e-16 * 1e8); the per-plane two-pass moments lose 4 (1e-16 * 1e4, the
    # rounding of x itself relative to its spread).
    x = np.random.default_rng(seed).standard_normal(shape) * 1e-2 + offset
    mean, var = F.batch_norm_statistics(x)
    assert mean.dtype == var.dtype == F64
    assert_close(mean, x.mean(AXES), rtol=1e-14)
    assert_close(var, x.var(AXES), rtol=1e-10)


def test_statistics_of_float32_accumulate_in_float64():
    x = (np.random.default_rng(0).standard_normal((64, 3, 32, 32)) + 3).astype(np.float32)
    mean, var = F.batch_norm_statistics(x)
    assert_close(mean, x.astype(F64).mean(AXES), rtol=1e-14)
    assert_close(var, x.astype(F64).var(AXES), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, F64])
@pytest.mark.parametrize("residual, relu", [(False, False), (False, True), (True, True),
                                            (True, False)])
def test_apply_is_the_numpy_composition_bit_for_bit(dtype, residual, relu, two_threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    r = rng.standard_normal(x.shape).astype(dtype) if residual else None
    mean, inv_std, weight, bias = (rng.standard_normal(4).astype(dtype) for _ in range(4))
    y = F.batch_norm_apply(x, mean, inv_std, weight, bias, r, relu)
    expected = ((x - channel(mean)) * channel(inv_std)) * channel(weight) + channel(bias)
    if residual:
        expected = expected + r
    if relu:
        expected = np.maximum(expected, dtype(0))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, expected)


def test_apply_propagates_nan_through_the_relu():
    x = np.array([np.nan, -1.0, 2.0]).reshape(1, 3, 1, 1)
    ones, zeros = np.ones(3), np.zeros(3)
    y = F.batch_norm_apply(x, zeros, ones, ones, zeros, relu=True)
    assert np.isnan(y[0, 0]) and y[0, 1] == 0 and y[0, 2] == 2


@settings(max_examples=30, deadline=None)
@given(shapes, st.booleans(), st.integers(0, 2**16))
def test_gradient_formulas_float64(shape, masked, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3 + 2
    dy = rng.standard_normal(shape)
    weight = rng.uniform(0.5, 2, shape[1])
    y = rng.standard_normal(shape) if masked else None
    g = np.where(y > 0, dy, 0.0) if masked else dy
    eps = 1e-5
    mean, var = F.batch_norm_statistics(x)
    inv_std = 1 / np.sqrt(var + eps)
    sum_dy, sum_centered = F.batch_norm_grad_sums(dy, x, mean, y)
    assert_close(sum_dy, g.sum(AXES), rtol=1e-13)
    assert_close(sum_centered, (g * (x - channel(x.mean(AXES)))).sum(AXES), rtol=1e-12)
    count = shape[0] * shape[2] * shape[3]
    dx = F.batch_norm_input_grad(dy, x, mean, inv_std, weight, sum_dy, sum_centered * inv_std,
                                 count, y)
    # Relative to the size of its terms: with two values per channel dx cancels to ~0.
    scale = float(np.abs(g * channel(weight * inv_std)).max())
    np.testing.assert_allclose(dx, reference_input_grad(g, x, weight, eps), rtol=0,
                               atol=1e-13 * max(scale, 1e-300))


def test_masked_sums_return_the_masked_gradient(two_threads):
    rng = np.random.default_rng(2)
    x, dy, y = (rng.standard_normal((4, 3, 8, 8)).astype(np.float32) for _ in range(3))
    dy[0, 0, 0, 0] = np.inf
    y[0, 0, 0, 0] = -1.0  # masked out: exactly 0, never inf * 0
    mean = np.zeros(3)
    sum_dy, _, masked = F.batch_norm_grad_sums(dy, x, mean, y, masked_out=True)
    expected = np.where(y > 0, dy, np.float32(0))
    np.testing.assert_array_equal(masked, expected)
    assert masked.dtype == np.float32
    assert_close(sum_dy, expected.astype(F64).sum(AXES), rtol=1e-12)


def test_one_thread_and_two_threads_agree_bit_for_bit(two_threads):
    import cnnblas as cb

    rng = np.random.default_rng(3)
    x, dy, y = (rng.standard_normal((6, 5, 9, 7)).astype(np.float32) for _ in range(3))

    def run():
        mean, var = F.batch_norm_statistics(x)
        sums = F.batch_norm_grad_sums(dy, x, mean, y)
        return mean, var, *sums, F.batch_norm_input_grad(dy, x, mean, 1 / np.sqrt(var + 1e-5),
                                                         np.ones(5), *sums, 378, y)

    both = run()
    cb.set_num_threads(1)
    for a, b in zip(both, run(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_contiguous_input_is_read_correctly():
    x = np.random.default_rng(4).standard_normal((3, 8, 6, 5)).transpose(0, 1, 3, 2)[:, ::2]
    mean, var = F.batch_norm_statistics(x)
    assert_close(mean, x.mean(AXES), rtol=1e-14)
    assert_close(var, x.var(AXES), rtol=1e-12)


def test_bad_arguments_name_themselves():
    x = np.zeros((2, 3, 4, 4))
    ones = np.ones(3)
    with pytest.raises(ValueError, match=r"weight must be an ndarray of shape \(3,\).*\(2,\)"):
        F.batch_norm_apply(x, ones, ones, np.ones(2), ones)
    with pytest.raises(ValueError, match=r"residual \(it must match x\)"):
        F.batch_norm_apply(x, ones, ones, ones, ones, residual=np.zeros((2, 3, 4, 5)))
    with pytest.raises(TypeError, match="residual"):
        F.batch_norm_apply(x, ones, ones, ones, ones, residual=np.zeros(x.shape, np.float32))
    with pytest.raises(ValueError, match=r"dy \(it must match x\)"):
        F.batch_norm_grad_sums(np.zeros((2, 3, 4, 5)), x, ones)
    with pytest.raises(ValueError, match="masked_out=True needs y"):
        F.batch_norm_grad_sums(x, x, ones, masked_out=True)
    with pytest.raises(ValueError, match="count must be > 0"):
        F.batch_norm_input_grad(x, x, ones, ones, ones, ones, ones, 0)
    with pytest.raises(ValueError, match="x must have rank 4"):
        F.batch_norm_statistics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="x must not be empty"):
        F.batch_norm_statistics(np.zeros((0, 3, 4, 4)))
