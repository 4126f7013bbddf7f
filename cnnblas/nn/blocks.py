"""Residual blocks of He et al. (2016), "Deep Residual Learning for Image Recognition".

A block computes ``relu(F(x) + shortcut(x))``: the input forks into the
residual branch ``F`` (two or three convolutions with batch normalisation)
and the shortcut (the identity, or a 1x1 strided convolution and batch
normalisation when the shape changes: the paper's option B). Its backward
runs the two branches in reverse and *adds* their input gradients, since
``x`` fed both.

The attribute names are torchvision's (``conv1``, ``bn1``, ``conv2``, ``bn2``,
``conv3``, ``bn3``, ``relu``, ``downsample``), so state-dict keys match it
key for key. As there, one ``relu`` layer is applied two (or three) times per
forward; each application keeps its own cache (see :mod:`cnnblas.nn.module`)
and the backward calls ``relu.backward`` once per use, the last use first.

As built (BatchNorm2d layers and the stock ReLU), a block runs each
BatchNorm-ReLU pair as one pass over memory, and its tail ``relu(bn(out) +
shortcut)`` as one more (:meth:`BatchNorm2d.forward_fused`); the ``relu``
layer is then not called. The results are those of the separate layers: bit
for bit in float32, and in float64 to the last bit or so of the backward's
float64 sums, which the masked kernel adds in another order. A block whose
BatchNorm or ReLU was replaced (a subclass overriding forward, a LeakyReLU,
...) calls its layers one by one.
"""

from __future__ import annotations

import numpy as np

from cnnblas.checks import check_float_array, check_int
from cnnblas.nn.layers import Conv2d, ReLU
from cnnblas.nn.module import Module, Sequential
from cnnblas.nn.normalization import BatchNorm2d


def conv3x3(in_channels, out_channels, stride=1, dtype=np.float32, rng=None) -> Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False,
                  dtype=dtype, rng=rng)


def conv1x1(in_channels, out_channels, stride=1, dtype=np.float32, rng=None) -> Conv2d:
    """1x1 convolution without bias (a BatchNorm follows)."""
    return Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, dtype=dtype, rng=rng)


def downsample(in_channels, out_channels, stride, dtype=np.float32, rng=None) -> Sequential:
    """The projection shortcut (option B): ``Sequential(conv1x1(stride), BatchNorm2d)``,
    keys ``downsample.0.weight`` and ``downsample.1.*`` as in torchvision."""
    return Sequential(conv1x1(in_channels, out_channels, stride, dtype, rng),
                      BatchNorm2d(out_channels, dtype=dtype))


def fusable(norm, relu) -> bool:
    """Whether ``relu(norm(x))`` may run as ``norm.forward_fused(x, relu=True)``: a
    :class:`BatchNorm2d` (or subclass) whose forward and backward are
    BatchNorm2d's, followed by a plain :class:`ReLU`."""
    return (isinstance(norm, BatchNorm2d) and type(relu) is ReLU
            and type(norm).forward is BatchNorm2d.forward
            and type(norm).backward is BatchNorm2d.backward)


class _ResidualBlock(Module):
    """What both blocks share: the checks, the shortcut and the final sum."""

    expansion = 1
    #: The block's BatchNorm attributes, in forward order.
    _norms: tuple[str, ...] = ()

    def _init_shape(self, inplanes, planes, stride, downsample) -> None:
        self.inplanes = check_int(inplanes, f"{type(self).__name__} inplanes", minimum=1)
        self.planes = check_int(planes, f"{type(self).__name__} planes", minimum=1)
        self.stride = check_int(stride, f"{type(self).__name__} stride", minimum=1)
        out_channels = self.planes * self.expansion
        if downsample is None and (self.stride != 1 or self.inplanes != out_channels):
            raise ValueError(
                f"{self._describe()} needs a downsample shortcut: its output has "
                f"{out_channels} channels (planes * {self.expansion}) at stride {self.stride}, "
                f"but the identity shortcut would pass {self.inplanes} channels at stride 1"
            )
        if downsample is not None and not isinstance(downsample, Module):
            raise TypeError(f"{type(self).__name__} downsample must be a cnnblas.nn.Module or "
                            f"None, got {type(downsample).__name__}")

    def extra_repr(self) -> str:
        return f"inplanes={self.inplanes}, planes={self.planes}, stride={self.stride}"

    def _check_block_input(self, x) -> None:
        check_float_array(x, f"input of {self._describe()}", ndim=4)
        if x.shape[1] != self.inplanes:
            raise ValueError(
                f"{self._describe()} expects {self.inplanes} input channels, got "
                f"{x.shape[1]} (input shape {x.shape})"
            )

    def _shortcut(self, x, out_shape):
        """``shortcut(x)``, checked against the residual branch's shape (a custom
        downsample may not match it)."""
        identity = x if self.downsample is None else self.downsample(x)
        if identity.shape != out_shape:
            raise ValueError(
                f"{self._describe()}: the shortcut gives shape {identity.shape} but the "
                f"residual branch gives {out_shape}"
            )
        return identity

    def _add_shortcut(self, out, x):
        return out + self._shortcut(x, out.shape)

    def _shortcut_backward(self, d_sum):
        return d_sum if self.downsample is None else self.downsample.backward(d_sum)

    def _fused(self) -> bool:
        """Whether every BatchNorm of the block is followed by the stock ReLU (as
        built): then each BatchNorm-ReLU pair, and the tail's BatchNorm, sum and
        ReLU, run as one pass (:meth:`BatchNorm2d.forward_fused`)."""
        return all(fusable(getattr(self, name), self.relu) for name in self._norms)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions and a shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x))``.

    Parameters
    ----------
    inplanes : int
        Input channels.
    planes : int
        Channels of both convolutions and of the output (``expansion = 1``).
    stride : int, default 1
        Stride of ``conv1`` (and of the downsample, which must then be given).
    downsample : Module or None
        The shortcut; None is the identity, which needs ``stride == 1`` and
        ``inplanes == planes``. :func:`downsample` builds torchvision's.
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator

    Notes
    -----
    Input (N, inplanes, H, W); output (N, planes, ceil(H/stride), ceil(W/stride)).
    """

    expansion = 1
    _norms = ("bn1", "bn2")

    def __init__(self, inplanes, planes, stride=1, downsample=None, dtype=np.float32,
                 rng=None):
        super().__init__()
        self._init_shape(inplanes, planes, stride, downsample)
        self.conv1 = conv3x3(self.inplanes, self.planes, self.stride, dtype, rng)
        self.bn1 = BatchNorm2d(self.planes, dtype=dtype)
        self.relu = ReLU()
        self.conv2 = conv3x3(self.planes, self.planes, 1, dtype, rng)
        self.bn2 = BatchNorm2d(self.planes, dtype=dtype)
        self.downsample = downsample

    def forward(self, x):
        self._check_block_input(x)
        if self._fused():
            out = self.bn1.forward_fused(self.conv1(x), relu=True)
            out = self.conv2(out)
            return self.bn2.forward_fused(out, self._shortcut(x, out.shape), relu=True)
        out = self.relu(self.bn1(self.conv1(x)))           # first use of relu
        out = self.bn2(self.conv2(out))
        return self.relu(self._add_shortcut(out, x))       # second use

    def backward(self, dy):
        if self._fused():
            d_out, d_sum = self.bn2.backward_fused(dy)     # d_sum: dy through the last ReLU
            d_out = self.bn1.backward(self.conv2.backward(d_out))
        else:
            d_sum = self.relu.backward(dy)                 # the second use first
            d_out = self.bn1.backward(self.relu.backward(self.conv2.backward(
                self.bn2.backward(d_sum))))
        # x forked into conv1 and the shortcut: their gradients add up.
        return self.conv1.backward(d_out) + self._shortcut_backward(d_sum)


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand (x4), and a shortcut (torchvision's "v1.5":
    the stride is on the 3x3 convolution).

    Parameters
    ----------
    inplanes : int
        Input channels.
    planes : int
        Channels of the 1x1 and 3x3 convolutions; the output has
        ``planes * 4`` (``expansion = 4``).
    stride : int, default 1
        Stride of ``conv2``.
    downsample : Module or None
        The shortcut; None is the identity, which needs ``stride == 1`` and
        ``inplanes == 4 * planes``.
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator

    Notes
    -----
    Input (N, inplanes, H, W); output (N, 4 * planes, ceil(H/stride), ceil(W/stride)).
    """

    expansion = 4
    _norms = ("bn1", "bn2", "bn3")

    def __init__(self, inplanes, planes, stride=1, downsample=None, dtype=np.float32,
                 rng=None):
        super().__init__()
        self._init_shape(inplanes, planes, stride, downsample)
        width = self.planes
        self.conv1 = conv1x1(self.inplanes, width, 1, dtype, rng)
        self.bn1 = BatchNorm2d(width, dtype=dtype)
        self.conv2 = conv3x3(width, width, self.stride, dtype, rng)
        self.bn2 = BatchNorm2d(width, dtype=dtype)
        self.conv3 = conv1x1(width, self.planes * self.expansion, 1, dtype, rng)
        self.bn3 = BatchNorm2d(self.planes * self.expansion, dtype=dtype)
        self.relu = ReLU()
        self.downsample = downsample

    def forward(self, x):
        self._check_block_input(x)
        if self._fused():
            out = self.bn1.forward_fused(self.conv1(x), relu=True)
            out = self.bn2.forward_fused(self.conv2(out), relu=True)
            out = self.conv3(out)
            return self.bn3.forward_fused(out, self._shortcut(x, out.shape), relu=True)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self._add_shortcut(out, x))

    def backward(self, dy):
        if self._fused():
            d_out, d_sum = self.bn3.backward_fused(dy)
            d_out = self.bn2.backward(self.conv3.backward(d_out))
            d_out = self.bn1.backward(self.conv2.backward(d_out))
        else:
            d_sum = self.relu.backward(dy)                 # relu's uses in reverse
            d_out = self.bn3.backward(d_sum)
            d_out = self.bn2.backward(self.relu.backward(self.conv3.backward(d_out)))
            d_out = self.bn1.backward(self.relu.backward(self.conv2.backward(d_out)))
        return self.conv1.backward(d_out) + self._shortcut_backward(d_sum)


__all__ = ["BasicBlock", "Bottleneck", "conv3x3", "conv1x1", "downsample", "fusable"]
