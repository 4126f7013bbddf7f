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
