"""How raw images become a model's input: :class:`Preprocessing`, saved with a checkpoint.

Raw pixels -> floats in [0, 1] (integer pixels divided by the data's largest
pixel value, as the loaders of :mod:`cnnblas.data` do) -> upsampled (nearest
neighbour, by an integer factor) -> standardised per channel. The same object
prepares the training images (``cnnblas train``) and the images given to a
saved model (:func:`cnnblas.load_model`, ``cnnblas predict``), so both reach
the model as the same float32 values, bit for bit. Images the model was not
trained on (NaN or inf, a wider integer range, floats outside [0, 1], another
size) are refused with an error that says what was expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from cnnblas.checks import check_int
from cnnblas.data.datasets import _to_unit_float32
from cnnblas.data.normalize import channel_statistics, standardize

__all__ = ["Preprocessing"]


def _channel_values(value, name: str) -> float | tuple[float, ...]:
    """A float, or a tuple of floats (one per channel): finite, hashable, JSON-ready."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be a finite number or one per channel, got {value!r}")
    return float(array) if array.ndim == 0 else tuple(array.tolist())


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What was done to the training images before the model saw them.

    Calling it on raw images gives the model's input: integer pixels divided
    by ``pixel_max`` (floats are taken to be scaled already), every pixel
    repeated ``upsample`` times along both axes, then ``(x - mean) / std`` per
    channel.

    Parameters
    ----------
    shape : (int, int, int), optional
        (C, H, W) of one raw image, before upsampling; None accepts any.
    pixel_max : int, optional
        The largest raw integer pixel value of the training data (255 for
        MNIST and CIFAR-10, 16 for the scikit-learn digits). None: the model
        was trained on floats only, and integer images are refused.
    value_range : (float, float) or None, default (0.0, 1.0)
        The range of the scaled pixels the model was trained on; float images
        outside it are refused (e.g. 0..255 floats for a model trained on
        0..1). None: not checked.
    upsample : int, default 1
    mean, std : float or sequence of C floats, default 0.0 and 1.0
        Per-channel standardisation (``std`` non-zero).

    Examples
    --------
    >>> import numpy as np
    >>> prep = Preprocessing(shape=(1, 2, 2), pixel_max=255, upsample=2, mean=0.5, std=0.5)
    >>> prep(np.array([[[0, 255], [255, 0]]], np.uint8)).shape
    (1, 1, 4, 4)
    >>> Preprocessing.from_metadata(prep.to_metadata()) == prep
    True
    """

    shape: tuple[int, int, int] | None = None
    pixel_max: int | None = None
    value_range: tuple[float, float] | None = (0.0, 1.0)
    upsample: int = 1
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if self.shape is not None:
            if len(self.shape) != 3:
                raise ValueError(f"shape must be (C, H, W), got {self.shape!r}")
            fix("shape", tuple(check_int(size, "shape", minimum=1) for size in self.shape))
        if self.pixel_max is not None:
            fix("pixel_max", check_int(self.pixel_max, "pixel_max", minimum=1))
        if self.value_range is not None:
            low, high = (float(bound) for bound in self.value_range)
            if not (np.isfinite(low) and np.isfinite(high) and low < high):
                raise ValueError(f"value_range must be finite (low, high) with low < high, "
                                 f"got {self.value_range!r}")
            fix("value_range", (low, high))
        fix("upsample", check_int(self.upsample, "upsample", minimum=1))
        for name in ("mean", "std"):
            values = _channel_values(getattr(self, name), name)
            if self.shape is not None and isinstance(values, tuple) \
                    and len(values) != self.shape[0]:
                raise ValueError(f"{name} must have one value per channel ({self.shape[0]}), "
                                 f"got {len(values)}")
            fix(name, values)
        if 0.0 in np.atleast_1d(self.std):
            raise ValueError(f"std must be non-zero, got {self.std!r}")

    @classmethod
    def fit(cls, images: np.ndarray, pixel_max: int | None = None, upsample: int = 1,
            standardize: bool = True) -> Preprocessing:
        """The preprocessing of a training set: its image shape and per-channel statistics.

        Parameters
        ----------
        images : ndarray, shape (N, C, H, W), float in [0, 1]
            The training images as the loaders of :mod:`cnnblas.data` give them.
        pixel_max : int, optional
            Their largest raw integer value (255 for MNIST), so that integer
            images can be given to the saved model.
        upsample : int, default 1
        standardize : bool, default True
            Subtract the mean and divide by the standard deviation of every
            channel (:func:`cnnblas.data.channel_statistics`); False leaves the
            scaled pixels as they are.
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype.kind != "f":
            raise ValueError(f"images must be float (N, C, H, W), got {images.dtype} "
                             f"of shape {images.shape}")
        unscaled = cls(shape=images.shape[1:], pixel_max=pixel_max, upsample=upsample)
        unscaled.scale(images, "the training images")  # finite, in [0, 1]
        mean, std = channel_statistics(images) if standardize else (0.0, 1.0)
        return dataclasses.replace(unscaled, mean=mean, std=std)

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the model's input (the raw shape upsampled), or None."""
        if self.shape is None:
            return None
        channels, height, width = self.shape
        return channels, height * self.upsample, width * self.upsample

    # -- saved as a checkpoint's metadata["input"] ---------------------------------

    def to_metadata(self) -> dict:
        """This object as JSON values (a checkpoint's ``metadata["input"]``)."""
        as_json = lambda value: list(value) if isinstance(value, tuple) else value  # noqa: E731
        return {"shape": as_json(self.shape), "pixel_max": self.pixel_max,
                "range": as_json(self.value_range), "upsample": self.upsample,
                "mean": as_json(self.mean), "std": as_json(self.std)}

    @classmethod
    def from_metadata(cls, spec: Mapping) -> Preprocessing:
        """The inverse of :meth:`to_metadata`.

        Entries left out take the defaults of the class, except ``range``:
        (0, 1) when left out (what ``cnnblas train`` trained on before it
        wrote the entry), None only when written as null.
        """
        if not isinstance(spec, Mapping):
            raise ValueError(f"the preprocessing metadata must be a dict, got {spec!r}")
        return cls(shape=spec.get("shape"), pixel_max=spec.get("pixel_max"),
                   value_range=spec.get("range", (0.0, 1.0)),
                   upsample=spec.get("upsample", 1), mean=spec.get("mean", 0.0),
                   std=spec.get("std", 1.0))

    # -- applied to images ---------------------------------------------------------

    def __call__(self, images, name: str = "images") -> np.ndarray:
        """Raw images -> the model's input, float32 of shape (N, *input_shape).

        Parameters
        ----------
        images : array_like, shape (N, C, H, W), or (N, H, W) for one channel
            Integer pixels in [0, ``pixel_max``] (any integer dtype), or floats
            within ``value_range`` (the scaled pixels, e.g. the arrays of
            :func:`cnnblas.data.load_mnist`).
        name : str
            Names the images in error messages.

        Raises
        ------
        TypeError
            Neither integer nor float pixels, or integer pixels for a model
            trained on floats only (``pixel_max`` None).
        ValueError
            A shape other than the training images'; NaN or inf (the message
            names the first such image); integers outside [0, ``pixel_max``];
            floats outside ``value_range``.
        """
        return self.resize_and_standardize(self.scale(images, name))

    def resize_and_standardize(self, scaled: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Scaled images (what :meth:`scale` returns) -> the model's input, a new
        array of ``dtype`` (the model's: float32 or float64).

        Upsampled (every pixel repeated ``upsample`` times along both axes),
        then ``(x - mean) / std`` per channel; no check of the values.
        """
        if self.upsample > 1:
            scaled = scaled.repeat(self.upsample, axis=2).repeat(self.upsample, axis=3)
        return standardize(scaled, self.mean, self.std, dtype)

    def scale(self, images, name: str = "images") -> np.ndarray:
        """Raw images checked and scaled (not upsampled, not standardised), float32 (N, C, H, W).

        Float32 input that needs nothing is returned as it is, not copied. See
        :meth:`__call__` for the accepted input and the errors.
        """
        images = self._checked_shape(np.asarray(images), name)
        kind = images.dtype.kind
        if kind in "iu":
            return self._scaled_integers(images, name)
        if kind != "f":
            raise TypeError(f"{name} must hold integer or floating-point pixels, "
                            f"got dtype {images.dtype}")
        low, high = float(images.min()), float(images.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            first = int(np.argmin(np.isfinite(images).all(axis=(1, 2, 3))))
            raise ValueError(f"{name} hold non-finite values (NaN or inf), first in image "
                             f"{first}; the model only takes finite pixels")
        if self.value_range is not None:
            expected_low, expected_high = self.value_range
            if low < expected_low or high > expected_high:
                raise ValueError(self._range_message(name, images.dtype, low, high))
        return images.astype(np.float32, copy=False)

    def _checked_shape(self, images: np.ndarray, name: str) -> np.ndarray:
        if images.ndim == 3 and (self.shape is None or self.shape[0] == 1):
            images = images[:, None]
        expected = "(N, C, H, W)" if self.shape is None else \
            f"(N, {', '.join(map(str, self.shape))})"
        if images.ndim != 4:
            one_channel = " or (N, H, W)" if self.shape is None or self.shape[0] == 1 else ""
            raise ValueError(f"{name} must have shape {expected}{one_channel}, "
                             f"got {images.shape}")
        if self.shape is not None and images.shape[1:] != self.shape:
            raise ValueError(f"{name} have shape {images.shape[1:]} per sample, the model was "
                             f"trained on {self.shape}; expected {expected}")
        if len(images) == 0:
            raise ValueError(f"{name} hold no images (shape {images.shape})")
        return images

    def _scaled_integers(self, images: np.ndarray, name: str) -> np.ndarray:
        if self.pixel_max is None:
            raise TypeError(
                f"{name} hold integer pixels ({images.dtype}), but the model was trained on "
                "float input without a known largest pixel value; give float images"
                + ("" if self.value_range is None else
                   " in [{:g}, {:g}]".format(*self.value_range))
            )
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > self.pixel_max:
            raise ValueError(
                f"{name} hold integer pixels in [{low}, {high}] ({images.dtype}); the model was "
                f"trained on pixels in [0, {self.pixel_max}]: rescale them to that range"
            )
        return _to_unit_float32(images, self.pixel_max)

    def _range_message(self, name: str, dtype, low: float, high: float) -> str:
        expected_low, expected_high = self.value_range
        message = (f"{name} hold {dtype} values in [{low:g}, {high:g}]; the model was trained "
                   f"on floats in [{expected_low:g}, {expected_high:g}]")
        if self.pixel_max is not None and high <= self.pixel_max and high > expected_high:
            return (message + f" (pixels / {self.pixel_max}): divide by {self.pixel_max} or "
                    "give the integer pixels")
        return message
