"""The input pipeline of ``cnnblas train``: load, cut, copy, standardise, upsample, augment.

:func:`training_data` turns ``--data`` and its options into the arrays the
model trains and is tested on. With ``--augment`` the training array is
redrawn before every epoch by :class:`EpochAugmentation` (random crops of the
zero-padded raw images and/or horizontal flips, then the same standardisation
and upsampling as the test images); the test images are never augmented.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnnblas.cli.defaults import per_data
from cnnblas.data import Preprocessing, augmentation_rng, random_crop_flip, shifted_copies
from cnnblas.train.callbacks import Callback

__all__ = ["AUGMENTATIONS", "TrainingData", "load_data", "training_data", "EpochAugmentation"]

#: ``--augment`` choices -> (crop, flip).
AUGMENTATIONS = {"crop+flip": (True, True), "crop": (True, False), "flip": (False, True),
                 "none": (False, False)}


class TrainingData(NamedTuple):
    """The arrays the model trains and is tested on, and how they were made."""

    x_train: np.ndarray  # the model's input (redrawn every epoch when augmented)
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    pixel_max: int
    shape: tuple[int, int, int]  # (channels, height, width) of the raw images
    originals: int  # training images before the shifted copies
    shift: int
    upsample: int
    mean: float | tuple[float, ...]  # one value, or one per channel
    std: float | tuple[float, ...]
    augment: str  # a key of AUGMENTATIONS
    pad: int  # zero padding (and largest shift) of the random crops
    raw_train: np.ndarray | None  # the training images in [0, 1] when augmented, else None

    @property
    def preprocessing(self) -> Preprocessing:
        """Raw images -> the model's input, as done to the training and test images."""
        return Preprocessing(shape=self.shape, pixel_max=self.pixel_max, upsample=self.upsample,
                             mean=self.mean, std=self.std)


def load_data(spec: str):
    """``digits`` | ``mnist:DIR`` | ``cifar10:DIR`` -> (Dataset, maximum raw pixel value)."""
    from cnnblas import data

    name, _, directory = spec.partition(":")
    if name == "digits" and not directory:
        return data.load_digits(), 16
    if name == "mnist" and directory:
        return data.load_mnist(directory), 255
    if name == "cifar10" and directory:
        return data.load_cifar10(directory), 255
    raise ValueError(f"--data must be digits, mnist:DIR or cifar10:DIR, got {spec!r}")


def _at_least(value: int, option: str, minimum: int) -> int:
    if value < minimum:
        raise ValueError(f"--{option} must be >= {minimum}, got {value}")
    return value


def training_data(args) -> TrainingData:
    """Load ``--data``, cut to ``--limit``, add the shifted copies, standardise, upsample.

    The standardisation is per channel, with the mean and standard deviation
    of the training images (after the shifted copies, before any random
    augmentation); for one channel that is the data set's single mean and
    deviation.
    """
    dataset, pixel_max = load_data(args.data)
    x_train, y_train, x_test, y_test = dataset
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    upsample = _at_least(per_data("upsample", args.data, args.upsample), "upsample", 1)
    shift = _at_least(per_data("shift_augment", args.data, args.shift_augment),
                      "shift-augment", 0)
    augment = per_data("augment", args.data, args.augment)
    pad = _at_least(args.crop_pad, "crop-pad", 0)
    originals = len(x_train)
    if shift:
        x_train, y_train = shifted_copies(x_train, y_train, shift)
    prepare = Preprocessing.fit(x_train, pixel_max, upsample, args.standardize)
    return TrainingData(prepare(x_train, "the training images"), y_train,
                        prepare(x_test, "the test images"), y_test, dataset.num_classes,
                        pixel_max, prepare.shape, originals, shift, upsample, prepare.mean,
                        prepare.std, augment, pad,
                        x_train if augment != "none" else None)


def describe_augmentation(data: TrainingData) -> str:
    """E.g. ``random 4-px crops and flips every epoch`` ('' without augmentation)."""
    crop, flip = AUGMENTATIONS[data.augment]
    parts = ([f"random {data.pad}-px crops"] if crop else []) + (["flips"] if flip else [])
    return f"{' and '.join(parts)} every epoch" if parts else ""


class EpochAugmentation(Callback):
    """Before every epoch, redraw the training array from the raw images.

    Writes into ``data.x_train`` in place, the very array the trainer's data
    loader reads, ``random_crop_flip(raw, rng)`` of the raw
    training images in chunks, upsampled and standardised as the test images
    (``data.preprocessing``), with ``rng = augmentation_rng(seed, epoch)``:
    the epoch's augmentation depends on ``(seed, epoch)`` alone, so a run
    resumed from a checkpoint sees the same images as an uninterrupted one,
    and every MPI rank the same as the others. The crops pad with zeros in
    the raw pixel space (black), before standardisation.

    Parameters
    ----------
    data : TrainingData
        With ``raw_train`` (the images in [0, 1], shape (N, C, H, W)) and
        ``x_train`` (the model's input, float32, same N).
    seed : int
        The run's seed.
    """

    #: Images augmented at a time: bounds the temporary arrays.
    CHUNK = 4096

    def __init__(self, data: TrainingData, seed: int):
        if data.raw_train is None or data.augment == "none":
            raise ValueError("EpochAugmentation needs augmented training data")
        self.data, self.seed = data, seed
        self.crop, self.flip = AUGMENTATIONS[data.augment]
        self.preprocessing = data.preprocessing

    def on_epoch_begin(self, trainer, epoch: int, num_batches: int) -> None:
        data = self.data
        rng = augmentation_rng(self.seed, epoch)
        pad = data.pad if self.crop else 0
        for low in range(0, len(data.raw_train), self.CHUNK):
            images = random_crop_flip(data.raw_train[low:low + self.CHUNK], rng, pad, self.flip)
            data.x_train[low:low + len(images)] = \
                self.preprocessing.resize_and_standardize(images)
