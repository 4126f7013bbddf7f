"""Copies between an image plane and the interior of a flat, zero-padded plane (Numba).

im2col's gather, col2im's scatter and the direct convolution kernels all work
on one image plane stored flat at a padded width, so that a window or kernel
offset is a plain offset into one array. These two helpers move a plane in and
out of that layout; the caller owns the padded buffer and keeps its border at
zero.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def copy_into_padded(plane, padded, pad_top, pad_left, padded_w):
    """``padded[(h + pad_top) * padded_w + pad_left + w] = plane[h, w]`` for the
    whole (H, W) ``plane``; ``padded`` is 1-D."""
    height, width = plane.shape
    for h in range(height):
        start = (h + pad_top) * padded_w + pad_left
        dst = padded[start : start + width]
        src = plane[h]
        for t in range(width):
            dst[t] = src[t]


@njit(cache=True, inline="always")
def copy_from_padded(padded, pad_top, pad_left, padded_w, plane):
    """The inverse of :func:`copy_into_padded`: fill the (H, W) ``plane`` from the
    interior of the 1-D ``padded``."""
    height, width = plane.shape
    for h in range(height):
        start = (h + pad_top) * padded_w + pad_left
        src = padded[start : start + width]
        dst = plane[h]
        for t in range(width):
            dst[t] = src[t]
