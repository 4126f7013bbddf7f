"""Model builders (LeNet-5, the beginner tutorial's networks) and the registry of them.

LeNet-5 and the tutorial's network are :class:`~cnnblas.nn.Sequential`, so their
state-dict keys are those of the same ``torch.nn.Sequential``; the residual
networks (:mod:`cnnblas.nn.resnet`) have torchvision's keys. :data:`MODEL_BUILDERS` names
the builders a checkpoint can record (``cnnblas train --model``), and
:func:`register_model` adds a user's own; :func:`model_from_checkpoint`
rebuilds a model from such a checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np

from cnnblas import checkpoint as ckpt
from cnnblas.checks import as_pair
from cnnblas.nn import resnet
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


# --------------------------------------------------------------------------- registry

#: Model builders by name, as used by ``cnnblas train --model`` and recorded in
#: checkpoints: each takes ``num_classes``, ``in_channels``, ``rng``, ``dtype`` and
#: ``input_grad``; LeNet-5 and the tutorial's network also ``input_size`` (the
#: ResNets end in a global average pooling and take any input size). Add a
#: builder of your own with :func:`register_model`.
MODEL_BUILDERS: dict[str, Callable[..., Module]] = {
    "lenet5": lenet5,
    "tutorial": tutorial_cnn,
    **{name: getattr(resnet, name) for name in ("resnet20", "resnet32", "resnet44", "resnet56",
                                                "resnet110", "resnet18", "resnet34")},
}

# How to make a user's builder known, for the messages about unknown names.
_HOW_TO_REGISTER = (
    "register its builder with cnnblas.nn.register_model({name!r}, builder) in a module "
    "imported before the model is built or loaded (cnnblas train/predict --import MODULE)"
)


def _same_builder(first: Callable, second: Callable) -> bool:
    """The same function, or the same definition run again (a module reloaded, a
    notebook cell re-run): same module and qualified name."""
    def key(builder):
        return getattr(builder, "__module__", None), getattr(builder, "__qualname__", None)

    return first is second or (key(first) == key(second) and None not in key(first))


def register_model(name: str, builder: Callable[..., Module] | None = None, *,
                   replace: bool = False):
    """Register a model builder under ``name``, for :func:`build_model` and checkpoints.

    A registered builder is what lets a checkpoint rebuild a user's own
    architecture: :func:`build_model` records the name and keyword arguments
    on the model, the :class:`~cnnblas.train.Trainer` saves them, and
    :func:`cnnblas.load_model` (or ``cnnblas predict --import MODULE``) calls
    the builder again once the module that registers it is imported.

    Parameters
    ----------
    name : str
        Non-empty, without whitespace.
    builder : callable, optional
        ``builder(**kwargs) -> cnnblas.nn.Module``; its keyword arguments must
        be JSON values (numbers, strings, lists) to be saved in a checkpoint
        (``dtype`` and an integer ``rng`` seed are converted). Left out,
        ``register_model(name)`` is a decorator.
    replace : bool, default False
        Allow replacing another builder already registered under ``name``.

    Returns
    -------
    callable
        ``builder`` (or the decorator).

    Raises
    ------
    TypeError
        ``name`` is not a string or ``builder`` is not callable.
    ValueError
        ``name`` is empty or holds whitespace, or names another builder and
        ``replace`` is False.

    Examples
    --------
    >>> from cnnblas import nn
    >>> @nn.register_model("tiny_mlp")
    ... def tiny_mlp(num_classes=10, in_channels=1, input_size=8, rng=None):
    ...     return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size ** 2,
    ...                                                  num_classes, rng=rng))
    >>> nn.build_model("tiny_mlp", num_classes=3, rng=0).build_spec
    {'name': 'tiny_mlp', 'kwargs': {'num_classes': 3, 'rng': 0}}
    >>> del nn.MODEL_BUILDERS["tiny_mlp"]
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if not name or name != "".join(name.split()):
        raise ValueError(f"name must be non-empty and hold no whitespace, got {name!r}")

    def register(function: Callable[..., Module]) -> Callable[..., Module]:
        if not callable(function):
            raise TypeError(f"builder must be callable, got {type(function).__name__}")
        known = MODEL_BUILDERS.get(name)
        if known is not None and not replace and not _same_builder(known, function):
            raise ValueError(
                f"a different builder is already registered as {name!r} "
                f"({getattr(known, '__module__', '?')}.{getattr(known, '__qualname__', '?')}); "
                "pass replace=True to replace it"
            )
        MODEL_BUILDERS[name] = function
        return function

    return register if builder is None else register(builder)


def _json_kwargs(kwargs: dict) -> dict | None:
    """``kwargs`` as JSON values (dtype as its name, rng seed kept), or None if impossible.

    A random generator is left out: it only draws the initial weights, which a
    checkpoint's weights replace.
    """
    converted = {}
    for key, value in kwargs.items():
        if key == "dtype":
            value = np.dtype(value).name
        elif key == "rng" and not isinstance(value, (int, type(None))):
            continue
        elif isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            return None
        converted[key] = value
    return converted


def get_model_builder(name: str) -> Callable[..., Module]:
    """The builder registered as ``name``.

    Raises
    ------
    ValueError
        ``name`` is not registered; the message lists the registered names and
        says how to register a builder.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(
            f"unknown model {name!r}; registered: {', '.join(sorted(MODEL_BUILDERS))}. To use "
            "a model of your own, " + _HOW_TO_REGISTER.format(name=name)
        )
    return MODEL_BUILDERS[name]


def build_model(name: str, **kwargs) -> Module:
    """Build the model registered as ``name`` (see :func:`register_model`).

    The model gets an attribute ``build_spec = {"name": name, "kwargs":
    {...}}`` (JSON values, or None when some argument has no JSON form), which
    the :class:`~cnnblas.train.Trainer` saves in its checkpoints so that
    :func:`cnnblas.load_model` can build the model again.

    Raises
    ------
    ValueError
        ``name`` is not registered; the message says how to register it.
    """
    model = get_model_builder(name)(**kwargs)
    if not isinstance(model, Module):
        raise TypeError(f"the builder of {name!r} must return a cnnblas.nn.Module, "
                        f"got {type(model).__name__}")
    spec = _json_kwargs(kwargs)
    model.build_spec = None if spec is None else {"name": name, "kwargs": spec}
    return model


def model_from_checkpoint(path: str | os.PathLike) -> tuple[Module, ckpt.Checkpoint]:
    """Rebuild the model saved in a checkpoint and load its weights.

    The checkpoint's metadata must name a registered builder and its keyword
    arguments: ``{"model": {"name": "lenet5", "kwargs": {...}}}``, what
    ``cnnblas train`` writes and what a :class:`~cnnblas.train.Trainer` writes
    for a model made by :func:`build_model`. :func:`cnnblas.load_model` wraps
    the result with the checkpoint's preprocessing, ready for raw images.

    Returns
    -------
    model : cnnblas.nn.Module
        In eval mode.
    checkpoint : cnnblas.checkpoint.Checkpoint
        The decoded file (metadata, history, ...).

    Raises
    ------
    ValueError
        Unreadable checkpoint, no or unregistered model builder in its
        metadata (the message says how to register it), or weights that do
        not fit the rebuilt model; the message names the file.
    """
    saved = ckpt.load_checkpoint(path)
    spec = saved.metadata.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(
            f"{saved.path}: the checkpoint's metadata does not say how to build the model "
            "(expected metadata['model'] = {'name': ..., 'kwargs': {...}}, which the Trainer "
            "writes for a model made by cnnblas.nn.build_model)"
        )
    name = spec["name"]
    if name not in MODEL_BUILDERS:
        raise ValueError(
            f"{saved.path}: the checkpoint's model {name!r} is not registered (registered: "
            f"{', '.join(sorted(MODEL_BUILDERS))}); " + _HOW_TO_REGISTER.format(name=name)
        )
    kwargs = dict(spec.get("kwargs") or {})
    try:
        model = build_model(name, **kwargs)
        model.load_state_dict(saved.sections["model"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{saved.path}: cannot rebuild the model {name!r}: {error}") from error
    return model.eval(), saved


__all__ = ["lenet5", "tutorial_cnn", "MODEL_BUILDERS", "register_model", "get_model_builder",
           "build_model", "model_from_checkpoint"]
