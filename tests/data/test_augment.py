"""Tests of cnnblas.data.augment's random crops and flips, and of the per-channel standardisation.

The expected crops are found by searching every window of ``np.pad`` of the
image (and its mirror) with plain slices, not by the vectorised code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas.data import (
    DataLoader,
    augmentation_rng,
    channel_statistics,
    random_crop_flip,
    standardize,
)


def find_window(crop: np.ndarray, image: np.ndarray, pad: int) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, mirrored) whose window of the zero-padded ``image`` is ``crop``."""
    _, height, width = image.shape
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)))
    found = []
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            window = padded[:, pad + dy:pad + dy + height, pad + dx:pad + dx + width]
            for mirrored in (False, True):
                if np.array_equal(window[:, :, ::-1] if mirrored else window, crop):
                    found.append((dy, dx, mirrored))
    return found


def drawn_offsets(crops, images, pad) -> list[tuple[int, int, bool]]:
    """The unique (dy, dx, mirrored) of each crop (random images make it unique)."""
    matches = [find_window(crop, image, pad) for crop, image in zip(crops, images, strict=True)]
    assert all(len(match) == 1 for match in matches), matches
    return [match[0] for match in matches]


def test_shape_dtype_and_input_untouched():
    images = np.random.default_rng(0).random((5, 3, 7, 6)).astype(np.float32)
    before = images.copy()
    crops = random_crop_flip(images, np.random.default_rng(1))
    assert crops.shape == images.shape and crops.dtype == np.float32
    assert crops.flags.c_contiguous
    np.testing.assert_array_equal(images, before)


def test_each_crop_is_a_window_of_the_zero_padded_image_in_the_documented_draw_order():
    images = np.random.default_rng(0).random((40, 2, 8, 8))
    pad = 3
    crops = random_crop_flip(images, np.random.default_rng(5), pad=pad)
    offsets = drawn_offsets(crops, images, pad)
    replay = np.random.default_rng(5)  # the draws the docstring promises, in its order
    dy, dx = replay.integers(-pad, pad + 1, 40), replay.integers(-pad, pad + 1, 40)
    mirrored = replay.random(40) < 0.5
    assert offsets == list(zip(dy.tolist(), dx.tolist(), mirrored.tolist(), strict=True))


def test_flip_only_and_crop_only():
    images = np.random.default_rng(0).random((60, 1, 5, 5))
    flipped = random_crop_flip(images, np.random.default_rng(1), pad=0)
    offsets = drawn_offsets(flipped, images, 0)
    assert {(dy, dx) for dy, dx, _ in offsets} == {(0, 0)}
    assert {mirrored for *_, mirrored in offsets} == {False, True}
    cropped = random_crop_flip(images, np.random.default_rng(1), pad=2, flip=False)
    assert not any(mirrored for *_, mirrored in drawn_offsets(cropped, images, 2))
    np.testing.assert_array_equal(random_crop_flip(images, np.random.default_rng(1), pad=0,
                                                   flip=False), images)


def test_distribution_covers_every_offset_and_both_flips():
    images = np.random.default_rng(0).random((900, 1, 10, 10)).astype(np.float32)
    crops = random_crop_flip(images, augmentation_rng(0, 1), pad=4)
    offsets = np.array(drawn_offsets(crops, images, 4))
    for axis in (0, 1):
        values, counts = np.unique(offsets[:, axis], return_counts=True)
        assert values.tolist() == list(range(-4, 5))
        assert counts.min() > 60  # uniform: 100 each (binomial std 9.4)
    assert 0.43 < offsets[:, 2].mean() < 0.57  # half mirrored (std 0.017)


def test_deterministic_per_seed_and_epoch():
    images = np.random.default_rng(0).random((16, 3, 8, 8))

    def crops(seed, epoch):
        return random_crop_flip(images, augmentation_rng(seed, epoch))

    np.testing.assert_array_equal(crops(3, 2), crops(3, 2))
    assert not np.array_equal(crops(3, 2), crops(3, 1))
    assert not np.array_equal(crops(3, 2), crops(4, 2))


def test_augmentation_stream_differs_from_the_loader_shuffling():
    loader = DataLoader(np.zeros((50, 1)), np.zeros(50), 10, shuffle=True, seed=7)
    shuffled = loader.permutation(1)
    assert not np.array_equal(augmentation_rng(7, 1).permutation(50), shuffled)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       pad=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_random_shapes(n, c, h, w, pad, seed):
    images = np.random.default_rng(seed).integers(0, 255, (n, c, h, w), dtype=np.uint8)
    crops = random_crop_flip(images, np.random.default_rng(seed), pad=pad)
    assert crops.shape == images.shape and crops.dtype == np.uint8
    for crop, image in zip(crops, images, strict=True):
        assert find_window(crop, image, pad)


@pytest.mark.parametrize("call, error, message", [
    (lambda rng: random_crop_flip(np.zeros((2, 3, 4)), rng), ValueError, "rank 4"),
    (lambda rng: random_crop_flip(np.zeros((1, 1, 4, 4)), 0), TypeError, "numpy.random.Generator"),
    (lambda rng: random_crop_flip(np.zeros((1, 1, 4, 4)), rng, pad=-1), ValueError, "pad"),
    (lambda rng: random_crop_flip(np.zeros((1, 1, 4, 4)), rng, pad=1.5), TypeError, "pad"),
    (lambda rng: random_crop_flip(np.zeros((1, 1, 4, 4)), rng, flip=1), TypeError, "flip"),
    (lambda rng: augmentation_rng(-1, 0), ValueError, "seed"),
    (lambda rng: augmentation_rng(0, -1), ValueError, "epoch"),
])
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call(np.random.default_rng(0))


# --------------------------------------------------------------------------- standardisation


def test_channel_statistics_against_per_channel_loops():
    images = np.random.default_rng(0).random((7, 3, 5, 4)).astype(np.float32) * [[[2]], [[5]],
                                                                                [[9]]]
    mean, std = channel_statistics(images)
    for channel in range(3):
        values = [float(v) for v in images[:, channel].ravel()]
        expected_mean = sum(values) / len(values)
        expected_std = (sum((v - expected_mean) ** 2 for v in values) / len(values)) ** 0.5
        assert mean[channel] == pytest.approx(expected_mean, rel=1e-12)
        assert std[channel] == pytest.approx(expected_std, rel=1e-12)
    assert all(type(value) is float for value in mean + std)  # JSON-ready


def test_channel_statistics_of_a_constant_channel_has_unit_std():
    images = np.zeros((2, 2, 3, 3))
    images[:, 1] = 0.25
    assert channel_statistics(images) == ([0.0, 0.25], [1.0, 1.0])


def test_standardize_per_channel_and_scalar():
    images = np.random.default_rng(1).random((4, 2, 3, 3))
    result = standardize(images, [0.5, 0.25], [2.0, 4.0])
    assert result.dtype == np.float32
    np.testing.assert_allclose(result[:, 0], (images[:, 0] - 0.5) / 2.0, atol=1e-6)
    np.testing.assert_allclose(result[:, 1], (images[:, 1] - 0.25) / 4.0, atol=1e-6)
    np.testing.assert_allclose(standardize(images, 0.5, 2.0), (images - 0.5) / 2.0, atol=1e-6)
    mean, std = channel_statistics(images)
    standardised = standardize(images, mean, std)
    np.testing.assert_allclose(standardised.mean(axis=(0, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(standardised.std(axis=(0, 2, 3)), 1, rtol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda x: standardize(x, [0.0, 0.0, 0.0], 1.0), r"mean must be a number or one number "
                                                     r"per channel \(2\), got shape \(3,\)"),
    (lambda x: standardize(x, 0.0, [1.0, 0.0]), "std must be non-zero"),
    (lambda x: standardize(x, float("nan"), 1.0), "mean must be finite"),
    (lambda x: standardize(x[0], 0.0, 1.0), "rank 4"),
    (lambda x: channel_statistics(x[:0]), "N >= 1"),
])
def test_standardize_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.zeros((1, 2, 3, 3)))
