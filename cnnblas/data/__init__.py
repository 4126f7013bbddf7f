"""Data sets and mini-batch loading (NumPy only; scikit-learn only for ``load_digits``).

Loaders return a :class:`Dataset` named tuple ``(x_train, y_train, x_test,
y_test)`` of NCHW float32 images in [0, 1] and int64 labels:

- :func:`load_digits` -- the 1,797 real 8x8 digits shipped inside scikit-learn
  (the default, always-available data set; ``pip install 'cnnblas[data]'``);
- :func:`load_mnist` -- MNIST / Fashion-MNIST from the four IDX files, raw or
  gzipped (:func:`load_idx` reads any single IDX file);
- :func:`load_cifar10` -- the CIFAR-10 binary batches.

Nothing is ever downloaded. :class:`DataLoader` batches arrays with seeded,
resumable per-epoch shuffling. Augmentation: :func:`random_crop_flip` (random
crops of the zero-padded images and horizontal flips, drawn from
:func:`augmentation_rng` of the run's seed and the epoch) and
:func:`shifted_copies`. Normalisation: :func:`channel_statistics` and
:func:`standardize`. :class:`Preprocessing` is the whole way from raw pixels to
a model's input (scaling, upsampling, standardisation), saved with a
checkpoint so that a saved model takes raw images (:func:`cnnblas.load_model`).
"""

from cnnblas.data.augment import augmentation_rng, random_crop_flip, shifted_copies
from cnnblas.data.datasets import (
    CIFAR10_CLASSES,
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    MNIST_FILES,
    Dataset,
    load_cifar10,
    load_digits,
    load_idx,
    load_mnist,
)
from cnnblas.data.loader import DataLoader
from cnnblas.data.normalize import channel_statistics, standardize
from cnnblas.data.preprocessing import Preprocessing

__all__ = [
    "Dataset", "DataLoader", "shifted_copies", "random_crop_flip", "augmentation_rng",
    "channel_statistics", "standardize", "Preprocessing",
    "load_digits", "load_idx", "load_mnist", "load_cifar10",
    "MNIST_FILES", "CIFAR10_TRAIN_FILES", "CIFAR10_TEST_FILE", "CIFAR10_CLASSES",
]
