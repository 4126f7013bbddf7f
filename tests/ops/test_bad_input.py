"""Every public core function rejects bad input with a message naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

import cnnblas as cb

X = np.zeros((2, 4, 6, 6), np.float32)
W = np.zeros((3, 4, 3, 3), np.float32)
DY = np.zeros((2, 3, 4, 4), np.float32)
COLS = np.zeros((2, 36, 16), np.float32)


def conv(**kw):
    args = dict(x=X, weight=W)
    args.update(kw)
    return lambda: cb.conv2d(**args)


def backward(**kw):
    args = dict(dy=DY, x=X, weight=W)
    args.update(kw)
    return lambda: cb.conv2d_backward(**args)


CASES = {
    # rank
    "x rank 3": (conv(x=X[0]), ValueError, "x must have rank 4"),
    "weight rank 2": (conv(weight=W[0, 0]), ValueError, "weight must have rank 4"),
    "im2col rank": (lambda: cb.im2col(X[0], 3), ValueError, "x must have rank 4"),
    "col2im rank": (lambda: cb.col2im(X, 4, 3), ValueError, "cols must have rank 3"),
    # channels and groups
    "channels": (conv(weight=np.zeros((3, 2, 3, 3), np.float32)), ValueError, "x has 4"),
    "groups not dividing C": (conv(weight=np.zeros((3, 4, 3, 3), np.float32), groups=3),
                              ValueError, "divisible by groups"),
    "groups not dividing K": (conv(weight=np.zeros((3, 2, 3, 3), np.float32), groups=2),
                              ValueError, "output channels (3)"),
    "groups zero": (conv(groups=0), ValueError, "groups must be an int >= 1"),
    "groups float": (conv(groups=1.0), TypeError, "groups must be an int"),
    # geometry
    "kernel larger than padded input": (conv(weight=np.zeros((3, 4, 7, 7), np.float32)),
                                        ValueError, "larger than the padded input 6x6"),
    "dilated kernel too large": (conv(dilation=3), ValueError, "dilated extent 7x7"),
    "stride 0": (conv(stride=0), ValueError, "stride must be >= 1"),
    "stride negative pair": (conv(stride=(1, -1)), ValueError, "stride must be >= 1"),
    "dilation 0": (conv(dilation=0), ValueError, "dilation must be >= 1"),
    "stride float": (conv(stride=1.5), TypeError, "stride must be an int"),
    "stride bool": (conv(stride=True), TypeError, "stride must be an int"),
    "negative padding": (conv(padding=-1), ValueError, "padding must be non-negative"),
    "negative padding side": (conv(padding=((0, -1), (0, 0))), ValueError,
                              "padding must be non-negative"),
    "padding string": (conv(padding="full"), ValueError, "'valid' or 'same'"),
    "padding triple": (conv(padding=(1, 1, 1)), TypeError, "padding must be"),
    "im2col kernel 0": (lambda: cb.im2col(X, 0), ValueError, "kernel_size must be >= 1"),
    # dtypes
    "x int": (conv(x=X.astype(np.int32)), TypeError, "x must have dtype float32 or float64"),
    "x bool": (conv(x=X.astype(bool)), TypeError, "got bool"),
    "x complex": (conv(x=X.astype(np.complex64)), TypeError, "got complex64"),
    "x float16": (conv(x=X.astype(np.float16)), TypeError, "got float16"),
    "weight float64 with x float32": (conv(weight=W.astype(np.float64)), TypeError,
                                      "weight must have the same dtype as the input (float32)"),
    "bias dtype": (conv(bias=np.zeros(3)), TypeError, "bias must have the same dtype"),
    "bias shape": (conv(bias=np.zeros(4, np.float32)), ValueError, "bias must have shape (3,)"),
    "x list": (conv(x=X.tolist()), TypeError, "x must be a numpy.ndarray"),
    "empty x": (conv(x=np.zeros((0, 4, 6, 6), np.float32)), ValueError, "must not be empty"),
    # backward's dy
    "dy wrong shape": (backward(dy=np.zeros((2, 3, 5, 5), np.float32)), ValueError,
                       "dy must have shape (2, 3, 4, 4), got (2, 3, 5, 5)"),
    "dy wrong batch": (backward(dy=DY[:1]), ValueError, "dy must have shape (2, 3, 4, 4)"),
    "dy wrong dtype": (backward(dy=DY.astype(np.float64)), TypeError,
                       "dy must have the same dtype"),
    "dy rank": (backward(dy=DY[0]), ValueError, "dy must have rank 4"),
    "backward channels": (backward(weight=np.zeros((3, 2, 3, 3), np.float32)), ValueError,
                          "x has 4"),
    # col2im
    "col2im rows": (lambda: cb.col2im(COLS[:, :35], 6, 3), ValueError,
                    "multiple of kernel_h*kernel_w = 9"),
    "col2im columns": (lambda: cb.col2im(COLS, 7, 3), ValueError, "out_h*out_w = 5*5 = 25"),
    "col2im output_size": (lambda: cb.col2im(COLS, (6, 0), 3), ValueError,
                           "output_size must be >= 1"),
    "col2im int dtype": (lambda: cb.col2im(COLS.astype(np.int64), 6, 3), TypeError,
                         "cols must have dtype"),
    # thread and workspace settings
    "threads 0": (lambda: cb.set_num_threads(0), ValueError, "n must be between 1"),
    "threads huge": (lambda: cb.set_num_threads(10_000), ValueError, "n must be between 1"),
    "threads float": (lambda: cb.set_num_threads(2.0), TypeError, "n must be an int"),
    "workspace 0": (lambda: cb.set_workspace_limit(0), ValueError, "nbytes must be an int >= 1"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_named_error(name):
    call, error, fragment = CASES[name]
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value), f"message {str(info.value)!r} lacks {fragment!r}"


def test_kernel_exactly_as_large_as_padded_input_is_accepted():
    y = cb.conv2d(X, np.ones((3, 4, 8, 8), np.float32), padding=1)
    assert y.shape == (2, 3, 1, 1)
