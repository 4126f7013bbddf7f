"""Differential fuzzing: random small networks built in cnnblas and in PyTorch.

Hypothesis draws a stack of the layers cnnblas has (convolution, transposed
convolution, BatchNorm, ReLU, max and average pooling, residual blocks, a
global-average-pool and linear head), sized so that every layer fits its
input. The same stack is built in PyTorch from the same description and
given cnnblas's weights (``load_state_dict(strict=True)``, so the state-dict
keys must agree too); then, in float64 and training mode, the outputs, the
input gradient, every parameter gradient and the BatchNorm running
statistics must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas import nn
from cnnblas.nn.blocks import downsample

F64 = np.float64
BATCH = 3
MAX_SIZE = 12  # spatial size cap, to keep each example to milliseconds


def _conv(draw, channels, size):
    kernel = draw(st.integers(1, min(3, size + 2)))
    padding = draw(st.integers(0, 1))
    stride = draw(st.integers(1, 2))
    out = (size + 2 * padding - kernel) // stride + 1
    spec = ("conv", dict(in_channels=channels, out_channels=draw(st.integers(1, 4)),
                         kernel_size=kernel, stride=stride, padding=padding,
                         bias=draw(st.booleans())))
    return spec, spec[1]["out_channels"], out


def _conv_transpose(draw, channels, size):
    kernel = draw(st.integers(2, 3))
    stride = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 1))
    output_padding = draw(st.integers(0, stride - 1))
    out = (size - 1) * stride - 2 * padding + kernel + output_padding
    spec = ("conv_transpose", dict(in_channels=channels, out_channels=draw(st.integers(1, 4)),
                                   kernel_size=kernel, stride=stride, padding=padding,
                                   output_padding=output_padding))
    return spec, spec[1]["out_channels"], out


def _block(draw, channels, size):
    planes = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 2))
    spec = ("block", dict(inplanes=channels, planes=planes, stride=stride))
    return spec, planes, (size - 1) // stride + 1


def _pool(kind):
    def draw_pool(draw, channels, size):
        return (kind, {}), channels, size // 2
    return draw_pool


def _same(kind, **kwargs):
    def draw_layer(draw, channels, size):
        return (kind, dict(kwargs, channels=channels) if kind == "bn" else kwargs), channels, size
    return draw_layer


@st.composite
def networks(draw):
    """(input shape, layer specs): 1-4 body layers, then pooling to 1x1 and a linear head."""
    channels, size = draw(st.integers(1, 3)), draw(st.integers(3, 8))
    shape = (BATCH, channels, size, size)
    specs = []
    for _ in range(draw(st.integers(1, 4))):
        choices = [_conv, _conv_transpose, _block, _same("bn"), _same("relu")]
        if size >= 2:
            choices += [_pool("max_pool"), _pool("avg_pool")]
        spec, new_channels, new_size = draw(st.sampled_from(choices))(draw, channels, size)
        if not 1 <= new_size <= MAX_SIZE:
            continue
        specs.append(spec)
        channels, size = new_channels, new_size
    specs += [("head", dict(channels=channels))]
    return shape, specs


def build_cnnblas(specs, rng):
    layers = []
    for kind, args in specs:
        if kind == "conv":
            layers.append(nn.Conv2d(**args, dtype=F64, rng=rng))
        elif kind == "conv_transpose":
            layers.append(nn.ConvTranspose2d(**args, dtype=F64, rng=rng))
        elif kind == "block":
            inplanes, planes, stride = args["inplanes"], args["planes"], args["stride"]
            shortcut = (None if stride == 1 and inplanes == planes
                        else downsample(inplanes, planes, stride, dtype=F64, rng=rng))
            layers.append(nn.BasicBlock(inplanes, planes, stride, shortcut, dtype=F64, rng=rng))
        elif kind == "bn":
            layers.append(nn.BatchNorm2d(args["channels"], dtype=F64))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "max_pool":
            layers.append(nn.MaxPool2d(2))
        elif kind == "avg_pool":
            layers.append(nn.AvgPool2d(2))
        else:
            layers += [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                       nn.Linear(args["channels"], 3, dtype=F64, rng=rng)]
    return nn.Sequential(*layers)


def build_torch(torch, specs):
    from benchmarks.torch_resnet import torch_resnet_classes

    tnn = torch.nn
    basic_block = torch_resnet_classes(torch)[0]
    layers = []
    for kind, args in specs:
        if kind == "conv":
            layers.append(tnn.Conv2d(**args))
        elif kind == "conv_transpose":
            layers.append(tnn.ConvTranspose2d(**args))
        elif kind == "block":
            inplanes, planes, stride = args["inplanes"], args["planes"], args["stride"]
            shortcut = (None if stride == 1 and inplanes == planes
                        else tnn.Sequential(tnn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            tnn.BatchNorm2d(planes)))
            layers.append(basic_block(inplanes, planes, stride, shortcut))
        elif kind == "bn":
            layers.append(tnn.BatchNorm2d(args["channels"]))
        elif kind == "relu":
            layers.append(tnn.ReLU())
        elif kind == "max_pool":
            layers.append(tnn.MaxPool2d(2))
        elif kind == "avg_pool":
            layers.append(tnn.AvgPool2d(2))
        else:
            layers += [tnn.AdaptiveAvgPool2d((1, 1)), tnn.Flatten(),
                       tnn.Linear(args["channels"], 3)]
    return tnn.Sequential(*layers).double()


def assert_agrees(actual, expected, what):
    """float64 agreement; the absolute floor covers quantities that are zero up to
    rounding (a BatchNorm after a BatchNorm has mean ~1e-17 and a bias gradient ~0)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-8, atol=1e-10, err_msg=str(what))


@pytest.mark.torch
@settings(max_examples=40, deadline=None)
@given(networks(), st.integers(0, 2**16))
def test_random_networks_match_torch(network, seed):
    torch = pytest.importorskip("torch")
    shape, specs = network
    rng = np.random.default_rng(seed)
    ours = build_cnnblas(specs, rng)
    theirs = build_torch(torch, specs)
    theirs.load_state_dict({key: torch.from_numpy(np.array(value))
                            for key, value in ours.state_dict().items()}, strict=True)
    x = rng.standard_normal(shape)
    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)

    y = ours(x)
    y_torch = theirs(x_torch)
    assert_agrees(y, y_torch.detach().numpy(), specs)
    dy = rng.standard_normal(y.shape)
    dx = ours.backward(dy)
    y_torch.backward(torch.from_numpy(dy))
    assert_agrees(dx, x_torch.grad.numpy(), specs)
    torch_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        assert_agrees(param.grad, torch_params[name].grad.numpy(), (name, specs))
    torch_state = theirs.state_dict()
    for name, buffer in ours.named_buffers():
        assert_agrees(buffer, torch_state[name].numpy(), (name, specs))
