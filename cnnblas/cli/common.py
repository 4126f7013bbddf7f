"""What ``cnnblas train`` and ``cnnblas predict`` share: the input pipeline, threads, errors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnblas.data import standardize

__all__ = ["ERRORS", "preprocess", "set_threads"]

#: Errors a command reports as one line (``cnnblas <command>: error: ...``, exit code 1).
ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError, ImportError, OSError)


def preprocess(images: np.ndarray, upsample: int = 1, mean: float | Sequence[float] = 0.0,
               std: float | Sequence[float] = 1.0) -> np.ndarray:
    """Images in [0, 1] (N, C, H, W) -> the model's input: upsampled, standardised, float32.

    ``upsample`` repeats every pixel ``upsample`` times along both axes
    (nearest neighbour); then ``(x - mean) / std`` with one value for every
    channel or one per channel (see :func:`cnnblas.data.standardize`).
    """
    if upsample > 1:
        images = images.repeat(upsample, axis=2).repeat(upsample, axis=3)
    return standardize(images, mean, std)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` threads for kernels and BLAS; None keeps the current setting.

    Raises
    ------
    ValueError
        ``threads`` is out of range; the message names ``--threads``.
    """
    if threads is not None:
        import cnnblas
        from cnnblas.threads import max_threads

        if not 1 <= threads <= max_threads():
            raise ValueError(f"--threads must be between 1 and {max_threads()} (the cores "
                             f"numba may use, NUMBA_NUM_THREADS), got {threads}")
        cnnblas.set_num_threads(threads)
