"""Batch-parallel execution: images split across worker threads.

With several threads, a convolution can be parallel in two ways:

- *inside each step* (Numba ``prange`` loops, then multi-threaded BLAS), which
  pays a hand-over between the two thread pools at every step and splits
  every GEMM, however small, across the cores;
- *across images*: each worker thread runs the whole pipeline (im2col, GEMMs,
  col2im) single-threaded on its own contiguous slice of the batch, in its own
  workspace, with the GIL released by both the Numba kernels (``nogil``) and
  NumPy's BLAS calls.

On the 2-core benchmark machine the second way was much faster (see
benchmarks/LOG.md), so the engine uses it whenever the batch has at least
as many images as there are threads, and falls back to the first otherwise
(e.g. one image at inference). While workers run, every BLAS library is held
at one thread so the cores are not oversubscribed. A call with less work than
:data:`SERIAL_FLOPS` runs serially in the calling thread: handing it to
threads costs more than it saves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from cnnblas import threads

#: Calls estimated below this many flops run serially in the calling thread.
#: On the 2-core machine, LeNet-5 on 16x16 digits at batch 16 (convolutions of
#: 0.1-1.2 MFLOP) trained ~15 % faster on one thread than on two.
SERIAL_FLOPS = 4e6

#: A call on fewer images than threads (one image at inference) can only be
#: split inside each step: Numba's thread pool, then multi-threaded BLAS. Below
#: this many flops it runs serially instead, BLAS at one thread: waking both
#: pools cost more than it saved on ResNet-20's layers at batch 1 (5-10 MFLOP).
INTRA_STEP_FLOPS = 64e6

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, threads.max_threads() - 1),
                                       thread_name_prefix="cnnblas")
        return _pool


def image_ranges(n_images: int, n_parts: int) -> list[tuple[int, int]]:
    """``n_parts`` contiguous ``(start, stop)`` ranges covering ``range(n_images)``.

    Sizes differ by at most one image; no range is empty when
    ``n_parts <= n_images``.
    """
    base, extra = divmod(n_images, n_parts)
    ranges, start = [], 0
    for part in range(n_parts):
        stop = start + base + (part < extra)
        ranges.append((start, stop))
        start = stop
    return ranges


def batch_workers(n_images: int) -> int:
    """Worker threads for a batch of ``n_images``: the thread setting, or 1
    (intra-step parallelism) when there are fewer images than threads."""
    n_threads = threads.get_num_threads()
    return n_threads if 1 < n_threads <= n_images else 1


def map_image_ranges(function: Callable[[int, int, bool], object], n_images: int,
                     flops: float = float("inf")) -> list:
    """Run ``function(start, stop, serial)`` over the batch and return the results.

    ``flops`` estimates the call's work. Below :data:`SERIAL_FLOPS`, or below
    :data:`INTRA_STEP_FLOPS` with a single worker, ``function(0, n_images, True)``
    runs here with BLAS held at one thread.
    With one worker, ``function(0, n_images, serial)`` runs here; ``serial``
    is True when the thread setting is 1 (the serial kernels skip the thread
    pool's overhead, 10-25 % on small layers), otherwise the function may use
    Numba's parallel kernels and multi-threaded BLAS. With several workers, each
    worker calls ``function(start, stop, True)`` on its own range and must use
    the serial (``nogil``) kernels; BLAS is held at one thread meanwhile. The
    calling thread works on the first range. Exceptions propagate after every
    worker has finished.
    """
    workers = batch_workers(n_images)
    if flops < SERIAL_FLOPS or (workers == 1 and flops < INTRA_STEP_FLOPS):
        # Too small to share: one thread throughout, BLAS included (waking a
        # BLAS pool for tiny GEMMs cost more than the GEMMs, ~0.6 ms on 2 cores).
        with threads.single_threaded_blas():
            return [function(0, n_images, True)]
    if workers == 1:
        threads.apply_to_this_thread()  # Numba's setting is per calling thread
        return [function(0, n_images, threads.get_num_threads() == 1)]
    ranges = image_ranges(n_images, workers)
    with threads.single_threaded_blas():
        futures = [_executor().submit(function, start, stop, True)
                   for start, stop in ranges[1:]]
        try:
            first = function(*ranges[0], True)
        finally:
            wait(futures)  # never leave workers running on buffers we return
        results = [future.result() for future in futures]  # re-raises a worker's error
    return [first, *results]
