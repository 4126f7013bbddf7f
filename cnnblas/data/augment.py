"""Data augmentation for small image sets: shifted copies, random crops and flips.

:func:`shifted_copies` enlarges a data set once (offline); :func:`random_crop_flip`
draws a new random view of every image each time it is called (online, e.g.
once per epoch), from a generator such as :func:`augmentation_rng` gives for an
epoch. Everything is vectorised NumPy: no Python loop over the images.
"""

from __future__ import annotations

import numpy as np

from cnnblas.checks import check_bool, check_int, is_int

__all__ = ["shifted_copies", "random_crop_flip", "augmentation_rng"]

# Second word of the spawn key of the augmentation's generators, so that they
# never coincide with the data loader's shuffling streams of the same seed.
_AUGMENT_STREAM = 1


def shifted_copies(images: np.ndarray, labels: np.ndarray, pixels: int = 1):
    """The images plus copies shifted by ``pixels`` up, down, left and right.

    Vacated rows/columns are filled with zeros (the background of digit
    images). Five times the data for the price of a copy: on the 1,797-image
    digits set this is what makes LeNet-5's test accuracy robust across seeds.

    Parameters
    ----------
    images : ndarray, shape (N, C, H, W)
    labels : ndarray, shape (N,)
    pixels : int, default 1
        Shift in pixels, 1 <= pixels < min(H, W).

    Returns
    -------
    images : ndarray, shape (5N, C, H, W), dtype of ``images``
        Originals first, then the shifts up, down, left, right.
    labels : ndarray, shape (5N,)
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images must have rank 4 (N, C, H, W), got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    if not is_int(pixels) or not 1 <= pixels < min(images.shape[2:]):
        raise ValueError(f"pixels must be an int in [1, {min(images.shape[2:])}), got {pixels!r}")
    shifted = np.zeros((4, *images.shape), images.dtype)
    shifted[0, :, :, :-pixels] = images[:, :, pixels:]  # up
    shifted[1, :, :, pixels:] = images[:, :, :-pixels]  # down
    shifted[2, :, :, :, :-pixels] = images[:, :, :, pixels:]  # left
    shifted[3, :, :, :, pixels:] = images[:, :, :, :-pixels]  # right
    return (np.concatenate([images[None], shifted]).reshape(-1, *images.shape[1:]),
            np.tile(labels, 5))


def augmentation_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of epoch ``epoch``'s augmentation in a run seeded by ``seed``.

    A pure function of ``(seed, epoch)``: a run resumed from a checkpoint
    draws the same crops and flips as an uninterrupted one without storing any
    generator state, and every MPI rank draws the same ones. The stream is
    independent of :class:`~cnnblas.data.DataLoader`'s shuffling with the same
    seed.

    Parameters
    ----------
    seed : int
        The run's seed, >= 0.
    epoch : int
        The epoch (any numbering, e.g. 1-based), >= 0.

    Returns
    -------
    numpy.random.Generator
    """
    seed = check_int(seed, "seed", minimum=0)
    epoch = check_int(epoch, "epoch", minimum=0)
    sequence = np.random.SeedSequence(seed, spawn_key=(_AUGMENT_STREAM, epoch))
    return np.random.default_rng(sequence)


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int = 4,
                     flip: bool = True) -> np.ndarray:
    """A random crop of each zero-padded image, mirrored left-right with probability 1/2.

    Image ``n`` is padded with ``pad`` zeros on every side, then the
    ``H x W`` window whose top-left corner is ``(pad + dy[n], pad + dx[n])``
    is cut out, with ``dy`` and ``dx`` uniform over ``-pad .. pad`` (so the
    content moves by ``-dy`` rows and ``-dx`` columns and zeros come in at the
    edges); with ``flip``, the crop is then reversed along the width for a
    uniformly drawn half of the images. The standard augmentation of CIFAR-10
    training (He et al., 2016: "4 pixels are padded on each side, and a 32x32
    crop is randomly sampled from the padded image or its horizontal flip").

    Parameters
    ----------
    images : ndarray, shape (N, C, H, W), any dtype
        The images; not modified.
    rng : numpy.random.Generator
        Source of the offsets and flips: ``dy``, ``dx`` (``rng.integers(-pad,
        pad + 1, N)`` each, in that order), then the flips (``rng.random(N) <
        0.5``, drawn only when ``flip``). The same generator state gives the
        same result.
    pad : int, default 4
        Zero padding on each side and largest shift, ``0 <= pad``. ``pad=0``
        gives flips only.
    flip : bool, default True
        Mirror about half of the images.

    Returns
    -------
    ndarray, shape (N, C, H, W), dtype of ``images``
        A new C-contiguous array.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> random_crop_flip(image, np.random.default_rng(2), pad=1, flip=False)[0, 0]  # dy=1, dx=-1
    array([[0., 3., 4.],
           [0., 6., 7.],
           [0., 0., 0.]])
    >>> random_crop_flip(image, np.random.default_rng(2), pad=1)[0, 0]  # the same, mirrored
    array([[4., 3., 0.],
           [7., 6., 0.],
           [0., 0., 0.]])
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have rank 4 (N, C, H, W), got shape {images.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    pad = check_int(pad, "pad", minimum=0)
    flip = check_bool(flip, "flip")
    count, _, height, width = images.shape
    dy = rng.integers(-pad, pad + 1, count)
    dx = rng.integers(-pad, pad + 1, count)
    mirrored = rng.random(count) < 0.5 if flip else np.zeros(count, bool)
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    # windows[n, c, i, j] is the H x W window of image n whose corner is at (i, j):
    # a view, so the fancy index below copies exactly one window per image.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (height, width), axis=(2, 3))
    crops = windows[np.arange(count), :, pad + dy, pad + dx]  # (N, C, H, W)
    crops[mirrored] = crops[mirrored, :, :, ::-1]
    return np.ascontiguousarray(crops)
