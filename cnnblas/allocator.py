"""Keep freed activation memory in the process instead of handing it back.

A training step allocates its activations in the forward pass and frees them
in the backward: arrays of a few megabytes each, the same sizes every step.
glibc's ``malloc`` serves blocks that large with ``mmap`` (its threshold starts
at 128 KiB and rises only to the largest block freed so far) and returns freed
memory at the top of the heap to the system once more than twice that
threshold is free. The next step then gets fresh pages from the kernel and
pays a page fault for every 4 KiB it writes first: on a ResNet-20 step at
batch 128 that was about a fifth of the step (see benchmarks/LOG.md).

:func:`keep_freed_memory` fixes both thresholds with ``mallopt`` so that
blocks up to :data:`MMAP_THRESHOLD` come from the heap and up to
:data:`TRIM_THRESHOLD` of free heap stays mapped for the next step. Larger
blocks are still mapped and unmapped one by one, so a process keeps at most
about :data:`TRIM_THRESHOLD` more than it uses. ``import cnnblas`` calls it
once. Elsewhere than glibc on Linux it does nothing, and a threshold the user
set through glibc's own variables (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, or ``GLIBC_TUNABLES``) is left as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: Largest block served from the heap rather than mapped on its own (32 MiB:
#: the ceiling of glibc's own dynamic threshold on 64-bit systems).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept before it is handed back (256 MiB).
TRIM_THRESHOLD = 256 << 20

# mallopt's parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_SETTINGS = (
    ("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold", _M_MMAP_THRESHOLD,
     MMAP_THRESHOLD),
    ("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold", _M_TRIM_THRESHOLD,
     TRIM_THRESHOLD),
)


def _glibc():
    """The process's C library when it is glibc (it has ``mallopt``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory() -> list[str]:
    """Fix glibc's mmap and trim thresholds (module docstring); idempotent.

    Returns
    -------
    list of str
        The glibc variables whose setting was applied (empty off glibc, or
        when the user set both).
    """
    libc = _glibc()
    if libc is None:
        return []
    applied = []
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    for variable, tunable, parameter, value in _SETTINGS:
        if variable in os.environ or tunable in tunables:
            continue
        if libc.mallopt(parameter, value) == 1:
            applied.append(variable)
    return applied


__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]
