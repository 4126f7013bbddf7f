"""im2col / col2im: element-by-element index checks, adjointness, and PyTorch's unfold/fold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import cnnblas as cb
from tests.conftest import EDGE_CASES, assert_close, conv_cases


def expected_column_entry(x, case, n, row, col):
    """One entry of im2col computed straight from the definition (no array slicing)."""
    kernel_h, kernel_w = case.kernel
    out_w = case.out_size[1]
    c, rem = divmod(row, kernel_h * kernel_w)
    i, j = divmod(rem, kernel_w)
    oh, ow = divmod(col, out_w)
    ih = oh * case.stride[0] - case.padding[0][0] + i * case.dilation[0]
    iw = ow * case.stride[1] - case.padding[1][0] + j * case.dilation[1]
    if 0 <= ih < case.h and 0 <= iw < case.w:
        return x[n, c, ih, iw]
    return 0.0


def check_im2col_elements(case):
    x, *_ = case.arrays()
    cols = cb.im2col(x, case.kernel, case.stride, case.padding, case.dilation)
    n_rows = case.c * case.kernel[0] * case.kernel[1]
    n_cols = case.out_size[0] * case.out_size[1]
    assert cols.shape == (case.n, n_rows, n_cols)
    assert cols.dtype == x.dtype
    for n in range(case.n):
        for row in range(n_rows):
            for col in range(n_cols):
                assert cols[n, row, col] == expected_column_entry(x, case, n, row, col), (
                    f"im2col mismatch at n={n}, row={row}, col={col} for {case}"
                )


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_im2col_every_element_matches_definition(case):
    check_im2col_elements(case)


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_im2col_elements_on_edge_cases(name):
    check_im2col_elements(EDGE_CASES[name])


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_col2im_is_the_adjoint_of_im2col(case):
    """<im2col(x), c> == <x, col2im(c)> for every geometry (float64)."""
    x, *_ = case.arrays()
    rng = np.random.default_rng(1)
    cols = cb.im2col(x, case.kernel, case.stride, case.padding, case.dilation)
    c = rng.standard_normal(cols.shape)
    back = cb.col2im(c, (case.h, case.w), case.kernel, case.stride, case.padding, case.dilation)
    assert back.shape == x.shape
    lhs = float(np.sum(cols * c))
    rhs = float(np.sum(x * back))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs), float(np.abs(cols * c).sum()))


@settings(max_examples=40, deadline=None)
@given(conv_cases(max_extra=30))
def test_both_col2im_kernels_match_the_reference_loops(case):
    """col2im by rows and by scattering through the gather offsets give the loops' sums.

    The engine picks one by row width (``_COL2IM_MIN_ROW``); here each is forced."""
    from cnnblas import reference
    from cnnblas.ops import problem

    x, *_ = case.arrays()
    cols = np.random.default_rng(2).standard_normal(
        cb.im2col(x, case.kernel, case.stride, case.padding, case.dilation).shape)
    expected = reference.col2im_loops(cols, (case.h, case.w), case.kernel, stride=case.stride,
                                      padding=case.padding, dilation=case.dilation)
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        for min_row in (0, 10**9):  # rows whenever unit stride / always scatter
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(problem, "_COL2IM_MIN_ROW", min_row)
                back = cb.col2im(cols.astype(dtype), (case.h, case.w), case.kernel, case.stride,
                                 case.padding, case.dilation)
            assert back.dtype == dtype
            assert_close(back, expected, rtol)


def test_gather_offsets_point_at_the_window_pixels():
    """Each offset is the padded-plane position of its window element, by the definition."""
    from cnnblas._kernels.im2col import window_offsets

    kernel, stride, pad, dilation, out = (3, 2), (2, 3), (1, 2), (2, 1), (4, 3)
    offsets, (padded_h, padded_w) = window_offsets(kernel, stride, pad, dilation, out, (7, 6))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            for oh in range(out[0]):
                for ow in range(out[1]):
                    h = oh * stride[0] + i * dilation[0]  # padded coordinates
                    w = ow * stride[1] + j * dilation[1]
                    assert offsets[i * kernel[1] + j, oh * out[1] + ow] == h * padded_w + w
    # A plane of 2**32 elements or more needs 64-bit offsets.
    big, (big_h, big_w) = window_offsets((1, 1), (2**16, 2**16), (0, 0), (1, 1), (2, 1),
                                         (2**16 + 1, 2**16))
    assert big.dtype == np.uint64 and big_h * big_w >= 2**32
    assert int(big[0, 1]) == 2**16 * 2**16


def test_gather_offsets_stay_inside_the_padded_plane():
    """The offsets never point past the padded plane the kernel allocates."""
    from cnnblas._kernels.im2col import window_offsets

    for kernel, stride, pad, dilation, size in [((3, 3), (1, 1), (1, 1), (1, 1), (5, 5)),
                                                ((5, 4), (3, 2), (2, 0), (2, 1), (9, 7)),
                                                ((11, 11), (4, 4), (2, 2), (1, 1), (224, 224))]:
        out = tuple((size[a] + 2 * pad[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
                    for a in range(2))
        offsets, (padded_h, padded_w) = window_offsets(kernel, stride, pad, dilation, out, size)
        assert offsets.dtype == np.uint32
        assert offsets.shape == (kernel[0] * kernel[1], out[0] * out[1])
        assert int(offsets.max()) < padded_h * padded_w
        assert padded_h >= size[0] + pad[0] and padded_w >= size[1] + pad[1]


def test_col2im_counts_overlaps():
    """Folding all-ones columns counts how many windows cover each pixel."""
    ones = np.ones((1, 9, 9))  # 3x3 kernel over a 5x5 image, stride 2, no padding -> 2x2 windows
    counts = cb.col2im(ones[:, :, :4], (5, 5), 3, stride=2)[0, 0]
    expected = np.array([[1, 1, 2, 1, 1]] * 2 + [[2, 2, 4, 2, 2]] + [[1, 1, 2, 1, 1]] * 2, float)
    np.testing.assert_array_equal(counts, expected)


def test_small_im2col_by_hand():
    """A 3x3 image, 2x2 kernel: the four windows as columns (row-major)."""
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    expected = np.array([[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]], float)
    np.testing.assert_array_equal(cb.im2col(x, 2)[0], expected)


@settings(max_examples=40, deadline=None)
@given(conv_cases(symmetric_padding=True))
def test_im2col_and_col2im_match_torch_unfold_and_fold(case):
    torch = pytest.importorskip("torch")
    x, *_ = case.arrays()
    padding = (case.padding[0][0], case.padding[1][0])
    cols = cb.im2col(x, case.kernel, case.stride, padding, case.dilation)
    expected = torch.nn.functional.unfold(torch.from_numpy(x), case.kernel, case.dilation,
                                          padding, case.stride).numpy()
    np.testing.assert_array_equal(cols, expected)
    folded = cb.col2im(cols, (case.h, case.w), case.kernel, case.stride, padding, case.dilation)
    expected = torch.nn.functional.fold(torch.from_numpy(cols), (case.h, case.w), case.kernel,
                                        case.dilation, padding, case.stride).numpy()
    assert_close(folded, expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    x = np.ones((1, 2, 4, 4), dtype)
    cols = cb.im2col(x, 3, padding=1)
    assert cols.dtype == dtype
    assert cb.col2im(cols, 4, 3, padding=1).dtype == dtype
