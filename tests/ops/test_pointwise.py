"""1x1 unpadded convolutions of any stride (cnnblas.ops.pointwise) against the references.

The pointwise path subsamples the input by the stride and spreads the input
gradient back to the strided positions; sizes where the last kept row or
column is ``(H - 1) // stride * stride`` (not a multiple of the stride away
from the end) are where an off-by-one would show.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnblas as cb
from cnnblas import reference
from cnnblas.checks import conv_geometry
from cnnblas.functional import conv2d_input_grad
from cnnblas.ops import pointwise, workspace
from tests.conftest import ConvCase, assert_close

UNPADDED = ((0, 0), (0, 0))


@st.composite
def pointwise_cases(draw, max_size: int = 11) -> ConvCase:
    """1x1, unpadded: any stride (up to past the image), dilation, groups; odd sizes."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 4))
    k = groups * draw(st.integers(1, 4))
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return ConvCase(draw(st.integers(1, 4)), c, h, w, k, (1, 1), stride, UNPADDED, dilation,
                    groups)


def check_against_loops(case: ConvCase, dtype, rtol) -> None:
    """conv2d, conv2d_backward and conv2d_input_grad against the reference loops
    (forward) and direct loops (gradients), computed in float64."""
    x, weight, bias, dy = case.arrays()
    want_y = reference.conv2d_loops(x, weight, bias, **case.kwargs())
    want_grads = reference.conv2d_backward_direct(dy, x, weight, **case.kwargs())
    x, weight, bias, dy = (a.astype(dtype) for a in (x, weight, bias, dy))
    y = cb.conv2d(x, weight, bias, **case.kwargs(), algorithm="gemm")
    assert y.dtype == dtype
    assert_close(y, want_y, rtol, err_msg=str(case))
    grads = cb.conv2d_backward(dy, x, weight, **case.kwargs(), algorithm="gemm")
    for label, got, want in zip(("dx", "dweight", "dbias"), grads, want_grads, strict=True):
        assert got.dtype == dtype
        assert_close(got, want, rtol, err_msg=f"{label}: {case}")
    dx_alone = conv2d_input_grad(dy, weight, (case.h, case.w), **case.kwargs(),
                                 algorithm="gemm")
    assert_close(dx_alone, want_grads[0], rtol, err_msg=f"input_grad: {case}")


def test_applies_to_1x1_unpadded_windows_of_any_stride_and_dilation():
    def geometry(kernel, stride, padding, dilation=1):
        return conv_geometry((9, 7), kernel, stride, padding, dilation)

    assert pointwise.applies(geometry(1, 1, 0))
    assert pointwise.applies(geometry(1, (2, 3), 0, dilation=2))
    assert not pointwise.applies(geometry(1, 2, 1))
    assert not pointwise.applies(geometry(1, 2, ((0, 0), (0, 1))))
    assert not pointwise.applies(geometry((1, 3), 2, 0))
    assert not pointwise.applies(geometry(3, 1, 0))


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@settings(max_examples=60, deadline=None)
@given(case=pointwise_cases())
def test_matches_reference_loops(case, dtype, rtol):
    check_against_loops(case, dtype, rtol)


@pytest.mark.parametrize("limit", [1, 3_000])
@pytest.mark.parametrize("case", [
    ConvCase(7, 6, 9, 11, 4, (1, 1), (2, 3), UNPADDED, (1, 1), 2),
    ConvCase(5, 4, 8, 8, 6, (1, 1), (2, 2), UNPADDED, (2, 1), 1),
    ConvCase(6, 3, 5, 13, 3, (1, 1), (4, 1), UNPADDED, (1, 1), 3),
    ConvCase(5, 4, 6, 7, 6, (1, 1), (1, 1), UNPADDED, (1, 1), 2),
])
def test_strided_chunks_match_reference_loops(case, limit):
    """A small workspace splits the strided path into chunks of one or a few
    images: each chunk's subsample, weight-gradient sum and spread-back must
    land on its own images."""
    old = cb.get_workspace_limit()
    try:
        cb.set_workspace_limit(limit)
        check_against_loops(case, np.float64, 1e-12)
    finally:
        cb.set_workspace_limit(old)


def test_weight_gradient_products_stay_within_the_workspace_budget():
    """dWᵀ sums per-image products made by one stacked matmul: at stride 1 (no
    chunks) the products of a whole range would take N·C·K elements; they are
    made in blocks that fit the workspace budget instead."""
    case = ConvCase(32, 64, 2, 2, 64, (1, 1), (1, 1), UNPADDED, (1, 1), 1)
    x, weight, _, dy = case.arrays()
    old = cb.get_workspace_limit()
    try:
        cb.set_workspace_limit(64 * 2**10)  # one image's products: 64*64*8 bytes
        grads = cb.conv2d_backward(dy, x, weight, **case.kwargs(), algorithm="gemm")
        assert workspace.held_bytes() <= 64 * 2**10
    finally:
        cb.set_workspace_limit(old)
    for got, want in zip(grads, reference.conv2d_backward_direct(dy, x, weight, **case.kwargs()),
                         strict=True):
        assert_close(got, want, 1e-12)


def test_worker_threads_match_reference_loops(two_threads):
    """Each worker subsamples its own range of images into its own workspace."""
    check_against_loops(ConvCase(9, 8, 13, 10, 6, (1, 1), (2, 3), UNPADDED, (1, 1), 2),
                        np.float64, 1e-12)
    check_against_loops(ConvCase(8, 16, 16, 16, 32, (1, 1), (2, 2), UNPADDED, (1, 1), 1),
                        np.float32, 1e-5)


def test_input_gradient_is_zero_off_the_strided_positions():
    case = ConvCase(2, 3, 7, 8, 4, (1, 1), (3, 2), UNPADDED, (1, 1), 1)
    x, weight, _, dy = case.arrays()
    dx = cb.conv2d_backward(dy, x, weight, **case.kwargs())[0]
    kept = np.zeros(dx.shape, bool)
    kept[:, :, ::3, ::2] = True
    assert np.count_nonzero(dx[~kept]) == 0
    assert np.all(dx[kept] != 0)


@pytest.mark.torch
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@settings(max_examples=40, deadline=None)
@given(case=pointwise_cases(max_size=9))
def test_matches_torch(case, dtype, rtol):
    torch = pytest.importorskip("torch")
    x, weight, bias, dy = (a.astype(dtype) for a in case.arrays())
    args = dict(stride=case.stride, dilation=case.dilation, groups=case.groups)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    yt = torch.nn.functional.conv2d(xt, wt, bt, **args)
    yt.backward(torch.from_numpy(dy))
    assert_close(cb.conv2d(x, weight, bias, **args), yt.detach().numpy(), rtol)
    for got, want in zip(cb.conv2d_backward(dy, x, weight, **args),
                         (xt.grad, wt.grad, bt.grad), strict=True):
        assert_close(got, want.numpy(), rtol, err_msg=str(case))


@pytest.mark.torch
@pytest.mark.parametrize("stride, output_padding", [(2, 0), (2, 1), ((3, 2), (2, 1))])
def test_strided_1x1_transposed_convolution_matches_torch(torch, stride, output_padding):
    """The transposed convolution's forward is this path's input gradient, its
    input gradient this path's forward."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5, 6))
    weight = rng.standard_normal((4, 3, 1, 1))
    bias = rng.standard_normal(6)
    args = dict(stride=stride, output_padding=output_padding, groups=2)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    expected = torch.nn.functional.conv_transpose2d(xt, wt, bt, **args)
    y = cb.conv_transpose2d(x, weight, bias, **args)
    assert_close(y, expected.detach().numpy(), 1e-12)
    dy = rng.standard_normal(y.shape)
    expected.backward(torch.from_numpy(dy))
    grads = cb.conv_transpose2d_backward(dy, x, weight, **args)
    for got, want in zip(grads, (xt.grad, wt.grad, bt.grad), strict=True):
        assert_close(got, want.numpy(), 1e-12)
