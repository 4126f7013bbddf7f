"""BatchNorm2d and its fused forms (BatchNorm + ReLU, BatchNorm + shortcut + ReLU).

PyTorch's torch.nn.BatchNorm2d is the reference for the layer (random shapes,
train and eval, momentum None, affine False, float32 and float64, large
values); float64 finite differences check the fused backward; the residual
blocks' fused path is checked bit for bit against their layers run one by one.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas import nn
from cnnblas.distributed import SyncBatchNorm2d, convert_sync_batchnorm
from cnnblas.nn import blocks, resnet
from cnnblas.nn.gradcheck import check_module_gradients
from cnnblas.nn.module import Module

F64 = np.float64


def scaled_error(actual, expected, scale):
    return float(np.abs(np.asarray(actual, F64) - np.asarray(expected, F64)).max()) / scale


@st.composite
def batchnorm_cases(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    if n * h * w < 2:  # training needs two values per channel
        n = 2
    return dict(shape=(n, c, h, w), dtype=draw(st.sampled_from([np.float32, F64])),
                affine=draw(st.booleans()), momentum=draw(st.sampled_from([0.1, None, 0.7])),
                offset=draw(st.sampled_from([0.0, 3.0, 1e3])), seed=draw(st.integers(0, 2**16)))


@pytest.mark.torch
@settings(max_examples=40, deadline=None)
@given(batchnorm_cases())
def test_batchnorm_matches_torch_on_random_shapes(case):
    torch = pytest.importorskip("torch")
    shape, dtype, offset = case["shape"], case["dtype"], case["offset"]
    c = shape[1]
    rng = np.random.default_rng(case["seed"])
    layer = nn.BatchNorm2d(c, momentum=case["momentum"], affine=case["affine"], dtype=dtype)
    twin = torch.nn.BatchNorm2d(c, momentum=case["momentum"], affine=case["affine"])
    twin = twin.double() if dtype == F64 else twin
    if case["affine"]:
        layer.weight.data[:] = rng.uniform(0.5, 2, c)
        layer.bias.data[:] = rng.standard_normal(c)
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.state_dict().items()})
    # float32 inputs near 1e3 carry 1e-4 of rounding: errors are relative to |x|.
    tol = 1e-12 if dtype == F64 else 2e-6
    grad_scale = 0.0  # of the parameter gradients, summed over both steps
    for _ in range(2):
        x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        ty = twin(tx)
        ty.backward(torch.from_numpy(dy))
        y = layer(x)
        dx = layer.backward(dy)
        assert y.dtype == dx.dtype == dtype
        x_scale = (np.abs(x).max() + 1) / x.std(axis=(0, 2, 3)).min()
        assert scaled_error(y, ty.detach().numpy(), x_scale) < tol
        dy_scale = np.abs(dy).max() * x_scale * 10
        assert scaled_error(dx, tx.grad.numpy(), dy_scale) < tol
        grad_scale += np.abs(dy).sum() * x_scale
    if case["affine"]:
        for param, t_param in [(layer.weight, twin.weight), (layer.bias, twin.bias)]:
            assert scaled_error(param.grad, t_param.grad.numpy(), grad_scale) < tol
    for key, value in twin.state_dict().items():
        expected = value.numpy()
        got = layer.state_dict()[key]
        assert got.dtype == expected.dtype, key
        assert scaled_error(got, expected, np.abs(expected).max() + 1) < tol, key
    layer.eval()
    twin.eval()
    x = (rng.standard_normal((1, c, 1, 1)) + offset).astype(dtype)  # N*H*W = 1 in eval
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert scaled_error(layer(x), expected, np.abs(x).max() + 1) < tol


# -- the fused forms ------------------------------------------------------------------------------


class _FusedTail(Module):
    """``relu(bn(x) + residual)`` for a fixed residual, as a module for gradcheck."""

    def __init__(self, bn, residual, relu):
        super().__init__()
        self.bn = bn
        self.residual = residual
        self.relu = relu

    def forward(self, x):
        return self.bn.forward_fused(x, self.residual, relu=self.relu)

    def backward(self, dy):
        dx, self.d_residual = self.bn.backward_fused(dy)
        return dx


@pytest.mark.parametrize("residual, relu", [(False, True), (True, True), (True, False)])
def test_fused_backward_matches_finite_differences(residual, relu):
    rng = np.random.default_rng(5)
    bn = nn.BatchNorm2d(3, dtype=F64)
    bn.weight.data[:] = [0.7, 1.3, -1.1]
    bn.bias.data[:] = [0.2, -0.1, 0.05]
    x = rng.standard_normal((2, 3, 4, 3)) * 2 + 1
    r = rng.standard_normal(x.shape) if residual else None
    module = _FusedTail(bn, r, relu)
    errors = check_module_gradients(module, x, rng=6)
    assert max(errors.values()) < 1e-6, errors
    if residual:
        dy = rng.standard_normal(x.shape)
        y = module(x)
        module.backward(dy)
        expected = np.where(y > 0, dy, 0.0) if relu else dy
        np.testing.assert_array_equal(module.d_residual, expected)


def test_backward_after_a_residual_forward_asks_for_backward_fused():
    bn = nn.BatchNorm2d(2)
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32)
    bn.forward_fused(x, x.copy(), relu=True)
    with pytest.raises(RuntimeError, match="backward_fused"):
        bn.backward(x)


def test_fused_residual_must_match_the_input():
    bn = nn.BatchNorm2d(2)
    x = np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"residual has shape \(2, 2, 3, 4\)"):
        bn.forward_fused(x, np.zeros((2, 2, 3, 4), np.float32))
    with pytest.raises(TypeError, match="float64 input"):
        bn.forward_fused(x, np.zeros(x.shape))


def _run_step(model, x, seed=0):
    """Forward, backward of a random dy, in train mode; return every array involved."""
    y = model(x)
    dy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    dx = model.backward(dy)
    grads = [p.grad.copy() for p in model.parameters()]
    return [y, dx, *grads, *[b.copy() for _, b in model.named_buffers()]]


def _unfused(monkeypatch):
    monkeypatch.setattr(blocks._ResidualBlock, "_fused", lambda self: False)
    monkeypatch.setattr(resnet, "fusable", lambda norm, relu: False)


@pytest.mark.parametrize("block, stride", [(nn.BasicBlock, 1), (nn.BasicBlock, 2),
                                           (nn.Bottleneck, 1), (nn.Bottleneck, 2)])
def test_fused_block_is_its_layers_bit_for_bit(monkeypatch, block, stride, two_threads):
    inplanes = 8
    out = 4 * block.expansion

    def build():
        shortcut = blocks.downsample(inplanes, out, stride, rng=1)
        return block(inplanes, 4, stride, shortcut, rng=0)

    x = np.random.default_rng(2).standard_normal((3, inplanes, 7, 6)).astype(np.float32)
    fused = build()
    assert fused._fused()
    got = _run_step(fused, x)
    assert fused.relu.pending_backwards == 0
    _unfused(monkeypatch)
    expected = _run_step(build(), x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fused_resnet_is_its_layers_bit_for_bit(monkeypatch):
    x = np.random.default_rng(3).standard_normal((4, 3, 12, 12)).astype(np.float32)
    got = _run_step(nn.resnet_cifar(8, rng=0, input_grad=True), x)
    _unfused(monkeypatch)
    expected = _run_step(nn.resnet_cifar(8, rng=0, input_grad=True), x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_replaced_relu_runs_the_layers_one_by_one():
    block = nn.BasicBlock(3, 3, rng=0, dtype=F64)
    block.relu = nn.LeakyReLU(0.2)
    assert not block._fused()
    x = np.random.default_rng(4).standard_normal((2, 3, 5, 5))
    y = block(x)
    leaky = nn.LeakyReLU(0.2)
    h = leaky(block.bn1.forward(block.conv1.forward(x)))
    expected = leaky(block.bn2.forward(block.conv2.forward(h)) + x)
    np.testing.assert_array_equal(y, expected)
    errors = check_module_gradients(nn.BasicBlock(3, 3, rng=0, dtype=F64), x, rng=1)
    assert max(errors.values()) < 1e-6, errors


class _TwinRanks:
    """A world of two ranks that hold the same half batch: a reduction doubles."""

    size = 2

    def allreduce(self, array):
        array *= 2
        return array


def test_sync_batchnorm_in_a_fused_block_sees_both_ranks():
    # Two ranks with the same half batch see the statistics of that half repeated:
    # a plain block on the doubled batch gives the same output and input gradient,
    # and twice the local parameter gradients.
    x = np.random.default_rng(5).standard_normal((2, 4, 5, 5))
    dy = np.random.default_rng(6).standard_normal((2, 8, 3, 3))
    plain = nn.BasicBlock(4, 8, 2, blocks.downsample(4, 8, 2, F64, 1), dtype=F64, rng=0)
    synced = nn.BasicBlock(4, 8, 2, blocks.downsample(4, 8, 2, F64, 1), dtype=F64, rng=0)
    assert convert_sync_batchnorm(synced, _TwinRanks()) == 3
    assert isinstance(synced.bn2, SyncBatchNorm2d) and synced._fused()
    y = synced(x)
    dx = synced.backward(dy)
    y2 = plain(np.concatenate([x, x]))
    dx2 = plain.backward(np.concatenate([dy, dy]))
    np.testing.assert_allclose(y, y2[:2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx2[:2], rtol=1e-10, atol=1e-12)
    for (name, p), q in zip(synced.named_parameters(), plain.parameters(), strict=True):
        np.testing.assert_allclose(2 * p.grad, q.grad, rtol=1e-10, atol=1e-12, err_msg=name)
    for (name, a), (_, b) in zip(synced.named_buffers(), plain.named_buffers(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=name)
