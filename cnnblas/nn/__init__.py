"""Layers, containers, losses and model builders with explicit backward passes.

Models are built by name with :func:`build_model` (the builders of
:data:`MODEL_BUILDERS`) and rebuilt from a checkpoint with :func:`load_model`.

>>> import numpy as np
>>> from cnnblas import nn
>>> model = nn.lenet5(input_size=8, rng=0)
>>> criterion = nn.SoftmaxCrossEntropy()
>>> x = np.zeros((2, 1, 8, 8), np.float32)
>>> loss = criterion(model(x), np.array([3, 5]))
>>> dx = model.backward(criterion.backward())  # fills every Parameter.grad
>>> [name for name, _ in model.named_parameters()][:2]
['0.weight', '0.bias']
"""

from cnnblas.nn import init
from cnnblas.nn.adaptive_pool import AdaptiveAvgPool2d
from cnnblas.nn.blocks import BasicBlock, Bottleneck
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
    lenet5,
    load_model,
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
    "AdaptiveAvgPool2d", "Flatten", "Identity", "Dropout", "BatchNorm2d",
    "BasicBlock", "Bottleneck", "ResNet",
    "SoftmaxCrossEntropy", "MSELoss",
    "lenet5", "tutorial_cnn",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet_cifar",
    "resnet18", "resnet34",
    "MODEL_BUILDERS", "build_model", "load_model",
    "init",
]
