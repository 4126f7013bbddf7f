"""Per-channel standardisation of images: the statistics of a training set, and applying them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["channel_statistics", "standardize"]


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of every channel over a set of images.

    Computed in float64 over all images and pixels of each channel; a
    channel that is constant gets a standard deviation of 1.0 (standardising
    it then only subtracts its mean).

    Parameters
    ----------
    images : ndarray, shape (N, C, H, W), real, N >= 1

    Returns
    -------
    mean, std : list of float, length C
        Plain floats, ready for a checkpoint's JSON metadata.

    Examples
    --------
    >>> import numpy as np
    >>> images = np.stack([np.zeros((2, 2)), np.ones((2, 2))])[:, None].repeat(2, axis=1)
    >>> images[:, 1] *= 4
    >>> channel_statistics(images)
    ([0.5, 2.0], [0.5, 2.0])
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"images must have shape (N, C, H, W) with N >= 1, got shape {images.shape}"
        )
    if images.dtype.kind not in "iuf":
        raise TypeError(f"images must hold real numbers, got dtype {images.dtype}")
    mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
    std = images.std(axis=(0, 2, 3), dtype=np.float64)
    std[std == 0] = 1.0
    return mean.tolist(), std.tolist()


def _per_channel(value, channels: int, name: str) -> np.ndarray:
    """``value`` (a float or one float per channel) as float32 of shape (1, C, 1, 1)."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(channels, float(array))
    if array.shape != (channels,):
        raise ValueError(
            f"{name} must be a number or one number per channel ({channels}), got shape "
            f"{array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array.astype(np.float32).reshape(1, channels, 1, 1)


def standardize(images: np.ndarray, mean: float | Sequence[float] = 0.0,
                std: float | Sequence[float] = 1.0, dtype=np.float32) -> np.ndarray:
    """``(images - mean) / std`` per channel, as a new array of ``dtype``.

    Parameters
    ----------
    images : ndarray, shape (N, C, H, W), real
    mean, std : float or sequence of C floats
        One value for every channel, or one per channel (e.g. from
        :func:`channel_statistics`); ``std`` must be non-zero.
    dtype : float32 or float64, default float32
        The model's dtype.

    Returns
    -------
    ndarray, shape (N, C, H, W), ``dtype``
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have rank 4 (N, C, H, W), got shape {images.shape}")
    channels = images.shape[1]
    mean = _per_channel(mean, channels, "mean")
    std = _per_channel(std, channels, "std")
    if np.any(std == 0):
        raise ValueError(f"std must be non-zero, got {std.ravel().tolist()}")
    result = images.astype(dtype)  # a copy, also for input of that dtype
    result -= mean
    result /= std
    return result
