"""Residual networks (He et al. 2016) with torchvision's layout and state-dict keys.

:class:`ResNet` stacks a stem, stages ``layer1``, ``layer2``, ... of residual
blocks (:mod:`cnnblas.nn.blocks`), global average pooling and a linear
classifier. Two stems:

- ``"imagenet"``: torchvision's ``resnet18`` / ``resnet34``: a 7x7 stride-2
  convolution (64 channels), BatchNorm, ReLU and a 3x3 stride-2 max pooling,
  then four stages of 64/128/256/512 channels;
- ``"cifar"``: the CIFAR-10 networks of the paper's Section 4.2: a 3x3
  convolution (16 channels), BatchNorm and ReLU, then three stages of 16/32/64
  channels with ``n = (depth - 2) / 6`` blocks each (``resnet20`` ... ``resnet110``).
  The shortcuts that change shape are 1x1 convolutions (option B).

Each stage but the first halves the resolution in its first block. State-dict
keys are torchvision's (``conv1.weight``, ``bn1.running_mean``,
``layer2.0.downsample.0.weight``, ``fc.bias``, ...), so weights move between
the two unchanged.
"""

from __future__ import annotations

import functools

import numpy as np

from cnnblas.checks import check_bool, check_int
from cnnblas.nn import init
from cnnblas.nn.adaptive_pool import AdaptiveAvgPool2d
from cnnblas.nn.blocks import BasicBlock, downsample, fusable
from cnnblas.nn.layers import Conv2d, Linear, MaxPool2d, ReLU
from cnnblas.nn.module import Module, Sequential, _prefixed
from cnnblas.nn.normalization import BatchNorm2d

#: Stage widths (channels of each stage's blocks, before expansion) per stem.
STAGE_WIDTHS = {"imagenet": (64, 128, 256, 512), "cifar": (16, 32, 64)}


class ResNet(Module):
    """A residual network: stem, stages of blocks, global average pooling, ``fc``.

    Parameters
    ----------
    block : class
        :class:`~cnnblas.nn.BasicBlock`, :class:`~cnnblas.nn.Bottleneck`, or any
        Module class with their constructor ``(inplanes, planes, stride=1,
        downsample=None, dtype=..., rng=...)`` and an int ``expansion``.
    layers : sequence of int
        Blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 3, 3)``
        for ResNet-20; one entry per stage of the stem's widths
        (:data:`STAGE_WIDTHS`: four for "imagenet", three for "cifar").
    num_classes : int, default 1000
    in_channels : int, default 3
    stem : {"imagenet", "cifar"}, default "imagenet"
    dtype : float32 or float64, default float32
    rng : None, int or numpy.random.Generator
    input_grad : bool, default False
        False when the input is data: the stem convolution then skips the
        input gradient and :meth:`backward` returns None.

    Attributes
    ----------
    conv1, bn1, relu : the stem; ``maxpool`` (MaxPool2d, or None for "cifar")
    layer1, layer2, ... : Sequential of blocks
    avgpool : AdaptiveAvgPool2d((1, 1))
    fc : Linear(widths[-1] * block.expansion, num_classes)

    Notes
    -----
    Input (N, in_channels, H, W); output logits (N, num_classes). Initialised
    as torchvision's ResNet: convolutions from ``N(0, 2 / fan_out)``
    (:func:`cnnblas.nn.init.kaiming_normal_fan_out`), BatchNorm weight 1 and
    bias 0, ``fc`` with the default Linear initialisation.
    """

    def __init__(self, block, layers, num_classes=1000, in_channels=3, stem="imagenet",
                 dtype=np.float32, rng=None, input_grad=False):
        super().__init__()
        if not (isinstance(block, type) and issubclass(block, Module)
                and isinstance(getattr(block, "expansion", None), int)):
            raise TypeError("ResNet block must be a cnnblas.nn.Module class with an int "
                            f"expansion (BasicBlock, Bottleneck), got {block!r}")
        if stem not in STAGE_WIDTHS:
            raise ValueError(f"ResNet stem must be one of {sorted(STAGE_WIDTHS)}, got {stem!r}")
        widths = STAGE_WIDTHS[stem]
        if not isinstance(layers, (tuple, list)):
            raise TypeError(f"ResNet layers must be a sequence of {len(widths)} block counts "
                            f"for the {stem!r} stem, got {layers!r}")
        layers = tuple(layers)
        if len(layers) != len(widths):
            raise ValueError(f"ResNet layers must give {len(widths)} block counts for the "
                             f"{stem!r} stem, got {layers!r}")
        for count in layers:
            check_int(count, "ResNet blocks per stage", minimum=1)
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        input_grad = check_bool(input_grad, "input_grad")
        self.stem = stem
        dtype = init.as_float_dtype(dtype)
        rng = init.as_rng(rng)

        if stem == "imagenet":
            self.conv1 = Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False,
                                dtype=dtype, rng=rng, input_grad=input_grad)
        else:
            self.conv1 = Conv2d(in_channels, widths[0], 3, padding=1, bias=False, dtype=dtype,
                                rng=rng, input_grad=input_grad)
        self.bn1 = BatchNorm2d(widths[0], dtype=dtype)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else None
        self.inplanes = widths[0]
        for index, (width, count) in enumerate(zip(widths, layers, strict=True)):
            stage = self._make_layer(block, width, count, 1 if index == 0 else 2, dtype, rng)
            setattr(self, f"layer{index + 1}", stage)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(widths[-1] * block.expansion, num_classes, dtype=dtype, rng=rng)
        for module in self.modules():
            if isinstance(module, Conv2d):
                module.weight.data[...] = init.kaiming_normal_fan_out(
                    module.weight.shape, dtype, rng)

    def _make_layer(self, block, planes, blocks, stride, dtype, rng) -> Sequential:
        """One stage: ``blocks`` blocks of ``planes`` channels, the first with
        ``stride`` and, when the shape changes, a projection shortcut."""
        out_channels = planes * block.expansion
        shortcut = None
        if stride != 1 or self.inplanes != out_channels:
            shortcut = downsample(self.inplanes, out_channels, stride, dtype, rng)
        stage = [block(self.inplanes, planes, stride, shortcut, dtype=dtype, rng=rng)]
        self.inplanes = out_channels
        stage += [block(self.inplanes, planes, dtype=dtype, rng=rng) for _ in range(1, blocks)]
        return Sequential(*stage)

    def extra_repr(self) -> str:
        return f"stem={self.stem!r}"

    def _trunk(self) -> list[tuple[str, Module]]:
        """The layers before ``fc``, in forward order."""
        names = ["conv1", "bn1", "relu"] + ([] if self.maxpool is None else ["maxpool"])
        stage = 1
        while hasattr(self, f"layer{stage}"):
            names.append(f"layer{stage}")
            stage += 1
        return [(name, getattr(self, name)) for name in names + ["avgpool"]]

    def _steps(self) -> list[tuple[str, object, object]]:
        """(name, forward, backward) of the layers before ``fc``, in forward order;
        the stem's ``bn1`` and ``relu`` are one step (one pass over memory) when
        they are the stock layers (:func:`~cnnblas.nn.blocks.fusable`)."""
        fuse_stem = fusable(self.bn1, self.relu)
        steps = []
        for name, layer in self._trunk():
            if fuse_stem and name == "relu":
                continue
            forward = layer.forward
            if fuse_stem and name == "bn1":
                forward = functools.partial(layer.forward_fused, relu=True)
            steps.append((name, forward, layer.backward))
        return steps

    def forward(self, x):
        """Parameters: x (N, in_channels, H, W). Returns logits (N, num_classes)."""
        for name, forward, _ in self._steps():
            x = self._run(name, forward, x)
        return self._run("fc", self.fc.forward, x.reshape(x.shape[0], -1))

    def backward(self, dy):
        """Back-propagate the logits' gradient; fills every parameter's gradient.

        Returns dx (N, in_channels, H, W), or None when built with ``input_grad=False``.
        """
        d = self._run("fc", self.fc.backward, dy)
        d = d.reshape(*d.shape, 1, 1)  # the pooled (N, C, 1, 1) map
        for name, _, backward in reversed(self._steps()):
            d = self._run(name, backward, d)
        return d

    def _run(self, name: str, method, array):
        """``method(array)``, its errors prefixed with ``ResNet.<name>``."""
        try:
            return method(array)
        except (ValueError, TypeError, RuntimeError) as error:
            raise _prefixed(error, f"{type(self).__name__}.{name}") from error


def resnet_cifar(depth, num_classes=10, in_channels=3, rng=None, dtype=np.float32, *,
                 input_grad=False) -> ResNet:
    """The CIFAR-10 ResNet of depth ``6n + 2`` (He et al. 2016, Section 4.2).

    A 3x3 16-channel stem, three stages of ``n`` BasicBlocks (16, 32, 64
    channels; stride 2 and a 1x1 projection shortcut at the first block of
    stages 2 and 3), global average pooling and ``fc`` (64 -> num_classes).
    Depth 20, 32, 44, 56 and 110 are the paper's networks (:func:`resnet20`, ...).

    Parameters
    ----------
    depth : int
        ``6n + 2`` with n >= 1: 8, 14, 20, ...
    num_classes, in_channels : int
    rng : None, int or numpy.random.Generator
    dtype : float32 or float64
    input_grad : bool, default False
        True to get the input's gradient from ``backward`` (else None).

    Returns
    -------
    ResNet
        Maps (N, in_channels, H, W) to (N, num_classes); 32x32 for CIFAR.
    """
    depth = check_int(depth, "depth", minimum=8)
    if (depth - 2) % 6:
        raise ValueError(f"depth of a CIFAR ResNet must be 6n + 2 (8, 14, 20, 32, 44, 56, "
                         f"110, ...), got {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, (n, n, n), num_classes=num_classes, in_channels=in_channels,
                  stem="cifar", dtype=dtype, rng=rng, input_grad=input_grad)


def _cifar_builder(depth: int):
    def builder(num_classes=10, in_channels=3, rng=None, dtype=np.float32, *,
                input_grad=False) -> ResNet:
        return resnet_cifar(depth, num_classes, in_channels, rng, dtype, input_grad=input_grad)

    n = (depth - 2) // 6
    builder.__name__ = builder.__qualname__ = f"resnet{depth}"
    builder.__doc__ = (
        f"ResNet-{depth} for CIFAR-10: :func:`resnet_cifar` with depth {depth} "
        f"({n} BasicBlocks per stage, {6 * n} + 2 weighted layers).\n\n"
        "    Parameters: num_classes (10), in_channels (3), rng, dtype (float32), and\n"
        "    keyword input_grad (False: backward returns None).\n"
    )
    return builder


def _imagenet_builder(depth: int, layers: tuple[int, ...]):
    def builder(num_classes=1000, in_channels=3, rng=None, dtype=np.float32, *,
                input_grad=False) -> ResNet:
        return ResNet(BasicBlock, layers, num_classes=num_classes, in_channels=in_channels,
                      stem="imagenet", dtype=dtype, rng=rng, input_grad=input_grad)

    builder.__name__ = builder.__qualname__ = f"resnet{depth}"
    builder.__doc__ = (
        f"ResNet-{depth} with torchvision's ImageNet layout: BasicBlocks {layers} in "
        "stages of 64/128/256/512 channels after a 7x7 stride-2 stem and a max pooling.\n\n"
        "    Parameters: num_classes (1000), in_channels (3), rng, dtype (float32), and\n"
        "    keyword input_grad (False: backward returns None).\n"
    )
    return builder


resnet20 = _cifar_builder(20)
resnet32 = _cifar_builder(32)
resnet44 = _cifar_builder(44)
resnet56 = _cifar_builder(56)
resnet110 = _cifar_builder(110)
resnet18 = _imagenet_builder(18, (2, 2, 2, 2))
resnet34 = _imagenet_builder(34, (3, 4, 6, 3))

__all__ = ["ResNet", "resnet_cifar", "resnet20", "resnet32", "resnet44", "resnet56",
           "resnet110", "resnet18", "resnet34", "STAGE_WIDTHS"]
