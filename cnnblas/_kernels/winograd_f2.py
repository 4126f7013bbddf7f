"""Winograd F(2x2, 3x3) input and output transforms (Numba).

A 3x3, stride-1 convolution is computed on 4x4 input tiles that overlap by
two pixels; each gives a 2x2 output tile (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016)::

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

    Bᵀ = [[1,  0, -1,  0],      G = [[1,    0,   0],      Aᵀ = [[1, 1,  1,  0],
          [0,  1,  1,  0],           [1/2,  1/2, 1/2],           [0, 1, -1, -1]]
          [0, -1,  1,  0],           [1/2, -1/2, 1/2],
          [0,  1,  0, -1]]           [0,    0,   1]]

Summed over input channels, the elementwise product becomes 16 GEMMs, one per
position ``xi = 4*a + b`` of the 4x4 tile: ``M[xi] = U[xi] @ V[xi]`` with
``U`` (16, K, C), ``V`` (16, C, tiles) and ``M`` (16, K, tiles). The kernels
here fill ``V`` and turn ``M`` into the output.

The weight gradient runs the output transform backwards: ``dM = A dY Aᵀ``
per 2x2 output-gradient tile fills ``dM`` in the layout of ``M``, then
``dU[xi] = dM[xi] @ V[xi]ᵀ`` (16 GEMMs) and ``dW = Gᵀ dU G``
(:func:`grad_transform`).

Tile layout: ``V`` and ``M`` are passed as (16, row_length) arrays whose row
``xi`` starts with the (channels, N*T) GEMM operand. Each image has
``T = tiles_h * (tiles_w + 1)`` columns: tile (th, tw) of image n in channel c
sits at column ``(c*N + n)*T + th*(tiles_w + 1) + tw``, and the extra column
``tw = tiles_w`` of every tile row is junk (finite, never written to the
output). That one wasted column per tile row (1/tiles_w more GEMM work: 4% on
a 56x56 image, 12% on 16x16) lets both stages of the input transform run as
single loops over a whole plane; with exact rows, one stage needs a loop per
tile row, and those are too short to vectorise (8 tiles on a 16x16 image):
the transform ran 2x slower. The rows of ``V``/``M`` may be longer than
channels*N*T (padding that keeps the 16 rows out of each other's cache sets).

Tile (th, tw) reads the zero-padded input rows ``2*th .. 2*th + 3`` and
columns ``2*tw .. 2*tw + 3``, i.e. input pixel
``(2*th + r - pad_top, 2*tw + s - pad_left)``, and writes output pixels
``(2*th + i, 2*tw + j)`` for i, j in {0, 1}. Pixels outside the input read as
zero and outputs beyond ``out_h`` x ``out_w`` (the partial last tile row and
column when a size is odd) are dropped, so nothing is read or written out of
bounds. ``pad`` may be negative: the input is then cropped (the input-gradient
convolution with forward padding above 2 needs this).

Both transforms are separable and done in two stages per (channel, image)
plane, each a loop over all tiles of the plane with bare loop counters over
contiguous slices; pairs of columns are addressed as ``a[t, 0]``/``a[t, 1]``
of a (tiles, 2) view. LLVM vectorises all of them.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


@numba.njit(cache=True, inline="always")
def _clamped(lo, hi, limit):
    """``[lo, hi)`` clipped to ``[0, limit)``, empty (lo == hi) when disjoint."""
    lo = min(max(lo, 0), limit)
    hi = min(max(hi, lo), limit)
    return lo, hi


@numba.njit(cache=True, inline="always")
def _input_task(x, pad, tiles, v, task):
    """Transform input plane ``x[n, c]`` with ``task = c * N + n``."""
    n_images, _, height, width = x.shape
    pad_top, pad_left = pad
    tiles_h, tiles_w = tiles
    span = tiles_w + 1  # tiles per tile row, junk included; a padded row has 2*span columns
    n_tiles = tiles_h * span
    n_pairs = (tiles_h + 1) * span  # column pairs per parity half
    # Padded rows and columns that hold input pixels (the rest stays zero).
    row_lo, row_hi = _clamped(pad_top, pad_top + height, 2 * tiles_h + 2)
    col_lo, col_hi = _clamped(pad_left, pad_left + width, 2 * span)
    c = task // n_images
    n = task - c * n_images
    plane = task * n_tiles
    # padded[parity, half*span + tw, s] is padded pixel (2*half + parity, 2*tw + s);
    # one pair more at the end for the last junk tile to read.
    padded = np.zeros((2, n_pairs + 1, 2), x.dtype)
    flat = padded.reshape(2, 2 * n_pairs + 2)
    for r in range(row_lo, row_hi):
        start = (r // 2) * 2 * span
        dst = flat[r % 2, start + col_lo : start + col_hi]
        src = x[n, c, r - pad_top, col_lo - pad_left : col_hi - pad_left]
        for t in range(col_hi - col_lo):
            dst[t] = src[t]
    # cols[b, parity, f]: column combination b of the tile at pair f.
    cols = np.empty((4, 2, n_pairs), x.dtype)
    for parity in range(2):
        here = padded[parity, :n_pairs]  # padded columns 2*tw, 2*tw + 1
        right = padded[parity, 1:]  # padded columns 2*tw + 2, 2*tw + 3
        c0 = cols[0, parity]
        c1 = cols[1, parity]
        c2 = cols[2, parity]
        c3 = cols[3, parity]
        for f in range(n_pairs):  # d B
            c0[f] = here[f, 0] - right[f, 0]
            c1[f] = here[f, 1] + right[f, 0]
            c2[f] = right[f, 0] - here[f, 1]
            c3[f] = here[f, 1] - right[f, 1]
    for b in range(4):
        # Rows 0..3 of tile row th: even half row th, odd th, even th + 1, odd th + 1.
        row0 = cols[b, 0, :n_tiles]
        row1 = cols[b, 1, :n_tiles]
        row2 = cols[b, 0, span:]
        row3 = cols[b, 1, span:]
        v0 = v[b, plane : plane + n_tiles]
        v1 = v[4 + b, plane : plane + n_tiles]
        v2 = v[8 + b, plane : plane + n_tiles]
        v3 = v[12 + b, plane : plane + n_tiles]
        for t in range(n_tiles):  # Bᵀ (d B)
            v0[t] = row0[t] - row2[t]
            v1[t] = row1[t] + row2[t]
            v2[t] = row2[t] - row1[t]
            v3[t] = row1[t] - row3[t]


@numba.njit(cache=True, parallel=True)
def input_transform(x, pad, tiles, v):
    """Fill ``v`` (16, >= C*N*T) with ``Bᵀ d B`` of every tile of ``x`` (N, C, H, W).

    The plane is zero-padded into a buffer with its rows split by parity, each
    row ``2*(tiles_w + 1)`` columns long, so that a tile row's four input rows
    are rows th and th + 1 of the even and odd halves. First the column
    combination ``d B`` over all (half-row, tile) pairs, then the row
    combination ``Bᵀ (d B)``. Parallel over the C*N input planes: each task
    writes its own columns of ``v``, so there are no write conflicts.
    """
    for task in prange(x.shape[1] * x.shape[0]):
        _input_task(x, pad, tiles, v, task)


@numba.njit(cache=True, nogil=True)
def input_transform_serial(x, pad, tiles, v):
    """:func:`input_transform` in the calling thread, without the GIL."""
    for task in range(x.shape[1] * x.shape[0]):
        _input_task(x, pad, tiles, v, task)


@numba.njit(cache=True, inline="always")
def _output_task(m, tiles, bias, y, task):
    """Write output plane ``y[n, k]`` with ``task = k * N + n``."""
    n_images, _, out_h, out_w = y.shape
    tiles_h, tiles_w = tiles
    span = tiles_w + 1
    n_tiles = tiles_h * span
    k = task // n_images
    n = task - k * n_images
    plane = task * n_tiles
    beta = bias[k]
    # rows[i, b, t]: row i of Aᵀ m for tile t, column b.
    rows = np.empty((2, 4, n_tiles), y.dtype)
    for b in range(4):
        m0 = m[b, plane : plane + n_tiles]
        m1 = m[4 + b, plane : plane + n_tiles]
        m2 = m[8 + b, plane : plane + n_tiles]
        m3 = m[12 + b, plane : plane + n_tiles]
        top = rows[0, b]
        bottom = rows[1, b]
        for t in range(n_tiles):  # Aᵀ m
            top[t] = m0[t] + m1[t] + m2[t]
            bottom[t] = m1[t] - m2[t] - m3[t]
    # pairs[i, th*span + tw, j] is output pixel (2*th + i, 2*tw + j).
    pairs = np.empty((2, n_tiles, 2), y.dtype)
    for i in range(2):
        r0 = rows[i, 0]
        r1 = rows[i, 1]
        r2 = rows[i, 2]
        r3 = rows[i, 3]
        out = pairs[i]
        for t in range(n_tiles):  # (Aᵀ m) A
            out[t, 0] = r0[t] + r1[t] + r2[t] + beta
            out[t, 1] = r1[t] - r2[t] - r3[t] + beta
    lines = pairs.reshape(2, 2 * n_tiles)
    for oh in range(out_h):
        start = (oh // 2) * 2 * span
        src = lines[oh % 2, start : start + out_w]
        dst = y[n, k, oh]
        for ow in range(out_w):
            dst[ow] = src[ow]


@numba.njit(cache=True, parallel=True)
def output_transform(m, tiles, bias, y):
    """Write ``Aᵀ m A + bias`` of every tile into ``y`` (N, K, out_h, out_w).

    ``m`` is (16, >= K*N*T), laid out as ``v`` in :func:`input_transform`
    with output channels in place of input channels. First the row
    combination ``Aᵀ m``, then the column combination ``(Aᵀ m) A`` into two
    planes of output rows (even and odd), which are copied into ``y`` cropped
    to ``out_h`` x ``out_w`` (``out <= 2*tiles`` per axis; junk tiles and the
    partial last tile row/column are dropped). Parallel over the K*N output
    planes.
    """
    for task in prange(y.shape[1] * y.shape[0]):
        _output_task(m, tiles, bias, y, task)


@numba.njit(cache=True, nogil=True)
def output_transform_serial(m, tiles, bias, y):
    """:func:`output_transform` in the calling thread, without the GIL."""
    for task in range(y.shape[1] * y.shape[0]):
        _output_task(m, tiles, bias, y, task)


@numba.njit(cache=True, inline="always")
def _grad_task(dy, tiles, m, task):
    """Transform output-gradient plane ``dy[n, k]`` with ``task = k * N + n``."""
    n_images, _, out_h, out_w = dy.shape
    tiles_h, tiles_w = tiles
    span = tiles_w + 1
    n_tiles = tiles_h * span
    k = task // n_images
    n = task - k * n_images
    plane = task * n_tiles
    # pairs[i, th*span + tw, j] is output-gradient pixel (2*th + i, 2*tw + j); the
    # junk tile column and the pixels past out_h x out_w stay zero.
    pairs = np.zeros((2, n_tiles, 2), dy.dtype)
    lines = pairs.reshape(2, 2 * n_tiles)
    for oh in range(out_h):
        start = (oh // 2) * 2 * span
        dst = lines[oh % 2, start : start + out_w]
        src = dy[n, k, oh]
        for ow in range(out_w):
            dst[ow] = src[ow]
    # rows[i, b, t]: entry (i, b) of dY Aᵀ for tile t.
    rows = np.empty((2, 4, n_tiles), dy.dtype)
    for i in range(2):
        here = pairs[i]
        r0 = rows[i, 0]
        r1 = rows[i, 1]
        r2 = rows[i, 2]
        r3 = rows[i, 3]
        for t in range(n_tiles):  # dY Aᵀ
            r0[t] = here[t, 0]
            r1[t] = here[t, 0] + here[t, 1]
            r2[t] = here[t, 0] - here[t, 1]
            r3[t] = -here[t, 1]
    for b in range(4):
        top = rows[0, b]
        bottom = rows[1, b]
        m0 = m[b, plane : plane + n_tiles]
        m1 = m[4 + b, plane : plane + n_tiles]
        m2 = m[8 + b, plane : plane + n_tiles]
        m3 = m[12 + b, plane : plane + n_tiles]
        for t in range(n_tiles):  # A (dY Aᵀ)
            m0[t] = top[t]
            m1[t] = top[t] + bottom[t]
            m2[t] = top[t] - bottom[t]
            m3[t] = -bottom[t]


@numba.njit(cache=True, parallel=True)
def grad_transform(dy, tiles, m):
    """Fill ``m`` (16, >= K*N*T) with ``dM = A dY Aᵀ`` of every 2x2 tile of ``dy``.

    ``dy`` is (N, K, out_h, out_w), the gradient of the forward output; ``m``
    gets the layout of ``M`` in :func:`output_transform` (this is its
    adjoint, bias aside)::

        A = [[1, 0], [1, 1], [1, -1], [0, -1]]

    Junk tiles and the missing pixels of a partial last tile row/column (odd
    ``out_h``/``out_w``) are zero, so that they add nothing to
    ``dU[xi] = dM[xi] @ V[xi]ᵀ``. ``dy`` is copied into two zeroed planes of
    even and odd output rows (nothing outside ``dy`` is read), then the column
    combination ``dY Aᵀ`` and the row combination ``A (dY Aᵀ)`` run over all
    tiles of the plane. Parallel over the K*N planes.
    """
    for task in prange(dy.shape[1] * dy.shape[0]):
        _grad_task(dy, tiles, m, task)


@numba.njit(cache=True, nogil=True)
def grad_transform_serial(dy, tiles, m):
    """:func:`grad_transform` in the calling thread, without the GIL."""
    for task in range(dy.shape[1] * dy.shape[0]):
        _grad_task(dy, tiles, m, task)
