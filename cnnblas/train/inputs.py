"""Checks of what the trainer is given (its parts, images, labels) and the metadata it saves."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from cnnblas import nn, optim
from cnnblas.data import Preprocessing

__all__ = ["check_trainer_parts", "check_images", "check_labels", "check_label_range",
           "check_validation", "checkpoint_metadata"]


def check_trainer_parts(model, loss, optimizer, scheduler) -> None:
    """TypeError/ValueError unless the parts of a :class:`~cnnblas.train.Trainer` fit together.

    ``model`` and ``loss`` must be :class:`cnnblas.nn.Module`, ``optimizer`` a
    :class:`cnnblas.optim.Optimizer`, ``scheduler`` None or a
    :class:`cnnblas.optim.LRScheduler` driving ``optimizer``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a cnnblas.nn.Module, got {type(model).__name__}")
    if not isinstance(loss, nn.Module):
        raise TypeError(f"loss must be a cnnblas.nn.Module, got {type(loss).__name__}")
    if not isinstance(optimizer, optim.Optimizer):
        raise TypeError(
            f"optimizer must be a cnnblas.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if scheduler is not None:
        if not isinstance(scheduler, optim.LRScheduler):
            raise TypeError(
                "scheduler must be None or a cnnblas.optim.LRScheduler, got "
                f"{type(scheduler).__name__}"
            )
        if scheduler.optimizer is not optimizer:
            raise ValueError("scheduler must drive the trainer's optimizer")


def check_images(x, name: str) -> np.ndarray:
    """``x`` as an array of floating-point samples (leading axis), or TypeError/ValueError.

    ``name`` names the array in the message ("the training images", "x", ...).
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(
            f"{name} must be floating-point images (e.g. float32 in [0, 1]), got dtype {x.dtype}"
        )
    if x.ndim < 2:
        raise ValueError(f"{name} must have a leading sample axis, got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} holds no samples (shape {x.shape})")
    return x


def check_finite_images(x: np.ndarray, name: str) -> None:
    """ValueError naming ``name`` and the first sample of ``x`` holding NaN or inf.

    One read of ``x``: a sample's sum is finite when all its values are; only
    samples whose sum is not (NaN/inf, or an overflow of finite values) are
    looked at value by value. Caught here, such input is not mistaken for a
    diverged training run later.
    """
    sums = x.reshape(len(x), -1).sum(axis=1, dtype=np.float64)
    for index in np.flatnonzero(~np.isfinite(sums)):
        if not np.isfinite(x[index]).all():
            raise ValueError(
                f"{name} hold non-finite values (NaN or inf), first in sample {index}; "
                "clean or drop such samples before training"
            )


def check_labels(y, num_samples: int, name: str, x_name: str) -> np.ndarray:
    """``y`` as 1-D integer class indices >= 0, one per sample of the images ``x_name``."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class index per sample), got shape {y.shape}")
    if len(y) != num_samples:
        raise ValueError(
            f"{name} has {len(y)} labels but {x_name} has {num_samples} samples"
        )
    if y.min() < 0:
        raise ValueError(f"{name} must be class indices >= 0, got a minimum of {y.min()}")
    return y


def check_label_range(y: np.ndarray, num_outputs: int, name: str) -> None:
    """ValueError unless every label of ``y`` is a class of a model with ``num_outputs``."""
    largest = int(y.max())
    if largest >= num_outputs:
        raise ValueError(
            f"{name} must lie in [0, {num_outputs - 1}] for the model's {num_outputs} outputs, "
            f"got labels up to {largest}"
        )


def check_validation(val, val_name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The validation pair ``(x, y)`` checked (None stays None); ``val_name`` names it."""
    if val is None:
        return None
    if not isinstance(val, (tuple, list)) or len(val) != 2:
        raise TypeError(f"val must be a pair (x, y) of arrays, got {type(val).__name__}")
    val_x = check_images(val[0], f"the {val_name} images")
    val_y = check_labels(val[1], len(val_x), f"the {val_name} labels", f"the {val_name} images")
    return val_x, val_y


def checkpoint_metadata(model, metadata: Mapping | None,
                        preprocessing: Preprocessing | None) -> dict:
    """The metadata a :class:`~cnnblas.train.Trainer` saves: ``metadata`` with the model's
    builder (``model.build_spec``, unless ``metadata`` names one) and the preprocessing.

    Raises
    ------
    TypeError
        ``preprocessing`` is not a :class:`~cnnblas.data.Preprocessing`, or the
        metadata is not JSON-serialisable.
    ValueError
        ``metadata["input"]`` given together with ``preprocessing``.
    """
    result = dict(metadata or {})
    spec = getattr(model, "build_spec", None)
    if "model" not in result and spec is not None:
        result["model"] = spec
    if preprocessing is not None:
        if not isinstance(preprocessing, Preprocessing):
            raise TypeError("preprocessing must be a cnnblas.data.Preprocessing, got "
                            f"{type(preprocessing).__name__}")
        if "input" in result:
            raise ValueError("give the preprocessing either as preprocessing= or as "
                             "metadata['input'], not both")
        result["input"] = preprocessing.to_metadata()
    try:
        json.dumps(result)  # fail now, not at the first checkpoint
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must be JSON-serialisable: {error}") from error
    return result
