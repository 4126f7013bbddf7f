"""The reference convolutions check each other, PyTorch and the tutorial's tables.

Four independent implementations (plain loops, im2col columns and ``@``, Numba
direct loops, the scipy.signal formulas of the derivations) are compared on Hypothesis-drawn
geometries: rectangular kernels, stride 1..3, dilation 1..2, asymmetric
padding, groups up to depthwise, and sizes where ``padded - extent`` is not a
multiple of the stride. PyTorch (when installed) is a fourth, external oracle;
it only has symmetric padding, so it is fed an ``np.pad``-ed input instead.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cnnblas import reference as ref

F64 = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# --------------------------------------------------------------------------- random cases

class Case:
    """One drawn convolution: arrays in float64 plus normalised geometry."""

    def __init__(self, images, groups, group_channels, group_out, size, kernel, stride,
                 padding, dilation, seed):
        rng = np.random.default_rng(seed)
        channels, out_channels = groups * group_channels, groups * group_out
        self.x = rng.standard_normal((images, channels) + size)
        self.weight = rng.standard_normal((out_channels, group_channels) + kernel)
        self.bias = rng.standard_normal(out_channels)
        self.geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.kernel = kernel
        out = tuple(
            (size[a] + sum(padding[a]) - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
            for a in range(2)
        )
        self.out_shape = (images, out_channels) + out
        self.dy = rng.standard_normal(self.out_shape)

    @property
    def window(self):
        """Geometry without ``groups``, for im2col/col2im."""
        return {k: v for k, v in self.geometry.items() if k != "groups"}

    def __repr__(self):
        return f"Case(x={self.x.shape}, weight={self.weight.shape}, {self.geometry})"


@st.composite
def cases(draw):
    groups = draw(st.sampled_from([1, 2, 3, 4]))
    group_channels = draw(st.integers(1, max(1, 4 // groups)))  # groups=C is depthwise
    group_out = draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    size = tuple(
        draw(st.integers(max(1, dilation[a] * (kernel[a] - 1) + 1 - sum(padding[a])), 9))
        for a in range(2)
    )
    return Case(draw(st.integers(1, 2)), groups, group_channels, group_out, size, kernel,
                stride, padding, dilation, draw(st.integers(0, 2**32 - 1)))


# 8 rows, 3x3 kernel, stride 3: rows 6 and 7 are read by no window; columns: 7 + 1 + 2 - 4
# = 6, not a multiple of 4. Grouped, dilated and asymmetric on top.
UNEVEN = Case(2, 2, 2, 2, (8, 7), (3, 2), (3, 4), ((0, 0), (1, 2)), (1, 2), 0)
DEPTHWISE = Case(1, 4, 1, 1, (9, 9), (4, 3), (2, 3), ((2, 1), (0, 2)), (2, 1), 1)


def _padded(case):
    return np.pad(case.x, ((0, 0), (0, 0)) + case.geometry["padding"])


def _crop(padded, case):
    (top, _), (left, _) = case.geometry["padding"]
    h, w = case.x.shape[2:]
    return padded[:, :, top:top + h, left:left + w]


# --------------------------------------------------------------------------- forward

@settings(max_examples=100, deadline=None)
@given(cases())
@example(UNEVEN)
@example(DEPTHWISE)
def test_forward_references_agree(case):
    loops = ref.conv2d_loops(case.x, case.weight, case.bias, **case.geometry)
    assert loops.shape == case.out_shape
    np.testing.assert_allclose(
        ref.conv2d_direct(case.x, case.weight, case.bias, **case.geometry), loops, **F64)
    np.testing.assert_allclose(
        ref.conv2d_scipy(case.x, case.weight, case.bias, **case.geometry), loops, **F64)
    np.testing.assert_allclose(
        ref.conv2d_im2col(case.x, case.weight, case.bias, **case.geometry), loops, **F64)


@pytest.mark.torch
@settings(max_examples=60, deadline=None)
@given(cases())
@example(UNEVEN)
@example(DEPTHWISE)
def test_forward_and_gradients_match_torch(torch, case):
    g = case.geometry
    xpad = torch.tensor(_padded(case), requires_grad=True)
    weight = torch.tensor(case.weight, requires_grad=True)
    bias = torch.tensor(case.bias, requires_grad=True)
    y = torch.nn.functional.conv2d(xpad, weight, bias, stride=g["stride"],
                                   dilation=g["dilation"], groups=g["groups"])
    y.backward(torch.tensor(case.dy))
    expected = (_crop(xpad.grad.numpy(), case), weight.grad.numpy(), bias.grad.numpy())

    np.testing.assert_allclose(
        ref.conv2d_loops(case.x, case.weight, case.bias, **g), y.detach().numpy(), **F64)
    for backward in (ref.conv2d_backward_direct, ref.conv2d_backward_scipy,
                     ref.conv2d_backward_im2col):
        got = backward(case.dy, case.x, case.weight, **g)
        for name, a, b in zip(("dx", "dweight", "dbias"), got, expected, strict=True):
            np.testing.assert_allclose(a, b, **F64, err_msg=f"{backward.__name__} {name}")


# --------------------------------------------------------------------------- backward

@settings(max_examples=100, deadline=None)
@given(cases())
@example(UNEVEN)
@example(DEPTHWISE)
def test_backward_references_agree_and_are_adjoint_to_loops(case):
    g = case.geometry
    dx, dweight, dbias = ref.conv2d_backward_direct(case.dy, case.x, case.weight, **g)
    for other in (ref.conv2d_backward_scipy, ref.conv2d_backward_im2col):
        for a, b in zip((dx, dweight, dbias), other(case.dy, case.x, case.weight, **g),
                        strict=True):
            np.testing.assert_allclose(a, b, **F64, err_msg=other.__name__)
    assert dx.shape == case.x.shape and dweight.shape == case.weight.shape
    # The convolution is bilinear in (x, w) and affine in b, so the gradients are
    # determined by the loops' forward: <y(x, w), dy> = <x, dx> = <w, dweight>.
    y = ref.conv2d_loops(case.x, case.weight, **g)
    y_bias = ref.conv2d_loops(case.x, case.weight, case.bias, **g)
    inner = np.vdot(y, case.dy)
    np.testing.assert_allclose(np.vdot(case.x, dx), inner, **F64)
    np.testing.assert_allclose(np.vdot(case.weight, dweight), inner, **F64)
    np.testing.assert_allclose(np.vdot(case.bias, dbias), np.vdot(y_bias - y, case.dy), **F64)


@pytest.mark.parametrize("backward", [ref.conv2d_backward_direct, ref.conv2d_backward_scipy,
                                      ref.conv2d_backward_im2col])
def test_pixels_no_window_reads_get_zero_gradient(backward):
    # 8 rows, kernel 3, stride 3: windows start at rows 0 and 3 and never reach rows 6, 7.
    x = np.ones((1, 1, 8, 8))
    weight = np.ones((1, 1, 3, 3))
    dy = np.ones((1, 1, 2, 2))
    dx, dweight, _ = backward(dy, x, weight, stride=3, padding=0, dilation=1, groups=1)
    np.testing.assert_array_equal(dx[0, 0, 6:, :], 0)
    np.testing.assert_array_equal(dx[0, 0, :, 6:], 0)
    np.testing.assert_array_equal(dx[0, 0, :6, :6], 1)
    np.testing.assert_array_equal(dweight, 4)


def test_backward_direct_matches_finite_differences():
    rng = np.random.default_rng(7)
    g = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
    x = rng.standard_normal((2, 4, 5, 6))
    weight = rng.standard_normal((4, 2, 2, 3))
    bias = rng.standard_normal(4)
    dy = rng.standard_normal(ref.conv2d_direct(x, weight, bias, **g).shape)
    dx, dweight, dbias = ref.conv2d_backward_direct(dy, x, weight, **g)

    def loss(x_, w_, b_):
        return np.vdot(ref.conv2d_direct(x_, w_, b_, **g), dy)

    eps = 1e-6
    for array, grad, slot in ((x, dx, 0), (weight, dweight, 1), (bias, dbias, 2)):
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            args = [x, weight, bias]
            plus, minus = array.copy(), array.copy()
            plus[index] += eps
            minus[index] -= eps
            args[slot] = plus
            up = loss(*args)
            args[slot] = minus
            numeric[index] = (up - loss(*args)) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- im2col / col2im

@settings(max_examples=60, deadline=None)
@given(cases())
@example(UNEVEN)
def test_im2col_col2im_loops_are_adjoint_and_give_the_convolution(case):
    cols = ref.im2col_loops(case.x, case.kernel, **case.window)
    c, kh, kw = case.x.shape[1], *case.kernel
    assert cols.shape == (case.x.shape[0], c * kh * kw, case.out_shape[2] * case.out_shape[3])
    other = np.random.default_rng(0).standard_normal(cols.shape)
    folded = ref.col2im_loops(other, case.x.shape[2:], case.kernel, **case.window)
    np.testing.assert_allclose(np.vdot(cols, other), np.vdot(case.x, folded), **F64)
    # groups=1: W.reshape(K, C*kh*kw) @ cols is the convolution (DESIGN.md's forward GEMM).
    weight = np.random.default_rng(1).standard_normal((3, c, kh, kw))
    y = np.einsum("kr,nrl->nkl", weight.reshape(3, -1), cols)
    expected = ref.conv2d_loops(case.x, weight, **case.window)
    np.testing.assert_allclose(y.reshape(expected.shape), expected, **F64)


@pytest.mark.torch
@settings(max_examples=60, deadline=None)
@given(cases())
@example(UNEVEN)
def test_im2col_col2im_loops_match_unfold_fold(torch, case):
    functional = torch.nn.functional
    window = dict(stride=case.window["stride"], dilation=case.window["dilation"])
    cols = ref.im2col_loops(case.x, case.kernel, **case.window)
    expected = functional.unfold(torch.tensor(_padded(case)), case.kernel, **window)
    np.testing.assert_array_equal(cols, expected.numpy())

    padded_size = _padded(case).shape[2:]
    folded = functional.fold(torch.tensor(cols), padded_size, case.kernel, **window)
    np.testing.assert_allclose(
        ref.col2im_loops(cols, case.x.shape[2:], case.kernel, **case.window),
        _crop(folded.numpy(), case), **F64)


def test_im2col_loops_tutorial_table_3_10():
    # "A beginner tutorial for CNN", Table 3.10: im2col of a 3x3 image for a 2x2
    # kernel. The tutorial prints Octave's layout: each column is one window read
    # column-major, windows in column-major order. Our rows are taps (i, j) and our
    # columns windows (oh, ow), both row-major, so its entry [i + 2j, oh + 2ow]
    # is our entry [2i + j, 2oh + ow].
    image = np.array([[16, 24, 32], [47, 18, 26], [68, 12, 9]], dtype=np.float64)
    octave = np.array([[16, 47, 24, 18],
                       [47, 68, 18, 12],
                       [24, 18, 32, 26],
                       [18, 12, 26, 9]], dtype=np.float64)
    expected = np.empty((4, 4))
    for i, j, oh, ow in np.ndindex(2, 2, 2, 2):
        expected[2 * i + j, 2 * oh + ow] = octave[i + 2 * j, oh + 2 * ow]
    cols = ref.im2col_loops(image[None, None], 2)
    np.testing.assert_array_equal(cols[0], expected)
    np.testing.assert_array_equal(
        ref.col2im_loops(cols, 3, 2), image[None, None] * [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


# --------------------------------------------------------------------------- the tutorial's numbers

IMAGE = [[16, 24, 32], [47, 18, 26], [68, 12, 9]]
# Tables 3.13 and 3.19: a 3-channel input and two 3-channel 2x2 kernels.
IMAGE3 = np.array([IMAGE, [[26, 57, 43], [24, 21, 12], [2, 11, 19]],
                   [[18, 47, 21], [4, 6, 12], [81, 22, 13]]], dtype=np.float64)[None]
KERNELS3 = np.array([[[[0, -1], [1, 0]], [[5, 4], [3, 2]], [[16, 24], [68, -2]]],
                     [[[60, 22], [32, 18]], [[35, 46], [7, 23]], [[78, 81], [20, 42]]]],
                    dtype=np.float64)
VALID = dict(stride=1, padding=0, dilation=1, groups=1)
FORWARDS = [ref.conv2d_loops, ref.conv2d_im2col, ref.conv2d_direct, ref.conv2d_scipy]
BACKWARDS = [ref.conv2d_backward_im2col, ref.conv2d_backward_direct, ref.conv2d_backward_scipy]


@pytest.mark.parametrize("conv", FORWARDS)
def test_tutorial_forward_tables(conv):
    """Tables 3.5, 3.7, 3.8 and 3.13 of "A beginner tutorial for CNN"."""
    x = np.array(IMAGE, dtype=np.float64)[None, None]
    weight = np.array([[[[0, -1], [1, 0]]], [[[5, 4], [3, 2]]]], dtype=np.float64)
    # Table 3.5, and Table 3.8 which adds the second kernel.
    np.testing.assert_array_equal(conv(x, weight[:1], **VALID), [[[[23, -14], [50, -14]]]])
    np.testing.assert_array_equal(
        conv(x, weight, **VALID), [[[[23, -14], [50, -14]], [[353, 354], [535, 248]]]])
    # Table 3.7: bias 1.
    np.testing.assert_array_equal(
        conv(x, weight[:1], np.ones(1), **VALID), [[[[24, -13], [51, -13]]]])
    # Table 3.13: three channels, two kernels.
    np.testing.assert_array_equal(
        conv(IMAGE3, KERNELS3, **VALID),
        [[[[2171, 2170], [5954, 2064]], [[13042, 13575], [11023, 6425]]]])


@pytest.mark.parametrize("backward", BACKWARDS)
def test_tutorial_backward_tables(backward):
    """Tables 3.14, 3.17 and 3.19 of "A beginner tutorial for CNN".

    Table 3.19 prints the kernels already rotated by 180° (it feeds them to a
    correlation of the padded error); rotated back they are Table 3.13's. Table
    3.15 repeats 3.17 with a sign misprint in one entry, and Table 3.20's printed
    weight gradient does not follow from its inputs, so neither is used.
    """
    # Table 3.14: the bias gradient sums each channel of the error.
    dy = np.array([[[0.5, 0.3, 0.13], [0.2, 0.65, 0.18], [0.7, 0.23, 0.42]],
                   [[0.75, 0.12, 0.68], [0.08, 0.04, 0.15], [0.21, 0.24, 0.34]]])[None]
    _, _, dbias = backward(dy, np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 2, 2)), **VALID)
    np.testing.assert_allclose(dbias, [3.31, 2.61], rtol=1e-12)

    # Table 3.17: weight gradient of the 3x3 image for a two-channel error.
    x = np.array(IMAGE, dtype=np.float64)[None, None]
    dy = np.array([[[0, 0], [-2.94504954e-05, 0]], [[0, 0], [6.39539432e-06, 0]]])[None]
    _, dweight, _ = backward(dy, x, np.zeros((2, 1, 2, 2)), **VALID)
    expected = [[[[-1.38417328e-03, -5.30108917e-04], [-2.00263369e-03, -3.53405945e-04]]],
                [[[3.00583533e-04, 1.15117098e-04], [4.34886814e-04, 7.67447318e-05]]]]
    np.testing.assert_allclose(dweight, expected, rtol=1e-8)

    # Table 3.19: input gradient of Table 3.13's layer.
    dy = np.array([[[0.1678, 0.098], [0.002, 0.246]], [[0.5, 0.67], [0.21, 0.487]]])[None]
    dx, _, _ = backward(dy, IMAGE3, KERNELS3, **VALID)
    expected = [[[30, 51.0322, 14.642], [28.7678, 64.376, 22.528], [6.722, 19.61, 8.766]],
                [[18.339, 47.6112, 31.212], [11.3634, 44.7626, 38.992], [1.476, 8.981, 11.693]],
                [[41.6848, 98.3552, 56.622], [37.8224, 99.7084, 73.295], [4.336, 35.284, 19.962]]]
    np.testing.assert_allclose(dx, [expected], rtol=1e-12)


# --------------------------------------------------------------------------- dtypes and arguments

@pytest.mark.parametrize("name", ["loops", "im2col", "direct", "scipy"])
def test_float32_in_float32_out(name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 6, 7)).astype(np.float32)
    weight = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    g = dict(stride=(1, 2), padding=((0, 1), (1, 0)), dilation=(2, 1), groups=2)
    y = getattr(ref, f"conv2d_{name}")(x, weight, bias, **g)
    y64 = ref.conv2d_loops(x.astype(np.float64), weight.astype(np.float64),
                           bias.astype(np.float64), **g)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-5)
    if name != "loops":
        dy = rng.standard_normal(y.shape).astype(np.float32)
        grads = getattr(ref, f"conv2d_backward_{name}")(dy, x, weight, **g)
        grads64 = ref.conv2d_backward_scipy(dy.astype(np.float64), x.astype(np.float64),
                                            weight.astype(np.float64), **g)
        for a, b in zip(grads, grads64, strict=True):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    cols = ref.im2col_loops(x, (3, 2), stride=2, padding=1, dilation=1)
    assert cols.dtype == np.float32
    assert ref.col2im_loops(cols, (6, 7), (3, 2), stride=2, padding=1).dtype == np.float32


@pytest.mark.parametrize("conv", FORWARDS)
def test_int_shorthands_mean_every_axis_and_side(conv):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 7, 6))
    weight = rng.standard_normal((3, 2, 3, 3))
    short = conv(x, weight, stride=2, padding=1, dilation=2, groups=1)
    full = conv(x, weight, stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(2, 2), groups=1)
    np.testing.assert_array_equal(short, full)
    np.testing.assert_array_equal(
        conv(x, weight, stride=1, padding=(1, 0), dilation=1, groups=1),
        conv(x, weight, stride=1, padding=((1, 1), (0, 0)), dilation=1, groups=1))


@pytest.mark.parametrize("conv", FORWARDS)
def test_bad_forward_arguments_raise_value_error(conv):
    x = np.zeros((1, 4, 5, 5))
    weight = np.zeros((2, 2, 3, 3))
    with pytest.raises(ValueError, match="rank"):
        conv(x[0], weight, **VALID)
    with pytest.raises(ValueError, match="rank"):
        conv(x, weight[0], **VALID)
    with pytest.raises(ValueError, match="bias"):
        conv(x, weight, np.zeros(3), stride=1, padding=0, dilation=1, groups=2)
    with pytest.raises(ValueError, match="groups"):
        conv(x, weight, **VALID)  # weight has 2 channels per group, x has 4
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv(x, weight, stride=1, padding=0, dilation=3, groups=2)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_bad_backward_arguments_raise_value_error(backward):
    x = np.zeros((1, 2, 5, 5))
    weight = np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match="dy must have shape"):
        backward(np.zeros((1, 3, 4, 4)), x, weight, **VALID)
    with pytest.raises(ValueError, match="rank"):
        backward(np.zeros((3, 3, 3)), x, weight, **VALID)


def test_bad_im2col_arguments_raise_value_error():
    with pytest.raises(ValueError, match="rank"):
        ref.im2col_loops(np.zeros((2, 5, 5)), 3)
    with pytest.raises(ValueError, match="cols must have shape"):
        ref.col2im_loops(np.zeros((1, 10, 9)), (5, 5), 3)
    with pytest.raises(ValueError, match="rank"):
        ref.col2im_loops(np.zeros((10, 9)), (5, 5), 3)


def test_im2col_twin_writes_out_the_three_gemms():
    """conv2d_im2col / conv2d_backward_im2col are, per image and group, the GEMMs
    of DESIGN.md over im2col_loops columns (here one group, one image, by hand)."""
    rng = np.random.default_rng(8)
    x, weight = rng.standard_normal((1, 2, 5, 6)), rng.standard_normal((3, 2, 2, 3))
    g = dict(stride=(2, 1), padding=((1, 0), (0, 1)), dilation=(1, 2), groups=1)
    window = {k: v for k, v in g.items() if k != "groups"}
    cols = ref.im2col_loops(x, (2, 3), **window)[0]
    wm = weight.reshape(3, -1)
    y = ref.conv2d_im2col(x, weight, **g)
    np.testing.assert_allclose(y.reshape(3, -1), wm @ cols, **F64)
    dy = rng.standard_normal(y.shape)
    dx, dweight, dbias = ref.conv2d_backward_im2col(dy, x, weight, **g)
    dy_matrix = dy.reshape(3, -1)
    np.testing.assert_allclose(dweight.reshape(3, -1), dy_matrix @ cols.T, **F64)
    np.testing.assert_allclose(
        dx, ref.col2im_loops((wm.T @ dy_matrix)[None], (5, 6), (2, 3), **window), **F64)
    np.testing.assert_allclose(dbias, dy.sum(axis=(0, 2, 3)), **F64)


def test_references_take_an_empty_batch():
    """The references work out their own geometry and accept N = 0 (the engine refuses it)."""
    weight = np.ones((3, 2, 3, 3))
    for padding in (0, "same", ((1, 0), (2, 1))):
        y = ref.conv2d_loops(np.zeros((0, 2, 5, 6)), weight, padding=padding)
        full = ref.conv2d_loops(np.zeros((1, 2, 5, 6)), weight, padding=padding)
        assert y.shape == (0,) + full.shape[1:]
