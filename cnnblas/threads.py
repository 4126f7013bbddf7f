"""One thread setting for Numba's pool and every BLAS pool in the process.

NumPy and SciPy each load their own OpenBLAS; threadpoolctl sees both (and
MKL/BLIS if present). cnnblas never runs BLAS inside a Numba ``prange``, so the
two kinds of pool take turns on the same cores rather than competing.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
from contextlib import contextmanager

import numba
from threadpoolctl import ThreadpoolController

from cnnblas.checks import check_int

_controller: ThreadpoolController | None = None
# Per BLAS library, a function setting its thread count: OpenBLAS's own C setter
# where found, else threadpoolctl's controller method. Filled on first use.
_blas_setters: list = []
# The one thread setting. Kept here because numba.set_num_threads only affects
# the calling thread; the engine re-applies it in whichever thread runs a call.
_setting: int | None = None
# Nested or concurrent one-thread BLAS sections (see single_threaded_blas).
_blas_lock = threading.Lock()
_blas_depth = 0


def _openblas_setter(library):
    """``openblas_set_num_threads`` of a pthreads OpenBLAS (under the name its
    build gives it), as a ctypes function; None for any other library."""
    if library.internal_api != "openblas" or library.threading_layer != "pthreads":
        return None
    try:
        handle = ctypes.CDLL(library.filepath)
    except OSError:
        return None
    for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
        setter = getattr(handle, f"{prefix}openblas_set_num_threads{suffix}", None)
        if setter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            return setter
    return None


def _blas_controller() -> ThreadpoolController:
    global _controller, _blas_setters
    if _controller is None:
        import scipy.linalg  # noqa: F401  (loads SciPy's own BLAS so it is capped too)

        _controller = ThreadpoolController()
        _blas_setters = [_openblas_setter(library) or library.set_num_threads
                         for library in _controller.select(user_api="blas").lib_controllers]
    return _controller


def _set_blas_threads(n: int) -> None:
    """Set every BLAS library's pool to ``n`` threads.

    Calls each library's own setter directly rather than through
    ``ThreadpoolController.limit``, which re-reads every library's state first
    and is several times slower: :func:`single_threaded_blas` enters and exits
    on every convolution call. For OpenBLAS that is its C function: an enter
    and exit of that block took 3.2 us against 7.6 us through threadpoolctl's
    method (which also ignores calls from any Python thread but the first one
    that made one).
    """
    _blas_controller()
    for setter in _blas_setters:
        setter(n)


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
    global _setting
    n = check_int(n, "n")
    if not 1 <= n <= max_threads():
        raise ValueError(f"n must be between 1 and {max_threads()} (NUMBA_NUM_THREADS), got {n}")
    with _blas_lock:
        _setting = n
        numba.set_num_threads(n)
        if _blas_depth == 0:
            _set_blas_threads(n)


def get_num_threads() -> int:
    """The current thread setting (all cores until :func:`set_num_threads` is called)."""
    return _setting if _setting is not None else max_threads()


def apply_to_this_thread() -> None:
    """Make Numba's pool, as seen from the calling thread, use the setting."""
    n = get_num_threads()
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


@contextmanager
def single_threaded_blas():
    """Hold every BLAS library at one thread inside the block.

    Safe to nest and to enter from several threads at once: the first entry
    caps the pools, the last exit restores the thread setting.
    """
    global _blas_depth
    with _blas_lock:
        _blas_depth += 1
        if _blas_depth == 1:
            _set_blas_threads(1)
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                _set_blas_threads(get_num_threads())


#: OpenBLAS's idle pool threads spin for 2**OPENBLAS_THREAD_TIMEOUT cycles after
#: each call before they sleep (default 2**28, about 0.1 s): long enough to take
#: a core from cnnblas's worker threads between BLAS calls. 2**4 makes them sleep
#: at once (see benchmarks/LOG.md). A value the user set is kept.
OPENBLAS_SPIN_EXPONENT = "4"


_OPENBLAS_RESTART_SYMBOLS = ("openblas_thread_timeout", "openblas_read_env",
                             "blas_thread_shutdown_")


def _openblas_libraries() -> list:
    """ctypes handles of the OpenBLAS libraries loaded in this process that can
    re-read their settings (``openblas_read_env``) and restart their pthreads
    thread pool (``blas_thread_shutdown_``): the pip wheels' builds do."""
    from threadpoolctl import threadpool_info

    handles = []
    for library in threadpool_info():
        # An OpenMP build has no server threads of its own to spin.
        if (library.get("internal_api"), library.get("threading_layer")) != ("openblas",
                                                                             "pthreads"):
            continue
        try:
            handle = ctypes.CDLL(library["filepath"])
        except OSError:
            continue
        if all(hasattr(handle, name) for name in _OPENBLAS_RESTART_SYMBOLS):
            handles.append(handle)
    return handles


def shorten_openblas_spin() -> int:
    """Make the idle threads of every OpenBLAS already loaded sleep at once.

    OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` when it loads and when it starts
    its thread pool, so setting the variable after NumPy is imported changes
    nothing by itself. This sets it (unless the user did), then has each loaded
    OpenBLAS whose setting differs re-read its environment and shut its pool
    down: the pool restarts on the next multi-threaded call with the new
    timeout. Libraries that load later read the variable themselves.

    Shutting a pool down while another thread is inside a BLAS call hangs
    that call and this one, so nothing is restarted unless the calling thread
    is the process's only Python thread (``import cnnblas`` calls it once; the
    command line imports cnnblas before NumPy, so the variable alone does it).

    Returns
    -------
    int
        How many pools were restarted.
    """
    wanted = os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_SPIN_EXPONENT)
    try:
        wanted_value = int(wanted)
    except ValueError:  # OpenBLAS's own atoi would read this as 0 (its default)
        return 0
    if threading.active_count() > 1:
        return 0
    restarted = 0
    for handle in _openblas_libraries():
        if handle.openblas_thread_timeout() == wanted_value:
            continue
        handle.openblas_read_env()
        handle.blas_thread_shutdown_()
        restarted += 1
    return restarted


def blas_info() -> list[dict]:
    """threadpoolctl's description of every BLAS/OpenMP library loaded."""
    return _blas_controller().info()


def default_threads() -> int:
    """Cores available to this process (respects CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
