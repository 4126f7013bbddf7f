"""Preprocessing: raw pixels to a model's input, its checks of the input, its metadata."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas.data import Preprocessing

MNIST_LIKE = Preprocessing(shape=(1, 4, 4), pixel_max=255, mean=0.13, std=0.31)


def by_hand(raw, pixel_max, upsample, mean, std):
    """The model's input from integer pixels, in float64, written out step by step."""
    x = raw.astype(np.float64) / pixel_max
    x = np.kron(x, np.ones((1, 1, upsample, upsample)))  # each pixel -> a k x k block
    mean = np.broadcast_to(np.asarray(mean, np.float64), (raw.shape[1],))
    std = np.broadcast_to(np.asarray(std, np.float64), (raw.shape[1],))
    return (x - mean[:, None, None]) / std[:, None, None]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), channels=st.integers(1, 3), height=st.integers(1, 5),
       width=st.integers(1, 5), upsample=st.integers(1, 3), pixel_max=st.sampled_from([1, 16, 255]),
       seed=st.integers(0, 2 ** 16))
def test_integer_pixels_are_scaled_upsampled_and_standardised(n, channels, height, width,
                                                              upsample, pixel_max, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, pixel_max + 1, (n, channels, height, width), dtype=np.uint8)
    mean = rng.random(channels).tolist()
    std = (0.1 + rng.random(channels)).tolist()
    prep = Preprocessing(shape=(channels, height, width), pixel_max=pixel_max, upsample=upsample,
                         mean=mean, std=std)
    x = prep(raw)
    assert x.dtype == np.float32 and x.shape == (n, *prep.input_shape)
    np.testing.assert_allclose(x, by_hand(raw, pixel_max, upsample, mean, std), rtol=1e-5,
                               atol=1e-5)
    # The same images as floats in [0, 1] (what the data loaders give) -> the same input.
    np.testing.assert_array_equal(prep(raw.astype(np.float32) / np.float32(pixel_max)), x)


def test_one_channel_images_may_leave_out_the_channel_axis():
    raw = np.arange(32, dtype=np.uint8).reshape(2, 4, 4)
    np.testing.assert_array_equal(MNIST_LIKE(raw), MNIST_LIKE(raw[:, None]))
    with pytest.raises(ValueError, match=r"must have shape \(N, 3, 4, 4\), got \(2, 4, 4\)"):
        Preprocessing(shape=(3, 4, 4), pixel_max=255)(raw)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_name_the_first_image(value):
    images = np.full((5, 1, 4, 4), 0.5, np.float32)
    images[3, 0, 2, 1] = value
    images[4, 0, 0, 0] = value
    with pytest.raises(ValueError, match=r"images hold non-finite values \(NaN or inf\), first "
                                         r"in image 3"):
        MNIST_LIKE(images)
    with pytest.raises(ValueError, match="first in image 3"):  # also when nothing is checked
        Preprocessing(value_range=None)(images)


def test_integers_outside_the_training_range_are_refused():
    wide = np.zeros((2, 1, 4, 4), np.uint16)
    wide[1, 0, 0, 0] = 65535
    with pytest.raises(ValueError, match=r"integer pixels in \[0, 65535\] \(uint16\); the model "
                                         r"was trained on pixels in \[0, 255\]: rescale"):
        MNIST_LIKE(wide)
    negative = np.full((1, 1, 4, 4), -1, np.int16)
    with pytest.raises(ValueError, match=r"in \[-1, -1\] \(int16\)"):
        MNIST_LIKE(negative)
    # Any integer dtype inside the range is fine: uint16 0..255 is uint8 0..255.
    np.testing.assert_array_equal(MNIST_LIKE(wide[:1]), MNIST_LIKE(wide[:1].astype(np.uint8)))


def test_floats_outside_the_trained_range_are_refused():
    scaled_wrong = np.full((2, 1, 4, 4), 200.0, np.float32)  # 0..255 floats, model saw 0..1
    with pytest.raises(ValueError, match=r"float32 values in \[200, 200\]; the model was trained "
                                         r"on floats in \[0, 1\] \(pixels / 255\): divide by "
                                         r"255 or give the integer pixels"):
        MNIST_LIKE(scaled_wrong)
    with pytest.raises(ValueError, match=r"values in \[-0\.5, 0\.5\]; .* floats in \[0, 1\]$"):
        MNIST_LIKE(np.full((1, 1, 4, 4), -0.5) * np.array([1, -1]).repeat(8).reshape(1, 1, 4, 4))
    # The bounds themselves are in range.
    MNIST_LIKE(np.array([0.0, 1.0]).repeat(8).reshape(1, 1, 4, 4))
    # No range recorded (a model trained on its own floats): not checked.
    assert Preprocessing(value_range=None)(scaled_wrong).max() == 200.0


@pytest.mark.parametrize("images, error, message", [
    (np.ones((2, 1, 4, 4), bool), TypeError, "integer or floating-point pixels, got dtype bool"),
    (np.ones((2, 1, 4, 4), np.complex64), TypeError, "got dtype complex64"),
    (np.ones((2, 1, 5, 4), np.uint8), ValueError,
     r"shape \(1, 5, 4\) per sample, the model was trained on \(1, 4, 4\)"),
    (np.ones((4, 4), np.uint8), ValueError, r"must have shape \(N, 1, 4, 4\) or \(N, H, W\)"),
    (np.ones((0, 1, 4, 4), np.uint8), ValueError, r"hold no images \(shape \(0, 1, 4, 4\)\)"),
])
def test_other_input_is_refused(images, error, message):
    with pytest.raises(error, match=message):
        MNIST_LIKE(images)


def test_integers_need_a_known_pixel_maximum():
    with pytest.raises(TypeError, match=r"integer pixels \(uint8\), but the model was trained on "
                                        r"float input.*give float images in \[0, 1\]"):
        Preprocessing()(np.ones((1, 1, 2, 2), np.uint8))


def test_scale_does_not_copy_float32_input_that_needs_nothing():
    images = np.full((2, 1, 4, 4), 0.25, np.float32)
    assert MNIST_LIKE.scale(images) is images
    assert MNIST_LIKE(images) is not images and images[0, 0, 0, 0] == 0.25


def test_metadata_round_trip_and_older_checkpoints():
    prep = Preprocessing(shape=(3, 2, 2), pixel_max=255, upsample=2, mean=[0.1, 0.2, 0.3],
                         std=[1.0, 2.0, 3.0])
    metadata = prep.to_metadata()
    assert metadata == {"shape": [3, 2, 2], "pixel_max": 255, "range": [0.0, 1.0],
                        "upsample": 2, "mean": [0.1, 0.2, 0.3], "std": [1.0, 2.0, 3.0]}
    assert Preprocessing.from_metadata(metadata) == prep
    # Written before the "range" entry: cnnblas train always trained on [0, 1].
    older = {key: value for key, value in metadata.items() if key != "range"}
    assert Preprocessing.from_metadata(older).value_range == (0.0, 1.0)
    assert Preprocessing.from_metadata({**metadata, "range": None}).value_range is None
    with pytest.raises(ValueError, match="must be a dict, got 3"):
        Preprocessing.from_metadata(3)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"shape": (1, 4)}, ValueError, r"shape must be \(C, H, W\), got \(1, 4\)"),
    ({"shape": (1, 0, 4)}, ValueError, "shape must be an int >= 1, got 0"),
    ({"pixel_max": 0}, ValueError, "pixel_max must be an int >= 1, got 0"),
    ({"upsample": 0}, ValueError, "upsample must be an int >= 1, got 0"),
    ({"value_range": (1.0, 0.0)}, ValueError, "low < high"),
    ({"std": [1.0, 0.0]}, ValueError, "std must be non-zero"),
    ({"mean": float("nan")}, ValueError, "mean must be a finite number or one per channel"),
    ({"shape": (3, 4, 4), "mean": [0.1, 0.2]}, ValueError,
     r"mean must have one value per channel \(3\), got 2"),
])
def test_constructor_checks(kwargs, error, message):
    with pytest.raises(error, match=message):
        Preprocessing(**kwargs)


def test_fit_takes_the_shape_and_channel_statistics_of_the_training_images():
    images = np.random.default_rng(0).random((20, 3, 4, 5)).astype(np.float32)
    prep = Preprocessing.fit(images, pixel_max=255, upsample=2)
    assert prep.shape == (3, 4, 5) and prep.input_shape == (3, 8, 10) and prep.pixel_max == 255
    np.testing.assert_allclose(prep.mean, images.astype(np.float64).mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(prep.std, images.astype(np.float64).std(axis=(0, 2, 3)))
    plain = Preprocessing.fit(images, standardize=False)
    assert (plain.mean, plain.std) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"the training images hold float32 values in \[0, 255\]"):
        Preprocessing.fit(images * 0 + np.float32(255) * (images > 0.5))
