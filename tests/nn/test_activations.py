"""Activations: tutorial Tables 3.22-3.26, finite differences, stability, PyTorch, layers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas import nn
from cnnblas.nn.gradcheck import check_module_gradients, numerical_gradient, relative_error
from cnnblas.ops import activations as act

TABLE_3_22 = [[45, -12, 16, 90, 34], [-18, 32, 12, 45, -8], [-1, 7, 8, 9, 12],
              [-2, -12, 14, 56, 18]]
TABLE_3_23 = [[45, 0, 16, 90, 34], [0, 32, 12, 45, 0], [0, 7, 8, 9, 12], [0, 0, 14, 56, 18]]
TABLE_3_25 = [[.45, .75, .36, .42, .34], [.32, .28, .21, .18, .47], [.1, .17, .2, .32, .28],
              [.1, .3, .36, .23, .12]]
TABLE_3_26 = [[.45, 0, .36, .42, .34], [0, .28, .21, .18, 0], [0, .17, .2, .32, .28],
              [0, 0, .36, .23, .12]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_tutorial_tables_3_22_to_3_26(dtype):
    x = np.array(TABLE_3_22, dtype)
    y = act.relu(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.array(TABLE_3_23, dtype))
    dx = act.relu_backward(np.array(TABLE_3_25, dtype), x)
    np.testing.assert_array_equal(dx, np.array(TABLE_3_26, dtype))

    layer = nn.ReLU()
    np.testing.assert_array_equal(layer(x), y)
    assert layer.cached == ("mask", "dtype")
    np.testing.assert_array_equal(layer.backward(np.array(TABLE_3_25, dtype)), dx)


def away_from_zero(shape, seed, margin=0.05):
    """Values with |x| >= margin, so a centred difference never straddles a kink."""
    rng = np.random.default_rng(seed)
    magnitude = rng.uniform(margin, 3.0, shape)
    return np.where(rng.random(shape) < 0.5, -magnitude, magnitude)


FUNCTIONS = {
    "relu": (act.relu, lambda dy, x, y: act.relu_backward(dy, x)),
    "leaky_relu": (lambda x: act.leaky_relu(x, 0.2),
                   lambda dy, x, y: act.leaky_relu_backward(dy, x, 0.2)),
    "sigmoid": (act.sigmoid, lambda dy, x, y: act.sigmoid_backward(dy, y)),
    "tanh": (act.tanh, lambda dy, x, y: act.tanh_backward(dy, y)),
}


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(sorted(FUNCTIONS)),
       st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(0, 2**16))
def test_functional_backward_matches_finite_differences(name, shape, seed):
    forward, backward = FUNCTIONS[name]
    x = away_from_zero(shape, seed)
    dy = np.random.default_rng(seed + 1).standard_normal(shape)
    y = forward(x)
    numeric = numerical_gradient(lambda: float(np.sum(forward(x) * dy)), x)
    assert relative_error(backward(dy, x, y), numeric) < 1e-8


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Tanh()],
                         ids=lambda layer: type(layer).__name__)
def test_layer_backward_matches_finite_differences(layer):
    errors = check_module_gradients(layer, away_from_zero((2, 3, 4, 5), 7))
    assert errors["input"] < 1e-8


def test_sigmoid_is_stable_and_keeps_dtype():
    x = np.array([-1e4, -800.0, -30.0, 0.0, 30.0, 800.0, 1e4], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = act.sigmoid(x)
        t = act.tanh(x)
    assert y.dtype == t.dtype == np.float32
    assert y[0] == 0.0 and y[3] == 0.5 and y[-1] == 1.0 and np.all(np.diff(y) >= 0)
    np.testing.assert_allclose(y[2], 1 / (1 + np.exp(30.0)), rtol=1e-6)
    np.testing.assert_array_equal(t[[0, -1]], [-1, 1])


@pytest.mark.torch
def test_matches_torch(torch):
    x = away_from_zero((3, 7), 11).astype(np.float32)
    tx = torch.from_numpy(x)
    functional = torch.nn.functional
    np.testing.assert_array_equal(act.relu(x), functional.relu(tx).numpy())
    np.testing.assert_allclose(act.leaky_relu(x, 0.3), functional.leaky_relu(tx, 0.3).numpy(),
                               rtol=1e-7)
    np.testing.assert_allclose(act.sigmoid(x), torch.sigmoid(tx).numpy(), rtol=1e-6)
    np.testing.assert_allclose(act.tanh(x), torch.tanh(tx).numpy(), rtol=1e-6, atol=1e-7)


def test_relu_gradient_at_zero_is_zero_like_torch():
    x = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(act.relu_backward(np.ones(3), x), [0, 0, 1])
    np.testing.assert_array_equal(act.leaky_relu_backward(np.ones(3), x, 0.5), [0.5, 0.5, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.0, 0.01, -0.3])
def test_masked_gradient_matches_numpy_where(dtype, slope):
    rng = np.random.default_rng(7)
    dy = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    dy[0, 0, 0, :3] = [np.inf, -np.inf, np.nan]
    positive = rng.random(dy.shape) < 0.5
    positive[0, 0, 0, :3] = False
    transposed = dy.transpose(0, 1, 3, 2)  # non-contiguous input
    with np.errstate(invalid="ignore"):  # inf * 0.0 for the leaky slope 0
        expected = np.where(positive.transpose(0, 1, 3, 2), transposed,
                            0 if slope is None else transposed * dtype(slope))
    dx = act.masked_gradient(transposed, positive.transpose(0, 1, 3, 2), slope)
    assert dx.dtype == dtype and dx.shape == transposed.shape
    np.testing.assert_array_equal(dx, expected)
    # ReLU: exactly 0 under an infinite dy (PyTorch's threshold_backward);
    # leaky ReLU with slope 0: inf * 0 = NaN (PyTorch's leaky_relu_backward).
    assert np.isnan(dx[0, 0, :2, 0]).all() == (slope == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.01, -0.5])
def test_rectify_matches_numpy_on_special_values(dtype, slope):
    """The one-pass kernel gives numpy.maximum's / numpy.where's values (NaN, inf,
    -0.0 included) and the mask x > 0, also for a non-contiguous input."""
    values = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -2.5, 3e-39, -3e-39])
    rng = np.random.default_rng(8)
    x = np.concatenate([values, rng.standard_normal(63)]).astype(dtype).reshape(8, 9).T
    y, positive = act.rectify(x, slope)
    if slope is None:
        expected = np.maximum(x, 0)
    else:
        expected = np.where(x > 0, x, x * dtype(slope))
    assert y.dtype == dtype and y.shape == x.shape and positive.dtype == np.bool_
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(expected))  # -0.0 as numpy has it
    np.testing.assert_array_equal(positive, x > 0)


def test_masked_gradient_rejects_a_bad_mask():
    with pytest.raises(TypeError, match="positive must be a bool"):
        act.masked_gradient(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="must match dy"):
        act.masked_gradient(np.ones(3), np.ones(4, bool))


def test_errors():
    with pytest.raises(TypeError, match="float32 or float64"):
        act.relu(np.arange(3))
    with pytest.raises(ValueError, match="must match x"):
        act.relu_backward(np.ones(2), np.ones(3))
    with pytest.raises(TypeError, match="same dtype"):
        act.tanh_backward(np.ones(3, np.float32), np.ones(3))
    with pytest.raises(TypeError, match="negative_slope"):
        act.leaky_relu(np.ones(3), "0.1")
    layer = nn.Sigmoid()
    with pytest.raises(RuntimeError, match=r"Sigmoid\(\)\.backward\(\) called with nothing"):
        layer.backward(np.ones(3))
    layer(np.ones(3))
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.ones(4))
