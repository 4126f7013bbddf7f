"""Argument normalisation and validation, shared by every package of cnnblas.

The functional ops check every array and window argument here before any
Numba kernel runs (the kernels assume validated, C-contiguous arrays and
in-range sizes); layers, optimizers, data loaders and the trainer check their
scalar arguments with the same helpers. Every error names the argument, what
was expected and what was received.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

Pair = tuple[int, int]
Padding2d = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))


def is_int(value) -> bool:
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, minimum: int | None = None) -> int:
    """Return ``value`` as an int, checking that it is an integer (not a bool)
    and, when ``minimum`` is given, at least ``minimum``.

    Raises TypeError for a non-integer and ValueError for a value below
    ``minimum``; both messages name the argument and show what was received.
    """
    expected = "an int" if minimum is None else f"an int >= {minimum}"
    if not is_int(value):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_bool(value, name: str) -> bool:
    """Return ``value`` as a bool; only ``bool`` and ``numpy.bool_`` are accepted
    (an int such as 0 or 1 is a TypeError: it is more often a misplaced argument)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_real(value, name: str) -> float:
    """Return ``value`` as a float, checking that it is a real number (not a bool)."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def as_pair(value, name: str, minimum: int = 1) -> Pair:
    """Return ``value`` as an ``(h, w)`` pair of ints, each ``>= minimum``.

    Accepts an int or a length-2 sequence of ints. Raises TypeError for other
    types and ValueError for values below ``minimum``.
    """
    if is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_int, value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {value!r}")
    return pair


def _axis_padding(value, name: str) -> tuple[int, int]:
    if is_int(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_int, value)):
        return int(value[0]), int(value[1])
    raise TypeError(
        f"{name} must be an int, (h, w), ((top, bottom), (left, right)), 'valid' or 'same'; "
        f"got {value!r}"
    )


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow-style 'same' padding for one axis: output ``ceil(size / stride)``.

    The total padding is split evenly, with the odd pixel at the end (bottom or
    right). For stride 1 this equals PyTorch's ``padding='same'``.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def normalize_padding(
    padding, kernel: Pair, stride: Pair, dilation: Pair, in_size: Pair, name: str = "padding"
) -> Padding2d:
    """Return ``padding`` as ``((top, bottom), (left, right))`` of non-negative ints.

    Accepted forms: ``p``; ``(ph, pw)``; ``((top, bottom), (left, right))``;
    ``"valid"`` (no padding); ``"same"`` (output ``ceil(in / stride)`` per axis,
    extra padding at the bottom/right, for any stride).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            return tuple(  # type: ignore[return-value]
                same_padding(in_size[a], kernel[a], stride[a], dilation[a]) for a in range(2)
            )
        raise ValueError(f"{name} must be 'valid' or 'same' when a string, got {padding!r}")
    if is_int(padding):
        result = ((int(padding),) * 2, (int(padding),) * 2)
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(map(is_int, padding)):
            result = ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
        else:
            result = (_axis_padding(padding[0], name), _axis_padding(padding[1], name))
    else:
        raise TypeError(
            f"{name} must be an int, (h, w), ((top, bottom), (left, right)), 'valid' or "
            f"'same'; got {padding!r}"
        )
    if min(result[0] + result[1]) < 0:
        raise ValueError(f"{name} must be non-negative, got {padding!r}")
    return result  # type: ignore[return-value]


def output_size(in_size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                dilation: int) -> int:
    """Output length of one axis: ``(in + pads - dil*(k-1) - 1) // stride + 1``."""
    return (in_size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


class ConvGeometry(NamedTuple):
    """Validated sliding-window geometry of one 2-D convolution or pooling.

    Attributes are plain ints so they can be passed straight to the kernels.
    """

    in_h: int
    in_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    dilation_h: int
    dilation_w: int
    out_h: int
    out_w: int

    @property
    def padding(self) -> Padding2d:
        return (self.pad_top, self.pad_bottom), (self.pad_left, self.pad_right)


def conv_geometry(in_size: Pair, kernel_size, stride, padding, dilation,
                  kernel_name: str = "kernel_size") -> ConvGeometry:
    """Validate window arguments against an input of ``in_size = (H, W)``.

    Raises ValueError when the dilated kernel does not fit in the padded input,
    with both sizes in the message.
    """
    kernel = as_pair(kernel_size, kernel_name)
    stride = as_pair(stride, "stride")
    dilation = as_pair(dilation, "dilation")
    (top, bottom), (left, right) = normalize_padding(padding, kernel, stride, dilation, in_size)
    extent = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    padded = (in_size[0] + top + bottom, in_size[1] + left + right)
    if extent[0] > padded[0] or extent[1] > padded[1]:
        raise ValueError(
            f"{kernel_name} {kernel[0]}x{kernel[1]} (dilated extent {extent[0]}x{extent[1]}) is "
            f"larger than the padded input {padded[0]}x{padded[1]} "
            f"(input {in_size[0]}x{in_size[1]}, padding ((top, bottom), (left, right)) = "
            f"(({top}, {bottom}), ({left}, {right})))"
        )
    out_h = output_size(in_size[0], kernel[0], stride[0], top, bottom, dilation[0])
    out_w = output_size(in_size[1], kernel[1], stride[1], left, right, dilation[1])
    return ConvGeometry(in_size[0], in_size[1], kernel[0], kernel[1], stride[0], stride[1],
                        top, bottom, left, right, dilation[0], dilation[1], out_h, out_w)


def check_float_array(array, name: str, ndim: int | None = None,
                      dtype: np.dtype | None = None) -> np.ndarray:
    """Check that ``array`` is a float32/float64 ndarray of rank ``ndim``.

    Returns it unchanged (no copy). ``dtype``, when given, is the dtype it must
    match (e.g. the input's dtype, for a weight).
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(array).__name__}")
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {array.dtype}")
    if dtype is not None and array.dtype != dtype:
        raise TypeError(
            f"{name} must have the same dtype as the input ({np.dtype(dtype)}), got {array.dtype}"
        )
    if ndim is not None and array.ndim != ndim:
        raise ValueError(
            f"{name} must have rank {ndim}, got rank {array.ndim} with shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    return array


def check_shape(array: np.ndarray, expected: tuple[int, ...], name: str) -> None:
    """Raise ValueError unless ``array.shape == expected``."""
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(array.shape)}")


def check_groups(groups, in_channels: int, out_channels: int,
                 weight_in_channels: int | None = None) -> int:
    """Validate ``groups`` against the input and output channel counts and, when
    given, the weight's input channels per group (``weight.shape[1]``)."""
    groups = check_int(groups, "groups", minimum=1)
    if in_channels % groups:
        raise ValueError(f"input channels ({in_channels}) must be divisible by groups ({groups})")
    if out_channels % groups:
        raise ValueError(
            f"output channels ({out_channels}) must be divisible by groups ({groups})"
        )
    if weight_in_channels is not None and weight_in_channels * groups != in_channels:
        raise ValueError(
            f"weight has {weight_in_channels} input channels per group, so with groups={groups} "
            f"it expects x with {weight_in_channels * groups} channels; x has {in_channels}"
        )
    return groups


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for ints."""
    return -(-a // b)


__all__ = [
    "is_int", "check_int", "check_bool", "check_real", "ConvGeometry", "as_pair",
    "normalize_padding", "same_padding", "output_size", "conv_geometry", "check_float_array",
    "check_shape", "check_groups", "ceil_div",
]
