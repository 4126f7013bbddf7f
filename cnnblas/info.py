"""What cnnblas is running on: versions, BLAS libraries, threads, kernel cache."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np

from cnnblas import threads
from cnnblas._kernels.cache import cache_dir


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """A dict describing the machine and libraries (used by `cnnblas info` and reports)."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": threads.default_threads(),
        "logical_cpus": os.cpu_count(),
        "caches": cache_sizes(),
        "threads": threads.get_num_threads(),
        "numba_threading_layer": _numba_threading_layer(),
        "versions": {name: _version(name) for name in
                     ("cnnblas", "numpy", "numba", "scipy", "threadpoolctl", "torch")},
        "blas": [
            {key: lib.get(key) for key in
             ("internal_api", "version", "num_threads", "threading_layer", "architecture",
              "filepath")}
            for lib in threads.blas_info()
        ],
        "kernel_cache": str(cache_dir()),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "thread_variables": thread_variables(),
        "avx512": _cpu_has("avx512f"),
    }


def _numba_threading_layer() -> str:
    """The layer Numba's parallel kernels run on, or the requested one before any has run."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        return f"{numba.config.THREADING_LAYER} (requested; no parallel kernel has run yet)"


#: Prefixes of the environment variables that change threading or BLAS kernels.
THREAD_VARIABLE_PREFIXES = ("OPENBLAS_", "OMP_", "GOMP_", "KMP_", "MKL_", "NUMBA_", "CNNBLAS_")


def thread_variables() -> dict[str, str]:
    """The set environment variables that change threading or BLAS kernels, sorted by name."""
    return {name: value for name, value in sorted(os.environ.items())
            if name.startswith(THREAD_VARIABLE_PREFIXES)}


def cache_sizes() -> dict[str, str]:
    """L1d/L2/L3 sizes of CPU 0 from sysfs (Linux; empty elsewhere), e.g. {'L2': '1024K'}."""
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind != "Instruction":
            sizes[f"L{level}" + ("d" if kind == "Data" else "")] = size
    return sizes


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and f" {flag} " in f" {line} " for line in f)
    except OSError:
        return False


def warm_up(progress: Callable[[str], None] | None = None) -> float:
    """Compile (or load from the cache) every kernel for float32 and float64.

    Run once after installation so that the first call of every public entry
    point (the convolutions and their transposes on every algorithm, im2col
    and col2im, pooling, activations) in a later process only loads cached
    machine code.

    Parameters
    ----------
    progress : callable taking a str, optional
        Called before each group of kernels with a line such as
        ``"[2/10] float32 convolutions: large rows (gemm)"`` (``cnnblas
        warmup`` prints them on stderr; a cold cache takes minutes).

    Returns
    -------
    float
        The seconds it took.
    """
    start = time.perf_counter()
    steps = warm_up_steps()
    for index, (name, step) in enumerate(steps, start=1):
        if progress is not None:
            progress(f"[{index}/{len(steps)}] {name}")
        step()
    return time.perf_counter() - start


def warm_up_steps() -> list[tuple[str, Callable[[], None]]]:
    """The warm-up's groups of kernels, as ``(description, call)`` pairs, for each
    dtype: small calls take the serial kernels (cnnblas.ops.parallel.SERIAL_FLOPS);
    with several threads one image of 19 MFLOP takes the parallel ones."""
    from cnnblas.ops.algorithms import ALGORITHMS
    from cnnblas.threads import get_num_threads

    every = [algorithm for algorithm in ALGORITHMS if algorithm != "auto"]
    steps = []
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        small, rows, image = (np.ones((1, 1, 4, 4), dtype), np.ones((2, 1, 24, 24), dtype),
                              np.ones((1, 32, 32, 32), dtype))
        steps += [
            (f"{name} convolutions: every algorithm, serial kernels",
             partial(_convolve, small, 1, every)),
            # 4-wide rows take col2im's scatter, 24-wide ones its row kernel.
            (f"{name} convolutions: wide rows (gemm)", partial(_convolve, rows, 1, ["gemm"])),
            (f"{name} im2col and col2im", partial(_unfold_fold, (small, rows))),
            (f"{name} pooling, activations and batch norm", partial(_pool_and_activate, small)),
        ]
        if get_num_threads() > 1:
            steps.append((f"{name} convolutions and im2col/col2im: parallel kernels",
                          partial(_parallel, image)))
    return steps


def _convolve(x, n_out: int, algorithms, stride: int = 1) -> None:
    """A 3x3 convolution of ``x`` forward and backward (with and without dx),
    and its transpose, on each of ``algorithms``."""
    from cnnblas.ops.conv import conv2d, conv2d_backward
    from cnnblas.ops.conv_transpose import conv_transpose2d, conv_transpose2d_backward

    w = np.ones((n_out, x.shape[1], 3, 3), x.dtype)
    for algorithm in algorithms:
        y = conv2d(x, w, stride=stride, padding=1, algorithm=algorithm)
        conv2d_backward(y, x, w, stride=stride, padding=1, algorithm=algorithm)
        conv2d_backward(y, x, w, stride=stride, padding=1, algorithm=algorithm,
                        input_grad=False)
        # The transpose runs the same kernels the other way round (w: (C_in, C_out, 3, 3)).
        wt = np.ones((x.shape[1], n_out, 3, 3), x.dtype)
        up = conv_transpose2d(x, wt, stride=stride, padding=1, algorithm=algorithm)
        conv_transpose2d_backward(up, x, wt, stride=stride, padding=1, algorithm=algorithm)


def _unfold_fold(images, stride: int = 1) -> None:
    """The public im2col and col2im (they write through transposed views)."""
    from cnnblas.ops.conv import col2im, im2col

    for x in images:
        cols = im2col(x, 3, stride=stride, padding=1)
        col2im(cols, x.shape[2:], 3, stride=stride, padding=1)


def _pool_and_activate(x) -> None:
    from cnnblas.ops import activations, batchnorm, pooling

    y, argmax = pooling.max_pool2d(x, 2)
    pooling.max_pool2d_backward(y, argmax, x.shape)
    pooling.avg_pool2d_backward(pooling.avg_pool2d(x, 2), x.shape, 2)
    activations.relu_backward(x, activations.relu(x))
    activations.leaky_relu_backward(x, activations.leaky_relu(x))
    batchnorm.run_every_kernel(x)


def _parallel(image) -> None:
    _convolve(image, 32, ["gemm", "winograd2x2", "winograd4x4"])
    _convolve(image, 32, ["gemm"], stride=2)  # the parallel scatter
    _unfold_fold((image,))
    _unfold_fold((image,), stride=2)


def format_environment(env: dict) -> str:
    lines = [
        f"cnnblas {env['versions']['cnnblas']} on Python {env['python']} ({env['platform']})",
        f"CPU: {env['cpu']}, {env['cores']} cores available",
        f"threads: {env['threads']} (Numba threading layer: {env['numba_threading_layer']})",
        "versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "BLAS libraries (threadpoolctl):",
    ]
    for lib in env["blas"]:
        lines.append(
            f"  {lib['internal_api']} {lib['version']} threads={lib['num_threads']} "
            f"arch={lib['architecture']} layer={lib['threading_layer']}\n    {lib['filepath']}"
        )
    lines.append(f"kernel cache: {env['kernel_cache']}")
    if env["openblas_coretype"]:
        lines.append(
            f"note: OPENBLAS_CORETYPE={env['openblas_coretype']} pins OpenBLAS's kernels"
            + (" although this CPU has AVX-512; unset it for up to 2x faster GEMMs"
               if env["avx512"] else "")
        )
    return "\n".join(lines)
