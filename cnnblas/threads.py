"""One thread setting for Numba's pool and every BLAS pool in the process.

NumPy and SciPy each load their own OpenBLAS; threadpoolctl sees both (and
MKL/BLIS if present). cnnblas never runs BLAS inside a Numba ``prange``, so the
two kinds of pool take turns on the same cores rather than competing.
"""

from __future__ import annotations

import os

import numba
from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def _blas_controller() -> ThreadpoolController:
    global _controller
    if _controller is None:
        import scipy.linalg  # noqa: F401  (loads SciPy's own BLAS so it is capped too)

        _controller = ThreadpoolController()
    return _controller


def max_threads() -> int:
    """The most threads Numba's pool can use in this process (``NUMBA_NUM_THREADS``)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for both Numba kernels and every loaded BLAS library.

    Parameters
    ----------
    n : int
        1 <= n <= :func:`max_threads` (by default the number of cores).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {n!r}")
    if not 1 <= n <= max_threads():
        raise ValueError(f"n must be between 1 and {max_threads()} (NUMBA_NUM_THREADS), got {n}")
    numba.set_num_threads(n)
    _blas_controller().limit(limits=n, user_api="blas")


def get_num_threads() -> int:
    """The current thread setting (Numba's; BLAS pools are kept equal to it)."""
    return int(numba.get_num_threads())


def blas_limit(n: int):
    """Context manager holding every BLAS library at ``n`` threads, then restoring."""
    return _blas_controller().limit(limits=n, user_api="blas")


def blas_info() -> list[dict]:
    """threadpoolctl's description of every BLAS/OpenMP library loaded."""
    return _blas_controller().info()


def default_threads() -> int:
    """Cores available to this process (respects CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
