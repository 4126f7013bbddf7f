"""Arrays held for the backward stay the model's: the caller's in-place edits of
the input or the output after ``model(x)`` do not change the gradients."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cnnblas import nn
from cnnblas.reference import conv2d_backward_scipy

RNG = np.random.default_rng(7)


def _x(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("edit", ["scale_by_zero", "assign_other"])
def test_conv2d_weight_gradient_ignores_in_place_edit_of_the_input(edit):
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64, rng=0)
    x = _x(2, 2, 5, 5)
    original = x.copy()
    y = conv(x)
    if edit == "scale_by_zero":
        x *= 0
    else:
        x[:] = _x(2, 2, 5, 5)
    dy = _x(*y.shape)
    conv.backward(dy)
    _, expected_dw, _ = conv2d_backward_scipy(dy, original, conv.weight.data, stride=1,
                                              padding=1, dilation=1, groups=1)
    np.testing.assert_allclose(conv.weight.grad, expected_dw, rtol=1e-10, atol=1e-12)


def test_conv_transpose2d_weight_gradient_ignores_in_place_edit_of_the_input():
    up = nn.ConvTranspose2d(2, 3, 3, stride=2, dtype=np.float64, rng=0)
    x = _x(2, 2, 4, 4)
    y = up(x)
    dy = _x(*y.shape)
    # Reference: the transposed convolution's weight gradient is the convolution's
    # weight gradient with input and output swapped (dy is the convolution's input).
    _, dw_conv, _ = conv2d_backward_scipy(x, dy, up.weight.data, stride=2, padding=0,
                                          dilation=1, groups=1)
    x *= 0
    up.backward(dy)
    np.testing.assert_allclose(up.weight.grad, dw_conv, rtol=1e-10, atol=1e-12)


def test_linear_behind_flatten_ignores_in_place_edit_of_the_input():
    # Flatten passes a view of its input on: the Linear layer's cached input is
    # a view of x unless the model owns a copy.
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4, dtype=np.float64, rng=0))
    x = _x(5, 3, 2, 2)
    original = x.reshape(5, 12).copy()
    y = model(x)
    x[:] = 1.0
    dy = _x(*y.shape)
    model.backward(dy)
    np.testing.assert_allclose(model[1].weight.grad, dy.T @ original, rtol=1e-12)


def test_lenet_gradients_equal_those_of_an_untouched_input():
    x = _x(3, 1, 8, 8, dtype=np.float32)
    dy = _x(3, 10, dtype=np.float32)
    grads = []
    for edit in (False, True):
        model = nn.lenet5(input_size=8, rng=0)
        batch = x.copy()
        model(batch)
        if edit:
            batch *= 0
        model.backward(dy)
        grads.append([param.grad for param in model.parameters()])
    for untouched, edited in zip(*grads, strict=True):
        np.testing.assert_array_equal(edited, untouched)


@pytest.mark.parametrize("layer", [nn.Sigmoid, nn.Tanh])
def test_in_place_edit_of_an_output_the_layer_keeps_changes_no_gradient(layer):
    # Sigmoid and tanh keep their output y for dσ = σ(1 - σ), dtanh = 1 - tanh².
    model = nn.Sequential(nn.Linear(4, 3, dtype=np.float64, rng=0), layer())
    x = _x(2, 4)
    y = model(x)
    expected_y = y.copy()
    target = _x(2, 3)
    y -= target                                    # dL/dy of 0.5 |y - t|² in place
    dy = y
    dx = model.backward(dy)
    derivative = (expected_y * (1 - expected_y) if layer is nn.Sigmoid
                  else 1 - expected_y ** 2)
    np.testing.assert_allclose(dx, (dy * derivative) @ model[0].weight.data, rtol=1e-12)


class _Returns(nn.Module):
    """Returns a fixed array, and keeps it for the backward when told to."""

    def __init__(self, keep: bool):
        super().__init__()
        self.value, self.keep = _x(2, 3), keep

    def forward(self, x):
        if self.keep:
            self._save_for_backward(y=self.value)
        return self.value

    def backward(self, dy):
        self._saved_for_backward()
        return dy


def test_the_output_is_copied_only_when_a_cache_holds_it():
    free, kept = _Returns(keep=False), _Returns(keep=True)
    x = _x(2, 3)
    assert free(x) is free.value
    y = kept(x)
    assert y is not kept.value and not np.may_share_memory(y, kept.value)
    np.testing.assert_array_equal(y, kept.value)


class _Spy(nn.Module):
    """Records the arrays its forward receives."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return x * 2

    def backward(self, dy):
        return dy * 2


class _Chain(nn.Module):
    """A composite module calling its children through ``__call__``."""

    def __init__(self):
        super().__init__()
        self.first = _Spy()
        self.second = _Spy()

    def forward(self, x):
        return self.second(self.first(x))

    def backward(self, dy):
        return self.first.backward(self.second.backward(dy))


def test_only_the_outermost_training_call_copies():
    chain = _Chain()
    x = _x(2, 3)
    y = chain(x)
    assert chain.first.seen[0] is not x                # the outermost call copied x
    np.testing.assert_array_equal(chain.first.seen[0], x)
    assert chain.second.seen[0] is not y               # ... and nothing else
    inner = chain.first.seen[0] * 2
    np.testing.assert_array_equal(chain.second.seen[0], inner)
    chain.eval()
    chain(x)
    assert chain.first.seen[1] is x                    # eval keeps nothing: no copy
    chain = nn.Sequential(_Spy())
    chain.forward(x)
    assert chain[0].seen[0] is x                       # forward() itself copies nothing


def test_the_outermost_flag_is_reset_by_an_error():
    layer = nn.Linear(3, 2, dtype=np.float64, rng=0)
    with pytest.raises(ValueError, match="expects 3 input features"):
        layer(_x(2, 4))
    chain = _Chain()
    x = _x(2, 3)
    chain(x)
    assert chain.first.seen[-1] is not x


class _CallsInAThread(_Spy):
    """Runs another model in a second thread from inside its own forward."""

    def __init__(self, other):
        super().__init__()
        self.other = other

    def forward(self, x):
        thread = threading.Thread(target=self.other, args=(x,))
        thread.start()
        thread.join()
        return super().forward(x)


def test_a_call_in_another_thread_is_an_outermost_call():
    other = _Chain()
    x = _x(2, 3)
    _CallsInAThread(other)(x)
    assert other.first.seen[0] is not x


@pytest.mark.parametrize("layer", [
    nn.ReLU(), nn.LeakyReLU(0.1), nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Flatten(),
    nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d(3),
], ids=lambda layer: type(layer).__name__)
def test_layers_declared_reference_free_cache_only_their_own_arrays(layer):
    # Their outermost call skips the copies, which is safe only while no cache
    # shares memory with the input or the output.
    assert not layer._keeps_references
    x = _x(2, 3, 4, 4)
    y = layer.forward(x)
    cached = [value for cache in layer._caches for value in cache.values()
              if isinstance(value, np.ndarray)]
    assert not any(np.may_share_memory(value, x) or np.may_share_memory(value, y)
                   for value in cached)


def test_identity_returns_its_argument_in_training_mode():
    x = _x(2, 3)
    assert nn.Identity()(x) is x


class _TwoOutputs(nn.Module):
    """Returns ``(sigmoid(linear(x)), its sum)``: a cached output inside a tuple."""

    def __init__(self):
        super().__init__()
        self.linear, self.sigmoid = nn.Linear(4, 3, dtype=np.float64, rng=0), nn.Sigmoid()

    def forward(self, x):
        y = self.sigmoid(self.linear(x))
        return y, {"total": y.sum(), "same": [y]}

    def backward(self, dy):
        return self.linear.backward(self.sigmoid.backward(dy))


def test_cached_outputs_inside_tuples_lists_and_dicts_are_copied():
    model = _TwoOutputs()
    x = _x(2, 4)
    y, extra = model(x)
    expected_y = y.copy()
    y -= 1.0                                       # edits after the call ...
    extra["same"][0] *= 0.0
    dy = np.ones_like(y)
    dx = model.backward(dy)                        # ... change nothing the backward reads
    np.testing.assert_allclose(dx, (dy * expected_y * (1 - expected_y))
                               @ model.linear.weight.data, rtol=1e-12)
