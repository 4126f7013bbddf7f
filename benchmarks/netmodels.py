"""The whole networks of the benchmark report, built the same way in cnnblas and PyTorch.

Two networks (:data:`NETWORKS`), each trained with the loop a user writes
(clear the gradients, forward, softmax cross-entropy, backward, SGD step) and
run for one-image predictions in eval mode:

``lenet5``
    Batch 64 of 1x28x28, 10 classes, SGD lr 0.01 momentum 0.9. Written the
    obvious way: a ``cnnblas.nn.Sequential`` of the layers with no flags
    (so its first convolution also computes the input's gradient, which
    nobody uses) against the same ``torch.nn.Sequential``.
``resnet20``
    Batch 128 of 3x32x32, 10 classes, SGD lr 0.1 momentum 0.9 weight decay
    5e-4, BatchNorm in training mode: :func:`cnnblas.nn.resnet20` against
    :func:`torch_resnet20`, the CIFAR layout of He et al. (2016) built from
    :mod:`benchmarks.torch_resnet` with torchvision's attribute names and
    cnnblas's shortcuts (a 1x1 strided convolution and BatchNorm where the
    shape changes).

Both engines start from the same weights: cnnblas's initial ``state_dict``
saved to ``.npz`` (:func:`save_state`), whose keys PyTorch loads unchanged.
The images and labels come from a seeded NumPy generator
(:func:`make_batch`), so every process sees the same data. Nothing here
imports torch before a torch function is called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Network:
    """One benchmark network: its input, batch and SGD hyper-parameters."""

    name: str
    label: str
    input_shape: tuple[int, int, int]  # (C, H, W) of one image
    batch: int
    lr: float
    momentum: float
    weight_decay: float
    #: Largest ||change - PyTorch's change|| / ||PyTorch's change|| of any parameter or
    #: buffer after one step from the same weights (see :mod:`benchmarks.networks`).
    step_tolerance: float
    num_classes: int = 10

    def sgd(self) -> dict:
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


# ResNet-20's tolerance is float32's own: at batch 128 PyTorch's float32 gradients
# differ from its float64 ones by up to 4e-3 (this norm), cnnblas's by up to 1.1e-2,
# as 19 BatchNorm backwards amplify rounding and a ReLU mask flips wherever a
# forward value near 0 rounds the other way. A wrong kernel gives errors near 1.
NETWORKS = {
    "lenet5": Network("lenet5", "LeNet-5", (1, 28, 28), 64, 0.01, 0.9, 0.0, 1e-3),
    "resnet20": Network("resnet20", "ResNet-20", (3, 32, 32), 128, 0.1, 0.9, 5e-4, 5e-2),
}


def make_batch(network: Network, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (batch, C, H, W) float32 standard normal, labels (batch,) int64)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, *network.input_shape), dtype=np.float32)
    return images, rng.integers(0, network.num_classes, batch).astype(np.int64)


# --------------------------------------------------------------------------- cnnblas

def cnnblas_lenet5(rng=0):
    """LeNet-5 for 1x28x28 as a user writes it: a Sequential of the layers, no flags."""
    from cnnblas import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, rng=rng), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120, rng=rng), nn.ReLU(), nn.Linear(120, 84, rng=rng), nn.ReLU(),
        nn.Linear(84, 10, rng=rng),
    )


def cnnblas_model(name: str, rng=0):
    """A freshly initialised cnnblas network of :data:`NETWORKS` (float32, train mode)."""
    from cnnblas import nn

    if name == "lenet5":
        return cnnblas_lenet5(rng)
    if name == "resnet20":
        return nn.resnet20(num_classes=NETWORKS[name].num_classes, rng=rng)
    raise ValueError(f"network must be one of {sorted(NETWORKS)}, got {name!r}")


def cnnblas_training_step(network: Network, model, images, labels) -> Callable[[], float]:
    """``step()``: one training step of ``model`` (zero_grad, forward, loss, backward,
    SGD update) on the fixed batch; returns the loss."""
    from cnnblas import nn
    from cnnblas.optim import SGD

    model.train()
    criterion = nn.SoftmaxCrossEntropy()
    optimizer = SGD(model.parameters(), **network.sgd())

    def step() -> float:
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        model.backward(criterion.backward())
        optimizer.step()
        return float(loss)

    step.optimizer, step.criterion = optimizer, criterion
    return step


def save_state(model, path: Path) -> Path:
    """Write ``model.state_dict()`` (cnnblas or numpy arrays) to ``path`` (.npz)."""
    np.savez(path, **{key: np.asarray(value) for key, value in model.state_dict().items()})
    return path


def load_state(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


# --------------------------------------------------------------------------- flops

def network_flops(model, network: Network, batch: int) -> dict:
    """Direct-convolution flops of one training step of a cnnblas ``model``.

    Each :class:`~cnnblas.nn.Conv2d` and :class:`~cnnblas.nn.Linear` counts
    ``2 * multiply-adds`` for its forward, its weight gradient and, unless it
    skips it (``input_grad=False``: the stem of the ResNets, whose input is
    data), its input gradient. BatchNorm, activations, pooling, the residual
    adds, the loss and the update are not counted. Found by running one
    eval-mode image through the model with the layers' forwards wrapped to
    see their output shapes.

    Returns
    -------
    dict
        ``forward`` (flops of one forward at ``batch``), ``step`` (forward +
        gradients) and ``layers`` (how many layers were counted).
    """
    from cnnblas import nn

    counted: dict[int, tuple] = {}
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def wrap(layer):
        original = layer.forward

        def forward(x):
            y = original(x)
            counted[id(layer)] = (layer, y.shape)
            return y
        return forward

    originals = {id(layer): layer.__dict__.get("forward") for layer in layers}
    for layer in layers:
        object.__setattr__(layer, "forward", wrap(layer))
    was_training = model.training
    try:
        model.eval()
        model(np.zeros((1, *network.input_shape), np.float32))
    finally:
        for layer in layers:
            if originals[id(layer)] is None:
                del layer.__dict__["forward"]
        model.train(was_training)
    forward = step = 0.0
    for layer, out_shape in counted.values():
        if isinstance(layer, nn.Conv2d):  # (K, C/groups, kh, kw) weights at every output pixel
            one = 2.0 * batch * layer.weight.size * out_shape[2] * out_shape[3]
        else:
            one = 2.0 * batch * layer.weight.size
        forward += one
        step += one * (3 if getattr(layer, "input_grad", True) else 2)
    return dict(forward=forward, step=step, layers=len(counted))


# --------------------------------------------------------------------------- PyTorch

def torch_lenet5(torch):
    """The ``torch.nn.Sequential`` twin of :func:`cnnblas_lenet5` (same state-dict keys)."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def torch_resnet20(torch, num_classes: int = 10):
    """ResNet-20 for CIFAR in PyTorch, with torchvision's attribute names.

    A 3x3 stem (16 channels, no bias), BatchNorm, ReLU; three stages of
    three BasicBlocks of 16, 32 and 64 channels, the first block of stages
    2 and 3 with stride 2 and a projection shortcut ``downsample`` =
    (1x1 stride-2 convolution without bias, BatchNorm); global average
    pooling and ``fc``. The same network as :func:`cnnblas.nn.resnet20`.
    """
    from benchmarks.torch_resnet import torch_resnet_classes

    basic_block, _, resnet = torch_resnet_classes(torch)
    return resnet(basic_block, (3, 3, 3), num_classes, imagenet_stem=False)


def torch_model(torch, name: str, state: dict[str, np.ndarray]):
    """The PyTorch twin of network ``name`` holding ``state`` (every key, strictly)."""
    model = torch_lenet5(torch) if name == "lenet5" else torch_resnet20(torch)
    model.load_state_dict({key: torch.from_numpy(np.array(value))
                           for key, value in state.items()}, strict=True)
    return model


def torch_training_step(torch, network: Network, model, images, labels) -> Callable[[], float]:
    """``step()``: one PyTorch training step (zero_grad, forward, cross-entropy,
    backward, SGD step) on the fixed batch; returns the loss."""
    model.train()
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), **network.sgd())
    x, y = torch.from_numpy(images), torch.from_numpy(labels)

    def step() -> float:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def torch_state(model) -> dict[str, np.ndarray]:
    return {key: value.detach().numpy().copy() for key, value in model.state_dict().items()}
