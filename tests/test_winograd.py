"""Winograd F(2x2, 3x3) forward and input gradient against the references.

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
from cnnblas.ops import workspace
from cnnblas.ops.winograd import (
    winograd_conv2d,
    winograd_conv2d_input_grad,
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
    # Compare against float64 Winograd on the float32-rounded inputs.
    wide = [a.astype(np.float64) for a in single]
    assert_close(y, winograd_conv2d(wide[0], wide[1], wide[2] if with_bias else None,
                                    padding=padding), rtol=1e-4)
    assert_close(dx, winograd_conv2d_input_grad(wide[3], wide[1], padding, shape[2:]),
                 rtol=1e-4)


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
        np.testing.assert_array_equal(winograd_conv2d(x, weight, bias, padding=padding), y_whole)
        np.testing.assert_array_equal(winograd_conv2d_input_grad(dy, weight, padding, (9, 6)),
                                      dx_whole)
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
