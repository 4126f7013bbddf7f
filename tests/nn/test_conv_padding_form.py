"""Conv2d checks the form of ``padding`` when built; its size-dependent check waits."""

from __future__ import annotations

import numpy as np
import pytest

from cnnblas import nn


@pytest.mark.parametrize("padding, error, message", [
    ("bogus", ValueError, r"padding must be 'valid' or 'same' when a string, got 'bogus'"),
    (1.5, TypeError, r"padding must be an int, \(h, w\).*got 1\.5"),
    ((1, 2, 3), TypeError, r"padding must be an int, \(h, w\).*got \(1, 2, 3\)"),
    (-1, ValueError, r"padding must be non-negative, got -1"),
])
def test_bad_padding_fails_at_construction(padding, error, message):
    with pytest.raises(error, match=message):
        nn.Conv2d(1, 2, 3, padding=padding)


@pytest.mark.parametrize("padding", [0, 1, (1, 2), ((0, 1), (1, 0)), "valid", "same"])
def test_good_padding_keeps_its_form(padding):
    conv = nn.Conv2d(1, 2, 3, padding=padding, rng=0)
    assert conv.padding == padding
    assert conv(np.zeros((1, 1, 5, 5), np.float32)).shape[:2] == (1, 2)
