"""cnnblas.allocator: freed activation memory stays in the process (glibc only).

The check counts page faults over ten "steps" that each allocate and write six
8 MiB arrays, then free them: when glibc hands the freed 48 MiB back, every
step faults in its 12,288 pages again; when it keeps them, only the first
does.
"""

import subprocess
import sys

import pytest

from cnnblas import allocator

PROBE = """
import resource, sys
import numpy as np
{setup}
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    arrays = [np.ones(2 << 20, np.float32) for _ in range(6)]  # 6 x 8 MiB, written
    del arrays
step()  # one step before counting
before = faults()
for _ in range(10):
    step()
print(faults() - before)
"""


def _faults(setup: str, env_extra: dict | None = None) -> int:
    import os

    env = {**os.environ, **(env_extra or {})}
    for variable in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if env_extra is None or variable not in env_extra:
            env.pop(variable, None)
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.split()[-1])


needs_glibc = pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only")


@needs_glibc
def test_import_keeps_freed_arrays_mapped():
    pages = 6 * (8 << 20) // 4096  # one step's
    assert _faults("") > 2 * pages  # glibc alone: fresh pages step after step
    assert _faults("import cnnblas") < pages  # numpy first, cnnblas second: kept


@needs_glibc
def test_a_threshold_the_user_set_is_kept():
    # glibc's own variables win over cnnblas's setting.
    pages = 6 * (8 << 20) // 4096
    faults = _faults("import cnnblas", {"MALLOC_TRIM_THRESHOLD_": "8192",
                                        "MALLOC_MMAP_THRESHOLD_": "131072"})
    assert faults > 2 * pages


@needs_glibc
def test_thresholds_set_through_glibc_tunables_are_kept(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=8192")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert allocator.keep_freed_memory() == ["MALLOC_MMAP_THRESHOLD_"]


def test_nothing_is_done_off_linux(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "win32")
    assert allocator.keep_freed_memory() == []


def test_a_c_library_that_cannot_be_opened_by_name_none_is_skipped(monkeypatch):
    def refuse(name, *args, **kwargs):  # CPython's CDLL on Windows with name None
        raise TypeError("argument of type 'NoneType' is not iterable")

    monkeypatch.setattr(allocator.ctypes, "CDLL", refuse)
    assert allocator.keep_freed_memory() == []
