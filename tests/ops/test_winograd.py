"""Winograd F(2x2, 3x3) and F(4x4, 3x3) forward, input and weight gradients
against the references.

The references (cnnblas.reference: plain loops, Numba direct loops) and the
im2col GEMM path share no code with the Winograd transforms.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnblas as cb
import cnnblas.functional as F
from cnnblas import reference
from cnnblas._kernels import winograd_f2, winograd_f4
from cnnblas.ops import winograd, workspace
from cnnblas.ops.winograd import (
    weight_grad_plan,
    winograd_conv2d,
    winograd_conv2d_input_grad,
    winograd_conv2d_weight_grad,
)
from tests.conftest import assert_close

GEOMETRY = dict(stride=1, dilation=1, groups=1)
# Output tile sides: F(2x2, 3x3) and F(4x4, 3x3).
TILES = [2, 4]
by_tile = pytest.mark.parametrize("tile", TILES)


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


@by_tile
@settings(max_examples=60, deadline=None)
@given(case=winograd_cases())
def test_forward_matches_references(tile, case):
    shape, n_out, padding, with_bias = case
    x, weight, bias, _ = arrays(shape, n_out, padding)
    bias = bias if with_bias else None
    y = winograd_conv2d(x, weight, bias, padding=padding, tile=tile)
    assert y.dtype == np.float64
    assert_close(y, reference.conv2d_direct(x, weight, bias, padding=padding, **GEOMETRY),
                 err_msg=f"direct: {case}")
    assert_close(y, cb.conv2d(x, weight, bias, padding=padding), err_msg=f"conv2d: {case}")


@by_tile
@settings(max_examples=10, deadline=None)
@given(case=winograd_cases())
def test_forward_matches_plain_loops(tile, case):
    shape, n_out, padding, with_bias = case
    x, weight, bias, _ = arrays(shape, n_out, padding)
    bias = bias if with_bias else None
    assert_close(winograd_conv2d(x, weight, bias, padding=padding, tile=tile),
                 reference.conv2d_loops(x, weight, bias, padding=padding), err_msg=str(case))


@by_tile
@settings(max_examples=60, deadline=None)
@given(case=winograd_cases())
def test_input_grad_matches_references(tile, case):
    shape, n_out, padding, _ = case
    x, weight, _, dy = arrays(shape, n_out, padding)
    dx = winograd_conv2d_input_grad(dy, weight, padding, shape[2:], tile=tile)
    assert dx.shape == x.shape and dx.dtype == np.float64
    expected, _, _ = reference.conv2d_backward_direct(dy, x, weight, padding=padding, **GEOMETRY)
    assert_close(dx, expected, err_msg=f"direct: {case}")
    assert_close(dx, cb.conv2d_backward(dy, x, weight, padding=padding)[0],
                 err_msg=f"conv2d_backward: {case}")


@by_tile
@settings(max_examples=30, deadline=None)
@given(case=winograd_cases(max_pad=5))
def test_padding_above_two_crops_dy(tile, case):
    """Forward padding p > 2 makes the input-gradient padding 2 - p negative: a crop."""
    shape, n_out, padding, with_bias = case
    x, weight, bias, dy = arrays(shape, n_out, padding)
    bias = bias if with_bias else None
    assert_close(winograd_conv2d(x, weight, bias, padding=padding, tile=tile),
                 reference.conv2d_direct(x, weight, bias, padding=padding, **GEOMETRY))
    expected, _, _ = reference.conv2d_backward_direct(dy, x, weight, padding=padding, **GEOMETRY)
    assert_close(winograd_conv2d_input_grad(dy, weight, padding, shape[2:], tile=tile), expected)


@by_tile
@settings(max_examples=30, deadline=None)
@given(case=winograd_cases())
def test_float32_within_1e4_of_float64(tile, case):
    shape, n_out, padding, with_bias = case
    x, weight, bias, dy = arrays(shape, n_out, padding)
    bias = bias if with_bias else None
    single = [a.astype(np.float32) for a in (x, weight, bias if with_bias else x, dy)]
    y = winograd_conv2d(single[0], single[1], single[2] if with_bias else None, padding=padding,
                        tile=tile)
    dx = winograd_conv2d_input_grad(single[3], single[1], padding, shape[2:], tile=tile)
    assert y.dtype == dx.dtype == np.float32
    # Compare against the independent direct loops on the float32-rounded inputs.
    wide = [a.astype(np.float64) for a in single]
    assert_close(y, reference.conv2d_direct(wide[0], wide[1], wide[2] if with_bias else None,
                                            padding=padding, **GEOMETRY), rtol=1e-4)
    expected_dx, _, _ = reference.conv2d_backward_direct(wide[3], wide[0], wide[1],
                                                         padding=padding, **GEOMETRY)
    assert_close(dx, expected_dx, rtol=1e-4)


def workspace_bound(limit, tile, channels_in_and_out, out_size, itemsize):
    """Bytes the workspace may hold for V and M (or dM): the budget, or one image's
    P*(C+K)*T values when that is larger, plus the padding of the 2 x P operand
    rows to an odd number of 64-byte cache lines (at most two lines a row)."""
    points = (tile + 2) ** 2
    tiles = -(-out_size[0] // tile) * (-(-out_size[1] // tile) + 1)
    one_image = points * channels_in_and_out * tiles * itemsize
    return max(limit, one_image) + 2 * points * 2 * 64


@by_tile
@pytest.mark.parametrize("limit", [1, 3000, 40_000])
def test_workspace_chunking_gives_identical_results(limit, tile):
    """Tiny budgets force one or a few images per chunk: results must not change."""
    padding = ((1, 0), (2, 1))
    x, weight, bias, dy = arrays((7, 4, 9, 6), 3, padding, dtype=np.float32, seed=1)
    y_whole = winograd_conv2d(x, weight, bias, padding=padding, tile=tile)
    dx_whole = winograd_conv2d_input_grad(dy, weight, padding, (9, 6), tile=tile)
    old = cb.get_workspace_limit()
    try:
        cb.set_workspace_limit(limit)
        # Chunks change the GEMMs' widths, which may change BLAS's float32 rounding.
        assert_close(winograd_conv2d(x, weight, bias, padding=padding, tile=tile), y_whole,
                     rtol=1e-5)
        assert_close(winograd_conv2d_input_grad(dy, weight, padding, (9, 6), tile=tile),
                     dx_whole, rtol=1e-5)
        assert workspace.held_bytes() <= workspace_bound(limit, tile, 4 + 3, (8, 7), 4)
    finally:
        cb.set_workspace_limit(old)


@by_tile
def test_non_contiguous_inputs(tile):
    padding = ((1, 1), (1, 1))
    x, weight, bias, dy = arrays((2, 3, 7, 8), 4, padding)
    x_view = np.asfortranarray(x)
    weight_view = weight.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)
    assert not x_view.flags.c_contiguous and not weight_view.flags.c_contiguous
    assert_close(winograd_conv2d(x_view, weight_view, bias, padding=padding, tile=tile),
                 cb.conv2d(x, weight, bias, padding=padding))
    assert_close(winograd_conv2d_input_grad(dy[:, :, :, ::-1][:, :, :, ::-1], weight_view,
                                            padding, (7, 8), tile=tile),
                 cb.conv2d_backward(dy, x, weight, padding=padding)[0])


@by_tile
def test_padding_forms(tile):
    x, weight, bias, _ = arrays((2, 2, 5, 6), 3, ((1, 1), (1, 1)))
    for padding in (1, (1, 0), "same", "valid"):
        assert_close(winograd_conv2d(x, weight, bias, padding=padding, tile=tile),
                     cb.conv2d(x, weight, bias, padding=padding), err_msg=str(padding))


def test_supported_predicate():
    assert winograd.supports((8, 4, 3, 3))
    assert winograd.supports((8, 4, 3, 3), stride=(1, 1), dilation=1, groups=1)
    assert not winograd.supports((8, 4, 3, 5))
    assert not winograd.supports((8, 4, 5, 5))
    assert not winograd.supports((8, 4, 3, 3), stride=2)
    assert not winograd.supports((8, 4, 3, 3), stride=(1, 2))
    assert not winograd.supports((8, 4, 3, 3), dilation=2)
    assert not winograd.supports((8, 2, 3, 3), groups=2)


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


def direct_dweight(dy, x, padding):
    weight = np.zeros((dy.shape[1], x.shape[1], 3, 3), x.dtype)
    return reference.conv2d_backward_direct(dy, x, weight, padding=padding, **GEOMETRY)[1]


@by_tile
@settings(max_examples=80, deadline=None)
@given(case=winograd_cases(max_pad=3))
def test_weight_grad_matches_direct_reference(tile, case):
    shape, n_out, padding, _ = case
    x, weight, _, dy = arrays(shape, n_out, padding)
    dweight = winograd_conv2d_weight_grad(dy, x, padding, tile=tile)
    assert dweight.shape == weight.shape and dweight.dtype == np.float64
    assert_close(dweight, direct_dweight(dy, x, padding), 1e-10, f"direct: {case}")
    gemm = cb.conv2d_backward(dy, x, weight, padding=padding, input_grad=False,
                              algorithm="gemm")[1]
    assert_close(dweight, gemm, 1e-10, f"gemm: {case}")


@by_tile
@settings(max_examples=30, deadline=None)
@given(case=winograd_cases(max_pad=3))
def test_weight_grad_float32_within_1e4_of_float64(tile, case):
    shape, n_out, padding, _ = case
    x, _, _, dy = arrays(shape, n_out, padding)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    dweight = winograd_conv2d_weight_grad(dy32, x32, padding, tile=tile)
    assert dweight.dtype == np.float32
    # The independent direct loops on the float32-rounded inputs, in float64.
    wide = direct_dweight(dy32.astype(np.float64), x32.astype(np.float64), padding)
    assert_close(dweight, wide, 1e-4, str(case))


@by_tile
@pytest.mark.parametrize("limit", [1, 3000, 40_000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_grad_chunking(limit, dtype, tile):
    """Tiny budgets force one or a few images per chunk. dW is a sum over the
    batch, so only the rounding of that sum may change."""
    padding = ((1, 0), (2, 1))
    x, _, _, dy = arrays((7, 4, 9, 6), 3, padding, dtype=dtype, seed=1)
    whole = winograd_conv2d_weight_grad(dy, x, padding, tile=tile)
    old = cb.get_workspace_limit()
    try:
        cb.set_workspace_limit(limit)
        chunked = winograd_conv2d_weight_grad(dy, x, padding, tile=tile)
        bound = workspace_bound(limit, tile, 4 + 3, (8, 7), np.dtype(dtype).itemsize)
        assert workspace.held_bytes() <= bound
    finally:
        cb.set_workspace_limit(old)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    assert_close(chunked, whole, rtol)
    assert_close(whole, direct_dweight(dy, x, padding), 10 * rtol)


@by_tile
def test_weight_grad_chunk_cap(monkeypatch, tile):
    """The _CHUNK_BYTES cap splits the batch like a small budget does."""
    padding = ((1, 1), (1, 1))
    x, _, _, dy = arrays((5, 3, 8, 7), 4, padding, seed=2)
    whole = winograd_conv2d_weight_grad(dy, x, padding, tile=tile)
    monkeypatch.setattr(winograd, "_CHUNK_BYTES", 1)
    assert_close(winograd_conv2d_weight_grad(dy, x, padding, tile=tile), whole, 1e-13)


@by_tile
@pytest.mark.parametrize("split", [1, 2, 4])
def test_weight_grad_partials_sum(split, tile):
    """Partials of image ranges (one per worker thread) sum to the whole batch's,
    with the serial and the parallel kernels alike."""
    padding = ((2, 0), (1, 3))
    x, _, _, dy = arrays((5, 3, 7, 10), 4, padding, seed=3)
    plan = weight_grad_plan(x, dy, padding, tile=tile)
    whole = plan.run(0, 5)
    assert whole.shape == ((tile + 2) ** 2, 4, 3)
    np.testing.assert_array_equal(plan.run(0, 5, serial=True), whole)
    parts = [plan.run(0, split, serial=True), plan.run(split, 5, serial=False)]
    assert_close(parts[0] + parts[1], whole, 1e-13)
    dweight = plan.finish(parts)
    assert_close(dweight, plan.finish([whole]), 1e-13)
    assert_close(dweight, direct_dweight(dy, x, padding), 1e-10)


# A of Y = Aᵀ [...] A, written out here independently of the kernels: F(2x2, 3x3)
# (4 x 2) and F(4x4, 3x3) (6 x 4, interpolation points 0, 1, -1, 2, -2, ∞).
LIFTS = {
    2: np.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]]),
    4: np.array([[1.0, 0, 0, 0], [1, 1, 1, 1], [1, -1, 1, -1], [1, 2, 4, 8], [1, -2, 4, -8],
                 [0, 0, 0, 1]]),
}
GRAD_KERNELS = [(2, winograd_f2.grad_transform), (2, winograd_f2.grad_transform_serial),
                (4, winograd_f4.grad_transform), (4, winograd_f4.grad_transform_serial)]


@pytest.mark.parametrize("out_size", [(1, 1), (3, 2), (4, 5), (7, 7), (6, 8), (9, 5)])
@pytest.mark.parametrize("tile, kernel", GRAD_KERNELS)
def test_grad_transform_tiles(out_size, tile, kernel):
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
    tiles_h, tiles_w = -(-out_h // tile), -(-out_w // tile)
    span = tiles_w + 1
    n_tiles = tiles_h * span
    points = (tile + 2) ** 2
    m = np.full((points, n_out * n_images * n_tiles + 5), -7.0)
    kernel(dy, (tiles_h, tiles_w), m)
    assert np.all(m[:, -5:] == -7.0)
    lift = LIFTS[tile]
    extended = np.zeros((n_images, n_out, tile * tiles_h, tile * span))
    extended[:, :, :out_h, :out_w] = dy
    for k in range(n_out):
        for n in range(n_images):
            for th in range(tiles_h):
                for tw in range(span):
                    block = extended[n, k, tile * th : tile * (th + 1), tile * tw : tile * (tw + 1)]
                    column = (k * n_images + n) * n_tiles + th * span + tw
                    np.testing.assert_array_equal(m[:, column],
                                                  (lift @ block @ lift.T).reshape(points))
                    if tw == tiles_w:
                        assert np.all(m[:, column] == 0.0)


@by_tile
@pytest.mark.parametrize("algorithm", ["forward", "input_grad", "weight_grad"])
def test_nothing_outside_the_batch_is_read(tile, algorithm):
    """The images are a slice of a batch whose other images are NaN: a read past
    the slice (or into another channel's plane) would put a NaN in the result."""
    padding = ((1, 2), (0, 1))
    x, weight, bias, dy = arrays((3, 5, 10, 9), 6, padding, seed=6)

    def inside_nans(a):
        batch = np.full((a.shape[0] + 2, *a.shape[1:]), np.nan)
        batch[1:-1] = a
        return batch[1:-1]

    if algorithm == "forward":
        got = winograd_conv2d(inside_nans(x), weight, bias, padding=padding, tile=tile)
        want = reference.conv2d_direct(x, weight, bias, padding=padding, **GEOMETRY)
    elif algorithm == "input_grad":
        got = winograd_conv2d_input_grad(inside_nans(dy), weight, padding, (10, 9), tile=tile)
        want = reference.conv2d_backward_direct(dy, x, weight, padding=padding, **GEOMETRY)[0]
    else:
        got = winograd_conv2d_weight_grad(inside_nans(dy), inside_nans(x), padding, tile=tile)
        want = direct_dweight(dy, x, padding)
    assert np.all(np.isfinite(got))
    assert_close(got, want, 1e-10)


@by_tile
def test_weight_grad_non_contiguous_and_padding_forms(tile):
    x, weight, _, dy = arrays((2, 3, 7, 8), 4, ((1, 1), (1, 1)))
    expected = direct_dweight(dy, x, ((1, 1), (1, 1)))
    assert_close(winograd_conv2d_weight_grad(dy[..., ::-1][..., ::-1],
                                                    np.asfortranarray(x), 1, tile=tile),
                        expected, 1e-10)
    assert_close(winograd_conv2d_weight_grad(dy, x, "same", tile=tile), expected, 1e-10)
    valid = dy[:, :, 1:-1, 1:-1]
    assert_close(winograd_conv2d_weight_grad(np.ascontiguousarray(valid), x, "valid",
                                                    tile=tile),
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


# --------------------------------------------------------------------------- non-finite values


def _assert_same_values(got, want):
    """Equal up to float32 rounding, with NaN, +inf and -inf in the same places."""
    for special in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(special(got), special(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def _non_finite_case(where: str, value: float):
    """An 8 -> 8 3x3 layer with one non-finite value in x, the weight or dy."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 9, 10)).astype(np.float32)
    weight = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 8, 9, 10)).astype(np.float32)
    index = (1, 2, 1, 1) if where == "weight" else (1, 2, 4, 5)
    {"x": x, "weight": weight, "dy": dy}[where][index] = value
    return x, weight, dy


@pytest.mark.parametrize("serial", [False, True])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_f4_transforms_report_non_finite_pixels(serial, value):
    """F(4x4)'s input and gradient transforms return False exactly when a pixel
    they read is inf or NaN, wherever it sits (corners, edges, the rows copied
    twice, the second image, the last channel)."""
    suffix = "_serial" if serial else ""
    input_transform = getattr(winograd_f4, "input_transform" + suffix)
    grad_transform = getattr(winograd_f4, "grad_transform" + suffix)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    tiles = (2, 2)  # the 6x7 output of a 3x3 kernel with padding 1
    v = np.empty((36, 3 * 2 * 2 * 3), np.float32)
    assert input_transform(x, (1, 1), tiles, v) is True
    assert grad_transform(x, tiles, v) is True
    for index in np.ndindex(x.shape):
        if index[0] != 1 and index[1] != 2:  # every pixel of image 1 and of channel 2
            continue
        bad = x.copy()
        bad[index] = value
        assert input_transform(bad, (1, 1), tiles, v) is False, index
        assert grad_transform(bad, tiles, v) is False, index


@pytest.mark.parametrize("algorithm", ["auto", "winograd4x4", "winograd2x2"])
@pytest.mark.parametrize("where", ["x", "weight", "dy"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_values_give_the_gemm_results(algorithm, where, value):
    x, weight, dy = _non_finite_case(where, value)
    bias = np.linspace(-1, 1, 8).astype(np.float32)
    assert cb.choose_algorithm(x.shape, weight.shape) == "winograd4x4"
    kw = {"padding": 1}
    if where != "dy":
        _assert_same_values(cb.conv2d(x, weight, bias, algorithm=algorithm, **kw),
                            cb.conv2d(x, weight, bias, algorithm="gemm", **kw))
    got = cb.conv2d_backward(dy, x, weight, algorithm=algorithm, **kw)
    want = cb.conv2d_backward(dy, x, weight, algorithm="gemm", **kw)
    for g, w in zip(got, want, strict=True):
        _assert_same_values(g, w)
    if where != "x":
        _assert_same_values(
            F.conv2d_input_grad(dy, weight, x.shape[2:], algorithm=algorithm, **kw),
            F.conv2d_input_grad(dy, weight, x.shape[2:], algorithm="gemm", **kw))


@pytest.mark.torch
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_pixel_gives_pytorch_forward(value):
    torch = pytest.importorskip("torch")
    x, weight, _ = _non_finite_case("x", value)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                      padding=1).numpy()
    assert np.isinf(want).any() if value == np.inf else np.isnan(want).any()
    _assert_same_values(cb.conv2d(x, weight, padding=1), want)


@pytest.mark.parametrize("where", ["x", "dy"])
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_value_seen_by_one_worker_gives_the_gemm_results(where, value,
                                                                    two_threads):
    """Each worker checks its own images: a non-finite value in the second
    worker's image sends the whole pass to the GEMM backend, not half of it."""
    x, weight, dy = _non_finite_case(where, value)  # the value sits in image 1 of 2
    bias = np.linspace(-1, 1, 8).astype(np.float32)
    if where == "x":
        _assert_same_values(cb.conv2d(x, weight, bias, padding=1, algorithm="winograd4x4"),
                            cb.conv2d(x, weight, bias, padding=1, algorithm="gemm"))
    got = cb.conv2d_backward(dy, x, weight, padding=1, algorithm="winograd4x4")
    want = cb.conv2d_backward(dy, x, weight, padding=1, algorithm="gemm")
    for g, w in zip(got, want, strict=True):
        _assert_same_values(g, w)
