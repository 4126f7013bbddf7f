"""The transposed convolution against the scatter loops, finite differences and PyTorch,
and the input-gradient-only pass of every backend against the full backward.

References independent of the engine: ``reference.conv_transpose2d_loops``
(every input pixel scattered into the output, times the kernel), centred
finite differences of it in float64, and ``torch.nn.functional.conv_transpose2d``
with autograd when installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnblas as cb
import cnnblas.functional as F
from cnnblas import reference
from cnnblas.checks import as_pair
from cnnblas.nn.gradcheck import numerical_gradient
from tests.conftest import assert_close, conv_cases


@dataclass(frozen=True)
class TransposeCase:
    """One transposed convolution: x (n, c_in, h, w), weight (c_in, c_out/groups, *kernel)."""

    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple(
            (size - 1) * self.stride[a] - 2 * self.padding[a]
            + self.dilation[a] * (self.kernel[a] - 1) + self.output_padding[a] + 1
            for a, size in enumerate((self.h, self.w))
        )

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    def arrays(self, dtype=np.float64, seed=0):
        """Random x, weight, bias (c_out,) and dy (n, c_out, out_h, out_w)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.n, self.c_in, self.h, self.w)).astype(dtype)
        weight = rng.standard_normal(
            (self.c_in, self.c_out // self.groups, *self.kernel)).astype(dtype)
        bias = rng.standard_normal(self.c_out).astype(dtype)
        dy = rng.standard_normal((self.n, self.c_out, *self.out_size)).astype(dtype)
        return x, weight, bias, dy


@st.composite
def transpose_cases(draw, max_size: int = 5) -> TransposeCase:
    """Every stride 1-3 and dilation 1-2 per axis, every valid output_padding,
    padding 0-2, rectangular kernels, one group, two groups or depthwise."""
    grouping = draw(st.sampled_from(["one", "two", "depthwise"]))
    if grouping == "one":
        groups, c_in, c_out = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif grouping == "two":
        groups, c_in, c_out = 2, 2 * draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2))
    else:
        groups = c_in = draw(st.integers(2, 3))
        c_out = groups * draw(st.integers(1, 2))
    kernel, stride, padding, output_padding, dilation, size = [], [], [], [], [], []
    for _ in range(2):
        kernel.append(draw(st.integers(1, 4)))
        stride.append(draw(st.integers(1, 3)))
        dilation.append(draw(st.integers(1, 2)))
        padding.append(draw(st.integers(0, 2)))
        output_padding.append(draw(st.integers(0, max(stride[-1], dilation[-1]) - 1)))
        # The smallest input whose output has at least one pixel.
        shortfall = 2 * padding[-1] - dilation[-1] * (kernel[-1] - 1) - output_padding[-1]
        smallest = max(1, 1 + -(-shortfall // stride[-1]))
        size.append(draw(st.integers(smallest, smallest + max_size - 1)))
    return TransposeCase(draw(st.integers(1, 2)), c_in, c_out, size[0], size[1], tuple(kernel),
                         tuple(stride), tuple(padding), tuple(output_padding), tuple(dilation),
                         groups)


def _case(n, c_in, c_out, hw, kernel, stride=1, padding=0, output_padding=0, dilation=1,
          groups=1) -> TransposeCase:
    return TransposeCase(n, c_in, c_out, *hw, as_pair(kernel, "k"), as_pair(stride, "s"),
                         as_pair(padding, "p", 0), as_pair(output_padding, "op", 0),
                         as_pair(dilation, "d"), groups)


# Hand-picked edges; each is named for what it covers.
EDGE_CASES = {
    "upsample_2x": _case(2, 3, 2, (4, 5), 4, stride=2, padding=1),
    "output_padding": _case(1, 2, 3, (3, 4), 3, stride=2, padding=1, output_padding=1),
    # output_padding >= stride (dilation > stride): rows beyond every window.
    "output_padding_past_stride": _case(2, 2, 2, (3, 3), 2, stride=1, dilation=2,
                                        output_padding=1),
    "output_padding_past_stride_padded": _case(1, 2, 2, (4, 3), (3, 2), stride=(1, 2),
                                               padding=(2, 1), dilation=(3, 2),
                                               output_padding=(2, 1)),
    "pointwise": _case(2, 4, 6, (3, 4), 1, groups=2),
    "pointwise_dilated_output_padding": _case(1, 3, 2, (3, 3), 1, dilation=2,
                                              output_padding=1),
    "padding_beyond_kernel": _case(2, 2, 3, (5, 6), 3, stride=2, padding=3),
    "depthwise": _case(2, 4, 8, (4, 4), 3, stride=2, padding=1, output_padding=1, groups=4),
    "one_output_pixel": _case(1, 2, 2, (1, 1), 3, padding=1),
}


# --------------------------------------------------------------------------- forward

def check_forward(case: TransposeCase, algorithm: str = "auto") -> None:
    x, weight, bias, _ = case.arrays()
    for b in (None, bias):
        y = cb.conv_transpose2d(x, weight, b, **case.kwargs(), algorithm=algorithm)
        assert y.shape == (case.n, case.c_out, *case.out_size)
        assert_close(y, reference.conv_transpose2d_loops(x, weight, b, **case.kwargs()),
                     err_msg=str(case))


@pytest.mark.parametrize("algorithm", ["auto", "gemm"])
@settings(max_examples=60, deadline=None)
@given(case=transpose_cases())
def test_forward_matches_scatter_loops(case, algorithm):
    check_forward(case, algorithm)


@pytest.mark.parametrize("name", EDGE_CASES)
def test_forward_edge_cases_match_scatter_loops(name):
    check_forward(EDGE_CASES[name])


@pytest.mark.parametrize("algorithm", ["winograd2x2", "winograd4x4", "direct", "gemm"])
@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_every_backend_computes_the_forward(algorithm, padding):
    """3x3, stride 1, one group: every backend's input-gradient pass (the direct
    one hands padding 3 = kernel to the GEMM) gives the loops' answer."""
    check_forward(_case(2, 9, 8, (9, 10), 3, padding=padding), algorithm)


# --------------------------------------------------------------------------- backward

def numeric_gradients(case: TransposeCase, x, weight, bias, dy):
    """Centred differences of sum(conv_transpose2d(x, weight, bias) * dy), in float64
    (the forward itself is checked against the loops above)."""
    def objective() -> float:
        return float(np.sum(cb.conv_transpose2d(x, weight, bias, **case.kwargs()) * dy))
    return tuple(numerical_gradient(objective, array) for array in (x, weight, bias))


@settings(max_examples=15, deadline=None)
@given(case=transpose_cases(max_size=3))
def test_backward_matches_finite_differences(case):
    x, weight, bias, dy = case.arrays()
    grads = cb.conv_transpose2d_backward(dy, x, weight, **case.kwargs())
    for label, got, want in zip(("dx", "dweight", "dbias"), grads,
                                numeric_gradients(case, x, weight, bias, dy), strict=True):
        assert_close(got, want, rtol=1e-7, err_msg=f"{label}: {case}")


@pytest.mark.parametrize("name", EDGE_CASES)
def test_backward_edge_cases_match_finite_differences(name):
    case = EDGE_CASES[name]
    x, weight, bias, dy = case.arrays()
    grads = cb.conv_transpose2d_backward(dy, x, weight, **case.kwargs())
    for label, got, want in zip(("dx", "dweight", "dbias"), grads,
                                numeric_gradients(case, x, weight, bias, dy), strict=True):
        assert_close(got, want, rtol=1e-7, err_msg=f"{label}: {name}")


@pytest.mark.parametrize("algorithm", ["winograd2x2", "winograd4x4", "direct", "gemm"])
def test_every_backend_computes_the_backward(algorithm):
    case = _case(2, 9, 8, (9, 10), 3, padding=1)
    x, weight, _, dy = case.arrays()
    got = cb.conv_transpose2d_backward(dy, x, weight, **case.kwargs(), algorithm=algorithm)
    want = cb.conv_transpose2d_backward(dy, x, weight, **case.kwargs(), algorithm="gemm")
    for label, a, b in zip(("dx", "dweight", "dbias"), got, want, strict=True):
        assert_close(a, b, rtol=1e-10, err_msg=label)


def test_backward_without_input_grad():
    case = EDGE_CASES["upsample_2x"]
    x, weight, _, dy = case.arrays()
    dx, dweight, dbias = cb.conv_transpose2d_backward(dy, x, weight, **case.kwargs(),
                                                      input_grad=False)
    full = cb.conv_transpose2d_backward(dy, x, weight, **case.kwargs())
    assert dx is None
    np.testing.assert_array_equal(dweight, full[1])
    np.testing.assert_array_equal(dbias, full[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_worker_threads_give_the_serial_result(two_threads, dtype):
    case = _case(4, 6, 4, (7, 6), 3, stride=2, padding=1, output_padding=1, groups=2)
    x, weight, bias, dy = case.arrays(dtype)
    y = cb.conv_transpose2d(x, weight, bias, **case.kwargs())
    grads = cb.conv_transpose2d_backward(dy, x, weight, **case.kwargs())
    assert y.dtype == dtype and all(g.dtype == dtype for g in grads)
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    assert_close(y, reference.conv_transpose2d_loops(x, weight, bias, **case.kwargs()), rtol)
    for got, want in zip(grads, numeric_gradients(case, *case.arrays()), strict=True):
        assert_close(got, want, rtol=max(rtol, 1e-7))


# --------------------------------------------------------------------------- PyTorch

def torch_forward_backward(torch, case: TransposeCase, x, weight, bias, dy):
    """y and (dx, dweight, dbias) from torch's conv_transpose2d and autograd."""
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, **case.kwargs())
    ty.backward(torch.from_numpy(dy))
    return ty.detach().numpy(), (tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@settings(max_examples=60, deadline=None)
@given(case=transpose_cases())
def test_forward_and_backward_match_torch(case, dtype, rtol):
    torch = pytest.importorskip("torch")
    x, weight, bias, dy = case.arrays(dtype)
    want_y, want_grads = torch_forward_backward(torch, case, x, weight, bias, dy)
    assert_close(cb.conv_transpose2d(x, weight, bias, **case.kwargs()), want_y, rtol,
                 err_msg=str(case))
    grads = cb.conv_transpose2d_backward(dy, x, weight, **case.kwargs())
    for label, got, want in zip(("dx", "dweight", "dbias"), grads, want_grads, strict=True):
        assert got.dtype == dtype
        assert_close(got, want, rtol, err_msg=f"{label}: {case}")


@pytest.mark.torch
@pytest.mark.parametrize("name", EDGE_CASES)
def test_edge_cases_match_torch(torch, name):
    case = EDGE_CASES[name]
    x, weight, bias, dy = case.arrays()
    want_y, want_grads = torch_forward_backward(torch, case, x, weight, bias, dy)
    assert_close(cb.conv_transpose2d(x, weight, bias, **case.kwargs()), want_y)
    grads = cb.conv_transpose2d_backward(dy, x, weight, **case.kwargs())
    for got, want in zip(grads, want_grads, strict=True):
        assert_close(got, want)


# --------------------------------------------------------------------------- conv2d_input_grad

@pytest.mark.parametrize("algorithm", ["auto", "gemm"])
@settings(max_examples=40, deadline=None)
@given(case=conv_cases())
def test_conv2d_input_grad_is_the_backward_dx(case, algorithm):
    x, weight, _, dy = case.arrays()
    want = cb.conv2d_backward(dy, x, weight, **case.kwargs(), algorithm="gemm")[0]
    got = F.conv2d_input_grad(dy, weight, x.shape[2:], **case.kwargs(), algorithm=algorithm)
    assert_close(got, want, err_msg=str(case))


@pytest.mark.parametrize("algorithm", ["winograd2x2", "winograd4x4", "direct"])
@pytest.mark.parametrize("padding", [0, ((1, 2), (0, 1)), "same", 3])
def test_conv2d_input_grad_of_every_backend(algorithm, padding, two_threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 8, 9, 11))
    weight = rng.standard_normal((10, 8, 3, 3))
    dy = rng.standard_normal(cb.conv2d(x, weight, padding=padding).shape)
    want = cb.conv2d_backward(dy, x, weight, padding=padding, algorithm="gemm")[0]
    got = F.conv2d_input_grad(dy, weight, (9, 11), padding=padding, algorithm=algorithm)
    assert_close(got, want, err_msg=f"{algorithm}, padding {padding!r}")


def test_conv2d_input_grad_checks_dy_against_the_input_size():
    weight = np.zeros((4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 4, 5, 5\), got \(2, 4, 6, 6\)"):
        F.conv2d_input_grad(np.zeros((2, 4, 6, 6)), weight, 7)
    with pytest.raises(ValueError, match="output channels"):
        F.conv2d_input_grad(np.zeros((2, 4, 5, 5)), weight, 7, groups=3)


# --------------------------------------------------------------------------- bad input

X = np.zeros((2, 4, 5, 5))
W = np.zeros((4, 3, 3, 3))
BAD_ARGUMENTS = [
    (dict(output_padding=2, stride=2), ValueError,
     r"output_padding \(2, 2\) must be smaller than either stride \(2, 2\) or dilation \(1, 1\)"),
    (dict(output_padding=(0, 1)), ValueError, r"output_padding \(0, 1\) must be smaller"),
    (dict(output_padding=-1, stride=2), ValueError, "output_padding must be >= 0"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(dilation=(1, 0)), ValueError, "dilation must be >= 1"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding="same"), TypeError, "padding must be an int or a pair of ints"),
    (dict(padding=4), ValueError, r"output size -1x-1 is not positive"),
    (dict(groups=3), ValueError, r"input channels \(4\) must be divisible by groups \(3\)"),
    (dict(groups=0), ValueError, "groups must be an int >= 1"),
    (dict(groups=1.0), TypeError, "groups must be an int"),
    (dict(x=np.zeros((2, 3, 5, 5))), ValueError, "expects x with 4 channels; x has 3"),
    (dict(x=np.zeros((4, 5, 5))), ValueError, "x must have rank 4"),
    (dict(weight=np.zeros((4, 3, 3))), ValueError, "weight must have rank 4"),
    (dict(weight=np.zeros((4, 3, 3, 3), np.float32)), TypeError,
     r"weight must have the same dtype as the input \(float64\), got float32"),
    (dict(x=np.zeros((2, 4, 5, 5), np.int64)), TypeError, "x must have dtype float32 or"),
    (dict(bias=np.zeros(4)), ValueError, r"bias must have shape \(3,\), got \(4,\)"),
    (dict(algorithm="winograd2x2", stride=2), ValueError, "algorithm='winograd2x2' needs"),
]


@pytest.mark.parametrize("arguments, error, message", BAD_ARGUMENTS)
def test_bad_arguments_name_the_argument_and_values(arguments, error, message):
    arguments = {"x": X, "weight": W, **arguments}
    with pytest.raises(error, match=message):
        cb.conv_transpose2d(**arguments)
    if "bias" not in arguments:
        dy = np.zeros((2, 3, 11, 11) if arguments.get("stride") == 2 else (2, 3, 7, 7))
        with pytest.raises(error, match=message):
            cb.conv_transpose2d_backward(dy, **arguments)


def test_backward_checks_dy():
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 3, 7, 7\), got \(2, 3, 6, 7\)"):
        cb.conv_transpose2d_backward(np.zeros((2, 3, 6, 7)), X, W)
    with pytest.raises(TypeError, match="dy must have the same dtype"):
        cb.conv_transpose2d_backward(np.zeros((2, 3, 7, 7), np.float32), X, W)
