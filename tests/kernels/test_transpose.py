"""The blocked transpose kernel against NumPy's transposed view."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas._kernels.transpose import transpose_into


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 100), cols=st.integers(1, 100),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_transpose_into_matches_numpy(rows, cols, dtype):
    """Sizes below, at and across the 32 x 32 blocks; every element is distinct,
    so a misplaced one cannot hide."""
    src = np.arange(rows * cols, dtype=dtype).reshape(rows, cols)
    dst = np.full((cols, rows), np.nan, dtype)
    transpose_into(src, dst)
    np.testing.assert_array_equal(dst, src.T)


def test_transpose_into_strided_views():
    """A slice of a larger array on either side: nothing outside is touched."""
    big = np.arange(70 * 50, dtype=np.float64).reshape(70, 50)
    out = np.full((60, 80), -1.0)
    transpose_into(big[3:68, 5:45], out[7:47, 9:74])
    np.testing.assert_array_equal(out[7:47, 9:74], big[3:68, 5:45].T)
    mask = np.ones_like(out, dtype=bool)
    mask[7:47, 9:74] = False
    assert np.all(out[mask] == -1.0)


def test_transpose_into_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match="shape of src transposed"):
        transpose_into(np.zeros((3, 4)), np.zeros((3, 4)))
