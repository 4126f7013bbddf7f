"""Winograd F(2x2, 3x3) forward, input and weight gradients against the references.

The references (cnnblas.reference: plain loops, Numba direct loops) and the
im2col GEMM path share no code with the Winograd transforms.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnblas as cb
from cnnblas import reference
from cnnblas._kernels.winograd import winograd_grad_transform, winograd_grad_transform_serial
from cnnblas.ops import winograd, workspace
from cnnblas.ops.winograd import (
    weight_grad_plan,
    winograd_conv2d,
    winograd_conv2d_input_grad,
    winograd_conv2d_weight_grad,
    winograd_supported,
)
from tests.conftest import assert_close

GEOMETRY = dict(stride=1, dilation=1, groups=1)


@st.composite
def winograd_cases(draw, max_pad: int = 2):
    """(x shape, K, padding ((top, bottom), (left, right)), with bias) for a 3x3 kernel.

    Sizes 1..12, odd and even, and smaller than a 4x4 tile; only geometries
    where the kernel fits in the padded input.
    """
    padding = tuple((draw(st.integers(0, max_pad)), draw(st.integers(0, max_pad)))
                    for _ in range(2))
    size = [draw(st.integers(max(1, 3 - sum(padding[axis])), 12)) for axis in range(2)]
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 5)), *size)
    return shape, draw(st.integers(1, 5)), padding, draw(st.booleans())


def arrays(shape, n_out, padding, dtype=np.float64, seed=0):
    """Random x (N, C, H, W), weight (K, C, 3, 3), bias (K,) and dy (N, K, out_h, out_w)."""
    rng = np.random.default_rng(seed)
    (top, bottom), (left, right) = padding
    out = (shape[2] + top + bottom - 2, shape[3] + left + right - 2)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal((n_out, shape[1], 3, 3)).astype(dtype)
    bias = rng.standard_normal(n_out).astype(dtype)
    dy = rng.standard_normal((shape[0], n_out, *out)).astype(dtype)
    return x, weight, bias, dy


@settings(max_examples=60, deadline=None)
@given(winograd_cases())
def test_forward_matches_references(case):
    shape, n_out, padding, with_bias = case
    x, weight, bias, _ = arrays(shape, n_out, padding)
    bias = bias if with_bias else None
    y = winograd_conv2d(x, weight, bias, padding=padding)
    assert y.dtype == np.float64
    assert_close(y, reference.conv2d_direct(x, weight, bias, padding=padding, **GEOMETRY),
                 err_msg=f"direct: {case}")
    assert_close(y, cb.conv2d(x, weight, bias, padding=padding), err_msg=f"conv2d: {case}")


@settings(max_examples=10, deadline=None)
@given(winograd_cases())
def test_forward_matches_plain_loops(case):
    shape, n_out, padding, with_bias = case
    x, weight, bias, _ = arrays(shape, n_out, padding)
    bias = bias if with_bias else None
    assert_close(winograd_conv2d(x, weight, bias, padding=padding),
                 reference.conv2d_loops(x, weight, bias, padding=padding), err_msg=str(case))


@settings(max_examples=60, deadline=None)
@given(winograd_cases())
def test_input_grad_matches_references(case):
    shape, n_out, padding, _ = case
    x, weight, _, dy = arrays(shape, n_out, padding)
    dx = winograd_conv2d_input_grad(dy, weight, padding, shape[2:])
    assert dx.shape == x.shape and dx.dtype == np.float64
    expected, _, _ = reference.conv2d_backward_direct(dy, x, weight, padding=padding, **GEOMETRY)
    assert_close(dx, expected, err_msg=f"direct: {case}")
    assert_close(dx, cb.conv2d_backward(dy, x, weight, padding=padding)[0],
                 err_msg=f"conv2d_backward: {case}")


@settings(max_examples=30, deadline=None)
@given(winograd_cases(max_pad=5))
def test_padding_above_two_crops_dy(case):
    """Forward padding p > 2 makes the input-gradient padding 2 - p negative: a crop."""
    shape, n_out, padding, with_bias = case
    x, weight, bias, dy = arrays(shape, n_out, padding)
    bias = bias if with_bias else None
    assert_close(winograd_conv2d(x, weight, bias, padding=padding),
                 reference.conv2d_direct(x, weight, bias, padding=padding, **GEOMETRY))
    expected, _, _ = reference.conv2d_backward_direct(dy, x, weight, padding=padding, **GEOMETRY)
    assert_close(winograd_conv2d_input_grad(dy, weight, padding, shape[2:]), expected)


@settings(max_examples=30, deadline=None)
@given(winograd_cases())
def test_float32_within_1e4_of_float64(case):
    shape, n_out, padding, with_bias = case
    x, weight, bias, dy = arrays(shape, n_out, padding)
    bias = bias if with_bias else None
    single = [a.astype(np.float32) for a in (x, weight, bias if with_bias else x, dy)]
    y = winograd_conv2d(single[0], single[1], single[2] if with_bias else None, padding=padding)
    dx = winograd_conv2d_input_grad(single[3], single[1], padding, shape[2:])
    assert y.dtype == dx.dtype == np.float32
    # Compare against the independent direct loops on the float32-rounded inputs.
    wide = [a.astype(np.float64) for a in single]
    assert_close(y, reference.conv2d_direct(wide[0], wide[1], wide[2] if with_bias else None,
                                            padding=padding, **GEOMETRY), rtol=1e-4)
    expected_dx, _, _ = reference.conv2d_backward_direct(wide[3], wide[0], wide[1],
                                                         padding=padding, **GEOMETRY)
    assert_close(dx, expected_dx, rtol=1e-4)


@pytest.mark.parametrize("limit", [1, 3000, 40_000])
def test_workspace_chunking_gives_identical_results(limit):
    """Tiny budgets force one or a few images per chunk: results must not change."""
    padding = ((1, 0), (2, 1))
    x, weight, bias, dy = arrays((7, 4, 9, 6), 3, padding, dtype=np.float32, seed=1)
    y_whole = winograd_conv2d(x, weight, bias, padding=padding)
    dx_whole = winograd_conv2d_input_grad(dy, weight, padding, (9, 6))
    old = cb.get_workspace_limit()
    try:
        cb.set_workspace_limit(limit)
        # Chunks change the GEMMs' widths, which may change BLAS's rounding.
        np.testing.assert_allclose(winograd_conv2d(x, weight, bias, padding=padding), y_whole,
                                   rtol=1e-13, atol=1e-13 * np.abs(y_whole).max())
        np.testing.assert_allclose(winograd_conv2d_input_grad(dy, weight, padding, (9, 6)),
                                   dx_whole, rtol=1e-13, atol=1e-13 * np.abs(dx_whole).max())
        # V and M: the budget, or one image's 16*(C+K)*T floats (at most 4x(4+1)
        # tiles here) when that is larger; plus U (16*K*C) and the padding of
        # the 2x16 operand rows to an odd number of cache lines.
        one_image = 16 * (4 + 3) * 4 * 5 * 4
        u_bytes, row_padding = 16 * 3 * 4 * 4, 2 * 16 * 2 * 64
        assert workspace.held_bytes() <= max(limit, one_image) + u_bytes + row_padding
    finally:
        cb.set_workspace_limit(old)


def test_non_contiguous_inputs():
    padding = ((1, 1), (1, 1))
    x, weight, bias, dy = arrays((2, 3, 7, 8), 4, padding)
    x_view = np.asfortranarray(x)
    weight_view = weight.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)
    assert not x_view.flags.c_contiguous and not weight_view.flags.c_contiguous
    assert_close(winograd_conv2d(x_view, weight_view, bias, padding=padding),
                 cb.conv2d(x, weight, bias, padding=padding))
    assert_close(winograd_conv2d_input_grad(dy[:, :, :, ::-1][:, :, :, ::-1], weight_view,
                                            padding, (7, 8)),
                 cb.conv2d_backward(dy, x, weight, padding=padding)[0])


def test_padding_forms():
    x, weight, bias, _ = arrays((2, 2, 5, 6), 3, ((1, 1), (1, 1)))
    for padding in (1, (1, 0), "same", "valid"):
        assert_close(winograd_conv2d(x, weight, bias, padding=padding),
                     cb.conv2d(x, weight, bias, padding=padding), err_msg=str(padding))


def test_supported_predicate():
    assert winograd_supported((8, 4, 3, 3))
    assert winograd_supported((8, 4, 3, 3), stride=(1, 1), dilation=1, groups=1)
    assert not winograd_supported((8, 4, 3, 5))
    assert not winograd_supported((8, 4, 5, 5))
    assert not winograd_supported((8, 4, 3, 3), stride=2)
    assert not winograd_supported((8, 4, 3, 3), stride=(1, 2))
    assert not winograd_supported((8, 4, 3, 3), dilation=2)
    assert not winograd_supported((8, 2, 3, 3), groups=2)


def test_bad_input():
    x, weight, _, dy = arrays((1, 2, 5, 5), 3, ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="3, 3"):
        winograd_conv2d(x, np.zeros((3, 2, 5, 5)), padding=1)
    with pytest.raises(ValueError, match="input channels"):
        winograd_conv2d(x, np.zeros((3, 4, 3, 3)), padding=1)
    with pytest.raises(TypeError, match="dtype"):
        winograd_conv2d(x, weight.astype(np.float32), padding=1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        winograd_conv2d(x[:, :, :2], weight, padding=0)
    with pytest.raises(ValueError, match="dy must have shape"):
        winograd_conv2d_input_grad(dy, weight, ((1, 1), (1, 1)), (6, 5))
    with pytest.raises(ValueError, match="dy must have shape"):
        winograd_conv2d_input_grad(dy[:, :2], weight, ((1, 1), (1, 1)), (5, 5))


# --- weight gradient -------------------------------------------------------------------


def assert_close_scaled(actual, expected, rtol, err_msg=""):
    """|actual - expected| <= rtol * max|expected|: dW entries are sums of many
    terms of both signs, so an elementwise relative test would be meaningless."""
    scale = max(float(np.abs(expected).max()), np.finfo(np.float64).tiny)
    error = float(np.abs(actual - expected).max())
    assert error <= rtol * scale, f"max error {error:.3g} > {rtol:g} * {scale:.3g}; {err_msg}"


def direct_dweight(dy, x, padding):
    weight = np.zeros((dy.shape[1], x.shape[1], 3, 3), x.dtype)
    return reference.conv2d_backward_direct(dy, x, weight, padding=padding, **GEOMETRY)[1]


@settings(max_examples=80, deadline=None)
@given(winograd_cases(max_pad=3))
def test_weight_grad_matches_direct_reference(case):
    shape, n_out, padding, _ = case
    x, weight, _, dy = arrays(shape, n_out, padding)
    dweight = winograd_conv2d_weight_grad(dy, x, padding)
    assert dweight.shape == weight.shape and dweight.dtype == np.float64
    assert_close_scaled(dweight, direct_dweight(dy, x, padding), 1e-10, f"direct: {case}")
    gemm = cb.conv2d_backward(dy, x, weight, padding=padding, input_grad=False,
                              algorithm="gemm")[1]
    assert_close_scaled(dweight, gemm, 1e-10, f"gemm: {case}")


@settings(max_examples=30, deadline=None)
@given(winograd_cases(max_pad=3))
def test_weight_grad_float32_within_1e4_of_float64(case):
    shape, n_out, padding, _ = case
    x, _, _, dy = arrays(shape, n_out, padding)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    dweight = winograd_conv2d_weight_grad(dy32, x32, padding)
    assert dweight.dtype == np.float32
    wide = winograd_conv2d_weight_grad(dy32.astype(np.float64), x32.astype(np.float64), padding)
    assert_close_scaled(dweight.astype(np.float64), wide, 1e-4, str(case))


@pytest.mark.parametrize("limit", [1, 3000, 40_000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_grad_chunking(limit, dtype):
    """Tiny budgets force one or a few images per chunk. dW is a sum over the
    batch, so only the rounding of that sum may change."""
    padding = ((1, 0), (2, 1))
    x, _, _, dy = arrays((7, 4, 9, 6), 3, padding, dtype=dtype, seed=1)
    whole = winograd_conv2d_weight_grad(dy, x, padding)
    old = cb.get_workspace_limit()
    try:
        cb.set_workspace_limit(limit)
        chunked = winograd_conv2d_weight_grad(dy, x, padding)
        # V and dM: the budget or one image's 16*(C+K)*T, plus the operand-row padding.
        one_image = 16 * (4 + 3) * 4 * 5 * np.dtype(dtype).itemsize
        assert workspace.held_bytes() <= max(limit, one_image) + 2 * 16 * 2 * 64
    finally:
        cb.set_workspace_limit(old)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    assert_close_scaled(chunked, whole, rtol)
    assert_close_scaled(whole, direct_dweight(dy, x, padding), 10 * rtol)


def test_weight_grad_chunk_cap(monkeypatch):
    """The _CHUNK_BYTES cap splits the batch like a small budget does."""
    padding = ((1, 1), (1, 1))
    x, _, _, dy = arrays((5, 3, 8, 7), 4, padding, seed=2)
    whole = winograd_conv2d_weight_grad(dy, x, padding)
    monkeypatch.setattr(winograd, "_CHUNK_BYTES", 1)
    assert_close_scaled(winograd_conv2d_weight_grad(dy, x, padding), whole, 1e-13)


@pytest.mark.parametrize("split", [1, 2, 4])
def test_weight_grad_partials_sum(split):
    """Partials of image ranges (one per worker thread) sum to the whole batch's,
    with the serial and the parallel kernels alike."""
    padding = ((2, 0), (1, 3))
    x, _, _, dy = arrays((5, 3, 7, 10), 4, padding, seed=3)
    plan = weight_grad_plan(x, dy, padding)
    whole = plan.run(0, 5)
    assert whole.shape == (16, 4, 3)
    np.testing.assert_array_equal(plan.run(0, 5, serial=True), whole)
    parts = [plan.run(0, split, serial=True), plan.run(split, 5, serial=False)]
    assert_close_scaled(parts[0] + parts[1], whole, 1e-13)
    dweight = plan.finish(parts)
    assert_close_scaled(dweight, plan.finish([whole]), 1e-13)
    assert_close_scaled(dweight, direct_dweight(dy, x, padding), 1e-10)


@pytest.mark.parametrize("out_size", [(1, 1), (3, 2), (4, 5), (7, 7), (6, 8)])
@pytest.mark.parametrize("kernel", [winograd_grad_transform, winograd_grad_transform_serial])
def test_grad_transform_tiles(out_size, kernel):
    """dM = A dY Aᵀ per tile, in the layout of M; zero for junk tiles and for the
    missing pixels of partial tiles; nothing outside dy is read (the images
    around it are NaN) and nothing past K*N*T is written. Integer-valued dy
    makes every sum exact, whatever its order."""
    n_images, n_out = 2, 3
    out_h, out_w = out_size
    rng = np.random.default_rng(4)
    batch = np.full((n_images + 2, n_out, out_h, out_w), np.nan)
    batch[1:-1] = rng.integers(-9, 10, (n_images, n_out, out_h, out_w))
    dy = batch[1:-1]
    tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
    span = tiles_w + 1
    n_tiles = tiles_h * span
    m = np.full((16, n_out * n_images * n_tiles + 5), -7.0)
    kernel(dy, (tiles_h, tiles_w), m)
    assert np.all(m[:, -5:] == -7.0)
    lift = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]])  # A
    extended = np.zeros((n_images, n_out, 2 * tiles_h, 2 * span))
    extended[:, :, :out_h, :out_w] = dy
    for k in range(n_out):
        for n in range(n_images):
            for th in range(tiles_h):
                for tw in range(span):
                    tile = extended[n, k, 2 * th : 2 * th + 2, 2 * tw : 2 * tw + 2]
                    column = (k * n_images + n) * n_tiles + th * span + tw
                    np.testing.assert_array_equal(m[:, column],
                                                  (lift @ tile @ lift.T).reshape(16))
                    if tw == tiles_w:
                        assert np.all(m[:, column] == 0.0)


def test_weight_grad_non_contiguous_and_padding_forms():
    x, weight, _, dy = arrays((2, 3, 7, 8), 4, ((1, 1), (1, 1)))
    expected = direct_dweight(dy, x, ((1, 1), (1, 1)))
    assert_close_scaled(winograd_conv2d_weight_grad(dy[..., ::-1][..., ::-1],
                                                    np.asfortranarray(x), 1), expected, 1e-10)
    assert_close_scaled(winograd_conv2d_weight_grad(dy, x, "same"), expected, 1e-10)
    valid = dy[:, :, 1:-1, 1:-1]
    assert_close_scaled(winograd_conv2d_weight_grad(np.ascontiguousarray(valid), x, "valid"),
                        direct_dweight(valid, x, 0), 1e-10)


def test_weight_grad_bad_input():
    x, _, _, dy = arrays((2, 2, 5, 5), 3, ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="dy must have shape"):
        winograd_conv2d_weight_grad(dy[:, :, :4], x, 1)
    with pytest.raises(ValueError, match="dy must have shape"):
        winograd_conv2d_weight_grad(dy[:1], x, 1)
    with pytest.raises(ValueError, match="dy must have shape"):
        winograd_conv2d_weight_grad(dy[0], x, 1)
    with pytest.raises(TypeError, match="dtype"):
        winograd_conv2d_weight_grad(dy.astype(np.float32), x, 1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        winograd_conv2d_weight_grad(dy, x[:, :, :2], 0)
