"""2-D max and average pooling: validated functional forward and backward.

Shapes follow NCHW. For every axis the output size is
``out = (in + 2 * pad - kernel) // stride + 1`` by default, and with
``ceil_mode=True`` it is ``ceil((in + 2 * pad - kernel) / stride) + 1``, less
one when the last window would start in the right (bottom) padding: the same
sizes as ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` (no dilation).
Ceil mode keeps the partial windows at the right and bottom edges; their
positions past the padded image are ignored, by the maximum and by the
average's divisor alike. Padding may be at most half the kernel on each axis,
as in PyTorch, which guarantees that every window overlaps the real input.

The loops run in the Numba kernels of :mod:`cnnblas._kernels.pooling`. Max
pooling splits its ``(n, c)`` planes across the engine's worker threads
(:func:`cnnblas.ops.parallel.map_image_ranges`; small calls stay in the
calling thread); average pooling runs one plane per Numba thread.
"""

from __future__ import annotations

import numbers

import numpy as np

from cnnblas._kernels import pooling as _kernels
from cnnblas.checks import (
    ConvGeometry,
    as_pair,
    check_bool,
    check_float_array,
    check_shape,
    conv_geometry,
)
from cnnblas.ops import parallel


def pool_window(kernel_size, stride=None, padding=0):
    """Normalise and check pooling window arguments, independent of the input.

    Returns
    -------
    kernel, stride, padding : tuple of (int, int)
        ``stride`` defaults to ``kernel``.

    Raises
    ------
    TypeError
        An argument is not an int or a pair of ints.
    ValueError
        Kernel or stride below 1, negative padding, or padding above half the
        kernel on some axis.
    """
    kernel = as_pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else as_pair(stride, "stride")
    pad = as_pair(padding, "padding", minimum=0)
    for axis, name in enumerate(("height", "width")):
        # PyTorch's rule; it also keeps every window partly inside the input.
        if 2 * pad[axis] > kernel[axis]:
            raise ValueError(
                f"padding must be at most half of kernel_size on every axis, got padding "
                f"{pad[axis]} for kernel_size {kernel[axis]} along the {name}"
            )
    return kernel, stride, pad


def ceil_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Ceil-mode output size along one axis (PyTorch's rule)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    # The last window must start inside the input or its left padding: one
    # that starts in the right padding would see padding only.
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_geometry(in_size, kernel_size, stride, padding, ceil_mode=False) -> ConvGeometry:
    """Validate pooling window arguments against ``in_size = (H, W)``.

    With ``ceil_mode`` the output sizes round up; only ``pad_top`` and
    ``pad_left`` of the result are meaningful then (padding is symmetric).
    """
    kernel, stride, pad = pool_window(kernel_size, stride, padding)
    if not check_bool(ceil_mode, "ceil_mode"):
        return conv_geometry(in_size, kernel, stride, pad, 1)
    out = tuple(ceil_output_size(in_size[axis], kernel[axis], stride[axis], pad[axis])
                for axis in range(2))
    if min(out) < 1:
        raise ValueError(
            f"kernel_size {kernel[0]}x{kernel[1]} with stride {stride[0]}x{stride[1]} and padding "
            f"{pad[0]}x{pad[1]} leaves no output for the input {in_size[0]}x{in_size[1]} even "
            f"with ceil_mode=True (output {out[0]}x{out[1]})"
        )
    return ConvGeometry(in_size[0], in_size[1], kernel[0], kernel[1], stride[0], stride[1],
                        pad[0], pad[0], pad[1], pad[1], 1, 1, out[0], out[1])


def _check_input_shape(input_shape, name: str = "input_shape") -> tuple[int, int, int, int]:
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 4
        or not all(isinstance(v, numbers.Integral) and v > 0 for v in input_shape)
    ):
        raise ValueError(
            f"{name} must be a tuple of 4 positive ints (N, C, H, W), got {input_shape!r}"
        )
    return tuple(int(v) for v in input_shape)  # type: ignore[return-value]


def _as_planes(array: np.ndarray) -> np.ndarray:
    """View ``(N, C, H, W)`` as ``(N*C, H, W)``; copies only a non-contiguous input."""
    n, c, h, w = array.shape
    return np.ascontiguousarray(array).reshape(n * c, h, w)


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """2-D max pooling that also returns the arg-max of every window.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size`` (non-overlapping windows).
    padding : int or (int, int), default 0
        Implicit ``-inf`` padding on both sides of each axis, at most half
        the kernel.
    ceil_mode : bool, default False
        Round the output size up, keeping the partial windows at the right and
        bottom edges (see the module docstring).

    Returns
    -------
    y : ndarray, shape (N, C, out_h, out_w), dtype of ``x``
    argmax : ndarray, shape (N, C, out_h, out_w), int64
        Flat index ``h * W + w`` of the selected element within its
        ``(H, W)`` input plane (the same convention as PyTorch's
        ``return_indices=True``). On ties the first maximum in row-major
        window order wins; NaN propagates.

    Raises
    ------
    TypeError
        ``x`` not a float32/float64 ndarray, or malformed window arguments.
    ValueError
        Wrong rank, padding larger than half the kernel, or a kernel larger
        than the padded input (with ``ceil_mode``: no output at all).
    """
    check_float_array(x, "x", ndim=4)
    n, c, h, w = x.shape
    geo = _pool_geometry((h, w), kernel_size, stride, padding, ceil_mode)
    planes = _as_planes(x)
    y = np.empty((n * c, geo.out_h, geo.out_w), x.dtype)
    argmax = np.empty(y.shape, np.int64)
    window = ((geo.kernel_h, geo.kernel_w), (geo.stride_h, geo.stride_w),
              (geo.pad_top, geo.pad_left))
    parallel.map_image_ranges(
        lambda start, stop, serial: _kernels.max_pool2d_forward_planes(
            planes, *window, y, argmax, start, stop),
        n * c, flops=x.size)
    shape = (n, c, geo.out_h, geo.out_w)
    return y.reshape(shape), argmax.reshape(shape)


def max_pool2d_backward(dy, argmax, input_shape):
    """Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    dy : ndarray, shape (N, C, out_h, out_w), float32 or float64
        Gradient of the loss with respect to the pooled output.
    argmax : ndarray, shape (N, C, out_h, out_w), int64
        The indices returned by :func:`max_pool2d`.
    input_shape : tuple of int
        ``(N, C, H, W)`` of the forward input.

    Returns
    -------
    dx : ndarray, shape ``input_shape``, dtype of ``dy``
        ``dy`` routed to the arg-max of each window, zero elsewhere; an element
        selected by several overlapping windows receives their sum.

    Raises
    ------
    TypeError
        ``dy`` not float32/float64, or ``argmax`` not an int64 ndarray.
    ValueError
        Shapes disagree, or an index lies outside the ``H * W`` plane.
    """
    check_float_array(dy, "dy", ndim=4)
    n, c, h, w = _check_input_shape(input_shape)
    if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int64:
        raise TypeError(
            f"argmax must be an int64 numpy.ndarray as returned by max_pool2d, got "
            f"{getattr(argmax, 'dtype', type(argmax).__name__)}"
        )
    check_shape(argmax, dy.shape, "argmax (it must match dy)")
    if dy.shape[:2] != (n, c):
        raise ValueError(
            f"dy has batch and channels {dy.shape[:2]} but input_shape {(n, c, h, w)} "
            f"has {(n, c)}"
        )
    low, high = int(argmax.min()), int(argmax.max())
    if low < 0 or high >= h * w:
        raise ValueError(
            f"argmax indices must lie in [0, {h * w}) for an input plane of {h}x{w}, "
            f"got values in [{low}, {high}]"
        )
    dy_planes, argmax_planes = _as_planes(dy), _as_planes(argmax)
    dx = np.empty((n * c, h * w), dy.dtype)
    parallel.map_image_ranges(
        lambda start, stop, serial: _kernels.max_pool2d_backward_planes(
            dy_planes, argmax_planes, dx, start, stop),
        n * c, flops=dx.size)
    return dx.reshape(n, c, h, w)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """2-D average pooling; padded zeros count in the divisor.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit zero padding, at most half the kernel. Every window is divided
        by ``kernel_h * kernel_w`` (PyTorch's ``count_include_pad=True``),
        except a ceil-mode window that runs past the padded image: its divisor
        counts only its positions inside the padded image.
    ceil_mode : bool, default False
        Round the output size up, keeping the partial windows at the right and
        bottom edges (see the module docstring).

    Returns
    -------
    y : ndarray, shape (N, C, out_h, out_w), dtype of ``x``

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d`.
    """
    check_float_array(x, "x", ndim=4)
    n, c, h, w = x.shape
    geo = _pool_geometry((h, w), kernel_size, stride, padding, ceil_mode)
    y = _kernels.avg_pool2d_forward(
        _as_planes(x),
        (geo.kernel_h, geo.kernel_w),
        (geo.stride_h, geo.stride_w),
        (geo.pad_top, geo.pad_left),
        (geo.out_h, geo.out_w),
    )
    return y.reshape(n, c, geo.out_h, geo.out_w)


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False):
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    dy : ndarray, shape (N, C, out_h, out_w), float32 or float64
    input_shape : tuple of int
        ``(N, C, H, W)`` of the forward input.
    kernel_size, stride, padding, ceil_mode
        The forward pass's window arguments.

    Returns
    -------
    dx : ndarray, shape ``input_shape``, dtype of ``dy``
        Each ``dy`` element divided by its window's divisor (as in
        :func:`avg_pool2d`) and added to every real input of its window.

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d`, and when ``dy`` does not have the output shape
        implied by ``input_shape`` and the window arguments.
    """
    check_float_array(dy, "dy", ndim=4)
    n, c, h, w = _check_input_shape(input_shape)
    geo = _pool_geometry((h, w), kernel_size, stride, padding, ceil_mode)
    check_shape(dy, (n, c, geo.out_h, geo.out_w), "dy")
    dx = _kernels.avg_pool2d_backward(
        _as_planes(dy),
        (geo.kernel_h, geo.kernel_w),
        (geo.stride_h, geo.stride_w),
        (geo.pad_top, geo.pad_left),
        (h, w),
    )
    return dx.reshape(n, c, h, w)


__all__ = [
    "pool_window", "ceil_output_size", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward",
]
