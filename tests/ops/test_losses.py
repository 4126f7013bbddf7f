"""Softmax cross-entropy and MSE: values, gradients, stability, PyTorch, errors, modules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cnnblas.nn import MSELoss, SoftmaxCrossEntropy
from cnnblas.nn.gradcheck import numerical_gradient, relative_error
from cnnblas.ops.losses import log_softmax, mse_loss, softmax, softmax_cross_entropy

# Tutorial Table 4.5: X4 = 424 * W3[:, 0] (exact values; see cnnblas.tutorial.toy_cnn's notes).
TABLE_4_5_X4 = 424 * np.array([0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03, 0.04, 0.05, 0.01])
TABLE_4_5_OUTPUT = [9.855923e-01, 1.419998e-02, 2.045877e-04, 2.947614e-06, 4.246805e-08,
                    6.118620e-10, 8.815459e-12, 6.118620e-10, 4.246805e-08, 1.829901e-15]


def test_tutorial_tables_4_5_and_4_6():
    logits = TABLE_4_5_X4[None]
    np.testing.assert_allclose(softmax(logits)[0], TABLE_4_5_OUTPUT, rtol=5e-6)
    loss, dlogits = softmax_cross_entropy(logits, np.array([9]))
    assert round(loss, 4) == 33.9345
    expected = np.array(TABLE_4_5_OUTPUT)
    expected[9] -= 1  # Table 4.6: subtract 1 at the true class
    np.testing.assert_allclose(dlogits[0], expected, rtol=5e-6, atol=1e-15)


def test_stable_for_huge_logits_without_warnings():
    logits = np.array([[1e4, -1e4, 0.0], [-5e3, -5e3, -5e3]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, dlogits = softmax_cross_entropy(logits, np.array([1, 2]))
        log_probs = log_softmax(logits)
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits)) and dlogits.dtype == np.float32
    # Sample 0: -log p(1) = 2e4; sample 1: uniform, log 3.
    np.testing.assert_allclose(loss, (2e4 + np.log(3)) / 2, rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1, rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.integers(0, 2**16))
@example(n=1, k=2, seed=3)  # a saturated softmax: gradient ~1e-6
def test_cross_entropy_gradient_matches_finite_differences(n, k, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    _, dlogits = softmax_cross_entropy(logits, labels)
    numeric = numerical_gradient(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    # Where the softmax saturates, the gradient is ~1e-6 and the loss a small
    # difference of two logits: the centred difference then carries ~1e-10 of
    # rounding, so the bound is relative with an absolute floor.
    np.testing.assert_allclose(dlogits, numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(0, 2**16))
def test_mse_gradient_matches_finite_differences(shape, seed):
    rng = np.random.default_rng(seed)
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    loss, dpred = mse_loss(pred, target)
    np.testing.assert_allclose(loss, np.mean((pred - target) ** 2), rtol=1e-12)
    numeric = numerical_gradient(lambda: mse_loss(pred, target)[0], pred)
    assert relative_error(dpred, numeric) < 1e-7


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(torch, dtype):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((6, 5)) * 4).astype(dtype)
    labels = rng.integers(0, 5, 6)
    t_logits = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(labels))
    t_loss.backward()
    loss, dlogits = softmax_cross_entropy(logits, labels)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, t_loss.item(), rtol=tol)
    np.testing.assert_allclose(dlogits, t_logits.grad.numpy(), rtol=tol * 10, atol=tol)
    assert dlogits.dtype == dtype

    pred = rng.standard_normal((3, 4)).astype(dtype)
    target = rng.standard_normal((3, 4)).astype(dtype)
    t_pred = torch.tensor(pred, requires_grad=True)
    t_mse = torch.nn.functional.mse_loss(t_pred, torch.from_numpy(target))
    t_mse.backward()
    loss, dpred = mse_loss(pred, target)
    np.testing.assert_allclose(loss, t_mse.item(), rtol=tol)
    np.testing.assert_allclose(dpred, t_pred.grad.numpy(), rtol=tol * 10, atol=tol)
    assert dpred.dtype == dtype


def test_label_and_shape_errors():
    logits = np.zeros((3, 4))
    with pytest.raises(TypeError, match="integer class indices"):
        softmax_cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="integer class indices"):
        softmax_cross_entropy(logits, np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\].*\[0, 4\]"):
        softmax_cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        softmax_cross_entropy(logits, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="labels has 2 entries but logits has 3 rows"):
        softmax_cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="rank 1"):
        softmax_cross_entropy(logits, np.zeros((3, 1), int))
    with pytest.raises(ValueError, match="rank 2"):
        softmax_cross_entropy(np.zeros(4), np.array([0]))
    with pytest.raises(TypeError, match="float32 or float64"):
        softmax_cross_entropy(np.zeros((3, 4), int), np.array([0, 1, 2]))
    # A plain list of ints is accepted.
    assert softmax_cross_entropy(logits, [0, 1, 2])[0] == pytest.approx(np.log(4))


def test_mse_errors():
    with pytest.raises(ValueError, match="target"):
        mse_loss(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="same dtype"):
        mse_loss(np.zeros(3, np.float32), np.zeros(3, np.float64))


def test_loss_modules():
    criterion = SoftmaxCrossEntropy()
    with pytest.raises(RuntimeError, match="SoftmaxCrossEntropy.*nothing cached"):
        criterion.backward()
    logits = np.random.default_rng(5).standard_normal((4, 3))
    labels = np.array([0, 2, 1, 1])
    loss = criterion(logits, labels)
    assert isinstance(loss, float)
    assert criterion.cached == ("grad",)
    expected = softmax_cross_entropy(logits, labels)[1]
    np.testing.assert_allclose(criterion.backward(), expected)
    with pytest.raises(RuntimeError):
        criterion.backward()  # the gradient is consumed by the first backward
    criterion(logits, labels)
    np.testing.assert_allclose(criterion.backward(0.5), 0.5 * expected)

    mse = MSELoss()
    value = mse(logits, np.zeros_like(logits))
    assert value == pytest.approx(np.mean(logits ** 2))
    np.testing.assert_allclose(mse.backward(), 2 * logits / logits.size)

    mse.eval()
    mse(logits, np.zeros_like(logits))
    assert mse.cached == ()
    with pytest.raises(RuntimeError, match="eval mode"):
        mse.backward()
