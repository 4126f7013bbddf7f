"""Adaptive average pooling: a fixed output size whatever the input size.

Output row ``i`` of ``out_h`` averages input rows ``floor(i * H / out_h)`` up
to (excluding) ``ceil((i + 1) * H / out_h)``, and likewise for the columns:
PyTorch's ``adaptive_avg_pool2d`` rule. The bins tile the input exactly when
``out_h`` divides ``H``; otherwise neighbouring bins overlap by at most one row.

Averaging over a bin is linear and separable, so with the ``(out_h, H)``
matrix ``A_h`` whose row ``i`` holds ``1 / len(bin i)`` on bin ``i`` (and
``A_w`` likewise)::

    y  = A_h · x · A_wᵀ          (per image and channel)
    dx = A_hᵀ · dy · A_w

two small matrix products that cover divisible and overlapping bins alike.
The global average (output 1x1, ResNet's head) is a plain mean instead.
In training mode the layer caches only the input shape.
"""

from __future__ import annotations

import numpy as np

from cnnblas.checks import check_int, is_int
from cnnblas.nn.layers import _Layer


def _output_axis(value, name: str) -> int | None:
    return None if value is None else check_int(value, name, minimum=1)


def bin_matrix(size: int, out: int, dtype) -> np.ndarray:
    """The ``(out, size)`` averaging matrix of one axis (module docstring).

    Parameters
    ----------
    size : int
        Input length along the axis.
    out : int
        Output length, ``1 <= out <= size``.
    dtype : float32 or float64

    Returns
    -------
    ndarray, shape (out, size)
        Row ``i`` is ``1 / (end - start)`` on ``[start, end)`` with
        ``start = floor(i * size / out)``, ``end = ceil((i + 1) * size / out)``.
    """
    matrix = np.zeros((out, size), np.float64)
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)  # ceil division in integers
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix.astype(dtype)


class AdaptiveAvgPool2d(_Layer):
    """Average pooling to a fixed ``output_size``, as ``torch.nn.AdaptiveAvgPool2d``.

    Parameters
    ----------
    output_size : int, None or a pair of (int or None)
        ``(out_h, out_w)``; an int means a square output, None keeps that axis
        of the input. Each size must be at least 1 and, at the forward, at most
        the input's size along its axis.

    Notes
    -----
    Input (N, C, H, W), float32 or float64; output (N, C, out_h, out_w) in the
    input's dtype. Output (1, 1) is the global average pooling of ResNet.
    """

    _keeps_references = False

    def __init__(self, output_size):
        super().__init__()
        if output_size is None or is_int(output_size):
            output_size = (output_size, output_size)
        if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
            raise TypeError(
                "AdaptiveAvgPool2d output_size must be an int, None or a pair (out_h, out_w) "
                f"of ints or None, got {output_size!r}"
            )
        self.output_size = (_output_axis(output_size[0], "AdaptiveAvgPool2d output height"),
                            _output_axis(output_size[1], "AdaptiveAvgPool2d output width"))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def _resolved(self, height: int, width: int) -> tuple[int, int]:
        """``output_size`` with None replaced by the input's size on that axis."""
        out_h, out_w = self.output_size
        return (height if out_h is None else out_h), (width if out_w is None else out_w)

    def _out_size(self, x) -> tuple[int, int]:
        """The output (height, width) for input ``x``, checked against its size."""
        self._check_input(x, 4)
        height, width = x.shape[2:]
        out_h, out_w = self._resolved(height, width)
        if out_h > height or out_w > width:
            raise ValueError(
                f"{self._describe()}: output size {out_h}x{out_w} is larger than the input "
                f"{height}x{width} (input shape {x.shape}); every output pixel must "
                "average at least one input pixel of its own"
            )
        return out_h, out_w

    def forward(self, x):
        """Parameters: x (N, C, H, W). Returns (N, C, out_h, out_w), dtype of x."""
        out_h, out_w = self._out_size(x)
        self._save_for_backward(input_shape=x.shape)
        if (out_h, out_w) == (1, 1):
            return x.mean(axis=(2, 3), keepdims=True, dtype=x.dtype)
        rows = bin_matrix(x.shape[2], out_h, x.dtype)
        cols = bin_matrix(x.shape[3], out_w, x.dtype)
        return np.matmul(np.matmul(rows, x), cols.T)

    def backward(self, dy):
        """Return dx (N, C, H, W): each output's gradient spread evenly over its bin."""
        input_shape = self._saved_for_backward()["input_shape"]
        n, c, height, width = input_shape
        out_h, out_w = self._resolved(height, width)
        self._check_grad(dy, (n, c, out_h, out_w))
        if (out_h, out_w) == (1, 1):
            dx = np.empty(input_shape, dy.dtype)
            dx[...] = dy * dy.dtype.type(1.0 / (height * width))
            return dx
        rows = bin_matrix(height, out_h, dy.dtype)
        cols = bin_matrix(width, out_w, dy.dtype)
        return np.matmul(np.matmul(rows.T, dy), cols)


__all__ = ["AdaptiveAvgPool2d", "bin_matrix"]
