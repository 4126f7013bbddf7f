"""The transposed convolution layer (``torch.nn.ConvTranspose2d``).

The arithmetic is :func:`cnnblas.ops.conv_transpose.conv_transpose2d`: the
input-gradient pass of a convolution, run forward. The layer caches its input
``x``, which the weight gradient reads.
"""

from __future__ import annotations

import numpy as np

from cnnblas.checks import as_pair, check_bool, check_groups, check_int
from cnnblas.nn.layers import _ConvLayer
from cnnblas.ops.algorithms import check_algorithm
from cnnblas.ops.conv_transpose import (
    check_output_padding,
    conv_transpose2d,
    conv_transpose2d_backward,
)


class ConvTranspose2d(_ConvLayer):
    """2-D transposed convolution layer over NCHW input (a learnable upsampling).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int), default 1
    padding : int or (int, int), default 0
        Rows and columns cut from each side of the output.
    output_padding : int or (int, int), default 0
        Rows and columns added at the bottom and right of the output; smaller
        than the stride or the dilation of its axis.
    groups : int, default 1
        Must divide both channel counts.
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : None, int or numpy.random.Generator
        Source of the initial weights.
    input_grad : bool, default True
        When False, :meth:`backward` skips the input gradient and returns None.
    algorithm : {"auto", "gemm", "winograd2x2", "winograd4x4", "direct"}, default "auto"
        Algorithm of the convolution it transposes (checked at construction).

    Attributes
    ----------
    weight : Parameter, shape (in_channels, out_channels/groups, kh, kw)
        PyTorch's layout for a transposed convolution.
    bias : Parameter, shape (out_channels,), or None

    Notes
    -----
    Output size per axis: ``(in - 1)*stride - 2*padding + dilation*(k - 1) +
    output_padding + 1``. Initialised like ``torch.nn.ConvTranspose2d``: weight
    and bias drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in =
    weight.shape[1] * kh * kw = out_channels/groups * kh * kw``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnblas import nn
    >>> up = nn.ConvTranspose2d(8, 4, kernel_size=4, stride=2, padding=1, rng=0)
    >>> up(np.zeros((2, 8, 7, 7), np.float32)).shape
    (2, 4, 14, 14)
    >>> {name: value.shape for name, value in up.state_dict().items()}
    {'weight': (8, 4, 4, 4), 'bias': (4,)}
    """

    _forward_op = staticmethod(conv_transpose2d)
    _backward_op = staticmethod(conv_transpose2d_backward)
    _repr_defaults = {"stride": (1, 1), "padding": (0, 0), "output_padding": (0, 0),
                      "dilation": (1, 1)}

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, dtype=np.float32, rng=None,
                 input_grad=True, algorithm="auto"):
        super().__init__()
        self.input_grad = check_bool(input_grad, "input_grad")
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.groups = check_groups(groups, self.in_channels, self.out_channels)
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding", minimum=0)
        self.dilation = as_pair(dilation, "dilation")
        self.output_padding = check_output_padding(output_padding, self.stride, self.dilation)
        shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        check_algorithm(shape, self.stride, self.dilation, self.groups, algorithm)
        self.algorithm = algorithm
        self._init_parameters(shape, bias, dtype, rng)

    def _conv_args(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    groups=self.groups, dilation=self.dilation, algorithm=self.algorithm)
