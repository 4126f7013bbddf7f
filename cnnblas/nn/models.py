"""Model builders (LeNet-5, the beginner tutorial's networks) and the registry of them.

Every builder returns a :class:`~cnnblas.nn.Sequential`, so its state-dict keys
are those of the same ``torch.nn.Sequential``. :data:`MODEL_BUILDERS` names
the builders a checkpoint can record (``cnnblas train --model``);
:func:`load_model` rebuilds a model from such a checkpoint.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from cnnblas import checkpoint as ckpt
from cnnblas.checks import as_pair
from cnnblas.nn.init import as_float_dtype, as_rng
from cnnblas.nn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sigmoid
from cnnblas.nn.module import Module, Sequential


def _axes(model: str, input_size, axis_rule):
    """``axis_rule(size)`` (paddings and final size) for the height and the width
    of ``input_size``, which must be at least 4 on each axis."""
    height, width = as_pair(input_size, "input_size")
    if min(height, width) < 4:
        raise ValueError(f"{model} needs input_size of at least 4x4, got {height}x{width}")
    return axis_rule(height), axis_rule(width)


def _lenet_axis(size: int) -> tuple[int, int, int]:
    """Paddings of the two 5x5 convolutions along one axis, and the final size.

    - conv1 pads 2 (output = input size) when the input is smaller than LeNet's
      original 32, else 0 (32 -> 28 as in the 1998 network);
    - conv2 pads 0 when the pooled map is at least 10 wide (the classic
      14 -> 10), else 2 (a 'same' convolution), so small inputs such as 8x8
      digits still leave at least one pixel after the second pooling.
    """
    pad1 = 2 if size < 32 else 0
    pooled1 = (size + 2 * pad1 - 4) // 2
    pad2 = 0 if pooled1 >= 10 else 2
    pooled2 = (pooled1 + 2 * pad2 - 4) // 2
    return pad1, pad2, pooled2


def lenet5(num_classes=10, in_channels=1, input_size=28, dtype=np.float32, rng=None,
           input_grad=True):
    """LeNet-5 with ReLU and max pooling, sized for the given input.

    Layers (indices are the state-dict prefixes)::

        0 Conv2d(in_channels, 6, 5, padding=p1)   1 ReLU   2 MaxPool2d(2)
        3 Conv2d(6, 16, 5, padding=p2)            4 ReLU   5 MaxPool2d(2)
        6 Flatten
        7 Linear(16*h*w, 120)   8 ReLU   9 Linear(120, 84)   10 ReLU
        11 Linear(84, num_classes)

    The paddings are chosen per axis from ``input_size``: ``p1 = 2`` below 32
    pixels (else 0) and ``p2 = 0`` when the first pooled map is at least 10
    pixels (else 2). Hence 28x28 (MNIST) and 32x32 inputs both give the classic
    16x5x5 = 400 features; 8x8 digits give 16x2x2 = 64; any input of at least
    4x4 works.

    Parameters
    ----------
    num_classes : int, default 10
    in_channels : int, default 1
    input_size : int or (int, int), default 28
        Height and width of the input images.
    dtype : float32 or float64, default float32
    rng : None, int or numpy.random.Generator
        Seed for the PyTorch-style initialisation of all layers.
    input_grad : bool, default True
        False when the input is data whose gradient nobody needs (training):
        the first convolution then skips its input gradient and
        ``model.backward`` returns None.

    Returns
    -------
    Sequential
        Maps (N, in_channels, H, W) to logits (N, num_classes).

    Raises
    ------
    ValueError
        ``input_size`` smaller than 4 on some axis.
    """
    (pad1_h, pad2_h, out_h), (pad1_w, pad2_w, out_w) = _axes("lenet5", input_size, _lenet_axis)
    dtype = as_float_dtype(dtype)
    rng = as_rng(rng)
    return Sequential(
        Conv2d(in_channels, 6, 5, padding=(pad1_h, pad1_w), dtype=dtype, rng=rng,
               input_grad=input_grad),
        ReLU(),
        MaxPool2d(2),
        Conv2d(6, 16, 5, padding=(pad2_h, pad2_w), dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(16 * out_h * out_w, 120, dtype=dtype, rng=rng),
        ReLU(),
        Linear(120, 84, dtype=dtype, rng=rng),
        ReLU(),
        Linear(84, num_classes, dtype=dtype, rng=rng),
    )


def _tutorial_axis(size: int) -> tuple[int, int, int]:
    """Paddings of the 3x3 and 4x4 convolutions along one axis, and the final size.

    28 -> conv 3x3 -> 26 -> pool -> 13 -> conv 4x4 -> 10 -> pool -> 5, as in the
    tutorial's MNIST network; inputs under 16 pixels get a 'same' first
    convolution (pad 1) and a padded second one (pad 2) so that, as with
    :func:`cnnblas.nn.lenet5`, 8x8 digits still leave a 2x2 map.
    """
    pad1 = 1 if size < 16 else 0
    pooled1 = (size + 2 * pad1 - 2) // 2
    pad2 = 2 if pooled1 < 8 else 0
    pooled2 = (pooled1 + 2 * pad2 - 3) // 2
    return pad1, pad2, pooled2


def tutorial_cnn(num_classes=10, in_channels=1, input_size=28, dtype=np.float32, rng=None,
                 input_grad=True):
    """The MNIST network of the beginner tutorial (its Figure 4.3 and Theano script).

    Layers (indices are the state-dict prefixes)::

        0 Conv2d(in_channels, 32, 3, padding=p1)   1 ReLU   2 MaxPool2d(2)
        3 Conv2d(32, 64, 4, padding=p2)            4 ReLU   5 MaxPool2d(2)
        6 Flatten   7 Linear(64*h*w, 100)   8 Sigmoid   9 Linear(100, num_classes)

    For 28x28 inputs ``p1 = p2 = 0`` and ``h = w = 5``, the tutorial's network;
    see :func:`_tutorial_axis` for smaller inputs (8x8 digits give 2x2). The
    initialisation is PyTorch's default, not the script's uniform ranges.

    Parameters
    ----------
    num_classes, in_channels : int
    input_size : int or (int, int)
        At least 4 on each axis.
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator
    input_grad : bool, default True
        False: the first convolution skips the gradient of the images (its
        backward returns None), which training from data never needs.

    Returns
    -------
    Sequential
    """
    (pad1_h, pad2_h, out_h), (pad1_w, pad2_w, out_w) = _axes("tutorial_cnn", input_size,
                                                             _tutorial_axis)
    dtype = as_float_dtype(dtype)
    rng = as_rng(rng)
    return Sequential(
        Conv2d(in_channels, 32, 3, padding=(pad1_h, pad1_w), dtype=dtype, rng=rng,
               input_grad=input_grad),
        ReLU(),
        MaxPool2d(2),
        Conv2d(32, 64, 4, padding=(pad2_h, pad2_w), dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(64 * out_h * out_w, 100, dtype=dtype, rng=rng),
        Sigmoid(),
        Linear(100, num_classes, dtype=dtype, rng=rng),
    )


# The tutorial's Section 4 numbers, in this library's layouts.
_TOY_INPUT = [
    [4, 1, 3, 5, 3],
    [2, 1, 1, 2, 2],
    [5, 5, 1, 2, 3],
    [2, 2, 4, 3, 2],
    [5, 1, 3, 4, 5],
]
_TOY_CONV_WEIGHT = [  # Table 4.1, W1: two 3x3 filters, applied as cross-correlation
    [[1, 2, 3], [4, 7, 5], [3, -32, 25]],
    [[12, 18, 12], [18, -74, 45], [-92, 45, -18]],
]
_TOY_W2 = [[1, 2], [3, -4]]  # Table 4.4 as printed: (in, out), X3 = X2 @ W2
_TOY_W3_T = [  # Table 4.5 prints W3.T: (out, in) = (10, 2), already Linear's layout
    [0.09, 0.02], [0.08, 0.03], [0.07, 0.03], [0.06, 0.02], [0.05, 0.01],
    [0.04, 0.02], [0.03, 0.07], [0.04, 0.08], [0.05, 0.05], [0.01, 0.01],
]
TOY_LABEL = 9  # Table 4.6: the true class (0-based)


def tutorial_toy_input(dtype=np.float64):
    """The input image and label of the tutorial's Section 4.

    Returns
    -------
    x : ndarray, shape (1, 1, 5, 5), ``dtype``
        Table 4.1's ``X``.
    labels : ndarray, shape (1,), int64
        ``[9]`` (Table 4.6).
    """
    x = np.array(_TOY_INPUT, dtype=as_float_dtype(dtype)).reshape(1, 1, 5, 5)
    return x, np.array([TOY_LABEL], dtype=np.int64)


def tutorial_toy_state_dict(dtype=np.float64):
    """The tutorial's Section 4 weights as a state dict for :func:`tutorial_toy_cnn`.

    Keys follow the layer indices of :func:`tutorial_toy_cnn`: ``0.weight``
    (2, 1, 3, 3), ``0.bias`` (2,), ``4.weight`` (2, 2) = the tutorial's
    ``W2.T``, ``4.bias`` (2,), ``6.weight`` (10, 2) = the printed ``W3.T``,
    ``6.bias`` (10,). All biases are zero (Tables 4.1, 4.4, 4.5).
    """
    dtype = as_float_dtype(dtype)
    return OrderedDict([
        ("0.weight", np.array(_TOY_CONV_WEIGHT, dtype).reshape(2, 1, 3, 3)),
        ("0.bias", np.zeros(2, dtype)),
        ("4.weight", np.array(_TOY_W2, dtype).T.copy()),
        ("4.bias", np.zeros(2, dtype)),
        ("6.weight", np.array(_TOY_W3_T, dtype)),
        ("6.bias", np.zeros(10, dtype)),
    ])


def tutorial_toy_cnn(tutorial_weights=True, dtype=np.float64, rng=None):
    """The toy CNN of Section 4 ("Put it all together") of the beginner tutorial.

    Layers, for a (N, 1, 5, 5) input (indices are the state-dict prefixes)::

        0 Conv2d(1, 2, 3)      -> (N, 2, 3, 3)   X1 = X * W1 + B1   (Table 4.1)
        1 ReLU                                   ReLU1              (Table 4.2)
        2 MaxPool2d(3)         -> (N, 2, 1, 1)   X2                 (Table 4.3)
        3 Flatten              -> (N, 2)         X2_flatten
        4 Linear(2, 2)                           X3 = X2_flatten W2 + B2
        5 ReLU                                   ReLU2              (Table 4.4)
        6 Linear(2, 10)        -> (N, 10)        X4 = ReLU2 W3 + B3 (Table 4.5)

    followed by :class:`~cnnblas.nn.SoftmaxCrossEntropy` (Table 4.6). With the
    tutorial's weights and :func:`tutorial_toy_input`, the forward pass gives
    ``X2 = [118, 102]``, ``X3 = [424, -172]``, ``X4 = 424 * W3[:, 0]`` and the
    loss ``33.9345``; ``model.backward(criterion.backward())`` gives Tables
    4.6-4.9 (``dW3``, ``dW2``, ``dB1 = [0.0799, 0.2396]``, ``dW1`` and ``dX``).

    Parameters
    ----------
    tutorial_weights : bool, default True
        Load :func:`tutorial_toy_state_dict`; False keeps the random
        PyTorch-style initialisation.
    dtype : float32 or float64, default float64
        float64 reproduces the printed digits exactly.
    rng : None, int or numpy.random.Generator
        Used only for the random initialisation.

    Returns
    -------
    Sequential

    Notes
    -----
    Differences between the printed tables and this model, all of them in the
    tables rather than in the arithmetic:

    - The tutorial writes the affine layers as ``x @ W + b`` with ``W`` of
      shape (in, out); :class:`~cnnblas.nn.Linear` stores ``W.T`` (PyTorch's
      layout). Table 4.5 already prints ``W3.T``.
    - ``X * W1`` in Table 4.1 is a cross-correlation (no kernel rotation),
      e.g. ``X1[0, 0, 0] = -85``.
    - Table 4.5 prints ``X4`` entries 33.91, 25.43, 16.95, 12.71 and 16.95
      where ``424 * W3`` is exactly 33.92, 25.44, 16.96, 12.72 and 16.96: they
      look like single-precision results (33.919998, ...) truncated to two
      decimals. The printed softmax outputs, the loss 33.9345 and every
      gradient agree with this model to about 1e-6 relative, the noise of
      single precision (e.g. ``output[1]`` is printed 1.419998e-02; float64
      gives 1.420001e-02, float32 1.419999e-02).
    - In Table 4.6 the column headed "δB3.T" holds zeros: those are the second
      column of ``δW3.T`` (``ReLU2[1] = 0``). The bias gradient ``δB3`` equals
      ``δoutput``, the first column.
    - The tutorial works on a batch of one, so the mean over the batch used by
      :class:`~cnnblas.nn.SoftmaxCrossEntropy` changes nothing.
    """
    dtype = as_float_dtype(dtype)
    rng = as_rng(rng)
    model = Sequential(
        Conv2d(1, 2, 3, dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2d(3),
        Flatten(),
        Linear(2, 2, dtype=dtype, rng=rng),
        ReLU(),
        Linear(2, 10, dtype=dtype, rng=rng),
    )
    if tutorial_weights:
        model.load_state_dict(tutorial_toy_state_dict(dtype))
    return model


# --------------------------------------------------------------------------- registry

#: Model builders by name, as used by ``cnnblas train --model`` and recorded in
#: checkpoints: each takes ``num_classes``, ``in_channels``, ``input_size``, ``rng`` and
#: ``input_grad``.
MODEL_BUILDERS: dict[str, Callable[..., Module]] = {
    "lenet5": lenet5,
    "tutorial": tutorial_cnn,
}


def build_model(name: str, **kwargs) -> Module:
    """Build the model registered as ``name`` in :data:`MODEL_BUILDERS`.

    Raises
    ------
    ValueError
        ``name`` is not registered.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](**kwargs)


def load_model(path: str | os.PathLike) -> tuple[Module, ckpt.Checkpoint]:
    """Rebuild the model saved in a checkpoint and load its weights.

    The checkpoint's metadata must name the builder: ``{"model": {"name":
    "lenet5", "kwargs": {...}}}`` (what ``cnnblas train`` writes).

    Returns
    -------
    model : cnnblas.nn.Module
        In eval mode.
    checkpoint : cnnblas.checkpoint.Checkpoint
        The decoded file (metadata, history, ...).

    Raises
    ------
    ValueError
        Unreadable checkpoint, no or unknown model builder in its metadata, or
        weights that do not fit the rebuilt model; the message names the file.
    """
    saved = ckpt.load_checkpoint(path)
    spec = saved.metadata.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(
            f"{saved.path}: the checkpoint's metadata does not say how to build the model "
            "(expected metadata['model'] = {'name': ..., 'kwargs': {...}})"
        )
    kwargs = dict(spec.get("kwargs") or {})
    try:
        model = build_model(spec["name"], **kwargs)
        model.load_state_dict(saved.sections["model"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{saved.path}: cannot rebuild the model {spec['name']!r}: {error}") \
            from error
    return model.eval(), saved


__all__ = [
    "lenet5", "tutorial_cnn", "tutorial_toy_cnn", "tutorial_toy_input", "tutorial_toy_state_dict",
    "TOY_LABEL", "MODEL_BUILDERS", "build_model", "load_model",
]
