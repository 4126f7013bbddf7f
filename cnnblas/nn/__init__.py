"""Layers, containers, losses and model builders with explicit backward passes.

Models are built by name with :func:`build_model` (the builders of
:data:`MODEL_BUILDERS`, to which :func:`register_model` adds a user's own) and
rebuilt from a checkpoint with :func:`model_from_checkpoint`.

>>> import numpy as np
>>> from cnnblas import nn
>>> model = nn.lenet5(input_size=8, rng=0)
>>> criterion = nn.SoftmaxCrossEntropy()
>>> x = np.zeros((2, 1, 8, 8), np.float32)
>>> loss = criterion(model(x), np.array([3, 5]))
>>> dx = model.backward(criterion.backward())  # fills every Parameter.grad
>>> [name for name, _ in model.named_parameters()][:2]
['0.weight', '0.bias']

A network that is not a chain is a composite module, written as in PyTorch:
its layers are attributes (the state-dict keys follow their names), and
``forward`` combines them. There is no autograd, so it also writes
``backward``: the layers' backwards in reverse order, *adding* the gradients
where the input forked. A layer may be applied more than once per forward;
each use keeps its own cache and gets its own ``backward``, the last use first.
Layers keep references to what their backward reads (a convolution its
input, a sigmoid its output): calling the model copies the caller's input,
but inside ``forward`` an array given to or returned by a layer must not be
changed in place (``x += self.conv(x)``) until that layer's backward has run,
unless the layer keeps neither (:mod:`cnnblas.nn.layers` lists what each keeps).

>>> class Residual(nn.Module):
...     # relu(x + conv(x)): x forks into the convolution and the sum.
...     def __init__(self, channels):
...         super().__init__()
...         self.conv = nn.Conv2d(channels, channels, 3, padding=1, rng=0)
...         self.relu = nn.ReLU()
...     def forward(self, x):
...         return self.relu(x + self.conv(x))
...     def backward(self, dy):
...         d_sum = self.relu.backward(dy)
...         return d_sum + self.conv.backward(d_sum)  # the two branches of x
>>> block = Residual(4)
>>> y = block(np.ones((1, 4, 5, 5), np.float32))
>>> block.backward(np.ones_like(y)).shape
(1, 4, 5, 5)
>>> list(block.state_dict())
['conv.weight', 'conv.bias']

:class:`BasicBlock` and :class:`Bottleneck` are the residual blocks of He et
al. (2016) and :class:`ResNet` stacks them, with torchvision's attribute names
and state-dict keys: :func:`resnet20`, :func:`resnet32`, :func:`resnet44`,
:func:`resnet56`, :func:`resnet110` (CIFAR-10) and :func:`resnet18`,
:func:`resnet34` (ImageNet layout).

>>> net = nn.resnet20(num_classes=10, rng=0)  # input_grad=False: data needs no dx
>>> logits = net(np.zeros((2, 3, 32, 32), np.float32))
>>> net.backward(np.ones_like(logits)) is None
True
>>> [key for key in net.state_dict() if key.startswith("layer2.0.downsample")][:2]
['layer2.0.downsample.0.weight', 'layer2.0.downsample.1.weight']
"""

from cnnblas.nn import init
from cnnblas.nn.adaptive_pool import AdaptiveAvgPool2d
from cnnblas.nn.blocks import BasicBlock, Bottleneck
from cnnblas.nn.conv_transpose import ConvTranspose2d
from cnnblas.nn.dropout import Dropout
from cnnblas.nn.layers import (
    AvgPool2d,
    Conv2d,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from cnnblas.nn.losses import MSELoss, SoftmaxCrossEntropy
from cnnblas.nn.models import (
    MODEL_BUILDERS,
    build_model,
    get_model_builder,
    lenet5,
    model_from_checkpoint,
    register_model,
    tutorial_cnn,
)
from cnnblas.nn.module import IncompatibleKeys, Module, Parameter, Sequential
from cnnblas.nn.normalization import BatchNorm2d
from cnnblas.nn.resnet import (
    ResNet,
    resnet18,
    resnet20,
    resnet32,
    resnet34,
    resnet44,
    resnet56,
    resnet110,
    resnet_cifar,
)

__all__ = [
    "Parameter", "Module", "Sequential", "IncompatibleKeys",
    "Conv2d", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "MaxPool2d", "AvgPool2d",
    "AdaptiveAvgPool2d", "Flatten", "Identity", "Dropout", "BatchNorm2d", "ConvTranspose2d",
    "BasicBlock", "Bottleneck", "ResNet",
    "SoftmaxCrossEntropy", "MSELoss",
    "lenet5", "tutorial_cnn",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet_cifar",
    "resnet18", "resnet34",
    "MODEL_BUILDERS", "register_model", "get_model_builder", "build_model", "model_from_checkpoint",
    "init",
]
