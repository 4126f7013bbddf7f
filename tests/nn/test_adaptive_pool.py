"""AdaptiveAvgPool2d and Identity: a loop reference over PyTorch's bin rule, PyTorch
itself, finite differences and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas import nn
from cnnblas.nn.gradcheck import check_module_gradients


def bins(size, out):
    """PyTorch's rule, written with floats: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]


def loop_pool(x, out_h, out_w):
    """Forward and the adjoint (backward of dy = 1 per output pixel weighted by ``dy``)."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, out_h, out_w))
    for i, (top, bottom) in enumerate(bins(h, out_h)):
        for j, (left, right) in enumerate(bins(w, out_w)):
            y[:, :, i, j] = x[:, :, top:bottom, left:right].mean(axis=(2, 3))
    return y


def loop_pool_backward(dy, shape):
    dx = np.zeros(shape)
    for i, (top, bottom) in enumerate(bins(shape[2], dy.shape[2])):
        for j, (left, right) in enumerate(bins(shape[3], dy.shape[3])):
            count = (bottom - top) * (right - left)
            dx[:, :, top:bottom, left:right] += dy[:, :, i:i + 1, j:j + 1] / count
    return dx


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), data=st.data())
def test_matches_loop_reference(h, w, data):
    out_h, out_w = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    rng = np.random.default_rng(h * 10 + w)
    x = rng.standard_normal((2, 3, h, w))
    dy = rng.standard_normal((2, 3, out_h, out_w))
    layer = nn.AdaptiveAvgPool2d((out_h, out_w))
    np.testing.assert_allclose(layer(x), loop_pool(x, out_h, out_w), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.backward(dy), loop_pool_backward(dy, x.shape), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_size, out_size", [
    ((8, 8), (1, 1)), ((7, 7), (3, 3)), ((5, 9), (2, 4)), ((6, 6), (3, 2)), ((5, 5), (5, 5)),
    ((10, 7), (4, 7)), ((4, 6), (None, 4)),
])
def test_matches_torch(torch, in_size, out_size, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, *in_size)).astype(dtype)
    layer = nn.AdaptiveAvgPool2d(out_size)
    y = layer(x)
    tx = torch.tensor(x, requires_grad=True)
    t_y = torch.nn.AdaptiveAvgPool2d(out_size)(tx)
    dy = rng.standard_normal(t_y.shape).astype(dtype)
    t_y.backward(torch.from_numpy(dy))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert y.dtype == dtype and y.shape == tuple(t_y.shape)
    np.testing.assert_allclose(y, t_y.detach().numpy(), rtol=tol, atol=tol)
    dx = layer.backward(dy)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("out_size", [(1, 1), (2, 3)])
def test_finite_differences(out_size):
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 7))
    errors = check_module_gradients(nn.AdaptiveAvgPool2d(out_size), x)
    assert errors["input"] < 1e-8


def test_bad_output_sizes():
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d\(output_size=\(5, 5\)\): output size "
                                         r"5x5 is larger than the input 4x4"):
        nn.AdaptiveAvgPool2d(5)(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="output height must be an int >= 1, got 0"):
        nn.AdaptiveAvgPool2d(0)
    with pytest.raises(ValueError, match="output width must be an int >= 1, got -2"):
        nn.AdaptiveAvgPool2d((3, -2))
    with pytest.raises(TypeError, match="output_size must be an int, None or a pair"):
        nn.AdaptiveAvgPool2d((1, 2, 3))
    with pytest.raises(TypeError, match=r"output_size must be an int.*got 1\.5"):
        nn.AdaptiveAvgPool2d(1.5)
    with pytest.raises(TypeError, match="output width must be an int >= 1, got '2'"):
        nn.AdaptiveAvgPool2d((2, "2"))
    with pytest.raises(ValueError, match="must have rank 4"):
        nn.AdaptiveAvgPool2d(1)(np.zeros((2, 3), np.float32))
    layer = nn.AdaptiveAvgPool2d(2)
    layer(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"dy of AdaptiveAvgPool2d.*\(1, 1, 2, 2\)"):
        layer.backward(np.zeros((1, 1, 3, 3), np.float32))


def test_identity():
    x = np.arange(6.0).reshape(2, 3)
    layer = nn.Identity()
    assert layer(x) is x and layer(x) is x and layer.backward(x) is x
    assert layer.state_dict() == {} and repr(layer) == "Identity()"
