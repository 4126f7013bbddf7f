"""nn.ConvTranspose2d: finite differences, PyTorch's layer with the same weights,
state dicts exchanged with PyTorch, initialisation and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas import nn
from cnnblas.nn.gradcheck import check_module_gradients

F64 = np.float64

# (in, out, kernel, stride, padding, output_padding, groups, dilation, input shape)
CONFIGS = [
    (3, 2, 4, 2, 1, 0, 1, 1, (2, 3, 5, 4)),  # 2x upsampling
    (4, 6, (3, 2), (2, 3), (1, 0), (1, 2), 2, 1, (2, 4, 4, 3)),
    (2, 3, 3, 1, 0, 1, 1, 2, (1, 2, 4, 5)),  # output_padding >= stride, below dilation
    (4, 8, 3, 2, 1, 1, 4, 1, (2, 4, 3, 3)),  # depthwise, channel multiplier 2
    (8, 9, 3, 1, 1, 0, 1, 1, (2, 8, 9, 9)),  # a Winograd-sized layer
]


@st.composite
def transpose_layers(draw):
    groups = draw(st.sampled_from([1, 2]))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    output_padding = tuple(draw(st.integers(0, max(stride[a], dilation[a]) - 1))
                           for a in range(2))
    layer = nn.ConvTranspose2d(
        groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)),
        (draw(st.integers(1, 3)), draw(st.integers(1, 3))), stride, draw(st.integers(0, 1)),
        output_padding, groups, bias=draw(st.booleans()), dilation=dilation, dtype=F64,
        rng=draw(st.integers(0, 99)))
    # At least 3 pixels a side: with padding 1 even a 1x1 kernel leaves an output.
    shape = (draw(st.integers(1, 2)), layer.in_channels, draw(st.integers(3, 4)),
             draw(st.integers(3, 4)))
    return layer, shape


@settings(max_examples=15, deadline=None)
@given(case=transpose_layers(), seed=st.integers(0, 99))
def test_gradients_match_finite_differences(case, seed):
    layer, shape = case
    x = np.random.default_rng(seed).standard_normal(shape)
    errors = check_module_gradients(layer, x, rng=seed)
    assert max(errors.values()) < 1e-7, (layer, errors)


def to_torch_layer(torch, layer, torch_layer):
    """Copy cnnblas parameters into a torch layer, strictly (same keys, same shapes)."""
    torch_layer.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()},
                                strict=True)
    return torch_layer


@pytest.mark.torch
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("config", CONFIGS)
def test_forward_and_backward_match_torch_layer(torch, config, dtype, rtol):
    *args, shape = config
    layer = nn.ConvTranspose2d(*args[:7], dilation=args[7], dtype=dtype, rng=3)
    t_layer = torch.nn.ConvTranspose2d(*args[:7], dilation=args[7])
    to_torch_layer(torch, layer, t_layer.to(getattr(torch, np.dtype(dtype).name)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = t_layer(tx)
    y = layer(x)
    assert y.dtype == dtype and y.shape == tuple(ty.shape)
    scale = lambda a: rtol * np.abs(a).max()  # noqa: E731
    want_y = ty.detach().numpy()
    np.testing.assert_allclose(y, want_y, rtol=0, atol=scale(want_y))
    dy = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(dy))
    dx = layer.backward(dy)
    for got, want in [(dx, tx.grad), (layer.weight.grad, t_layer.weight.grad),
                      (layer.bias.grad, t_layer.bias.grad)]:
        want = want.numpy()
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=scale(want))


@pytest.mark.torch
def test_state_dict_round_trip_with_torch(torch):
    t_layer = torch.nn.ConvTranspose2d(6, 4, (3, 2), stride=2, groups=2).double()
    layer = nn.ConvTranspose2d(6, 4, (3, 2), stride=2, groups=2, dtype=F64, rng=0)
    t_state = t_layer.state_dict()
    assert list(layer.state_dict()) == list(t_state) == ["weight", "bias"]
    assert layer.weight.shape == tuple(t_state["weight"].shape) == (6, 2, 3, 2)
    # torch -> cnnblas, strictly, then back to a fresh torch layer, strictly.
    layer.load_state_dict({k: v.numpy() for k, v in t_state.items()}, strict=True)
    fresh = to_torch_layer(torch, layer,
                           torch.nn.ConvTranspose2d(6, 4, (3, 2), stride=2, groups=2).double())
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), t_state[key].numpy(), err_msg=key)
    x = np.random.default_rng(0).standard_normal((1, 6, 3, 4))
    np.testing.assert_allclose(layer(x), t_layer(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


def test_initialisation_uses_the_transposed_fan_in():
    # fan_in = weight.shape[1] * kh * kw = (out_channels / groups) * 3 * 3 = 2 * 9,
    # not in_channels / groups * 9 as for Conv2d.
    layer = nn.ConvTranspose2d(32, 4, 3, groups=2, rng=0)
    bound = 1 / np.sqrt(18)
    for param in (layer.weight, layer.bias):
        assert param.dtype == np.float32
        assert np.abs(param.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.95 * bound
    np.testing.assert_array_equal(nn.ConvTranspose2d(32, 4, 3, groups=2, rng=0).weight.data,
                                  layer.weight.data)
    assert nn.ConvTranspose2d(2, 3, 2, bias=False).bias is None


@pytest.mark.torch
def test_initialisation_bound_matches_torch(torch):
    t_layer = torch.nn.ConvTranspose2d(32, 4, 3, groups=2)
    layer = nn.ConvTranspose2d(32, 4, 3, groups=2, rng=0)
    t_max, ours = t_layer.weight.abs().max().item(), np.abs(layer.weight.data).max()
    assert abs(t_max - ours) < 0.05 * ours  # the same U(-bound, bound), 576 draws each
    assert t_layer.bias.abs().max().item() <= 1 / np.sqrt(18)


def test_without_input_grad_returns_none_and_the_same_parameter_grads():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    grads = []
    for input_grad in (True, False):
        layer = nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1, dtype=F64, rng=0,
                                   input_grad=input_grad)
        y = layer(x)
        dx = layer.backward(np.ones_like(y))
        assert (dx is None) == (not input_grad)
        grads.append((layer.weight.grad, layer.bias.grad))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_array_equal(a, b)


def test_repr_shows_the_non_default_arguments():
    layer = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, bias=False)
    assert repr(layer) == ("ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), "
                           "padding=(1, 1), output_padding=(1, 1), bias=False)")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(output_padding=2, stride=2), ValueError,
     r"output_padding \(2, 2\) must be smaller than either stride \(2, 2\) or dilation \(1, 1\)"),
    (dict(groups=3), ValueError, r"input channels \(4\) must be divisible by groups \(3\)"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(kernel_size=(3,)), TypeError, "kernel_size must be an int or a pair"),
    (dict(input_grad=1), TypeError, "input_grad must be a bool"),
    (dict(algorithm="direct", dilation=2), ValueError, "algorithm='direct' needs"),
    (dict(dtype=np.int32), TypeError, "dtype must be float32 or float64"),
])
def test_bad_arguments_are_refused_when_built(kwargs, error, message):
    arguments = {"in_channels": 4, "out_channels": 6, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=message):
        nn.ConvTranspose2d(**arguments)


def test_bad_input_names_the_layer():
    layer = nn.ConvTranspose2d(4, 2, 3)
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(4, 2, .*\) expects 4 input channels"):
        layer(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(TypeError, match="float32 parameters but received a float64 input"):
        layer(np.zeros((1, 4, 5, 5)))
    with pytest.raises(ValueError, match="output size 0x0 is not positive"):
        nn.ConvTranspose2d(4, 2, 1, padding=1)(np.zeros((1, 4, 2, 2), np.float32))
