"""Reusable scratch memory for the im2col column buffers.

Convolutions process the batch in chunks so that the column buffer never
exceeds a budget (default 16 MiB), whatever the batch size. The buffer is kept
between calls (one per thread and dtype), so a training loop allocates it once.
"""

from __future__ import annotations

import math
import threading
from enum import IntEnum

import numpy as np

from cnnblas.checks import check_int


class Slot(IntEnum):
    """The scratch buffers a convolution may hold at the same time."""

    COLUMNS = 0  # im2col columns of a chunk, (C*kh*kw, b*L)
    COLUMN_GRADS = 1  # their gradient before col2im
    REORDER = 2  # the chunk's output or dy as a (K, b*L) matrix
    WINOGRAD_V = 3  # Winograd's transformed input tiles
    WINOGRAD_M = 4  # Winograd's GEMM products (or transformed output gradients)


_DEFAULT_LIMIT = 16 * 2**20

#: The im2col GEMM and the pointwise path keep a chunk's buffers (columns or
#: subsampled input, their gradient, the output or dY reorder) within this
#: many bytes even when the budget is larger, so that each stage reads what
#: the one before has just written from L2. Against 16 MiB chunks: forwards
#: 10-12 % faster, backward passes with dx 12-27 % faster on LeNet-5's conv2,
#: lenet2 and ResNet-20's stride-2 layers; 512 KiB chunks of the strided 1x1
#: path lost more to the extra calls than they won (see benchmarks/LOG.md).
CACHE_CHUNK_BYTES = 2 * 2**20
_limit = _DEFAULT_LIMIT
# Bumped by set_workspace_limit: every thread drops its buffers at its next scratch().
_generation = 0
_local = threading.local()


def set_workspace_limit(nbytes: int) -> None:
    """Cap the im2col workspace at ``nbytes`` bytes (default 16 MiB).

    The limit applies per worker thread (each holds its own buffers). A
    convolution always processes at least one image at a time, so the
    effective workspace is ``max(limit, bytes for one image's buffers)``.
    Every thread releases the buffers it holds at its next convolution.
    """
    global _limit, _generation
    _limit = check_int(nbytes, "nbytes", minimum=1)
    _generation += 1
    _local.buffers = {}


def get_workspace_limit() -> int:
    """The current workspace budget in bytes."""
    return _limit


def images_per_chunk(n_images: int, bytes_per_image: int) -> int:
    """How many images' columns fit in the budget (at least 1, at most ``n_images``)."""
    return max(1, min(n_images, _limit // max(bytes_per_image, 1)))


def scratch(shape: tuple[int, ...], dtype, slot: Slot) -> np.ndarray:
    """A C-contiguous array of ``shape`` backed by a reused buffer.

    ``slot`` distinguishes buffers needed at the same time (e.g. the columns
    and their gradient). Contents are undefined: callers overwrite them.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    buffers = getattr(_local, "buffers", None)
    if buffers is None or getattr(_local, "generation", None) != _generation:
        buffers = _local.buffers = {}
        _local.generation = _generation
    key = (dtype, slot)
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)


def held_bytes() -> int:
    """Bytes currently held by this thread's buffers (for tests and reports)."""
    buffers = getattr(_local, "buffers", None) or {}
    return sum(b.nbytes for b in buffers.values())
