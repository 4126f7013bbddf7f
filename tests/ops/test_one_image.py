"""Single-image calls (inference at batch 1) and the per-shape setup cache.

A single image runs serially with BLAS at one thread unless the call is large,
and "auto" picks its algorithm by rules of its own; :func:`cnnblas.conv2d`
caches the validated geometry and the algorithm per shape and arguments. Every
result here is checked against the float64 reference, never against the
code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnblas as cb
from cnnblas import reference
from cnnblas.ops import conv, parallel
from cnnblas.ops.problem import argument_key
from tests.conftest import assert_close

# (C, K, H, stride, kernel): ResNet-20's layer shapes.
RESNET20_LAYERS = [(3, 16, 32, 1, 3), (16, 16, 32, 1, 3), (16, 32, 32, 2, 3), (16, 32, 32, 2, 1),
                   (32, 32, 16, 1, 3), (32, 64, 16, 2, 1), (64, 64, 8, 1, 3)]


def _layer(rng, channels, n_out, size, kernel, n_images=1):
    x = rng.standard_normal((n_images, channels, size, size))
    weight = rng.standard_normal((n_out, channels, kernel, kernel))
    bias = rng.standard_normal(n_out)
    return x, weight, bias


@pytest.mark.parametrize("x_shape, weight_shape, expected", [
    ((1, 3, 32, 32), (16, 3, 3, 3), "direct"),
    ((1, 16, 32, 32), (16, 16, 3, 3), "direct"),  # Winograd at batch 2 and above
    ((2, 16, 32, 32), (16, 16, 3, 3), "winograd4x4"),
    ((1, 32, 16, 16), (32, 32, 3, 3), "gemm"),
    ((1, 64, 8, 8), (64, 64, 3, 3), "gemm"),
    ((2, 64, 8, 8), (64, 64, 3, 3), "winograd4x4"),
    ((1, 32, 32, 32), (32, 32, 3, 3), "winograd4x4"),  # 32x32 pixels: Winograd pays
])
def test_auto_choice_for_one_image(x_shape, weight_shape, expected):
    assert cb.choose_algorithm(x_shape, weight_shape) == expected


@pytest.mark.parametrize("intra_step", [False, True], ids=["serial", "intra-step-parallel"])
@pytest.mark.parametrize("layer", RESNET20_LAYERS, ids=str)
def test_one_image_matches_the_reference(layer, intra_step, two_threads, monkeypatch):
    """One image at two threads, by the serial path (the default for these sizes)
    and by Numba's pool with multi-threaded BLAS (what larger images take)."""
    if intra_step:
        monkeypatch.setattr(parallel, "INTRA_STEP_FLOPS", 0)
    channels, n_out, size, stride, kernel = layer
    rng = np.random.default_rng(channels + size)
    x, weight, bias = _layer(rng, channels, n_out, size, kernel)
    kw = dict(stride=stride, padding=kernel // 2, dilation=1, groups=1)
    y_ref = reference.conv2d_direct(x, weight, bias, **kw)
    dy = rng.standard_normal(y_ref.shape)
    refs = [y_ref, *reference.conv2d_backward_direct(dy, x, weight, **kw)]
    args = [a.astype(np.float32) for a in (x, weight, bias)]
    got = [cb.conv2d(*args, **kw),
           *cb.conv2d_backward(dy.astype(np.float32), args[0], args[1], **kw)]
    for value, want in zip(got, refs, strict=True):
        assert value.dtype == np.float32
        assert_close(value, want, rtol=1e-4)


@pytest.mark.parametrize("algorithm", ["auto", "gemm", "direct", "winograd4x4"])
def test_setup_cache_sees_a_weight_changed_in_place(algorithm):
    """The cache keeps geometry and algorithm only: a weight (or input) written in
    place between calls, as an optimizer does, is read afresh."""
    rng = np.random.default_rng(1)
    x, weight, bias = _layer(rng, 16, 16, 16, 3)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, weight, bias))
    for _ in range(3):
        got = cb.conv2d(x32, w32, b32, padding=1, algorithm=algorithm)
        want = reference.conv2d_direct(x32.astype(float), w32.astype(float), b32.astype(float),
                                       stride=1, padding=1, dilation=1, groups=1)
        assert_close(got, want, rtol=1e-4)
        w32 -= 0.1 * rng.standard_normal(w32.shape).astype(np.float32)  # in place
        x32 *= 1.5


def test_setup_cache_follows_shape_and_dtype_changes():
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((8, 4, 3, 3))
    for size, dtype in [(10, np.float32), (12, np.float32), (12, np.float64), (10, np.float64),
                        (10, np.float32)]:
        for n_images in (1, 3):
            x = rng.standard_normal((n_images, 4, size, size))
            y = cb.conv2d(x.astype(dtype), weight.astype(dtype), padding=1)
            assert y.dtype == dtype and y.shape == (n_images, 8, size, size)
            want = reference.conv2d_direct(x, weight, None, stride=1, padding=1, dilation=1,
                                           groups=1)
            assert_close(y, want, rtol=1e-4 if dtype == np.float32 else 1e-10)


def test_setup_cache_never_lets_a_refused_argument_through():
    """A valid call cached for stride=1 must not make stride=True, 1.0 or a
    bad padding acceptable: their keys differ, so they are checked afresh."""
    x = np.ones((1, 2, 6, 6), np.float32)
    weight = np.ones((3, 2, 3, 3), np.float32)
    cb.conv2d(x, weight, stride=1, padding=(1, 1))
    with pytest.raises(TypeError, match="stride"):
        cb.conv2d(x, weight, stride=True, padding=(1, 1))
    with pytest.raises(TypeError, match="stride"):
        cb.conv2d(x, weight, stride=1.0, padding=(1, 1))
    with pytest.raises((TypeError, ValueError), match="padding"):
        cb.conv2d(x, weight, stride=1, padding=(True, 1))
    # Unhashable or unusual forms still work, uncached.
    assert cb.conv2d(x, weight, stride=[1, 1], padding=[1, 1]).shape == (1, 3, 6, 6)
    assert cb.conv2d(x, weight, stride=np.int64(1), padding=1).shape == (1, 3, 6, 6)


def test_argument_key_tells_types_apart():
    assert argument_key((1, (1, 1), "same")) == argument_key((1, (1, 1), "same"))
    assert argument_key(1) != argument_key(True)
    assert argument_key(1) != argument_key(np.int64(1))
    assert argument_key(((1, 1), (True, 1))) != argument_key(((1, 1), (1, 1)))
    assert argument_key([1, 1]) is None
    assert argument_key((1, 1.0)) is None
    assert argument_key(np.ones(2)) is None


def test_setup_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(conv, "_SETUPS", {})
    monkeypatch.setattr(conv, "_SETUPS_MAX", 4)
    weight = np.ones((2, 1, 3, 3), np.float32)
    for size in range(4, 14):
        cb.conv2d(np.ones((1, 1, size, size), np.float32), weight)
        assert len(conv._SETUPS) <= 4
