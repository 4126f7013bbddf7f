"""Peak memory of one forward+backward, measured in a fresh subprocess per (shape, impl).

Method (Linux): the child process imports everything, allocates the inputs
(x, weight, bias, dy), runs the same pass once on the first image only (so
Numba kernels are compiled or loaded from cache and PyTorch initialises its
thread pool), frees that run's outputs and cnnblas's workspace, and records
its resident set size (``VmRSS``). It then resets the kernel's peak-RSS
counter (writing ``5`` to ``/proc/self/clear_refs``), runs the full
forward+backward once and reads the peak (``VmHWM``). The number reported is
``peak - baseline``: every byte the pass touched beyond the inputs, i.e. its
outputs (y, dx, dweight, dbias), the im2col workspace and any temporaries.
Where ``clear_refs`` cannot be written the peak is ``ru_maxrss`` from
``resource.getrusage`` instead, which can only over-count the baseline's
own earlier peak (then ``method`` says ``getrusage``).

For cnnblas a second number comes from :mod:`tracemalloc` (NumPy reports its
allocations to it): the peak of Python-visible array memory during the pass,
with the workspace released first. PyTorch's allocations are invisible to
tracemalloc, so only the RSS numbers compare the two libraries.

Run as ``python -m benchmarks.memory SHAPE IMPL [--threads N] [--batch N]``;
prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

MEMORY_IMPLS = ("gemm", "torch")
_MiB = 2**20


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _release_workspace() -> None:
    import cnnblas as cb

    cb.set_workspace_limit(cb.get_workspace_limit())  # drops the held column buffers


def probe(shape_name: str, impl: str, threads: int | None = None,
          batch: int | None = None) -> dict:
    """Measure ``impl``'s forward+backward on ``shape_name`` in *this* process (see module doc)."""
    from benchmarks.common import conv_function, load_shapes, make_inputs, set_threads

    if impl not in MEMORY_IMPLS:
        raise ValueError(f"impl must be one of {MEMORY_IMPLS}, got {impl!r}")
    threads = set_threads(threads, torch_too=impl == "torch")
    shape = load_shapes([shape_name])[0]
    if batch is not None:
        shape = shape.with_batch(batch)
    inputs = make_inputs(shape)
    input_bytes = sum(a.nbytes for a in (inputs.x, inputs.weight, inputs.bias, inputs.dy))

    warm_shape = shape.with_batch(1)
    warm_inputs = make_inputs(warm_shape)
    conv_function(impl, "forward_backward", warm_shape, warm_inputs)()
    del warm_inputs
    run = conv_function(impl, "forward_backward", shape, inputs)
    _release_workspace()
    gc.collect()

    baseline_kib = _status_kib("VmRSS")
    if baseline_kib is not None and _reset_peak():
        method = "VmHWM"
        outputs = run()
        peak_kib = _status_kib("VmHWM")
    else:
        method = "getrusage"
        baseline_kib = baseline_kib or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outputs = run()
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    output_bytes = sum(int(o.nbytes) if hasattr(o, "nbytes") else o.numel() * o.element_size()
                       for o in outputs)
    result = dict(shape=shape.name, batch=shape.batch, impl=impl, threads=threads,
                  method=method, baseline_mib=baseline_kib * 1024 / _MiB,
                  peak_rss_mib=max(peak_kib - baseline_kib, 0) * 1024 / _MiB,
                  input_mib=input_bytes / _MiB, output_mib=output_bytes / _MiB,
                  tracemalloc_mib=None)
    del outputs
    if impl == "gemm":
        _release_workspace()
        gc.collect()
        tracemalloc.start()
        run()
        result["tracemalloc_mib"] = tracemalloc.get_traced_memory()[1] / _MiB
        tracemalloc.stop()
    return result


def measure_in_subprocess(shape_name: str, impl: str, threads: int | None = None,
                          batch: int | None = None, timeout: float = 300) -> dict:
    """Run :func:`probe` in a fresh interpreter and return its JSON result."""
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), repo) if p)
    command = [sys.executable, "-m", "benchmarks.memory", shape_name, impl]
    if threads is not None:
        command += ["--threads", str(threads)]
    if batch is not None:
        command += ["--batch", str(batch)]
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {shape_name}/{impl} failed "
                           f"(exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("shape")
    parser.add_argument("impl", choices=MEMORY_IMPLS)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--batch", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.shape, args.impl, args.threads, args.batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
