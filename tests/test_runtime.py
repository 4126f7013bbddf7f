"""Threads, kernel cache and the `cnnblas info` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cnnblas as cb
from cnnblas import threads

PACKAGE_DIR = Path(cb.__file__).resolve().parent


def test_set_num_threads_caps_numba_and_every_blas_pool():
    original = cb.get_num_threads()
    try:
        cb.set_num_threads(1)
        assert cb.get_num_threads() == 1
        blas = [lib for lib in threads.blas_info() if lib["user_api"] == "blas"]
        assert blas, "no BLAS library found by threadpoolctl"
        # numpy's and scipy's OpenBLAS are distinct libraries: every one must be capped.
        assert all(lib["num_threads"] == 1 for lib in blas), blas
    finally:
        cb.set_num_threads(original)
    assert cb.get_num_threads() == original


CACHE_PROBE = """
import json, numpy as np, cnnblas as cb
from cnnblas._kernels import im2col
from cnnblas._kernels.cache import cache_dir
x = np.ones((1, 1, 5, 5), np.float32); w = np.ones((1, 1, 3, 3), np.float32)
cb.conv2d(x, w, algorithm="gemm")
# A convolution this small runs the serial kernel; count both drivers.
kernels = (im2col.im2col_into, im2col.im2col_into_serial)
print(json.dumps({"hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
                  "misses": sum(sum(k.stats.cache_misses.values()) for k in kernels),
                  "dir": str(cache_dir())}))
"""


def test_read_only_package_caches_kernels_in_user_directory(tmp_path):
    """With the package's __pycache__ unwritable, kernels compile once into the user
    cache and the next process loads them from there (cache hit, no compilation)."""
    copy = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR, copy / "cnnblas",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    # A *file* where the cache directory would go: unwritable even for root.
    (copy / "cnnblas" / "_kernels" / "__pycache__").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(copy), XDG_CACHE_HOME=str(tmp_path / "cache"))
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", CACHE_PROBE], env=env, cwd=tmp_path,
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    expected_dir = tmp_path / "cache" / "cnnblas" / "numba"
    assert runs[0]["dir"] == str(expected_dir)
    assert runs[0]["misses"] >= 1  # compiled in the first process...
    assert runs[1]["misses"] == 0 and runs[1]["hits"] >= 1  # ...loaded in the second
    assert any(expected_dir.rglob("*.nbi"))


def test_info_command_prints_versions_blas_and_threads():
    out = subprocess.run([sys.executable, "-m", "cnnblas", "info"], capture_output=True,
                         text=True, check=True).stdout
    for fragment in ("numpy", "numba", "scipy", "BLAS libraries", "threads:", "kernel cache"):
        assert fragment in out
    assert "openblas" in out.lower()


def test_cli_rejects_unknown_command():
    result = subprocess.run([sys.executable, "-m", "cnnblas", "frobnicate"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


OPENBLAS_PROBE = """
import ctypes, json, os, sys
import numpy as np  # NumPy first: OpenBLAS loads before cnnblas can set anything
from threadpoolctl import threadpool_info
a = np.ones((256, 256))
a @ a  # start numpy's OpenBLAS pool with the timeout it read at load
import cnnblas
libraries = {}
for info in threadpool_info():
    if info["internal_api"] == "openblas":
        lib = ctypes.CDLL(info["filepath"])
        libraries[info["filepath"]] = {
            "timeout": lib.openblas_thread_timeout(),
            "pool_running": ctypes.c_int.in_dll(lib, "blas_server_avail").value}
a @ a  # the pool restarts on the next call
print(json.dumps({"env": os.environ.get("OPENBLAS_THREAD_TIMEOUT"), "libraries": libraries,
                  "restarted_ok": bool(np.allclose(a @ a, 256.0))}))
"""


def _openblas_probe(timeout: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if timeout is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = timeout
    out = subprocess.run([sys.executable, "-c", OPENBLAS_PROBE], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_openblas_threads_sleep_at_once_when_numpy_was_imported_first():
    """Importing cnnblas after NumPy still gives numpy's already-running OpenBLAS
    pool the short spin: it re-reads its environment and restarts its pool."""
    probe = _openblas_probe(None)
    assert probe["env"] == threads.OPENBLAS_SPIN_EXPONENT
    assert probe["libraries"], "no OpenBLAS found by threadpoolctl"
    for state in probe["libraries"].values():
        assert state["timeout"] == int(threads.OPENBLAS_SPIN_EXPONENT)
        # numpy's pool was running before the import; it restarts lazily afterwards.
        assert state["pool_running"] == 0
    assert probe["restarted_ok"]


def test_openblas_timeout_set_by_the_user_is_kept():
    probe = _openblas_probe("12")
    assert probe["env"] == "12"
    for state in probe["libraries"].values():
        assert state["timeout"] == 12
        assert state["pool_running"] == 1  # nothing to change: the pool was left alone


BLAS_IN_ANOTHER_THREAD = """
import threading
import numpy as np
a = np.ones((400, 400))
stop = threading.Event()
def multiply():
    while not stop.is_set():
        a @ a  # threaded OpenBLAS calls while cnnblas is imported
worker = threading.Thread(target=multiply)
worker.start()
import cnnblas
stop.set()
worker.join()
print("imported")
"""


def test_import_while_another_thread_runs_blas_does_not_hang():
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", BLAS_IN_ANOTHER_THREAD], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["imported"]
