"""The defaults of ``cnnblas train``, per model family, and the model's keyword arguments.

Every option the user leaves out takes the value of the model's family: the
residual networks (``resnet*``) train with the CIFAR-10 recipe of He et al.
(2016) (SGD, learning rate 0.1, momentum 0.9, weight decay 5e-4, batch 128)
with a cosine schedule; every other model with :data:`DEFAULTS`, tuned for
LeNet-5 on the embedded digits. An option given on the command line always
wins.
"""

from __future__ import annotations

import inspect

from cnnblas.nn import get_model_builder

__all__ = ["DEFAULTS", "FAMILY_DEFAULTS", "family", "resolve_defaults", "per_data",
           "model_kwargs"]

#: Defaults of ``cnnblas train``, tuned so that the plain command reaches
#: >= 98% test accuracy on the digits in seconds: LeNet-5 on the 8x8 digits
#: upsampled to 16x16 and standardised, SGD with Nesterov momentum, cosine
#: schedule. (On the raw 8x8 images LeNet-5 plateaus near 97%.) The entries
#: keyed by data set apply to that data set (``digits``, or the part of
#: ``--data`` before the colon); the other data sets get the value in the comment.
DEFAULTS = {
    "model": "lenet5",
    "data": "digits",
    "epochs": 8,
    "batch_size": 16,
    "optimizer": "sgd",
    "lr": {"adam": 3e-3, "sgd": 0.02},
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "seed": 0,
    "upsample": {"digits": 2},  # other data sets: 1
    "shift_augment": {"digits": 1},  # other data sets: 0
    "augment": {"cifar10": "crop+flip"},  # other data sets: "none"
}
# The per-data-set defaults of the data sets not named in DEFAULTS.
_OTHER_DATA = {"upsample": 1, "shift_augment": 0, "augment": "none"}

#: What a model family changes of :data:`DEFAULTS`; a model belongs to the
#: family whose name starts its own (``resnet20`` -> ``resnet``).
FAMILY_DEFAULTS = {
    "resnet": {
        "batch_size": 128,
        "lr": {"adam": 1e-3, "sgd": 0.1},
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 5e-4,
        "schedule": "cosine",
    },
}

# The options whose default depends on the family: argparse leaves them None.
_FAMILY_OPTIONS = ("batch_size", "momentum", "nesterov", "weight_decay", "schedule")


def family(model: str) -> str | None:
    """The family of the model named ``model`` in :data:`FAMILY_DEFAULTS`, or None."""
    return next((name for name in FAMILY_DEFAULTS if model.startswith(name)), None)


def resolve_defaults(args) -> list[str]:
    """Fill in the options of ``args`` the user left out (None), from the model's family.

    Sets ``args.lr``, ``args.batch_size``, ``args.momentum``, ``args.nesterov``,
    ``args.weight_decay`` and ``args.schedule`` (each only when None) and
    ``args.family`` (the family name or None).

    Returns
    -------
    list of str
        The options the user gave among those with family defaults, as
        ``--option`` strings (for the run's first line).
    """
    args.family = family(args.model)
    chosen = {**DEFAULTS, **FAMILY_DEFAULTS.get(args.family, {})}
    given = []
    for option in (*_FAMILY_OPTIONS, "lr"):
        if getattr(args, option) is None:
            value = chosen[option]
            setattr(args, option, value[args.optimizer] if option == "lr" else value)
        else:
            given.append("--" + option.replace("_", "-"))
    return given


def per_data(option: str, data: str, value):
    """``value``, or when None the :data:`DEFAULTS` entry of ``option`` for ``--data data``."""
    if value is not None:
        return value
    return DEFAULTS[option].get(data.partition(":")[0], _OTHER_DATA[option])


def model_kwargs(name: str, candidates: dict) -> dict:
    """The entries of ``candidates`` that the builder of model ``name`` accepts.

    A builder takes only some of the arguments the command line can give
    (e.g. the residual networks pool globally and take no ``input_size``),
    so each is passed only when the builder's signature names it (all of
    them to a builder with ``**kwargs``).
    """
    parameters = inspect.signature(get_model_builder(name)).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return dict(candidates)
    names = {parameter.name for parameter in parameters}
    return {key: value for key, value in candidates.items() if key in names}
