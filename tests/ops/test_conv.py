"""The GEMM convolution against every independent reference.

References (cnnblas.reference, independent of the GEMM code): the tutorial's
nested loops, the Numba direct loops, and the derivations' scipy.signal
formulas; plus centred finite differences in float64 and PyTorch when installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnblas as cb
from cnnblas import reference
from tests.conftest import EDGE_CASES, ConvCase, assert_close, conv_cases

FORWARD_REFERENCES = {
    "loops": reference.conv2d_loops,
    "im2col": reference.conv2d_im2col,
    "direct": reference.conv2d_direct,
    "scipy": reference.conv2d_scipy,
}
BACKWARD_REFERENCES = {
    "im2col": reference.conv2d_backward_im2col,
    "direct": reference.conv2d_backward_direct,
    "scipy": reference.conv2d_backward_scipy,
}


def check_forward(case: ConvCase, references=FORWARD_REFERENCES, algorithm="auto"):
    x, weight, bias, _ = case.arrays()
    y = cb.conv2d(x, weight, bias, **case.kwargs(), algorithm=algorithm)
    assert y.shape == (case.n, case.k, *case.out_size)
    for name, ref in references.items():
        assert_close(y, ref(x, weight, bias, **case.kwargs()), err_msg=f"{name}: {case}")


def check_backward(case: ConvCase, algorithm="auto"):
    x, weight, _, dy = case.arrays()
    grads = cb.conv2d_backward(dy, x, weight, **case.kwargs(), algorithm=algorithm)
    for name, ref in BACKWARD_REFERENCES.items():
        expected = ref(dy, x, weight, **case.kwargs())
        for label, got, want in zip(("dx", "dweight", "dbias"), grads, expected, strict=True):
            assert_close(got, want, err_msg=f"{label} vs {name}: {case}")


# "gemm" forces the im2col path on every case; "auto" takes what the engine
# picks (mostly the GEMM on these small images; the direct kernels have their
# own tests below).
@pytest.mark.parametrize("algorithm", ["auto", "gemm"])
@settings(max_examples=80, deadline=None)
@given(case=conv_cases())
def test_forward_matches_references(case, algorithm):
    check_forward(case, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ["auto", "gemm"])
@settings(max_examples=80, deadline=None)
@given(case=conv_cases())
def test_backward_matches_references(case, algorithm):
    check_backward(case, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ["auto", "gemm"])
@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_cases_forward_and_backward(name, algorithm):
    check_forward(EDGE_CASES[name], algorithm=algorithm)
    check_backward(EDGE_CASES[name], algorithm=algorithm)


def test_tutorial_table_3_5_by_hand():
    """"A beginner tutorial for CNN", Table 3.5 setting: 3x3 input, 2x2 kernel, valid."""
    x = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]).reshape(1, 1, 3, 3)
    w = np.array([[1.0, 2], [3, 4]]).reshape(1, 1, 2, 2)
    # y[0,0] = 1*1 + 2*2 + 4*3 + 5*4 = 37, then slide by one pixel.
    np.testing.assert_array_equal(cb.conv2d(x, w)[0, 0], [[37, 47], [67, 77]])


def directional_fd(f, array, direction, step=1e-6):
    """Centred finite difference of scalar ``f`` at ``array`` along ``direction``."""
    return (f(array + step * direction) - f(array - step * direction)) / (2 * step)


@settings(max_examples=25, deadline=None)
@given(conv_cases(max_extra=3, max_kernel=3))
def test_gradients_match_finite_differences(case):
    """d/dt sum(conv(x + t v, w + t u) * dy) against the analytic gradients (float64)."""
    x, weight, bias, dy = case.arrays()
    rng = np.random.default_rng(2)
    dx, dweight, dbias = cb.conv2d_backward(dy, x, weight, **case.kwargs())

    def loss_x(xv):
        return float(np.sum(cb.conv2d(xv, weight, bias, **case.kwargs()) * dy))

    def loss_w(wv):
        return float(np.sum(cb.conv2d(x, wv, bias, **case.kwargs()) * dy))

    def loss_b(bv):
        return float(np.sum(cb.conv2d(x, weight, bv, **case.kwargs()) * dy))

    for grad, f, point in ((dx, loss_x, x), (dweight, loss_w, weight), (dbias, loss_b, bias)):
        direction = rng.standard_normal(point.shape)
        analytic = float(np.sum(grad * direction))
        numeric = directional_fd(f, point, direction)
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(analytic)), (analytic, numeric)


@settings(max_examples=40, deadline=None)
@given(conv_cases(symmetric_padding=True))
def test_matches_torch_forward_and_backward(case):
    torch = pytest.importorskip("torch")
    x, weight, bias, dy = case.arrays()
    padding = (case.padding[0][0], case.padding[1][0])
    args = dict(stride=case.stride, padding=padding, dilation=case.dilation, groups=case.groups)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    yt = torch.nn.functional.conv2d(xt, wt, bt, **args)
    yt.backward(torch.from_numpy(dy))
    assert_close(cb.conv2d(x, weight, bias, **args), yt.detach().numpy())
    for got, want in zip(cb.conv2d_backward(dy, x, weight, **args),
                         (xt.grad, wt.grad, bt.grad), strict=True):
        assert_close(got, want.numpy())


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_float32_within_1e4_of_float64(case):
    x, weight, bias, dy = case.arrays()
    f32 = [a.astype(np.float32) for a in (x, weight, bias, dy)]
    y32 = cb.conv2d(*f32[:3], **case.kwargs())
    assert y32.dtype == np.float32
    assert_close(y32, cb.conv2d(x, weight, bias, **case.kwargs()), rtol=1e-4)
    grads32 = cb.conv2d_backward(f32[3], f32[0], f32[1], **case.kwargs())
    grads64 = cb.conv2d_backward(dy, x, weight, **case.kwargs())
    for got, want in zip(grads32, grads64, strict=True):
        assert got.dtype == np.float32
        assert_close(got, want, rtol=1e-4)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [(3, 3), (2, 4), (5, 1)])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_padding_gives_ceil_output_and_matches_explicit_padding(stride, kernel, dilation):
    """'same' = TensorFlow's rule: out = ceil(in/stride), odd pixel of padding at the end."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 7, 10))
    weight = rng.standard_normal((3, 2, *kernel))
    y = cb.conv2d(x, weight, stride=stride, padding="same", dilation=dilation)
    assert y.shape[2:] == (-(-7 // stride), -(-10 // stride))
    pads = []
    for size, k in zip((7, 10), kernel, strict=True):
        out = -(-size // stride)
        total = max((out - 1) * stride + dilation * (k - 1) + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    padded = np.pad(x, ((0, 0), (0, 0), *pads))
    assert_close(y, reference.conv2d_loops(padded, weight, stride=stride, dilation=dilation))
    dy = rng.standard_normal(y.shape)
    dx, dweight, _ = cb.conv2d_backward(dy, x, weight, stride=stride, padding="same",
                                        dilation=dilation)
    dx_padded, dweight_ref, _ = reference.conv2d_backward_direct(
        dy, padded, weight, stride=stride, padding=0, dilation=dilation, groups=1)
    (top, _), (left, _) = pads
    assert_close(dx, dx_padded[:, :, top:top + 7, left:left + 10])
    assert_close(dweight, dweight_ref)


def test_same_padding_stride1_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 7))
    weight = rng.standard_normal((4, 3, 4, 3))
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                          padding="same", dilation=2).numpy()
    assert_close(cb.conv2d(x, weight, padding="same", dilation=2), expected)


def test_valid_padding_is_zero_padding():
    x, weight, bias, _ = EDGE_CASES["non_square_image"].arrays()
    np.testing.assert_array_equal(cb.conv2d(x, weight, bias, padding="valid"),
                                  cb.conv2d(x, weight, bias, padding=0))


@pytest.mark.parametrize("case", [
    ConvCase(5, 4, 6, 7, 6, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 2),  # pointwise, grouped
    ConvCase(5, 4, 7, 6, 6, (3, 2), (2, 1), ((1, 1), (0, 1)), (1, 1), 2),  # grouped
])
@pytest.mark.parametrize("limit", [1, 5_000])
def test_grouped_weight_grad_over_chunks(case, limit):
    """dW is summed transposed over chunks (the first chunk writes, the others add)
    and transposed once per group: every group's gradient must match the plain GEMMs
    (dW = Σ dY @ colsᵀ, dX = col2im(Wmᵀ @ dY)) of the reference twin."""
    x, weight, _, dy = case.arrays()
    old = cb.get_workspace_limit()
    try:
        cb.set_workspace_limit(limit)
        dx, dweight, dbias = cb.conv2d_backward(dy, x, weight, **case.kwargs(), algorithm="gemm")
    finally:
        cb.set_workspace_limit(old)
    expected = reference.conv2d_backward_im2col(dy, x, weight, **case.kwargs())
    for got, want in zip((dx, dweight, dbias), expected, strict=True):
        assert_close(got, want)


@pytest.mark.parametrize("limit", [1, 700, 10_000])
def test_batch_chunking_gives_the_same_result(limit):
    """A tiny workspace forces one image per chunk (or several): results must not change
    beyond rounding (a different GEMM width may take a different BLAS kernel path)."""
    case = ConvCase(5, 3, 6, 7, 4, (3, 3), (1, 2), ((1, 0), (2, 1)), (1, 1), 1)
    x, weight, bias, dy = case.arrays()
    full_y = cb.conv2d(x, weight, bias, **case.kwargs())
    full_grads = cb.conv2d_backward(dy, x, weight, **case.kwargs())
    old = cb.get_workspace_limit()
    try:
        cb.set_workspace_limit(limit)
        assert_close(cb.conv2d(x, weight, bias, **case.kwargs()), full_y, rtol=1e-13)
        for got, want in zip(cb.conv2d_backward(dy, x, weight, **case.kwargs()), full_grads,
                             strict=True):
            assert_close(got, want, rtol=1e-13)
        from cnnblas.ops import workspace

        # One image of the backward pass: columns, their gradient and the (K, L) reorder.
        one_image = 8 * (2 * case.c * 9 + case.k) * case.out_size[0] * case.out_size[1]
        # Slots are reused across calls whose chunk sizes differ (forward, backward),
        # so what a thread holds is bounded by the sum of two calls' budgets.
        assert workspace.held_bytes() <= 2 * max(limit, one_image)
    finally:
        cb.set_workspace_limit(old)


def test_input_grad_false_skips_dx():
    x, weight, _, dy = EDGE_CASES["groups2"].arrays()
    dx, dweight, dbias = cb.conv2d_backward(dy, x, weight, padding=1, groups=2, input_grad=False)
    assert dx is None
    full = cb.conv2d_backward(dy, x, weight, padding=1, groups=2)
    # Without dx the chunks can be larger, so dW may differ in the last bit.
    assert_close(dweight, full[1], rtol=1e-13)
    np.testing.assert_array_equal(dbias, full[2])


def test_non_contiguous_and_read_only_inputs_work_and_are_not_modified():
    case = EDGE_CASES["rect_kernel_stride2"]
    x, weight, bias, dy = case.arrays()
    expected_y = cb.conv2d(x, weight, bias, **case.kwargs())
    expected_grads = cb.conv2d_backward(dy, x, weight, **case.kwargs())
    # Non-contiguous views with the same values: Fortran order and a strided slice.
    x_f = np.asfortranarray(x)
    wide = np.zeros((case.n, case.c, case.h, 2 * case.w))
    wide[..., ::2] = x
    x_strided = wide[..., ::2]
    for xv in (x_f, x_strided):
        assert not xv.flags.c_contiguous
        before = xv.copy()
        xv.flags.writeable = False
        np.testing.assert_array_equal(cb.conv2d(xv, weight, bias, **case.kwargs()), expected_y)
        for got, want in zip(cb.conv2d_backward(dy, xv, weight, **case.kwargs()),
                             expected_grads, strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(xv, before)
    for array in (weight, bias, dy):
        array.flags.writeable = False
    cb.conv2d(x, weight, bias, **case.kwargs())
    cb.conv2d_backward(dy, x, weight, **case.kwargs())


@st.composite
def winograd_cases(draw) -> ConvCase:
    """3x3, stride-1, dilation-1, ungrouped layers: what Winograd computes."""
    padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    size = [draw(st.integers(max(1, 3 - sum(padding[a])), 11)) for a in range(2)]
    return ConvCase(draw(st.integers(1, 3)), draw(st.integers(1, 5)), size[0], size[1],
                    draw(st.integers(1, 5)), (3, 3), (1, 1), padding, (1, 1), 1)


@pytest.mark.parametrize("algorithm", ["winograd2x2", "winograd4x4"])
@settings(max_examples=40, deadline=None)
@given(case=winograd_cases())
def test_forced_winograd_matches_references(algorithm, case):
    """conv2d / conv2d_backward with algorithm='winograd2x2' (F(2x2, 3x3)) or
    'winograd4x4' (F(4x4, 3x3)) (float64, 1e-10 relative)."""
    x, weight, bias, dy = case.arrays()
    y = cb.conv2d(x, weight, bias, **case.kwargs(), algorithm=algorithm)
    assert_close(y, reference.conv2d_direct(x, weight, bias, **case.kwargs()))
    grads = cb.conv2d_backward(dy, x, weight, **case.kwargs(), algorithm=algorithm)
    expected = reference.conv2d_backward_direct(dy, x, weight, **case.kwargs())
    for got, want in zip(grads, expected, strict=True):
        assert_close(got, want)


@st.composite
def direct_cases(draw) -> ConvCase:
    """Stride-1, dilation-1, ungrouped layers of any kernel and padding: what the
    direct kernels compute."""
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    size = [draw(st.integers(max(1, kernel[a] - sum(padding[a])), 12)) for a in range(2)]
    return ConvCase(draw(st.integers(1, 3)), draw(st.integers(1, 4)), size[0], size[1],
                    draw(st.integers(1, 4)), kernel, (1, 1), padding, (1, 1), 1)


@settings(max_examples=60, deadline=None)
@given(direct_cases())
def test_forced_direct_matches_references(case):
    """conv2d / conv2d_backward with algorithm='direct' (float64, 1e-10 relative),
    with and without the input gradient."""
    x, weight, bias, dy = case.arrays()
    y = cb.conv2d(x, weight, bias, **case.kwargs(), algorithm="direct")
    assert_close(y, reference.conv2d_direct(x, weight, bias, **case.kwargs()))
    expected = reference.conv2d_backward_direct(dy, x, weight, **case.kwargs())
    grads = cb.conv2d_backward(dy, x, weight, **case.kwargs(), algorithm="direct")
    for got, want in zip(grads, expected, strict=True):
        assert_close(got, want)
    dx, dweight, dbias = cb.conv2d_backward(dy, x, weight, **case.kwargs(), algorithm="direct",
                                            input_grad=False)
    assert dx is None
    assert_close(dweight, expected[1])
    assert_close(dbias, expected[2])


@settings(max_examples=30, deadline=None)
@given(direct_cases())
def test_forced_direct_float32_within_1e4_of_the_float64_reference(case):
    x, weight, bias, dy = case.arrays()
    as32 = [array.astype(np.float32) for array in (x, weight, bias, dy)]
    assert_close(cb.conv2d(*as32[:3], **case.kwargs(), algorithm="direct"),
                 reference.conv2d_direct(x, weight, bias, **case.kwargs()), rtol=1e-4)
    grads = cb.conv2d_backward(as32[3], *as32[:2], **case.kwargs(), algorithm="direct")
    expected = reference.conv2d_backward_direct(dy, x, weight, **case.kwargs())
    for got, want in zip(grads, expected, strict=True):
        assert got.dtype == np.float32
        assert_close(got, want, rtol=1e-4)


@pytest.mark.parametrize("where", ["x", "weight"])
def test_direct_backward_with_an_infinite_value_matches_the_reference(where):
    """An inf in the input or weight gives the reference's inf/NaN pattern, not extra NaNs
    from the direct kernels' dropped columns (the engine takes the GEMM path then)."""
    x, weight = np.ones((1, 1, 8, 8), np.float32), np.ones((1, 1, 3, 3), np.float32)
    if where == "x":
        x[0, 0, 0, 7] = np.inf
    else:
        weight[0, 0, 0, 0] = np.inf
    dy = np.ones((1, 1, 6, 6), np.float32)
    expected = reference.conv2d_backward_direct(dy.astype(np.float64), x.astype(np.float64),
                                                weight.astype(np.float64), stride=1, padding=0,
                                                dilation=1, groups=1)
    with np.errstate(invalid="ignore"):
        grads = cb.conv2d_backward(dy, x, weight, algorithm="direct")
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_array_equal(got, want.astype(np.float32))


def test_direct_float32_and_worker_threads(two_threads):
    """float32 within 1e-4 of the float64 reference, through the worker-thread path."""
    rng = np.random.default_rng(6)
    x, weight = rng.standard_normal((5, 1, 12, 10)), rng.standard_normal((6, 1, 5, 5))
    dy = rng.standard_normal((5, 6, 12, 10))
    kwargs = dict(stride=1, padding=2, dilation=1, groups=1)
    expected = [reference.conv2d_direct(x, weight, None, **kwargs),
                *reference.conv2d_backward_direct(dy, x, weight, **kwargs)]
    args = (x.astype(np.float32), weight.astype(np.float32))
    got = [cb.conv2d(*args, padding=2, algorithm="direct"),
           *cb.conv2d_backward(dy.astype(np.float32), *args, padding=2, algorithm="direct")]
    for value, want in zip(got, expected, strict=True):
        assert value.dtype == np.float32
        assert_close(value, want, rtol=1e-4)


def test_auto_algorithm_choice():
    from cnnblas.ops.algorithms import choose_algorithm as choose

    assert choose((8, 64, 56, 56), (64, 64, 3, 3)) == "winograd4x4"
    assert choose((8, 128, 28, 28), (128, 128, 3, 3)) == "winograd4x4"  # K*C = 128**2
    assert choose((8, 128, 28, 28), (256, 128, 3, 3)) == "winograd2x2"  # K*C above 128**2
    assert choose((8, 64, 7, 56), (64, 64, 3, 3)) == "gemm"  # images under 8x8
    assert choose((8, 3, 32, 32), (32, 3, 3, 3)) == "direct"  # 3 channels; 864 weights
    assert choose((8, 7, 32, 32), (32, 7, 3, 3)) == "direct"  # 7 channels
    assert choose((8, 8, 32, 32), (8, 8, 3, 3)) == "winograd4x4"  # 8 channels
    assert choose((8, 1, 28, 28), (6, 1, 5, 5)) == "direct"
    assert choose((8, 6, 14, 14), (16, 6, 5, 5)) == "gemm"  # 2,400 weights
    assert choose((8, 16, 32, 32), (16, 16, 3, 3)) == "winograd4x4"
    assert choose((8, 16, 32, 32), (16, 16, 5, 5)) == "gemm"  # 6,400 weights
    assert choose((8, 1, 12, 12), (4, 1, 5, 5)) == "gemm"  # rows under 4 * (5 - 1) wide
    assert choose((8, 32, 32, 32), (32, 32, 1, 1)) == "gemm"  # 1x1: no im2col to save
    assert choose((8, 3, 32, 32), (32, 3, 3, 3), stride=2) == "gemm"
    assert choose((8, 3, 32, 32), (32, 3, 3, 3), algorithm="gemm") == "gemm"
    assert choose((8, 64, 56, 56), (64, 64, 3, 3), algorithm="direct") == "direct"
    assert choose((8, 64, 56, 56), (64, 64, 3, 3), stride=2) == "gemm"
    assert choose((8, 64, 56, 56), (64, 32, 3, 3), groups=2) == "gemm"
    assert choose((8, 64, 56, 56), (64, 64, 5, 5)) == "gemm"
    assert choose((8, 64, 56, 56), (64, 64, 3, 3), algorithm="gemm") == "gemm"


def test_auto_uses_winograd_on_wide_3x3_layers_within_float32_tolerance():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 9, 10))
    weight = rng.standard_normal((32, 16, 3, 3))
    assert cb.choose_algorithm(x.shape, weight.shape) == "winograd4x4"
    expected = reference.conv2d_direct(x, weight, None, stride=1, padding=1, dilation=1,
                                       groups=1)
    y32 = cb.conv2d(x.astype(np.float32), weight.astype(np.float32), padding=1)
    assert_close(y32, expected, rtol=1e-4)


def test_winograd4x4_float32_on_the_widest_layer_auto_gives_it():
    """K·C = 128², the largest layer auto sends to F(4x4, 3x3): all three passes
    within 1e-4 of the float64 reference on the float32-rounded inputs."""
    rng = np.random.default_rng(7)
    x, weight, dy = (rng.standard_normal(shape).astype(np.float32)
                     for shape in ((2, 128, 8, 8), (128, 128, 3, 3), (2, 128, 8, 8)))
    assert cb.choose_algorithm(x.shape, weight.shape) == "winograd4x4"
    wide = dict(stride=1, padding=1, dilation=1, groups=1)
    expected = [reference.conv2d_direct(x.astype(float), weight.astype(float), None, **wide),
                *reference.conv2d_backward_direct(dy.astype(float), x.astype(float),
                                                  weight.astype(float), **wide)]
    got = [cb.conv2d(x, weight, padding=1), *cb.conv2d_backward(dy, x, weight, padding=1)]
    for value, want in zip(got, expected, strict=True):
        assert value.dtype == np.float32
        assert_close(value, want, rtol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(algorithm="fft"), "algorithm must be one of"),
    (dict(algorithm="winograd2x2", stride=2), "algorithm='winograd2x2' needs a 3x3 kernel"),
    (dict(algorithm="winograd4x4", stride=2), "algorithm='winograd4x4' needs a 3x3 kernel"),
    (dict(algorithm="direct", stride=2), "algorithm='direct' needs stride 1"),
])
def test_bad_algorithm(kwargs, message):
    x = np.zeros((1, 2, 6, 6))
    with pytest.raises(ValueError, match=message):
        cb.conv2d(x, np.zeros((2, 2, 3, 3)), **kwargs)
    with pytest.raises(ValueError, match=message):
        cb.conv2d_backward(np.zeros((1, 2, 4, 4)) if "stride" not in kwargs
                           else np.zeros((1, 2, 2, 2)), x, np.zeros((2, 2, 3, 3)), **kwargs)


@pytest.mark.parametrize("kwargs, weight_shape", [
    (dict(groups=2), (2, 1, 3, 3)),
    (dict(dilation=2), (2, 2, 3, 3)),
    (dict(), (2, 2, 5, 5)),
])
@pytest.mark.parametrize("algorithm", ["winograd2x2", "winograd4x4"])
def test_forced_winograd_refuses_what_it_cannot_compute(kwargs, weight_shape, algorithm):
    with pytest.raises(ValueError, match=f"algorithm='{algorithm}' needs a 3x3 kernel"):
        cb.conv2d(np.zeros((1, 2, 9, 9)), np.zeros(weight_shape), algorithm=algorithm,
                  **kwargs)


def test_check_algorithm_needs_no_input():
    """What a layer checks when it is built, before any image size is known."""
    from cnnblas.ops.algorithms import ALGORITHMS, check_algorithm

    for algorithm in ALGORITHMS:
        assert check_algorithm((64, 64, 3, 3), algorithm=algorithm) is None
    with pytest.raises(ValueError, match="algorithm='winograd4x4' needs a 3x3 kernel"):
        check_algorithm((64, 64, 3, 3), stride=2, algorithm="winograd4x4")
    with pytest.raises(ValueError, match="algorithm='direct' needs stride 1"):
        check_algorithm((64, 64, 3, 3), stride=2, algorithm="direct")
    with pytest.raises(TypeError, match="algorithm must be a str"):
        check_algorithm((64, 64, 3, 3), algorithm=4)


def test_algorithm_must_be_a_string():
    with pytest.raises(TypeError, match="algorithm must be a str"):
        cb.conv2d(np.zeros((1, 2, 6, 6)), np.zeros((2, 2, 3, 3)), algorithm=None)


def test_choose_algorithm_is_public():
    """A user can ask what conv2d will run, from the package or cnnblas.functional."""
    import cnnblas.functional as F
    from cnnblas.ops import algorithms

    assert cb.choose_algorithm is F.choose_algorithm is algorithms.choose_algorithm
    assert "choose_algorithm" in cb.__all__ and "choose_algorithm" in F.__all__
    assert cb.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3)) == "winograd4x4"
    assert cb.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), algorithm="gemm") == "gemm"
    assert "Examples" in cb.choose_algorithm.__doc__
    with pytest.raises(ValueError, match="algorithm must be one of"):
        cb.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), algorithm="winograd")

