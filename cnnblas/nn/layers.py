"""Layers: each a :class:`~cnnblas.nn.Module` with its own forward and backward.

Every layer checks its input against its own configuration and raises errors
that name the layer, e.g. ``"Linear(in_features=400, out_features=120)
expects 400 input features, got 256 (input shape (8, 256))"``. The arithmetic
is delegated to the functional ops in :mod:`cnnblas.ops`.

What each layer caches between forward and backward (training mode only):

=============  =================================  ==================================
layer          cache                              why
=============  =================================  ==================================
Conv2d         ``x``                              dW = dY . colsᵀ needs the columns
Linear         ``x``                              dW = dYᵀ . X
ReLU           ``mask`` (bool, ``x > 0``), dtype  1 byte per element instead of 4-8
LeakyReLU      ``mask`` (bool, ``x > 0``), dtype  same
Sigmoid        ``y``                              dσ = σ (1 - σ)
Tanh           ``y``                              dtanh = 1 - tanh²
MaxPool2d      ``argmax``, ``input_shape``        scatter target of each window
AvgPool2d      ``input_shape``                    the gradient is spread uniformly
Flatten        ``input_shape``                    reshape back
Dropout        ``mask`` (scaled, dtype of x)      same units dropped in backward
BatchNorm2d    ``x_hat``, ``inv_std``             the normalised input and 1/σ
=============  =================================  ==================================
"""

from __future__ import annotations

import numbers

import numpy as np

from cnnblas.checks import (
    as_pair,
    check_float_array,
    check_groups,
    check_int,
    check_real,
    check_shape,
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
        check_float_array(x, f"input of {self._describe()}", ndim=ndim)
        if dtype is not None and x.dtype != dtype:
            raise TypeError(
                f"{self._describe()} has {np.dtype(dtype)} parameters but received a "
                f"{x.dtype} input; build the layer with dtype={x.dtype} or cast the input"
            )

    def _check_grad(self, dy, shape, dtype=None) -> None:
        """``dy`` must be a float array of ``shape`` (and of the forward's ``dtype``,
        when given: a float64 gradient must not silently upcast a float32 layer)."""
        check_float_array(dy, f"dy of {self._describe()}", dtype=dtype)
        check_shape(dy, shape, f"dy of {self._describe()}")


class Conv2d(_Layer):
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
        self.padding = padding  # validated against the input size by conv2d
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        # Checked now, not at the first forward: an unusable algorithm is a build error.
        check_algorithm(shape, self.stride, self.dilation, self.groups, algorithm)
        self.algorithm = algorithm
        dtype = init.as_float_dtype(dtype)
        rng = init.as_rng(rng)
        self.weight = Parameter(init.kaiming_uniform(shape, dtype=dtype, rng=rng))
        bound = 1.0 / np.sqrt(init.fan_in(shape))
        self.bias = (Parameter(init.uniform((self.out_channels,), bound, dtype, rng))
                     if bias else None)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1):
            text += f", stride={self.stride}"
        if self.padding not in (0, (0, 0)):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.algorithm != "auto":
            text += f", algorithm={self.algorithm!r}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text

    def _conv_args(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, algorithm=self.algorithm)

    def forward(self, x):
        """Parameters: x (N, in_channels, H, W). Returns (N, out_channels, out_h, out_w)."""
        self._check_input(x, 4, self.weight.dtype)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self._describe()} expects {self.in_channels} input channels, got "
                f"{x.shape[1]} (input shape {x.shape})"
            )
        bias = None if self.bias is None else self.bias.data
        y = conv2d(x, self.weight.data, bias, **self._conv_args())
        self._save_for_backward(x=x)
        return y

    def backward(self, dy):
        """Accumulate dW and db; return dx with the shape of the forward input.

        Returns None instead of dx when the layer was built with ``input_grad=False``.
        """
        x = self._saved_for_backward()["x"]
        dx, dweight, dbias = conv2d_backward(dy, x, self.weight.data, **self._conv_args(),
                                             input_grad=self.input_grad)
        self.weight.accumulate_grad(dweight)
        if self.bias is not None:
            self.bias.accumulate_grad(dbias)
        return dx


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


class Sigmoid(_Layer):
    """Logistic function, computed without overflow; backward from the output."""

    def forward(self, x):
        self._check_input(x)
        y = act.sigmoid(x)
        self._save_for_backward(y=y)
        return y

    def backward(self, dy):
        return act.sigmoid_backward(dy, self._saved_for_backward()["y"])


class Tanh(_Layer):
    """Hyperbolic tangent; backward from the output."""

    def forward(self, x):
        self._check_input(x)
        y = act.tanh(x)
        self._save_for_backward(y=y)
        return y

    def backward(self, dy):
        return act.tanh_backward(dy, self._saved_for_backward()["y"])


class MaxPool2d(_Layer):
    """2-D max pooling (tutorial Section 3.3).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        ``-inf`` padding, at most half the kernel.

    Notes
    -----
    Ties go to the first maximum in row-major window order; the whole
    gradient of a window goes to that one element (tutorial Table 3.32).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = pooling.pool_window(
            kernel_size, stride, padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x):
        """Parameters: x (N, C, H, W). Returns (N, C, out_h, out_w)."""
        self._check_input(x, 4)
        y, argmax = pooling.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        self._save_for_backward(argmax=argmax, input_shape=x.shape)
        return y

    def backward(self, dy):
        cache = self._saved_for_backward()
        return pooling.max_pool2d_backward(dy, cache["argmax"], cache["input_shape"])


class AvgPool2d(_Layer):
    """2-D average pooling with zero padding counted in the divisor.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        At most half the kernel; every window is divided by ``kh * kw``
        (PyTorch's default ``count_include_pad=True``).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = pooling.pool_window(
            kernel_size, stride, padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x):
        """Parameters: x (N, C, H, W). Returns (N, C, out_h, out_w)."""
        self._check_input(x, 4)
        y = pooling.avg_pool2d(x, self.kernel_size, self.stride, self.padding)
        self._save_for_backward(input_shape=x.shape)
        return y

    def backward(self, dy):
        input_shape = self._saved_for_backward()["input_shape"]
        return pooling.avg_pool2d_backward(dy, input_shape, self.kernel_size, self.stride,
                                           self.padding)


class Flatten(_Layer):
    """Reshape ``(N, d1, d2, ...)`` to ``(N, d1 * d2 * ...)`` in C order.

    C order on NCHW is PyTorch's ``nn.Flatten`` order (channel slowest), so a
    following :class:`Linear` takes PyTorch weights unchanged. A contiguous
    input is reshaped without a copy.
    """

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


class Dropout(_Layer):
    """Inverted dropout: zero each element with probability ``p`` in training
    and scale the survivors by ``1 / (1 - p)``; the identity in eval mode.

    Parameters
    ----------
    p : float in [0, 1], default 0.5
    rng : None, int or numpy.random.Generator
        An int seed makes the sequence of masks reproducible.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = check_real(p, "Dropout probability p")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"Dropout probability p must be in [0, 1], got {p!r}")
        self.rng = init.as_rng(rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x):
        """Parameters: x, any shape. Returns x * mask (train) or x itself (eval)."""
        self._check_input(x)
        if not self.training:
            return x
        if self.p == 1.0:
            mask = np.zeros_like(x)  # everything dropped; avoid dividing by 0
        else:
            keep = self.rng.random(x.shape, dtype=x.dtype) >= x.dtype.type(self.p)
            mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        self._save_for_backward(mask=mask)
        return x * mask

    def backward(self, dy):
        mask = self._saved_for_backward()["mask"]
        self._check_grad(dy, mask.shape, mask.dtype)
        return dy * mask


class BatchNorm2d(_Layer):
    """Batch normalisation over (N, H, W) for each channel of NCHW input.

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        Running statistics follow ``r = (1 - momentum) * r + momentum * batch``;
        None uses the cumulative average ``momentum = 1 / num_batches_tracked``.
    affine : bool, default True
        Learn a per-channel scale ``weight`` (init 1) and shift ``bias`` (init 0).
    dtype : float32 or float64, default float32

    Attributes
    ----------
    weight, bias : Parameter, shape (C,), or None when not affine
    running_mean, running_var : ndarray, shape (C,), buffers
    num_batches_tracked : ndarray, shape (), int64, buffer

    Notes
    -----
    As ``torch.nn.BatchNorm2d``: training normalises with the batch mean and
    biased variance, and stores the *unbiased* variance (``m / (m - 1)``,
    ``m = N*H*W``) in ``running_var``; eval mode uses the running statistics.
    The batch statistics are accumulated in float64.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=np.float32):
        super().__init__()
        self.num_features = check_int(num_features, "num_features", minimum=1)
        if not isinstance(eps, numbers.Real) or eps <= 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if momentum is not None and (not isinstance(momentum, numbers.Real)
                                     or not 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum must be None or in [0, 1], got {momentum!r}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        dtype = init.as_float_dtype(dtype)
        c = self.num_features
        self.weight = Parameter(np.ones(c, dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(c, dtype)) if self.affine else None
        self.register_buffer("running_mean", np.zeros(c, dtype))
        self.register_buffer("running_var", np.ones(c, dtype))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    @property
    def dtype(self) -> np.dtype:
        return self.running_mean.dtype

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}")

    def _per_channel(self, values: np.ndarray) -> np.ndarray:
        """(C,) viewed as (1, C, 1, 1) in the layer's dtype, to broadcast over NCHW."""
        return values.astype(self.dtype, copy=False).reshape(1, -1, 1, 1)

    def _checked_affine(self, x):
        """Check ``x`` (N, num_features, H, W); return (gamma, beta), ones/zeros
        when the layer has no affine parameters."""
        self._check_input(x, 4, self.dtype)
        c = x.shape[1]
        if c != self.num_features:
            raise ValueError(
                f"{self._describe()} expects {self.num_features} channels, got {c} "
                f"(input shape {x.shape})"
            )
        if self.affine:
            return self.weight.data, self.bias.data
        return np.ones(c, self.dtype), np.zeros(c, self.dtype)

    def forward(self, x):
        """Parameters: x (N, C, H, W). Returns the normalised (N, C, H, W)."""
        gamma, beta = self._checked_affine(x)
        n, c, h, w = x.shape
        if not self.training:
            # y = x * scale + shift with the running statistics: one pass, no cache.
            scale = gamma / np.sqrt(self.running_var + self.dtype.type(self.eps))
            shift = beta - self.running_mean * scale
            return x * self._per_channel(scale) + self._per_channel(shift)

        count = n * h * w
        if count < 2:
            raise ValueError(
                f"{self._describe()} needs more than 1 value per channel in training mode, "
                f"got input shape {x.shape}"
            )
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
        centered = x - self._per_channel(mean)
        var = np.square(centered).mean(axis=(0, 2, 3), dtype=np.float64)  # biased
        y, x_hat, inv_std = self._normalize_and_track(centered, mean, var, count, gamma, beta)
        self._save_for_backward(x_hat=x_hat, inv_std=inv_std)
        return y

    def _normalize_and_track(self, centered, mean, var, count, gamma, beta):
        """Training-mode output from batch statistics over ``count`` values per channel.

        ``mean`` and the biased ``var`` are float64 per channel and ``centered`` is
        ``x - mean``. Updates the running statistics (with the unbiased variance,
        as PyTorch does). Returns (y, x_hat, inv_std).
        """
        inv_std = 1.0 / np.sqrt(var + self.eps)
        x_hat = centered * self._per_channel(inv_std)
        y = x_hat * self._per_channel(gamma) + self._per_channel(beta)
        self.num_batches_tracked += 1
        factor = (self.momentum if self.momentum is not None
                  else 1.0 / float(self.num_batches_tracked))
        self.running_mean[...] = (1 - factor) * self.running_mean + factor * mean
        self.running_var[...] = (1 - factor) * self.running_var + factor * var * (
            count / (count - 1))
        return y, x_hat, inv_std

    def backward(self, dy):
        """Return dx; accumulate dweight = Σ dy·x̂ and dbias = Σ dy per channel.

        With m = N*H*W: ``dx = weight * inv_std / m * (m*dy - Σdy - x̂ Σ(dy·x̂))``.
        """
        cache = self._saved_for_backward()
        x_hat = cache["x_hat"]
        self._check_grad(dy, x_hat.shape)
        dbias = dy.sum(axis=(0, 2, 3), dtype=np.float64)
        dweight = (dy * x_hat).sum(axis=(0, 2, 3), dtype=np.float64)
        if self.affine:
            self.weight.accumulate_grad(dweight.astype(self.dtype))
            self.bias.accumulate_grad(dbias.astype(self.dtype))
        n, _, h, w = x_hat.shape
        return self._input_grad(dy, x_hat, cache["inv_std"], n * h * w, dbias, dweight)

    def _input_grad(self, dy, x_hat, inv_std, count, dbias, dweight):
        """dx from the per-channel sums Σdy (``dbias``) and Σdy·x̂ (``dweight``) over
        the ``count`` values the batch statistics came from."""
        gamma = self.weight.data if self.affine else np.ones(x_hat.shape[1], self.dtype)
        coeff = gamma * inv_std / count
        dx = self._per_channel(coeff) * (
            dy * self.dtype.type(count)
            - self._per_channel(dbias)
            - x_hat * self._per_channel(dweight)
        )
        return dx.astype(self.dtype, copy=False)


__all__ = [
    "Conv2d", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "MaxPool2d", "AvgPool2d",
    "Flatten", "Dropout", "BatchNorm2d",
]
