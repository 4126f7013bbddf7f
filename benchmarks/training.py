"""One LeNet-5 training step (batch 64, 1x28x28, 10 classes), cnnblas against PyTorch.

A step is: forward, softmax cross-entropy loss, backward, SGD update (lr 0.01,
momentum 0.9), gradients cleared first. The PyTorch model is the same
``torch.nn.Sequential`` (Conv2d(1, 6, 5, padding=2), ReLU, MaxPool2d(2),
Conv2d(6, 16, 5), ReLU, MaxPool2d(2), Flatten, Linear(400, 120), ReLU,
Linear(120, 84), ReLU, Linear(84, 10)) loaded with cnnblas's initial
``state_dict`` (the keys are PyTorch's), so before timing one step of each
from identical weights is checked to give the same loss and updated weights.

Needs :mod:`cnnblas.nn` and :class:`cnnblas.optim.SGD`; :func:`available`
says whether they are importable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.common import TOLERANCE, DisagreementError, relative_error, torch_available

BATCH = 64
IMAGE_SIZE = 28
NUM_CLASSES = 10
LEARNING_RATE = 0.01
MOMENTUM = 0.9
TRAINING_IMPLS = ("gemm", "torch")


def available() -> bool:
    """True when cnnblas.nn (with lenet5) and cnnblas.optim.SGD can be imported."""
    try:
        from cnnblas.nn import SoftmaxCrossEntropy, lenet5  # noqa: F401
        from cnnblas.optim import SGD  # noqa: F401
    except ImportError:
        return False
    return True


def lenet5_flops(batch: int = BATCH) -> float:
    """Convolution and linear flops of one training step (3 passes each; pooling etc. ignored)."""
    conv1 = 2 * batch * 6 * 1 * 25 * 28 * 28  # padding 2: 28x28 out
    conv2 = 2 * batch * 16 * 6 * 25 * 10 * 10
    linear = 2 * batch * (400 * 120 + 120 * 84 + 84 * 10)
    return 3.0 * (conv1 + conv2 + linear)


@dataclass
class TrainingBatch:
    images: np.ndarray  # (BATCH, 1, 28, 28) float32
    labels: np.ndarray  # (BATCH,) int64


def make_batch(batch: int = BATCH, seed: int = 0) -> TrainingBatch:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    return TrainingBatch(images, rng.integers(0, NUM_CLASSES, batch).astype(np.int64))


def cnnblas_step(data: TrainingBatch, seed: int = 0):
    """(step, model): ``step()`` runs one training step and returns the loss."""
    from cnnblas import nn
    from cnnblas.optim import SGD

    # The images need no gradient (PyTorch does not compute one for them either).
    model = nn.lenet5(num_classes=NUM_CLASSES, input_size=IMAGE_SIZE, rng=seed,
                      input_grad=False)
    model.train()
    criterion = nn.SoftmaxCrossEntropy()
    optimizer = SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

    def step() -> float:
        optimizer.zero_grad()
        loss = criterion(model(data.images), data.labels)
        model.backward(criterion.backward())
        optimizer.step()
        return float(loss)

    return step, model


def torch_step(data: TrainingBatch, state_dict):
    """(step, model) for the same network in PyTorch, starting from ``state_dict``."""
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, NUM_CLASSES),
    )
    model.load_state_dict({key: torch.from_numpy(np.array(value))
                           for key, value in state_dict.items()})
    model.train()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)

    def step() -> float:
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step, model


def training_steps(data: TrainingBatch | None = None, tolerance: float = 10 * TOLERANCE
                   ) -> tuple[dict[str, Callable[[], float]], float]:
    """(impl -> step callable, worst relative difference), after checking one step of each.

    With PyTorch installed, one step of each runs from the same initial
    weights and the losses and every updated parameter are compared
    (relative to the parameter's largest entry); :class:`DisagreementError`
    if any differs by more than ``tolerance``, looser than a single
    convolution's because a step chains five GEMM layers and an update. The
    returned steps continue from there. Without PyTorch the error is NaN.
    """
    data = data or make_batch()
    step, model = cnnblas_step(data)
    steps = {"gemm": step}
    if not torch_available():
        return steps, float("nan")
    initial = {key: value.copy() for key, value in model.state_dict().items()}
    torch_run, torch_model = torch_step(data, initial)
    steps["torch"] = torch_run
    ours, theirs = step(), torch_run()
    errors = {"loss": abs(ours - theirs) / max(abs(theirs), 1e-30)}
    torch_state = torch_model.state_dict()
    for key, value in model.state_dict().items():
        errors[key] = relative_error(value, torch_state[key].detach().numpy())
    worst = max(errors, key=errors.get)
    if not errors[worst] <= tolerance:
        raise DisagreementError(
            f"LeNet-5 training step: cnnblas and PyTorch differ in {worst} by "
            f"{errors[worst]:.3g} after one step (tolerance {tolerance:g})")
    return steps, errors[worst]
