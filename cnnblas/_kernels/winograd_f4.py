"""Winograd F(4x4, 3x3) input, output and gradient transforms (Numba).

The larger sibling of :mod:`cnnblas._kernels.winograd_f2` (F(2x2, 3x3)): 6x6
input tiles that overlap by two pixels give 4x4 output tiles, with the
interpolation points 0, ±1, ±2 and ∞ (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016)::

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

    Bᵀ = [[4,  0, -5,  0, 1, 0],   G = [[ 1/4,     0,    0],   Aᵀ = [[1, 1,  1, 1,  1, 0],
          [0, -4, -4,  1, 1, 0],        [-1/6,  -1/6, -1/6],         [0, 1, -1, 2, -2, 0],
          [0,  4, -4, -1, 1, 0],        [-1/6,   1/6, -1/6],         [0, 1,  1, 4,  4, 0],
          [0, -2, -1,  2, 1, 0],        [1/24,  1/12,  1/6],         [0, 1, -1, 8, -8, 1]]
          [0,  2, -1, -2, 1, 0],        [1/24, -1/12,  1/6],
          [0,  4,  0, -5, 0, 1]]        [   0,     0,    1]]

A 4x4 output tile costs 36 multiplies per (input, output) channel pair
instead of 144 (4x fewer; F(2x2, 3x3) saves 2.25x), and the transformed
operands hold 36 values per 16 output pixels instead of 16 per 4, so the
memory-bound transforms move less data too. The price is precision: the
entries up to 8 in ``Aᵀ`` and 5 in ``Bᵀ`` amplify rounding, 7-25 times
F(2x2, 3x3)'s error in float32 (3e-6 to 1e-5 relative to the largest output
on 16- to 128-channel layers, against 2e-7 to 6e-7; still well inside the
1e-4 of ``tests/ops/test_winograd.py``).

Layout: as in :mod:`cnnblas._kernels.winograd_f2`, with 36 rows (``xi = 6*a + b``)
and ``T = tiles_h * (tiles_w + 1)`` columns per image (one junk tile per tile
row, so that every stage is one long loop over the plane). Tile (th, tw)
reads the zero-padded input rows ``4*th .. 4*th + 5`` and columns
``4*tw .. 4*tw + 5`` and writes output pixels ``(4*th + i, 4*tw + j)`` for
``i, j`` in 0..3; pixels outside the input read as zero, outputs beyond
``out_h`` x ``out_w`` are dropped, and ``pad`` may be negative (a crop).

Each kernel call handles one channel of every image in the chunk, so that
its loops run over all N*T tiles of that channel, long enough for LLVM to
vectorise (a 16x16 image has only 20 tiles). The input transform first copies
the padded rows into six *streams*, one per row of a tile, each row cut into
quads of four columns: ``streams[i, n*T + th*span + tw, s]`` is padded pixel
``(4*th + i, 4*tw + s)`` of image n. Rows 0 and 1 of a tile row are also rows
4 and 5 of the tile row above, so they are copied twice. A tile's six rows
are then entry ``t`` of the six streams and its six columns quad ``t`` and the
first two entries of quad ``t + 1``: every stage is a contiguous run. ``Bᵀ``
combines the six streams elementwise (in place), then ``B`` each of them
quad by quad.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from cnnblas._kernels.winograd_f2 import _clamped


@numba.njit(cache=True, inline="always")
def _constants(a):
    """2, 4, 5 and 8 in the dtype of array ``a``: a bare literal is a float64 and
    would turn float32 arithmetic into float64 (half the vector lanes)."""
    values = np.empty(4, a.dtype)
    values[0] = 2
    values[1] = 4
    values[2] = 5
    values[3] = 8
    return values[0], values[1], values[2], values[3]


@numba.njit(cache=True, inline="always")
def _b_transpose(d0, d1, d2, d3, d4, d5, two, four, five):
    """Bᵀ d for one line of six values: both stages of the input transform."""
    even = d4 - four * d2
    odd = d3 - four * d1
    near = d4 - d2
    far = two * (d3 - d1)
    return (four * d0 - five * d2 + d4, even + odd, even - odd, near + far, near - far,
            four * d1 - five * d3 + d5)


@numba.njit(cache=True, inline="always")
def _a_transpose(m0, m1, m2, m3, m4, m5, two, four, eight):
    """Aᵀ m for one line of six values: both stages of the output transform."""
    sum12 = m1 + m2
    sum34 = m3 + m4
    diff12 = m1 - m2
    diff34 = m3 - m4
    return (m0 + sum12 + sum34, diff12 + two * diff34, sum12 + four * sum34,
            diff12 + eight * diff34 + m5)


@numba.njit(cache=True, inline="always")
def _a(g0, g1, g2, g3, two, four, eight):
    """A g for one line of four values: both stages of the gradient transform."""
    sum02 = g0 + g2
    sum13 = g1 + g3
    near = g0 + four * g2
    far = two * g1 + eight * g3
    return g0, sum02 + sum13, sum02 - sum13, near + far, near - far, g3


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _finite_sum(values, zero):
    """Whether the sum of the 1-D array ``values``, started from ``zero`` (0 in its
    dtype, so that float32 sums use float32 lanes), is finite.

    One inf or NaN makes the sum inf or NaN; a sum that overflows from finite
    values says False too, which only sends the layer to the exact path.
    Reassociation alone (inf and NaN keep their meaning) lets LLVM spread the
    sum over vector lanes; the flag belongs to the compiled function, so this
    one is not inlined.
    """
    total = zero
    for k in range(values.size):
        total += values[k]
    return np.isfinite(total)


@numba.njit(cache=True, inline="always")
def _copy(dst, start, src, first, length):
    """``dst[start : start + length] = src[first : first + length]`` for 1-D arrays.

    The indices are unsigned, so Numba adds no negative-index wraparound to
    each access: the transforms' copies of short rows (8-32 pixels) ran
    1.3-1.5x faster than through slices.
    """
    start = np.uint64(start)
    first = np.uint64(first)
    for t in range(np.uint64(length)):
        dst[start + t] = src[first + t]


@numba.njit(cache=True, inline="always")
def _input_task(x, pad, tiles, v, c, streams, rows):
    """Transform input channel ``c`` of every image in ``x`` into ``v``; return whether
    the pixels it read are finite (:func:`_finite_sum`).

    ``streams`` and ``rows`` are (6, N*T + 1, 4) work arrays of the caller, reused
    for every channel it transforms: ``streams`` zeroed before the first (only
    the positions of pixels are written here, the same for every channel, so
    the padding stays zero), ``rows`` needing no initial value.
    """
    n_images, channels, height, width = x.shape
    pad_top, pad_left = pad
    tiles_h, tiles_w = tiles
    span = tiles_w + 1  # tiles per tile row, junk included
    per_image = tiles_h * span
    count = n_images * per_image  # this channel's columns of v
    two, four, five, _ = _constants(v)
    # Padded rows and columns that hold input pixels (the rest stays zero).
    row_lo, row_hi = _clamped(pad_top, pad_top + height, 4 * tiles_h + 2)
    col_lo, col_hi = _clamped(pad_left, pad_left + width, 4 * tiles_w + 2)
    # streams[i, tile, :] holds padded row 4*th + i, columns 4*tw .. 4*tw + 3 of the
    # tile; the next tile's quad holds its columns 4*tw + 4, 4*tw + 5. Rows
    # 4*th + 4 and 4*th + 5 are rows 0 and 1 of tile row th + 1, copied twice.
    # One quad more at the end for the last junk tile to read.
    flat = streams.reshape(6, 4 * (count + 1))
    run = col_hi - col_lo
    line = 4 * (count + 1)  # one stream
    every = streams.reshape(6 * line)
    pixels = x.reshape(x.size)
    # Two passes without branches inside (a branch around the copy loops made
    # them 4x slower): rows into their own tile row, then rows 0 and 1 of tile
    # rows 1.. again as rows 4 and 5 of the tile row above.
    for n in range(n_images):
        # Where padded row 0, column col_lo of image n would be in x, and is in a stream.
        src = ((n * channels + c) * height - pad_top) * width + col_lo - pad_left
        dst = 4 * n * per_image + col_lo
        for r in range(row_lo, min(row_hi, 4 * tiles_h)):
            th = r // 4
            _copy(every, (r - 4 * th) * line + dst + 4 * th * span, pixels, src + r * width, run)
        for i in range(2):
            # Tile rows th >= 1 whose row i (padded row 4*th + i) holds input.
            for th in range(max(1, (row_lo - i + 3) // 4), (row_hi - i + 3) // 4):
                _copy(every, (4 + i) * line + dst + 4 * (th - 1) * span, pixels,
                      src + (4 * th + i) * width, run)
    # The streams hold every pixel the transform reads (rows 0 and 1 twice), while
    # they are in cache: checking them here spares the caller a pass over x.
    finite = _finite_sum(every, two - two)
    # Bᵀ d first: the six streams hold the six rows of every tile, so this is one
    # elementwise pass over four values per tile and row. (d B first wrote six
    # per tile and row to a temporary and read them back: 1.2x slower.)
    s0, s1, s2, s3, s4, s5 = flat[0], flat[1], flat[2], flat[3], flat[4], flat[5]
    out = rows.reshape(6, 4 * (count + 1))
    r0, r1, r2, r3, r4, r5 = out[0], out[1], out[2], out[3], out[4], out[5]
    for k in range(4 * (count + 1)):  # Bᵀ d
        r0[k], r1[k], r2[k], r3[k], r4[k], r5[k] = _b_transpose(
            s0[k], s1[k], s2[k], s3[k], s4[k], s5[k], two, four, five)
    first = c * count
    for a in range(6):
        stream = rows[a]  # row a of Bᵀ d for every tile, in quads
        v0 = v[6 * a, first : first + count]
        v1 = v[6 * a + 1, first : first + count]
        v2 = v[6 * a + 2, first : first + count]
        v3 = v[6 * a + 3, first : first + count]
        v4 = v[6 * a + 4, first : first + count]
        v5 = v[6 * a + 5, first : first + count]
        # Tile f's columns are quad f and the first two entries of quad f + 1. Each
        # quad is loaded once, whole, and carried to the next iteration: LLVM
        # vectorises that (a recurrence) with permutes, whereas loading entries 0
        # and 1 of quad f + 1 on their own made it gather them, 1.3x slower.
        h0, h1, h2, h3 = stream[0, 0], stream[0, 1], stream[0, 2], stream[0, 3]
        for f in range(count):  # (Bᵀ d) B
            n0, n1, n2, n3 = stream[f + 1, 0], stream[f + 1, 1], stream[f + 1, 2], stream[f + 1, 3]
            v0[f], v1[f], v2[f], v3[f], v4[f], v5[f] = _b_transpose(h0, h1, h2, h3, n0, n1,
                                                                    two, four, five)
            h0, h1, h2, h3 = n0, n1, n2, n3
    return finite


@numba.njit(cache=True, inline="always")
def _input_work(x, tiles):
    """The zeroed ``streams`` and the ``rows`` of :func:`_input_task`."""
    count = x.shape[0] * tiles[0] * (tiles[1] + 1)
    return np.zeros((6, count + 1, 4), x.dtype), np.empty((6, count + 1, 4), x.dtype)


def input_transform(x, pad, tiles, v):
    """Fill ``v`` (36, >= C*N*T) with ``Bᵀ d B`` of every 6x6 tile of ``x`` (N, C, H, W),
    C-contiguous.

    Parallel over the C input channels; each writes its own columns of ``v``.
    Returns whether every pixel the tiles read is finite (False as well when
    their sum overflows), so that the caller needs no pass of its own over
    ``x``; pixels no tile reads are not checked (they do not reach the result).
    """
    # One block of channels per thread, so that each allocates and zeroes its
    # work arrays once (per channel: 5-8% slower). The thread count is read
    # here: read inside the compiled function, it kept Numba from caching it.
    return _input_blocks(x, pad, tiles, v, min(x.shape[1], numba.get_num_threads()))


@numba.njit(cache=True, parallel=True)
def _input_blocks(x, pad, tiles, v, blocks):
    """:func:`input_transform` with the channels split into ``blocks`` tasks."""
    channels = x.shape[1]
    finite = np.empty(channels, np.bool_)
    for block in prange(blocks):
        streams, rows = _input_work(x, tiles)
        for c in range(block * channels // blocks, (block + 1) * channels // blocks):
            finite[c] = _input_task(x, pad, tiles, v, c, streams, rows)
    return finite.all()


@numba.njit(cache=True, nogil=True)
def input_transform_serial(x, pad, tiles, v):
    """:func:`input_transform` in the calling thread, without the GIL."""
    streams, rows = _input_work(x, tiles)
    finite = True
    for c in range(x.shape[1]):
        if not _input_task(x, pad, tiles, v, c, streams, rows):
            finite = False
    return finite


@numba.njit(cache=True, inline="always")
def _output_task(m, tiles, bias, y, k):
    """Write output channel ``k`` of every image of ``y``."""
    n_images, _, out_h, out_w = y.shape
    tiles_h, tiles_w = tiles
    span = tiles_w + 1
    per_image = tiles_h * span
    count = n_images * per_image
    first = k * count
    two, four, _, eight = _constants(y)
    beta = bias[k]
    # rows[i, b, t]: row i of Aᵀ m for tile t, column b.
    rows = np.empty((4, 6, count), y.dtype)
    for b in range(6):
        m0 = m[b, first : first + count]
        m1 = m[6 + b, first : first + count]
        m2 = m[12 + b, first : first + count]
        m3 = m[18 + b, first : first + count]
        m4 = m[24 + b, first : first + count]
        m5 = m[30 + b, first : first + count]
        r0 = rows[0, b]
        r1 = rows[1, b]
        r2 = rows[2, b]
        r3 = rows[3, b]
        for t in range(count):  # Aᵀ m
            r0[t], r1[t], r2[t], r3[t] = _a_transpose(m0[t], m1[t], m2[t], m3[t], m4[t], m5[t],
                                                      two, four, eight)
    # quads[i, tile, j] is output pixel (4*th + i, 4*tw + j) of the tile.
    quads = np.empty((4, count, 4), y.dtype)
    for i in range(4):
        q0 = rows[i, 0]
        q1 = rows[i, 1]
        q2 = rows[i, 2]
        q3 = rows[i, 3]
        q4 = rows[i, 4]
        q5 = rows[i, 5]
        out = quads[i]
        for t in range(count):  # (Aᵀ m) A
            y0, y1, y2, y3 = _a_transpose(q0[t], q1[t], q2[t], q3[t], q4[t], q5[t],
                                          two, four, eight)
            out[t, 0] = y0 + beta
            out[t, 1] = y1 + beta
            out[t, 2] = y2 + beta
            out[t, 3] = y3 + beta
    lines = quads.reshape(4, 4 * count)
    for n in range(n_images):
        for oh in range(out_h):
            start = 4 * (n * per_image + (oh // 4) * span)
            src = lines[oh % 4, start : start + out_w]
            dst = y[n, k, oh]
            for ow in range(out_w):
                dst[ow] = src[ow]


@numba.njit(cache=True, parallel=True)
def output_transform(m, tiles, bias, y):
    """Write ``Aᵀ m A + bias`` of every tile into ``y`` (N, K, out_h, out_w).

    ``m`` is (36, >= K*N*T), laid out as ``v`` in
    :func:`input_transform` with output channels in place of input
    channels. Junk tiles and the outputs past ``out_h`` x ``out_w`` are
    dropped. Parallel over the K output channels.
    """
    for k in prange(y.shape[1]):
        _output_task(m, tiles, bias, y, k)


@numba.njit(cache=True, nogil=True)
def output_transform_serial(m, tiles, bias, y):
    """:func:`output_transform` in the calling thread, without the GIL."""
    for k in range(y.shape[1]):
        _output_task(m, tiles, bias, y, k)


@numba.njit(cache=True, inline="always")
def _grad_task(dy, tiles, m, k, quads, rows):
    """Transform output-gradient channel ``k`` of every image of ``dy`` into ``m``;
    return whether its pixels are finite (:func:`_finite_sum`). ``quads`` (zeroed)
    and ``rows`` are the caller's work arrays (:func:`_grad_work`), as in
    :func:`_input_task`."""
    n_images, _, out_h, out_w = dy.shape
    tiles_h, tiles_w = tiles
    span = tiles_w + 1
    per_image = tiles_h * span
    count = n_images * per_image
    first = k * count
    two, four, _, eight = _constants(m)
    # quads[i, tile, j] is output-gradient pixel (4*th + i, 4*tw + j) of the tile;
    # junk tiles and the pixels past out_h x out_w stay zero.
    lines = quads.reshape(4, 4 * count)
    for n in range(n_images):
        for oh in range(out_h):
            start = 4 * (n * per_image + (oh // 4) * span)
            dst = lines[oh % 4, start : start + out_w]
            src = dy[n, k, oh]
            for ow in range(out_w):
                dst[ow] = src[ow]
    finite = _finite_sum(lines.reshape(lines.size), two - two)
    # rows[i, b, t]: entry (i, b) of dY Aᵀ for tile t.
    for i in range(4):
        here = quads[i]
        r0 = rows[i, 0]
        r1 = rows[i, 1]
        r2 = rows[i, 2]
        r3 = rows[i, 3]
        r4 = rows[i, 4]
        r5 = rows[i, 5]
        for t in range(count):  # dY Aᵀ
            r0[t], r1[t], r2[t], r3[t], r4[t], r5[t] = _a(here[t, 0], here[t, 1], here[t, 2],
                                                          here[t, 3], two, four, eight)
    for b in range(6):
        g0 = rows[0, b]
        g1 = rows[1, b]
        g2 = rows[2, b]
        g3 = rows[3, b]
        m0 = m[b, first : first + count]
        m1 = m[6 + b, first : first + count]
        m2 = m[12 + b, first : first + count]
        m3 = m[18 + b, first : first + count]
        m4 = m[24 + b, first : first + count]
        m5 = m[30 + b, first : first + count]
        for t in range(count):  # A (dY Aᵀ)
            m0[t], m1[t], m2[t], m3[t], m4[t], m5[t] = _a(g0[t], g1[t], g2[t], g3[t],
                                                          two, four, eight)
    return finite


def grad_transform(dy, tiles, m):
    """Fill ``m`` (36, >= K*N*T) with ``dM = A dY Aᵀ`` of every 4x4 tile of ``dy``.

    The adjoint of :func:`output_transform` (bias aside), with
    ``A = Aᵀᵀ`` (6 x 4). Junk tiles and the missing pixels of partial last
    tiles are zero, so they add nothing to ``dU[xi] = dM[xi] @ V[xi]ᵀ``.
    Parallel over the K output channels. Returns whether ``dy`` is finite, as
    :func:`input_transform` does for ``x``.
    """
    return _grad_blocks(dy, tiles, m, min(dy.shape[1], numba.get_num_threads()))


@numba.njit(cache=True, inline="always")
def _grad_work(dy, tiles):
    """The zeroed ``quads`` and the ``rows`` of :func:`_grad_task`."""
    count = dy.shape[0] * tiles[0] * (tiles[1] + 1)
    return np.zeros((4, count, 4), dy.dtype), np.empty((4, 6, count), dy.dtype)


@numba.njit(cache=True, parallel=True)
def _grad_blocks(dy, tiles, m, blocks):
    """:func:`grad_transform` with the channels split into ``blocks`` tasks (see
    :func:`input_transform`)."""
    channels = dy.shape[1]
    finite = np.empty(channels, np.bool_)
    for block in prange(blocks):
        quads, rows = _grad_work(dy, tiles)
        for k in range(block * channels // blocks, (block + 1) * channels // blocks):
            finite[k] = _grad_task(dy, tiles, m, k, quads, rows)
    return finite.all()


@numba.njit(cache=True, nogil=True)
def grad_transform_serial(dy, tiles, m):
    """:func:`grad_transform` in the calling thread, without the GIL."""
    quads, rows = _grad_work(dy, tiles)
    finite = True
    for k in range(dy.shape[1]):
        if not _grad_task(dy, tiles, m, k, quads, rows):
            finite = False
    return finite
