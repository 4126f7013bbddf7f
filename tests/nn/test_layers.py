"""Layers with parameters or state: gradients, PyTorch equivalence, initialisation, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnnblas import nn
from cnnblas.nn.gradcheck import check_module_gradients

F64 = np.float64


def distinct_values(shape, seed):
    """Well-separated values in random order: no max-pooling ties within eps."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(np.prod(shape), dtype=F64)).reshape(shape) * 0.05 - 1


# -- finite differences -------------------------------------------------------------------------


@st.composite
def conv_layers(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    size = [dilation[a] * (kernel[a] - 1) + 1 + draw(st.integers(0, 3)) for a in range(2)]
    layer = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups,
                      bias=draw(st.booleans()), dtype=F64, rng=draw(st.integers(0, 99)))
    return layer, (draw(st.integers(1, 2)), in_channels, *size)


@settings(max_examples=15, deadline=None)
@given(conv_layers(), st.integers(0, 2**16))
def test_conv2d_gradients(case, seed):
    layer, shape = case
    x = np.random.default_rng(seed).standard_normal(shape)
    errors = check_module_gradients(layer, x, rng=seed + 1)
    assert max(errors.values()) < 1e-7, errors


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.booleans(),
       st.integers(0, 2**16))
def test_linear_gradients(n, in_features, out_features, bias, seed):
    layer = nn.Linear(in_features, out_features, bias=bias, dtype=F64, rng=seed)
    x = np.random.default_rng(seed).standard_normal((n, in_features))
    errors = check_module_gradients(layer, x, rng=seed + 1)
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("layer", [
    nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d((2, 3), stride=1),
    nn.AvgPool2d(2), nn.AvgPool2d(3, stride=2, padding=1), nn.Flatten(),
], ids=repr)
def test_shape_layers_gradients(layer):
    errors = check_module_gradients(layer, distinct_values((2, 3, 6, 7), 3), eps=1e-4)
    assert errors["input"] < 1e-8


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4),
       st.booleans(), st.integers(0, 2**16))
def test_batchnorm_gradients_in_training(n, c, h, w, affine, seed):
    # With two values per channel the output is +-1 whatever x is: the gradient is ~0
    # and a relative comparison would only measure rounding noise.
    assume(n * h * w >= 3)
    layer = nn.BatchNorm2d(c, affine=affine, dtype=F64)
    rng = np.random.default_rng(seed)
    if affine:
        layer.weight.data[:] = rng.uniform(0.5, 2, c)
        layer.bias.data[:] = rng.standard_normal(c)
    x = rng.standard_normal((n, c, h, w)) * 2 + 1
    # dy must not come from the same seed as x: dy = a*x + b projects the gradient to ~0.
    errors = check_module_gradients(layer, x, rng=seed + 1)
    assert max(errors.values()) < 1e-6, errors


def test_dropout_backward_uses_the_forward_mask():
    layer = nn.Dropout(0.3, rng=0)
    x = np.ones((50, 40))
    y = layer(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.7)
    assert 0.2 < 1 - kept.mean() < 0.4
    dy = np.random.default_rng(1).standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(dy), np.where(kept, dy / 0.7, 0))
    # Same seed, same masks; eval is the identity and caches nothing.
    np.testing.assert_array_equal(nn.Dropout(0.3, rng=0)(x), y)
    layer.eval()
    assert layer(x) is x and layer.cached == ()
    assert not nn.Dropout(1.0)(x).any()
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)


def test_gradients_accumulate_until_zero_grad():
    layer = nn.Linear(3, 2, dtype=F64, rng=0)
    x = np.ones((4, 3))
    dy = np.ones((4, 2))
    layer(x)
    layer.backward(dy)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


# -- PyTorch -------------------------------------------------------------------------------------


def to_torch_layer(torch, layer, torch_layer):
    """Copy cnnblas parameters into a torch layer (same keys, same layouts)."""
    torch_layer.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return torch_layer


@pytest.mark.torch
def test_conv2d_and_linear_match_torch(torch):
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2, rng=1)
    t_conv = to_torch_layer(torch, conv, torch.nn.Conv2d(4, 6, (3, 2), (2, 1), 1, (1, 2), 2))
    linear = nn.Linear(7, 3, rng=2)
    t_linear = to_torch_layer(torch, linear, torch.nn.Linear(7, 3))
    for layer, t_layer, shape in [(conv, t_conv, (2, 4, 7, 8)), (linear, t_linear, (5, 7))]:
        x = rng.standard_normal(shape).astype(np.float32)
        tx = torch.tensor(x, requires_grad=True)
        ty = t_layer(tx)
        y = layer(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        ty.backward(torch.from_numpy(dy))
        dx = layer.backward(dy)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(layer.weight.grad, t_layer.weight.grad.numpy(),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(layer.bias.grad, t_layer.bias.grad.numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_matches_torch_in_train_and_eval(torch, momentum):
    rng = np.random.default_rng(0)
    layer = nn.BatchNorm2d(3, momentum=momentum, dtype=F64)
    t_layer = torch.nn.BatchNorm2d(3, momentum=momentum).double()
    layer.weight.data[:] = [0.5, 1.5, -2.0]
    layer.bias.data[:] = [0.1, -0.2, 0.3]
    to_torch_layer(torch, layer, t_layer)
    for _ in range(3):  # running statistics after several steps
        x = rng.standard_normal((4, 3, 5, 2)) * 3 + 2
        tx = torch.tensor(x, requires_grad=True)
        ty = t_layer(tx)
        np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        dy = rng.standard_normal(x.shape)
        ty.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(layer.backward(dy), tx.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(layer.weight.grad, t_layer.weight.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(layer.bias.grad, t_layer.bias.grad.numpy(), rtol=1e-9)
    t_state = t_layer.state_dict()
    assert list(layer.state_dict()) == list(t_state)
    for key, value in layer.state_dict().items():
        np.testing.assert_allclose(value, t_state[key].numpy(), rtol=1e-12, err_msg=key)
        assert value.dtype == t_state[key].numpy().dtype, key

    layer.eval()
    t_layer.eval()
    x = rng.standard_normal((2, 3, 3, 3))
    np.testing.assert_allclose(layer(x), t_layer(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)
    assert layer.cached == ()


@pytest.mark.torch
def test_batchnorm_float32_matches_torch(torch):
    x = (np.random.default_rng(1).standard_normal((8, 4, 6, 6)) * 5 + 3).astype(np.float32)
    layer, t_layer = nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)
    y = layer(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, t_layer(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(layer.running_var, t_layer.running_var.numpy(), rtol=1e-5)


@pytest.mark.torch
def test_initialisation_bounds_match_torch_formula(torch):
    conv = nn.Conv2d(6, 8, 3, groups=2, rng=0)  # fan_in = 3 * 3 * 3 = 27
    linear = nn.Linear(50, 20, rng=0)
    for param, fan_in in [(conv.weight, 27), (conv.bias, 27), (linear.weight, 50),
                          (linear.bias, 50)]:
        bound = 1 / np.sqrt(fan_in)
        assert param.dtype == np.float32
        assert np.abs(param.data).max() <= bound
        assert np.abs(param.data).max() > 0.8 * bound  # actually spread over the range
    t_conv = torch.nn.Conv2d(6, 8, 3, groups=2)
    assert t_conv.weight.abs().max().item() <= 1 / np.sqrt(27)
    # Seeds make initialisation reproducible.
    np.testing.assert_array_equal(nn.Linear(50, 20, rng=0).weight.data, linear.weight.data)


# -- errors ----------------------------------------------------------------------------------


def test_layer_errors_name_the_layer_and_both_sizes():
    linear = nn.Linear(400, 120)
    with pytest.raises(ValueError, match=r"Linear\(in_features=400.*expects 400 .*got 256"):
        linear(np.zeros((2, 256), np.float32))
    conv = nn.Conv2d(3, 6, 5)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 6.*expects 3 input channels, got 1"):
        conv(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(TypeError, match=r"Conv2d\(3, 6.*float32 parameters.*float64 input"):
        conv(np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="rank 4"):
        conv(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4.*expects 4 channels, got 3"):
        nn.BatchNorm2d(4)(np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm2d(3)(np.zeros((1, 3, 1, 1), np.float32))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="at most half"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)
    with pytest.raises(TypeError, match="p must be a real number"):
        nn.Dropout("0.5")
    with pytest.raises(TypeError, match="dtype"):
        nn.Linear(2, 2, dtype=np.int32)
    with pytest.raises(TypeError, match="rng"):
        nn.Linear(2, 2, rng="seed")
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 2)


@pytest.mark.parametrize("layer, shape", [
    (nn.Conv2d(1, 2, 3), (1, 1, 4, 4)), (nn.Linear(3, 2), (2, 3)), (nn.ReLU(), (2, 3)),
    (nn.LeakyReLU(), (2, 3)), (nn.Sigmoid(), (2, 3)), (nn.Tanh(), (2, 3)),
    (nn.MaxPool2d(2), (1, 1, 4, 4)), (nn.AvgPool2d(2), (1, 1, 4, 4)),
    (nn.Flatten(), (2, 3, 2)), (nn.Dropout(0.5), (2, 3)), (nn.BatchNorm2d(2), (2, 2, 2, 2)),
    (nn.AdaptiveAvgPool2d(2), (1, 1, 4, 4)),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_every_backward_needs_its_own_forward(layer, shape):
    with pytest.raises(RuntimeError, match=rf"{type(layer).__name__}\(.*\)\.backward\(\) called"):
        layer.backward(np.zeros(shape, np.float32))
    y = layer(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    assert layer.cached, "training-mode forward must cache what backward needs"
    layer(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    assert layer.pending_backwards == 2  # a second forward no longer overwrites the first
    layer.backward(np.ones_like(y))
    layer.backward(np.ones_like(y))
    assert layer.cached == () and layer.pending_backwards == 0  # released by the backwards
    with pytest.raises(RuntimeError, match="single backward"):
        layer.backward(np.ones_like(y))
    layer.eval()
    layer(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    assert layer.cached == ()
    with pytest.raises(RuntimeError, match="eval mode"):
        layer.backward(np.ones_like(y))


def test_conv2d_without_input_grad_returns_none_and_same_parameter_grads():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    layers = [nn.Conv2d(3, 4, 3, padding=1, rng=1, input_grad=flag) for flag in (True, False)]
    dy = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    results = []
    for layer in layers:
        layer(x)
        results.append(layer.backward(dy))
    assert results[0].shape == x.shape and results[1] is None
    np.testing.assert_array_equal(layers[0].weight.grad, layers[1].weight.grad)
    np.testing.assert_array_equal(layers[0].bias.grad, layers[1].bias.grad)
    model = nn.lenet5(input_size=8, rng=0, input_grad=False)
    logits = model(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    assert model.backward(np.ones_like(logits)) is None


def test_conv2d_checks_its_algorithm_when_built():
    layer = nn.Conv2d(16, 16, 3, padding=1, algorithm="winograd2x2", rng=0)
    assert "algorithm='winograd2x2'" in repr(layer)
    with pytest.raises(ValueError, match="algorithm='winograd2x2' needs a 3x3 kernel"):
        nn.Conv2d(2, 2, 3, stride=2, algorithm="winograd2x2")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        nn.Conv2d(2, 2, 3, algorithm="fft")


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU(0.1), nn.Dropout(0.5, rng=0)])
def test_float64_gradient_into_a_float32_layer_is_refused(layer):
    x = np.ones((2, 3), np.float32)
    layer.train()
    layer(x)
    with pytest.raises(TypeError, match="same dtype as the input \\(float32\\)"):
        layer.backward(np.ones((2, 3), np.float64))


def test_linear_backward_without_dx():
    from cnnblas.ops.linear import linear_backward

    rng = np.random.default_rng(0)
    x, weight, dy = rng.random((4, 3)), rng.random((2, 3)), rng.random((4, 2))
    full = linear_backward(dy, x, weight)
    partial = linear_backward(dy, x, weight, input_grad=False)
    assert partial[0] is None
    np.testing.assert_array_equal(partial[1], full[1])  # the values: test_linear_gradients


def test_layer_sizes_wrong_type_is_type_error_bad_value_is_value_error():
    with pytest.raises(TypeError, match="in_channels must be an int >= 1, got 2.0"):
        nn.Conv2d(2.0, 2, 3)
    with pytest.raises(ValueError, match="out_channels must be an int >= 1, got 0"):
        nn.Conv2d(2, 0, 3)
