"""Convolution, linear, activation, pooling and flatten layers: each a
:class:`~cnnblas.nn.Module` with its own forward and backward.

Every layer checks its input against its own configuration and raises errors
that name the layer, e.g. ``"Linear(in_features=400, out_features=120)
expects 400 input features, got 256 (input shape (8, 256))"``. The arithmetic
is delegated to the functional ops in :mod:`cnnblas.ops`. Batch normalisation
is in :mod:`cnnblas.nn.normalization`, dropout in :mod:`cnnblas.nn.dropout`.

What each layer caches between forward and backward (training mode only;
``x`` and ``y`` are references to the input and output, the rest the layer's
own arrays, see :mod:`cnnblas.nn.module` for who may change them):

=============  =================================  ==================================
layer          cache                              why
=============  =================================  ==================================
Conv2d         ``x``                              dW = dY . colsᵀ needs the columns
Linear         ``x``                              dW = dYᵀ . X
ReLU           ``mask`` (bool, ``x > 0``), dtype  1 byte per element instead of 4-8
LeakyReLU      ``mask`` (bool, ``x > 0``), dtype  same
Sigmoid        ``y``                              dσ = σ (1 - σ)
Tanh           ``y``                              dtanh = 1 - tanh²
BatchNorm2d    ``x``, mean, 1/σ (+ ``y``)         x̂ recomputed in the backward pass;
               (:mod:`cnnblas.nn.normalization`)  ``y`` when a ReLU was fused
MaxPool2d      ``argmax``, ``input_shape``        scatter target of each window
AvgPool2d      ``input_shape``                    the gradient is spread uniformly
Flatten        ``input_shape``                    reshape back
Identity       nothing                            dx = dy
=============  =================================  ==================================
"""

from __future__ import annotations

import numpy as np

from cnnblas.checks import (
    FLOAT_DTYPES,
    as_pair,
    check_bool,
    check_float_array,
    check_groups,
    check_int,
    check_real,
    check_shape,
    normalize_padding,
)
from cnnblas.nn import init
from cnnblas.nn.module import Module, Parameter
from cnnblas.ops import activations as act
from cnnblas.ops import pooling
from cnnblas.ops.algorithms import check_algorithm
from cnnblas.ops.conv import conv2d, conv2d_backward
from cnnblas.ops.linear import linear, linear_backward


class _Layer(Module):
    """Shared input checks that name the layer in every message."""

    def _check_input(self, x, ndim: int | None = None, dtype=None) -> None:
        if _is_float_array(x, ndim, dtype) and x.size:
            return  # the usual case, without building the layer's description
        check_float_array(x, f"input of {self._describe()}", ndim=ndim)
        if dtype is not None and x.dtype != dtype:
            raise TypeError(
                f"{self._describe()} has {np.dtype(dtype)} parameters but received a "
                f"{x.dtype} input; build the layer with dtype={x.dtype} or cast the input"
            )

    def _check_grad(self, dy, shape, dtype=None) -> None:
        """``dy`` must be a float array of ``shape`` (and of the forward's ``dtype``,
        when given: a float64 gradient must not silently upcast a float32 layer)."""
        if _is_float_array(dy, None, dtype) and dy.shape == tuple(shape):
            return
        check_float_array(dy, f"dy of {self._describe()}", dtype=dtype)
        check_shape(dy, shape, f"dy of {self._describe()}")


def _is_float_array(array, ndim: int | None, dtype) -> bool:
    """Whether ``array`` passes :func:`~cnnblas.checks.check_float_array`'s type,
    dtype and rank checks: a quick test before the full check, whose messages
    need the layer's description (about a microsecond per layer to build)."""
    return (isinstance(array, np.ndarray) and array.dtype in FLOAT_DTYPES
            and (dtype is None or array.dtype == dtype)
            and (ndim is None or array.ndim == ndim))


class _ConvLayer(_Layer):
    """What :class:`Conv2d` and :class:`~cnnblas.nn.ConvTranspose2d` share: the input
    check, the cached input, the gradient accumulation and the repr. A subclass
    names its two functional ops and the geometry it shows when not default."""

    _forward_op = staticmethod(conv2d)
    _backward_op = staticmethod(conv2d_backward)
    _repr_defaults = {"stride": (1, 1), "padding": 0, "dilation": (1, 1)}

    def _conv_args(self) -> dict:
        raise NotImplementedError

    def _init_parameters(self, shape, bias: bool, dtype, rng) -> None:
        """``weight`` of ``shape`` and ``bias`` (out_channels,) initialised as PyTorch's
        convolutions: both ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, ``fan_in =
        shape[1] * kh * kw`` (kaiming-uniform with ``a = sqrt(5)`` for the weight)."""
        dtype = init.as_float_dtype(dtype)
        rng = init.as_rng(rng)
        self.weight = Parameter(init.kaiming_uniform(shape, dtype=dtype, rng=rng))
        bound = 1.0 / np.sqrt(init.fan_in(shape))
        self.bias = (Parameter(init.uniform((self.out_channels,), bound, dtype, rng))
                     if bias else None)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name, default in self._repr_defaults.items():
            value = getattr(self, name)
            if value not in (default, (default, default) if isinstance(default, int) else ()):
                text += f", {name}={value!r}"
        if self.algorithm != "auto":
            text += f", algorithm={self.algorithm!r}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text

    def forward(self, x):
        """Parameters: x (N, in_channels, H, W). Returns (N, out_channels, out_h, out_w)."""
        self._check_input(x, 4, self.weight.dtype)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self._describe()} expects {self.in_channels} input channels, got "
                f"{x.shape[1]} (input shape {x.shape})"
            )
        bias = None if self.bias is None else self.bias.data
        y = self._forward_op(x, self.weight.data, bias, **self._conv_args())
        self._save_for_backward(x=x)
        return y

    def backward(self, dy):
        """Accumulate dW and db; return dx with the shape of the forward input.

        Returns None instead of dx when the layer was built with ``input_grad=False``.
        """
        x = self._saved_for_backward()["x"]
        dx, dweight, dbias = self._backward_op(dy, x, self.weight.data, **self._conv_args(),
                                               input_grad=self.input_grad)
        self.weight.accumulate_grad(dweight)
        if self.bias is not None:
            self.bias.accumulate_grad(dbias)
        return dx


class Conv2d(_ConvLayer):
    """2-D convolution (cross-correlation) layer over NCHW input.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), ((top, bottom), (left, right)), "valid" or "same"
        As :func:`cnnblas.ops.conv.conv2d`.
    groups : int, default 1
        Must divide both channel counts.
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : None, int or numpy.random.Generator
        Source of the initial weights.
    algorithm : {"auto", "gemm", "winograd2x2", "winograd4x4", "direct"}, default "auto"
        Convolution algorithm (:func:`cnnblas.choose_algorithm`; checked
        at construction by :func:`cnnblas.ops.algorithms.check_algorithm`).
    input_grad : bool, default True
        When False, :meth:`backward` skips the input gradient and returns None:
        the first layer of a network, whose input is data, needs none (this
        saves its largest GEMM and the col2im).

    Attributes
    ----------
    weight : Parameter, shape (out_channels, in_channels/groups, kh, kw)
    bias : Parameter, shape (out_channels,), or None

    Notes
    -----
    Initialised like ``torch.nn.Conv2d``: weight and bias drawn from
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
    ``fan_in = in_channels/groups * kh * kw``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype=np.float32, rng=None, input_grad=True,
                 algorithm="auto"):
        super().__init__()
        self.input_grad = bool(input_grad)
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.groups = check_groups(groups, self.in_channels, self.out_channels)
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.dilation = as_pair(dilation, "dilation")
        # The form of padding is checked now; 'same' and whether the padded input
        # fits the kernel depend on the input size, checked by conv2d.
        normalize_padding(padding, self.kernel_size, self.stride, self.dilation, (1, 1))
        self.padding = padding
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        # Checked now, not at the first forward: an unusable algorithm is a build error.
        check_algorithm(shape, self.stride, self.dilation, self.groups, algorithm)
        self.algorithm = algorithm
        self._init_parameters(shape, bias, dtype, rng)

    def _conv_args(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, algorithm=self.algorithm)


class Linear(_Layer):
    """Fully connected layer ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : None, int or numpy.random.Generator

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
        PyTorch's layout (the tutorial's Section 4 ``W`` is its transpose).
    bias : Parameter, shape (out_features,), or None

    Notes
    -----
    Initialised like ``torch.nn.Linear``: ``U(-1/sqrt(in_features),
    1/sqrt(in_features))`` for weight and bias. Input must be 2-D
    ``(N, in_features)``; put a :class:`Flatten` in front of image tensors.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", minimum=1)
        self.out_features = check_int(out_features, "out_features", minimum=1)
        dtype = init.as_float_dtype(dtype)
        rng = init.as_rng(rng)
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(init.kaiming_uniform(shape, dtype=dtype, rng=rng))
        bound = 1.0 / np.sqrt(self.in_features)
        self.bias = (Parameter(init.uniform((self.out_features,), bound, dtype, rng))
                     if bias else None)

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, out_features={self.out_features}"
        return text + ("" if self.bias is not None else ", bias=False")

    def forward(self, x):
        """Parameters: x (N, in_features). Returns (N, out_features)."""
        self._check_input(x, None, self.weight.dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            got = x.shape[1] if x.ndim == 2 else f"a rank-{x.ndim} array"
            raise ValueError(
                f"{self._describe()} expects {self.in_features} input features, got {got} "
                f"(input shape {x.shape}); the input must be (N, in_features)"
            )
        y = linear(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._save_for_backward(x=x)
        return y

    def backward(self, dy):
        """Accumulate dW and db; return dx of shape (N, in_features)."""
        x = self._saved_for_backward()["x"]
        dx, dweight, dbias = linear_backward(dy, x, self.weight.data)
        self.weight.accumulate_grad(dweight)
        if self.bias is not None:
            self.bias.accumulate_grad(dbias)
        return dx


class _Rectifier(_Layer):
    """ReLU and leaky ReLU: forward saves the mask ``x > 0``, backward routes ``dy``
    through it (:func:`cnnblas.ops.activations.rectify` / ``masked_gradient``)."""

    #: None for ReLU (exact zeros below 0); the slope for leaky ReLU.
    negative_slope: float | None = None
    _keeps_references = False

    def forward(self, x):
        """Parameters: x, any shape, float32/float64. Returns y, same shape and dtype."""
        self._check_input(x)
        y, positive = act.rectify(x, self.negative_slope)
        self._save_for_backward(mask=positive, dtype=x.dtype)
        return y

    def backward(self, dy):
        saved = self._saved_for_backward()
        self._check_grad(dy, saved["mask"].shape, saved["dtype"])
        return act.masked_gradient(dy, saved["mask"], negative_slope=self.negative_slope)


class ReLU(_Rectifier):
    """``y = max(x, 0)``; backward passes ``dy`` where ``x > 0`` (tutorial 3.2)."""


class LeakyReLU(_Rectifier):
    """``y = x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Parameters
    ----------
    negative_slope : float, default 0.01
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = check_real(negative_slope, "negative_slope")

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class _SmoothActivation(_Layer):
    """Sigmoid and tanh: forward saves the output ``y``, from which backward gets
    the derivative (``σ (1 - σ)`` and ``1 - tanh²``)."""

    _function = staticmethod(act.sigmoid)
    _gradient = staticmethod(act.sigmoid_backward)

    def forward(self, x):
        """Parameters: x, any shape, float32/float64. Returns y, same shape and dtype."""
        self._check_input(x)
        y = self._function(x)
        self._save_for_backward(y=y)
        return y

    def backward(self, dy):
        return self._gradient(dy, self._saved_for_backward()["y"])


class Sigmoid(_SmoothActivation):
    """Logistic function, computed without overflow; backward from the output."""


class Tanh(_SmoothActivation):
    """Hyperbolic tangent; backward from the output."""

    _function = staticmethod(act.tanh)
    _gradient = staticmethod(act.tanh_backward)


class _Pool2d(_Layer):
    """The pooling window (checked by :func:`cnnblas.ops.pooling.pool_window`)."""

    _keeps_references = False

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = pooling.pool_window(
            kernel_size, stride, padding)
        self.ceil_mode = check_bool(ceil_mode, "ceil_mode")

    def extra_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        return text + (", ceil_mode=True" if self.ceil_mode else "")


class MaxPool2d(_Pool2d):
    """2-D max pooling (tutorial Section 3.3).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        ``-inf`` padding, at most half the kernel.
    ceil_mode : bool, default False
        Round the output size up, keeping the partial windows at the right and
        bottom edges (as ``torch.nn.MaxPool2d``).

    Notes
    -----
    Ties go to the first maximum in row-major window order; the whole
    gradient of a window goes to that one element (tutorial Table 3.32).
    """

    def forward(self, x):
        """Parameters: x (N, C, H, W). Returns (N, C, out_h, out_w)."""
        self._check_input(x, 4)
        y, argmax = pooling.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                       self.ceil_mode)
        self._save_for_backward(argmax=argmax, input_shape=x.shape)
        return y

    def backward(self, dy):
        cache = self._saved_for_backward()
        return pooling.max_pool2d_backward(dy, cache["argmax"], cache["input_shape"])


class AvgPool2d(_Pool2d):
    """2-D average pooling with zero padding counted in the divisor.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        At most half the kernel; every window is divided by ``kh * kw``
        (PyTorch's default ``count_include_pad=True``), less the positions of a
        ceil-mode window past the padded image.
    ceil_mode : bool, default False
        Round the output size up, keeping the partial windows at the right and
        bottom edges (as ``torch.nn.AvgPool2d``).
    """

    def forward(self, x):
        """Parameters: x (N, C, H, W). Returns (N, C, out_h, out_w)."""
        self._check_input(x, 4)
        y = pooling.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)
        self._save_for_backward(input_shape=x.shape)
        return y

    def backward(self, dy):
        input_shape = self._saved_for_backward()["input_shape"]
        return pooling.avg_pool2d_backward(dy, input_shape, self.kernel_size, self.stride,
                                           self.padding, self.ceil_mode)


class Flatten(_Layer):
    """Reshape ``(N, d1, d2, ...)`` to ``(N, d1 * d2 * ...)`` in C order.

    C order on NCHW is PyTorch's ``nn.Flatten`` order (channel slowest), so a
    following :class:`Linear` takes PyTorch weights unchanged. A contiguous
    input is reshaped without a copy.
    """

    _keeps_references = False

    def forward(self, x):
        self._check_input(x)
        if x.ndim < 2:
            raise ValueError(
                f"{self._describe()} expects an input of rank >= 2 (N, ...), got shape {x.shape}"
            )
        self._save_for_backward(input_shape=x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        input_shape = self._saved_for_backward()["input_shape"]
        self._check_grad(dy, (input_shape[0], int(np.prod(input_shape[1:]))))
        return dy.reshape(input_shape)


class Identity(Module):
    """``y = x`` and ``dx = dy``: a placeholder where a network has no layer (a
    shortcut without projection, a removed head), as ``torch.nn.Identity``.

    It keeps nothing between forward and backward, so any number of uses in
    one forward pass need no bookkeeping.
    """

    _keeps_references = False

    def forward(self, x):
        return x

    def backward(self, dy):
        return dy


__all__ = [
    "Conv2d", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "MaxPool2d", "AvgPool2d",
    "Flatten", "Identity",
]
