"""Offline data augmentation for small image sets."""

from __future__ import annotations

import numpy as np

from cnnblas.checks import is_int


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
