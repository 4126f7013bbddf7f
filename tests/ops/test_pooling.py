"""Max and average pooling: tutorial tables, tie rule, PyTorch, finite differences, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas import reference
from cnnblas._kernels import pooling as kernels
from cnnblas.nn.gradcheck import numerical_gradient, relative_error
from cnnblas.ops import parallel
from cnnblas.ops.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    pool_window,
)

# Tutorial Tables 3.28 (input), 3.29 (output), 3.31 (dy) and 3.32 (dx).
TABLE_3_28 = [[23, 4, 16, 90], [12, 32, 12, 45], [5, 7, 8, 9], [2, 12, 14, 56]]
TABLE_3_29 = [[32, 90], [12, 56]]
TABLE_3_31 = [[0.22, 0.02], [0.48, 0.16]]
TABLE_3_32 = [[0, 0, 0, 0.02], [0, 0.22, 0, 0], [0, 0, 0, 0], [0, 0.48, 0, 0.16]]


def as_image(rows, dtype=np.float64):
    return np.array(rows, dtype=dtype)[None, None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tutorial_tables_3_28_to_3_32(dtype):
    x = as_image(TABLE_3_28, dtype)
    y, argmax = max_pool2d(x, 2)
    assert y.dtype == dtype and argmax.dtype == np.int64
    np.testing.assert_array_equal(y, as_image(TABLE_3_29, dtype))
    # Flat indices into the 4x4 plane: 32 at (1,1), 90 at (0,3), 12 at (3,1), 56 at (3,3).
    np.testing.assert_array_equal(argmax[0, 0], [[5, 3], [13, 15]])
    dx = max_pool2d_backward(as_image(TABLE_3_31, dtype), argmax, x.shape)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, as_image(TABLE_3_32, dtype))


def test_tie_goes_to_first_maximum_in_row_major_order():
    x = as_image([[1, 7, 3, 3],
                  [7, 2, 3, 3],
                  [0, 0, 5, 4],
                  [0, 0, 4, 5]])
    y, argmax = max_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], [[7, 3], [0, 5]])
    # (0,1) before (1,0); all four 3s -> (0,2); all zeros -> (2,0); 5 at (2,2) before (3,3).
    np.testing.assert_array_equal(argmax[0, 0], [[1, 2], [8, 10]])
    dx = max_pool2d_backward(np.ones_like(y), argmax, x.shape)
    assert dx.sum() == 4 and dx[0, 0, 0, 1] == dx[0, 0, 0, 2] == dx[0, 0, 2, 0] == 1


def test_overlapping_windows_accumulate_on_a_shared_maximum():
    x = as_image([[0, 0, 0], [0, 9, 0], [0, 0, 0]])
    y, argmax = max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(argmax[0, 0], [[4, 4], [4, 4]])
    dy = as_image([[1.0, 2.0], [3.0, 4.0]])
    dx = max_pool2d_backward(dy, argmax, x.shape)
    assert dx[0, 0, 1, 1] == 10 and dx.sum() == 10


def test_padding_is_never_selected_by_max_and_counts_as_zero_for_avg():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: padding 0 would win
    y, argmax = max_pool2d(x, 2, stride=2, padding=1)
    np.testing.assert_array_equal(y[0, 0], [[-1, -2], [-4, -5]])
    assert argmax.min() >= 0 and argmax.max() < 9
    y_avg = avg_pool2d(x, 2, stride=2, padding=1)
    np.testing.assert_allclose(y_avg[0, 0], [[-1 / 4, -5 / 4], [-11 / 4, -28 / 4]])


def test_all_minus_infinity_window_still_points_inside_the_plane():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, argmax = max_pool2d(x, 3, stride=1, padding=1)
    assert np.all(y == -np.inf) and argmax.min() >= 0 and argmax.max() < 9


def test_nan_propagates_like_torch():
    x = as_image([[1, np.nan], [np.nan, 5]])
    y, argmax = max_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 1


def test_kernel_backward_skips_out_of_range_indices():
    dy = np.ones((1, 1, 2), np.float64)
    argmax = np.array([[[-1, 99]]], np.int64)
    dx = np.full((1, 4), np.nan)
    kernels.max_pool2d_backward_planes(dy, argmax, dx, 0, 1)
    assert not dx.any()


# Values from a small set so that ties are common, with NaN and -inf sprinkled in:
# the vectorised 2x2 path must pick the same element as the loops in every case.
_SPECIAL_VALUES = st.sampled_from([-2.0, -1.0, 0.0, 1.0, 2.0, -np.inf, np.inf, np.nan])


@st.composite
def pooling_cases(draw):
    two_by_two = draw(st.booleans())
    if two_by_two:  # the vectorised path: 2x2 windows, stride 2, no padding
        kernel, stride, padding = (2, 2), (2, 2), (0, 0)
    else:
        kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)),
             draw(st.integers(kernel[0], 9)), draw(st.integers(kernel[1], 9)))
    size = int(np.prod(shape))
    values = draw(st.lists(_SPECIAL_VALUES if draw(st.booleans()) else
                           st.integers(-3, 3).map(float), min_size=size, max_size=size))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return np.array(values, dtype).reshape(shape), kernel, stride, padding


@settings(max_examples=150, deadline=None)
@given(pooling_cases())
def test_max_pool_matches_the_reference_loops(case):
    x, kernel, stride, padding = case
    y, argmax = max_pool2d(x, kernel, stride, padding)
    y_ref, argmax_ref = reference.max_pool2d_loops(x, kernel, stride, padding)
    np.testing.assert_array_equal(y, y_ref)  # NaN equals NaN here
    np.testing.assert_array_equal(argmax, argmax_ref)


def test_max_pool_across_worker_threads_matches_the_reference(monkeypatch, two_threads):
    ranges_seen = []
    split = parallel.image_ranges
    monkeypatch.setattr(parallel, "image_ranges",
                        lambda n, parts: ranges_seen.append(parts) or split(n, parts))
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, (3, 5, 8, 6)).astype(np.float32)
    x[1, 2, 3, 3] = np.nan
    for kernel, stride in [(2, 2), (3, 1)]:
        y, argmax = max_pool2d(x, kernel, stride)
        y_ref, argmax_ref = reference.max_pool2d_loops(x, kernel, stride)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(argmax, argmax_ref)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = max_pool2d_backward(dy, argmax, x.shape)
        dx_ref = np.zeros(x.size, np.float32).reshape(15, -1)
        planes = zip(dy.reshape(15, -1), argmax.reshape(15, -1), strict=True)
        for plane, (dy_plane, at_plane) in enumerate(planes):
            np.add.at(dx_ref[plane], at_plane, dy_plane)
        np.testing.assert_array_equal(dx, dx_ref.reshape(x.shape))
    assert ranges_seen and all(parts == 2 for parts in ranges_seen)


def test_non_contiguous_input_and_multiple_planes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 6, 7)).transpose(1, 0, 2, 3)  # (5, 3, 6, 7), not contiguous
    y, argmax = max_pool2d(x, 3, stride=2, padding=1)
    y_ref, _ = max_pool2d(np.ascontiguousarray(x), 3, stride=2, padding=1)
    np.testing.assert_array_equal(y, y_ref)
    assert y.shape == (5, 3, 3, 4)
    for n, c in [(0, 0), (4, 2)]:
        plane = x[n, c].reshape(-1)
        np.testing.assert_array_equal(plane[argmax[n, c]], y[n, c])


def test_avg_pool_backward_is_the_adjoint_of_forward():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 8))
    kwargs = dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1))
    y = avg_pool2d(x, **kwargs)
    dy = rng.standard_normal(y.shape)
    dx = avg_pool2d_backward(dy, x.shape, **kwargs)
    np.testing.assert_allclose(np.vdot(y, dy), np.vdot(x, dx), rtol=1e-12)


# -- finite differences on random geometries -----------------------------------------------


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    size = tuple(draw(st.integers(kernel[axis], kernel[axis] + 4)) for axis in range(2))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), *size)
    return shape, kernel, stride, padding, draw(st.integers(0, 2**16))


def distinct_values(shape, seed):
    """A random permutation of well-separated values: no ties, no kinks within eps."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) * 0.1


@settings(max_examples=25, deadline=None)
@given(pool_cases())
def test_max_pool_backward_matches_finite_differences(case):
    shape, kernel, stride, padding, seed = case
    x = distinct_values(shape, seed)
    y, argmax = max_pool2d(x, kernel, stride, padding)
    dy = np.random.default_rng(seed).standard_normal(y.shape)
    dx = max_pool2d_backward(dy, argmax, x.shape)
    numeric = numerical_gradient(lambda: float(np.sum(max_pool2d(x, kernel, stride, padding)[0]
                                                      * dy)), x, eps=1e-3)
    assert relative_error(dx, numeric) < 1e-8


@settings(max_examples=25, deadline=None)
@given(pool_cases())
def test_avg_pool_backward_matches_finite_differences(case):
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    y = avg_pool2d(x, kernel, stride, padding)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    dx = avg_pool2d_backward(dy, x.shape, kernel, stride, padding)
    numeric = numerical_gradient(lambda: float(np.sum(avg_pool2d(x, kernel, stride, padding)
                                                      * dy)), x)
    assert relative_error(dx, numeric) < 1e-8


# -- PyTorch ------------------------------------------------------------------------------------

TORCH_CASES = [
    ((2, 3, 8, 8), 2, None, 0),
    ((2, 3, 7, 9), 3, 2, 1),
    ((1, 2, 6, 5), (2, 3), (1, 2), (1, 0)),
    ((1, 1, 5, 5), 5, 1, 2),
    ((3, 2, 4, 6), (1, 2), 1, 0),
]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel, stride, padding", TORCH_CASES)
def test_matches_torch(torch, dtype, shape, kernel, stride, padding):
    functional = torch.nn.functional
    rng = np.random.default_rng(3)
    x = distinct_values(shape, 3).astype(dtype) + rng.standard_normal(shape).astype(dtype) * 1e-3
    tx = torch.tensor(x, requires_grad=True)

    y, argmax = max_pool2d(x, kernel, stride, padding)
    ty, tidx = functional.max_pool2d(tx, kernel, stride, padding, return_indices=True)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(argmax, tidx.numpy())
    dy = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(max_pool2d_backward(dy, argmax, x.shape), tx.grad.numpy(),
                               rtol=1e-6, atol=1e-6)

    tx.grad = None
    y = avg_pool2d(x, kernel, stride, padding)
    ty = functional.avg_pool2d(tx, kernel, stride, padding)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    ty.backward(torch.from_numpy(dy))
    dx = avg_pool2d_backward(dy, x.shape, kernel, stride, padding)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert y.dtype == dx.dtype == dtype


@pytest.mark.torch
def test_tie_rule_agrees_with_torch(torch):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 1.0
    _, argmax = max_pool2d(x, 2)
    _, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(argmax, tidx.numpy())


# -- bad input ----------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="rank 4"):
        max_pool2d(np.zeros((4, 4)), 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        avg_pool2d(np.zeros((1, 1, 4, 4), np.int32), 2)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        max_pool2d([[[[1.0]]]], 1)
    with pytest.raises(ValueError, match="at most half"):
        max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        avg_pool2d(x, 5)
    with pytest.raises(ValueError, match="stride"):
        max_pool2d(x, 2, stride=0)
    with pytest.raises(TypeError, match="kernel_size"):
        max_pool2d(x, 2.0)
    with pytest.raises(ValueError, match="padding"):
        pool_window(3, padding=-1)


def test_bad_backward_arguments_raise():
    x = np.zeros((2, 3, 4, 4))
    y, argmax = max_pool2d(x, 2)
    with pytest.raises(ValueError, match="argmax"):
        max_pool2d_backward(np.zeros((2, 3, 3, 3)), argmax, x.shape)
    with pytest.raises(TypeError, match="int64"):
        max_pool2d_backward(y, argmax.astype(np.int32), x.shape)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        max_pool2d_backward(y, argmax + 16, x.shape)
    with pytest.raises(ValueError, match="batch and channels"):
        max_pool2d_backward(y, argmax, (2, 4, 4, 4))
    with pytest.raises(ValueError, match="input_shape"):
        max_pool2d_backward(y, argmax, (2, 3, 4))
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 3, 2, 2\)"):
        avg_pool2d_backward(np.zeros((2, 3, 3, 2)), x.shape, 2)


# -- ceil mode ----------------------------------------------------------------------------------


def test_ceil_mode_keeps_the_partial_edge_windows():
    x = as_image([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    y, argmax = max_pool2d(x, 2, ceil_mode=True)
    np.testing.assert_array_equal(y[0, 0], [[5, 6], [8, 9]])
    np.testing.assert_array_equal(argmax[0, 0], [[4, 5], [7, 8]])
    assert max_pool2d(x, 2)[0].shape == (1, 1, 1, 1)
    # Partial windows divide by their positions inside the (unpadded) image.
    np.testing.assert_allclose(avg_pool2d(x, 2, ceil_mode=True)[0, 0],
                               [[12 / 4, 9 / 2], [15 / 2, 9 / 1]], rtol=1e-15)


def test_ceil_mode_divisor_counts_padding_but_not_past_it():
    # 4x4 ones, 3x3 windows, stride 2, padding 1: the last window of each axis
    # starts at 3 and covers [3, 6); only [3, 5) lies in the padded image,
    # 1 of those 2 positions in the input.
    y = avg_pool2d(np.ones((1, 1, 4, 4)), 3, stride=2, padding=1, ceil_mode=True)
    expected = [[4 / 9, 6 / 9, 2 / 6], [6 / 9, 9 / 9, 3 / 6], [2 / 6, 3 / 6, 1 / 4]]
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-15)


@pytest.mark.parametrize("size, kernel, stride, padding, floor_out, ceil_out", [
    (3, 2, 2, 0, 1, 2),
    (4, 2, 2, 0, 2, 2),   # exact fit: no extra window
    (6, 2, 4, 1, 2, 2),   # the extra window would start in the right padding: dropped
    (5, 3, 2, 1, 3, 3),
    (4, 3, 2, 1, 2, 3),
    (3, 4, 2, 0, None, 1),  # a kernel larger than the input still gives one partial window
])
def test_ceil_mode_output_sizes(size, kernel, stride, padding, floor_out, ceil_out):
    x = np.zeros((1, 1, size, size))
    assert max_pool2d(x, kernel, stride, padding, ceil_mode=True)[0].shape[2:] == (ceil_out,) * 2
    assert avg_pool2d(x, kernel, stride, padding, ceil_mode=True).shape[2:] == (ceil_out,) * 2
    if floor_out is not None:
        assert max_pool2d(x, kernel, stride, padding)[0].shape[2:] == (floor_out,) * 2


def test_ceil_mode_kernels_never_read_past_the_plane():
    # The plane sits between two NaN planes in one buffer: a read past either
    # end of it would bring a NaN into the result.
    buffer = np.full((3, 5, 5), np.nan)
    buffer[1] = np.arange(25.0).reshape(5, 5)
    planes = buffer[1:2]
    for kernel, stride, padding in [((2, 2), (2, 2), (0, 0)), ((3, 2), (2, 3), (1, 1)),
                                    ((4, 4), (3, 3), (2, 2))]:
        # Here: every window that starts inside the input or its left padding.
        out = tuple(len(range(-p, 5, s)) for s, p in zip(stride, padding, strict=True))
        y = np.empty((1, *out))
        argmax = np.empty((1, *out), np.int64)
        kernels.max_pool2d_forward_planes(planes, kernel, stride, padding, y, argmax, 0, 1)
        assert not np.isnan(y).any() and 0 <= argmax.min() and argmax.max() < 25
        y = kernels.avg_pool2d_forward(planes, kernel, stride, padding, out)
        assert not np.isnan(y).any()


def test_ceil_mode_layers_and_bad_values():
    from cnnblas import nn

    x = np.arange(9.0).reshape(1, 1, 3, 3)
    for layer in (nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(2, ceil_mode=True)):
        assert layer(x).shape == (1, 1, 2, 2)
        assert layer.backward(np.ones((1, 1, 2, 2))).shape == x.shape
        assert "ceil_mode=True" in repr(layer)
    assert "ceil_mode" not in repr(nn.MaxPool2d(2))
    with pytest.raises(TypeError, match="ceil_mode"):
        nn.MaxPool2d(2, ceil_mode=1)
    with pytest.raises(TypeError, match="ceil_mode"):
        avg_pool2d(x, 2, ceil_mode="yes")
    with pytest.raises(ValueError, match="no output"):
        max_pool2d(np.zeros((1, 1, 1, 1)), 4, stride=1, ceil_mode=True)


@st.composite
def ceil_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    size = tuple(draw(st.integers(max(1, kernel[axis] - 2 * padding[axis]), kernel[axis] + 6))
                 for axis in range(2))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), *size)
    return shape, kernel, stride, padding, draw(st.booleans()), draw(st.integers(0, 2**16))


@pytest.mark.torch
@settings(max_examples=120, deadline=None)
@given(ceil_cases())
def test_ceil_mode_matches_torch(case):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    shape, kernel, stride, padding, ceil_mode, seed = case
    x = distinct_values(shape, seed)
    rng = np.random.default_rng(seed)
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = functional.max_pool2d(tx, kernel, stride, padding, ceil_mode=ceil_mode,
                                     return_indices=True)
    y, argmax = max_pool2d(x, kernel, stride, padding, ceil_mode)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(argmax, tidx.numpy())
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(max_pool2d_backward(dy, argmax, x.shape), tx.grad.numpy(),
                               rtol=1e-14, atol=1e-14)

    tx.grad = None
    ty = functional.avg_pool2d(tx, kernel, stride, padding, ceil_mode=ceil_mode)
    y = avg_pool2d(x, kernel, stride, padding, ceil_mode)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-13, atol=1e-13)
    ty.backward(torch.from_numpy(dy))
    dx = avg_pool2d_backward(dy, x.shape, kernel, stride, padding, ceil_mode)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-13, atol=1e-13)


@settings(max_examples=25, deadline=None)
@given(ceil_cases())
def test_ceil_mode_backward_matches_finite_differences(case):
    shape, kernel, stride, padding, _, seed = case
    x = distinct_values(shape, seed)
    y, argmax = max_pool2d(x, kernel, stride, padding, True)
    dy = np.random.default_rng(seed).standard_normal(y.shape)
    dx = max_pool2d_backward(dy, argmax, x.shape)
    numeric = numerical_gradient(
        lambda: float(np.sum(max_pool2d(x, kernel, stride, padding, True)[0] * dy)), x, eps=1e-3)
    assert relative_error(dx, numeric) < 1e-8
    x = np.random.default_rng(seed + 1).standard_normal(shape)
    dx = avg_pool2d_backward(dy, x.shape, kernel, stride, padding, True)
    numeric = numerical_gradient(
        lambda: float(np.sum(avg_pool2d(x, kernel, stride, padding, True) * dy)), x)
    assert relative_error(dx, numeric) < 1e-8
