"""Where compiled kernels are cached.

Every kernel is compiled with ``cache=True``. Numba stores the cache next to the
source (``_kernels/__pycache__``). When that directory cannot be written (a
read-only or system-wide install) and the user has not set ``NUMBA_CACHE_DIR``,
cnnblas points ``NUMBA_CACHE_DIR`` at a per-user directory instead, so kernels
still compile once and load from disk afterwards rather than failing:
``$XDG_CACHE_HOME/cnnblas/numba`` (default ``~/.cache/cnnblas/numba``), or a
directory under the system temp dir if even that is not writable.

This module must be imported before any kernel module is compiled; the package
``__init__`` does so.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numba.core.config

KERNEL_DIR = Path(__file__).resolve().parent


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return False
    return True


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnblas" / "numba"


def cache_dir() -> Path:
    """The directory holding cnnblas's compiled kernels in this process."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    return KERNEL_DIR / "__pycache__"


def _choose_cache_dir() -> None:
    if os.environ.get("NUMBA_CACHE_DIR") or _writable(KERNEL_DIR / "__pycache__"):
        return
    for candidate in (_user_cache_dir(), Path(tempfile.gettempdir()) / f"cnnblas-{os.getuid()}"):
        if _writable(candidate):
            os.environ["NUMBA_CACHE_DIR"] = str(candidate)
            numba.core.config.reload_config()
            return


_choose_cache_dir()
