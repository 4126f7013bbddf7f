"""The benchmark report: ``python -m benchmarks.report [--quick] [--shapes a,b] [--threads N]``.

For every shape of ``benchmarks/shapes.csv`` and both passes (forward;
forward+backward) it first runs each implementation once and checks that
their outputs agree (float32 tolerance, against the Numba direct loops), so a
wrong kernel is never timed, then times each one (median of repeats; the
compiled implementations in alternating rounds, see
:func:`benchmarks.common.measure_interleaved`). In the same run it measures the
machine's own limit (a 2048^3 float32 ``numpy.matmul``), the peak memory of
each forward+backward in a fresh subprocess (:mod:`benchmarks.memory`) and
whole networks: LeNet-5 and ResNet-20 training steps and one-image
predictions, each engine in its own process (:mod:`benchmarks.networks`).

Writes ``report.md`` (machine, tables), ``report.json`` (every raw number)
and, with matplotlib, ``gflops.png`` and ``speedup.png`` into ``--out``
(default ``benchmarks/results``). Progress goes to stderr. A full run takes
a few minutes on 2 cores; ``--quick`` cuts every time budget to a tenth;
``--networks-only`` runs the whole networks alone (an estimated 2-3 minutes
on an idle machine, about 10 under load).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks import netreport, networks, targets
from benchmarks.bounds import measure_bounds
from benchmarks.common import (
    BENCH_DIR,
    IMPLEMENTATIONS,
    LABELS,
    PASS_LABELS,
    PASSES,
    REFERENCE_IMPL,
    TOLERANCE,
    DisagreementError,
    check_agreement,
    conv_function,
    load_shapes,
    machine_info,
    make_inputs,
    measure,
    measure_interleaved,
    naive_sample,
    set_threads,
    sgemm_rate,
    torch_available,
)
from benchmarks.common import ms_text as _ms
from benchmarks.memory import MEMORY_IMPLS, measure_in_subprocess

DEFAULT_OUT = BENCH_DIR / "results"
# --networks-only writes beside the full report, not over it.
DEFAULT_NETWORKS_OUT = DEFAULT_OUT / "networks"

# Time budgets in seconds per measurement, and the naive subsample's output channels.
SETTINGS = {
    "full": dict(budget=1.0, min_repeats=5, rounds=5, naive_channels=4, sgemm_repeats=7),
    "quick": dict(budget=0.1, min_repeats=3, rounds=2, naive_channels=1, sgemm_repeats=3),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Time cnnblas's convolutions against naive loops, Numba direct loops and "
                    "PyTorch; write a Markdown/JSON report and charts.")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for Numba, BLAS and PyTorch (default: cnnblas's setting)")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated subset of shapes.csv names (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="short time budgets and a smaller naive subsample (a smoke run)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output directory (default: {DEFAULT_OUT}, with --networks-only "
                             f"{DEFAULT_NETWORKS_OUT})")
    parser.add_argument("--batch", type=int, default=None,
                        help="override every shape's batch size N (smoke tests)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed calls per measurement (overrides --quick's)")
    parser.add_argument("--sgemm-size", type=int, default=2048,
                        help="size of the SGEMM baseline (default 2048; smaller only for tests)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds per measurement (overrides --quick's)")
    parser.add_argument("--no-networks", action="store_true",
                        help="skip the whole networks (training steps, predictions)")
    parser.add_argument("--networks-only", action="store_true",
                        help="run only the whole networks (and the SGEMM baseline)")
    parser.add_argument("--no-charts", action="store_true", help="do not write PNG charts")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    if args.sgemm_size < 1:
        parser.error(f"--sgemm-size must be >= 1, got {args.sgemm_size}")
    if args.budget is not None and args.budget <= 0:
        parser.error(f"--budget must be > 0, got {args.budget}")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.no_networks and args.networks_only:
        parser.error("--no-networks and --networks-only exclude each other")
    if args.out is None:
        args.out = DEFAULT_NETWORKS_OUT if args.networks_only else DEFAULT_OUT
    return args


class _Progress:
    """A tqdm bar on stderr (a no-op stand-in when tqdm is missing or --quiet)."""

    def __init__(self, total: int, quiet: bool):
        self._bar = None
        if not quiet:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True)

    def start(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _conv_records(shape, settings: dict, progress: _Progress) -> list[dict]:
    """Check, then time, every implementation on both passes of one shape."""
    inputs = make_inputs(shape)
    naive_channels = settings["naive_channels"]
    records = []
    for pass_name in PASSES:
        functions = {impl: conv_function(impl, pass_name, shape, inputs, naive_channels)
                     for impl in IMPLEMENTATIONS}
        functions = {impl: fn for impl, fn in functions.items() if fn is not None}
        progress.start(f"{shape.name} {PASS_LABELS[pass_name]}: check")
        # Correct first: one call of each (JIT compilation included), compared with the
        # reference; a disagreement raises before anything is timed.
        outputs = {impl: fn() for impl, fn in functions.items()}
        errors = check_agreement(shape, pass_name, outputs, naive_channels)
        errors[REFERENCE_IMPL] = 0.0
        del outputs
        progress.done()
        timings = {}
        if "naive" in functions:
            progress.start(f"{shape.name} {PASS_LABELS[pass_name]}: naive")
            # No warm-up: plain Python has nothing to compile, and the check call ran it.
            timings["naive"] = measure(functions.pop("naive"), settings["budget"], warmups=0,
                                       min_repeats=1)
            progress.done()
        progress.start(f"{shape.name} {PASS_LABELS[pass_name]}: {', '.join(functions)}")
        # The compiled implementations in alternation, so that the machine's slow
        # phases hit them alike (see measure_interleaved); the check call above was
        # their warm-up.
        timings.update(measure_interleaved(functions, settings["budget"],
                                           rounds=settings["rounds"], warmups=0,
                                           min_repeats=settings["min_repeats"]))
        progress.done()
        for impl, timing in timings.items():
            record = {"shape": shape.name, "pass": pass_name, "impl": impl,
                      "batch": shape.batch, "flops": shape.flops(pass_name),
                      "max_rel_error": errors[impl]}
            if impl == "naive":
                sample = naive_sample(shape, naive_channels)
                record.update(sample_seconds=timing.median, sample_channels=sample.channels,
                              sample_images=1, scale=sample.scale(shape))
                timing = timing.scaled(sample.scale(shape))
            record.update(seconds=timing.median, best_seconds=timing.best, q1_seconds=timing.q1,
                          q3_seconds=timing.q3, repeats=timing.repeats)
            records.append(record)
    return records


def _derive(records: list[dict], sgemm_gflops: float) -> None:
    """Add GFLOP/s, fraction of SGEMM, speed-up over naive and time / PyTorch to each record."""
    by_key = {(r["shape"], r["pass"], r["impl"]): r for r in records}
    for record in records:
        record["gflops"] = record["flops"] / record["seconds"] / 1e9
        record["sgemm_fraction"] = record["gflops"] / sgemm_gflops
        naive = by_key.get((record["shape"], record["pass"], "naive"))
        record["speedup_vs_naive"] = naive["seconds"] / record["seconds"] if naive else None
        torch_record = by_key.get((record["shape"], record["pass"], "torch"))
        record["time_vs_torch"] = (record["seconds"] / torch_record["seconds"]
                                   if torch_record else None)


def run(args: argparse.Namespace) -> dict:
    """Measure everything; returns the JSON-ready results."""
    mode = "quick" if args.quick else "full"
    settings = dict(SETTINGS[mode])
    if args.budget is not None:
        settings["budget"] = args.budget
    if args.rounds is not None:
        settings["rounds"] = args.rounds
    threads = set_threads(args.threads)
    shapes = ([] if args.networks_only
              else load_shapes(args.shapes.split(",") if args.shapes else None))
    if args.batch is not None:
        shapes = [shape.with_batch(args.batch) for shape in shapes]
    has_torch = torch_available()
    do_memory = not args.no_memory and not args.networks_only
    network_settings = None
    if not args.no_networks:
        network_settings = networks.configure(
            args.quick, rounds=args.rounds, batch=args.batch,
            budget_scale=settings["budget"] / SETTINGS[mode]["budget"])
        network_engines = networks.available_engines()

    # Per shape: forward check, naive, the rest interleaved; forward+backward
    # check and interleaved; the stage profile.
    memory_impls = [impl for impl in MEMORY_IMPLS if impl != "torch" or has_torch]
    do_memory_target = do_memory and any(s.name == targets.MEMORY_SHAPE for s in shapes)
    total = (1 + len(shapes) * 6
             + (len(shapes) * len(memory_impls) if do_memory else 0)
             + (len(memory_impls) if do_memory_target else 0)
             + (networks.steps(network_settings, network_engines, threads)
                if network_settings else 0))
    progress = _Progress(total, args.quiet)
    started = time.perf_counter()
    load_start = os.getloadavg()
    try:
        progress.start(f"SGEMM {args.sgemm_size}^3")
        sgemm = sgemm_rate(args.sgemm_size, settings["sgemm_repeats"])
        progress.done()

        records, bounds = [], []
        for shape in shapes:
            records += _conv_records(shape, settings, progress)
            progress.start(f"{shape.name}: stage profile")
            # Half the budget per function: this section times eight of them.
            bounds += measure_bounds(shape, make_inputs(shape), threads,
                                     settings["budget"] / 2, settings["rounds"],
                                     settings["min_repeats"])
            progress.done()
        _derive(records, sgemm["gflops"])

        memory = []
        if do_memory:
            for shape in shapes:
                for impl in memory_impls:
                    progress.start(f"{shape.name} memory: {impl}")
                    memory.append(measure_in_subprocess(shape.name, impl, threads, args.batch))
                    progress.done()
        memory_target = []
        if do_memory_target:
            for impl in memory_impls:
                progress.start(f"{targets.MEMORY_SHAPE} memory at batch "
                               f"{targets.MEMORY_BATCH}: {impl}")
                memory_target.append(measure_in_subprocess(
                    targets.MEMORY_SHAPE, impl, threads, targets.MEMORY_BATCH))
                progress.done()

        whole = None
        if network_settings:
            whole = networks.run(threads, network_settings, sgemm_gflops=sgemm["gflops"],
                                 engines=network_engines, progress=progress)
    finally:
        progress.close()

    return dict(
        machine=machine_info(),
        settings=dict(mode=mode, tolerance=TOLERANCE, reference=REFERENCE_IMPL, **settings),
        command="python -m benchmarks.report " + " ".join(args.argv),
        load_average=dict(start=load_start, end=os.getloadavg()),
        wall_seconds=time.perf_counter() - started,
        sgemm=sgemm,
        shapes=[dict(name=s.name, batch=s.batch, in_channels=s.in_channels, height=s.height,
                     width=s.width, out_channels=s.out_channels, kernel_h=s.kernel_h,
                     kernel_w=s.kernel_w, stride=s.stride, pad=s.pad, groups=s.groups,
                     out_h=s.out_h, out_w=s.out_w, forward_flops=s.flops("forward"),
                     column_bytes=s.column_bytes(), description=s.describe(),
                     algorithm=s.auto_algorithm())
                for s in shapes],
        convolutions=records,
        bounds=bounds,
        memory=memory,
        memory_target=memory_target,
        memory_method=("peak RSS (VmHWM after resetting it via /proc/self/clear_refs) minus the "
                       "RSS before the pass, in a fresh subprocess per (shape, impl); "
                       "see benchmarks/memory.py"),
        networks=whole,
        torch_available=has_torch,
    )


# --------------------------------------------------------------------------- Markdown

def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if value >= 1 else f"{value:.{digits + 1}g}"


def _ratio(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _blas_text(lib: dict) -> str:
    """E.g. ``openblas 0.3.31 (pthreads, Haswell, 2 threads) `libscipy_openblas64_.so```."""
    details = [str(v) for v in (lib["threading_layer"], lib["architecture"]) if v]
    details.append(f"{lib['num_threads']} threads")
    version = f" {lib['version']}" if lib["version"] else ""
    return (f"{lib['internal_api']}{version} ({', '.join(details)}) "
            f"`{Path(lib['filepath']).name}`")


def _machine_section(results: dict) -> str:
    machine = results["machine"]
    caches = ", ".join(f"{level} {size}" for level, size in machine["caches"].items())
    blas = "; ".join(_blas_text(lib) for lib in machine["blas"])
    versions = ", ".join([f"python {machine['python']}"]
                         + [f"{name} {version}" for name, version in machine["versions"].items()])
    env = ", ".join(f"`{k}={v}`" for k, v in machine["thread_variables"].items()) or "none set"
    sgemm = results["sgemm"]
    load = results["load_average"]
    rows = [
        ["CPU", f"{machine['cpu']}, {machine['cores']} cores available "
                f"({machine['logical_cpus']} logical CPUs); {caches}"],
        ["system", machine["platform"]],
        ["threads", f"{machine['threads']} (Numba `{machine['numba_threading_layer']}` layer, "
                    f"every BLAS pool, PyTorch)"],
        ["BLAS / OpenMP (threadpoolctl)", blas],
        ["versions", versions],
        ["threading/BLAS environment", env],
        ["date, commit", f"{machine['date']}, `{machine['commit']}`"],
        ["load average (1 min) at start / end",
         f"{load['start'][0]:.2f} / {load['end'][0]:.2f} (noisy if well above 0)"],
        [f"SGEMM {sgemm['size']}³ float32 (`numpy.matmul`)",
         f"**{sgemm['gflops']:.1f} GFLOP/s** (best of {sgemm['repeats']}; median "
         f"{sgemm['median_gflops']:.1f}): the 100 % of the \"% of SGEMM\" columns"],
    ]
    if sgemm.get("torch_gflops"):
        rows.append(["same product with `torch.mm`", f"{sgemm['torch_gflops']:.1f} GFLOP/s "
                     "(PyTorch's own BLAS, for comparison)"])
    return "## Machine\n\n" + _table(["", ""], rows, "ll")


def _shapes_section(results: dict) -> str:
    rows = [[s["name"], f"{s['batch']}×{s['in_channels']}×{s['height']}×{s['width']}",
             str(s["out_channels"]), f"{s['kernel_h']}×{s['kernel_w']}", str(s["stride"]),
             str(s["pad"]), f"{s['out_h']}×{s['out_w']}", f"{s['forward_flops'] / 1e9:.3f}",
             f"{s['column_bytes'] / 2**20:.2f}", s.get("algorithm", "?")]
            for s in results["shapes"]]
    return "## Shapes\n\n" + _table(
        ["shape", "N×C×H×W", "K", "kernel", "stride", "pad", "out", "GFLOP/pass",
         "im2col MiB/image", "cnnblas algorithm (auto)"], rows, "l" + "r" * 8 + "l")


def _conv_section(results: dict, pass_name: str) -> str:
    records = [r for r in results["convolutions"] if r["pass"] == pass_name]
    with_naive = any(r["impl"] == "naive" for r in records)
    header = ["shape", "implementation", "time ms", "GFLOP/s", "% of SGEMM"]
    if with_naive:
        header.append("speed-up vs naive")
    header += ["time / PyTorch", "max rel. error"]
    rows = []
    for record in records:
        naive = record["impl"] == "naive"
        row = [record["shape"], LABELS[record["impl"]] + (" ≈" if naive else ""),
               _ms(record["seconds"]), _num(record["gflops"], 2 if naive else 1),
               f"{100 * record['sgemm_fraction']:.{3 if naive else 1}f}"]
        if with_naive:
            speedup = record["speedup_vs_naive"]
            row.append("—" if naive or speedup is None else f"{speedup:,.0f}×")
        ratio = record["time_vs_torch"]
        row.append("—" if ratio is None or record["impl"] == "torch" else _ratio(ratio))
        row.append("ref." if record["impl"] == results["settings"]["reference"]
                   else f"{record['max_rel_error']:.1e}")
        if record["impl"] == "gemm":
            row[1] = f"**{row[1]}**"
        rows.append(row)
    align = "ll" + "r" * (len(header) - 2)
    text = f"## {PASS_LABELS[pass_name].capitalize()}\n\n" + _table(header, rows, align)
    if with_naive:
        samples = {r["shape"]: r for r in records if r["impl"] == "naive"}
        if samples:
            one = next(iter(samples.values()))
            text += (f"\n\n≈ naive: the pure-Python loops run on image 0 and the first "
                     f"{one['sample_channels']} output channel(s) only; the time shown is that "
                     f"subsample's median × N·K/{one['sample_channels']} (the loops' work is "
                     "exactly linear in N and K).")
    if pass_name == "forward_backward":
        text += ("\n\nForward+backward = forward, then (dx, dweight, dbias) from a fixed dy; "
                 "counted as three passes of flops. The naive loops have no backward.")
    return text


def _memory_section(results: dict) -> str:
    by_shape: dict[str, dict] = {}
    for entry in results["memory"]:
        by_shape.setdefault(entry["shape"], {})[entry["impl"]] = entry
    rows = []
    for name, entries in by_shape.items():
        ours, theirs = entries.get("gemm"), entries.get("torch")
        any_entry = ours or theirs
        ratio = (ours["peak_rss_mib"] / theirs["peak_rss_mib"]
                 if ours and theirs and theirs["peak_rss_mib"] > 0 else None)
        rows.append([name, _num(ours and ours["peak_rss_mib"]),
                     _num(ours and ours["tracemalloc_mib"]),
                     _num(theirs and theirs["peak_rss_mib"]),
                     "—" if ratio is None else _ratio(ratio), _num(any_entry["output_mib"])])
    return ("## Peak memory of one forward+backward (MiB)\n\n"
            + _table(["shape", "cnnblas RSS", "cnnblas tracemalloc", "PyTorch RSS",
                      "cnnblas / PyTorch", "outputs"], rows)
            + "\n\nRSS: peak resident memory during the pass minus the resident memory just "
              "before it (inputs already allocated, kernels compiled), each in a fresh "
              "subprocess; it includes the outputs (y, dx, dweight, dbias; as large as the "
              "inputs x, weight, bias, dy). tracemalloc: "
              "peak NumPy allocations in the same pass (cnnblas only; PyTorch's allocator is "
              "invisible to it). See `benchmarks/memory.py`.")


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _bound_numbers(bound: dict, sgemm_gflops: float, threads: int) -> dict:
    """Derived numbers of one stage-profile record (see benchmarks.bounds)."""
    gemms = bound["gemms"]
    rate = bound["gemm_flops"] / gemms / 1e9 if gemms else None
    return dict(
        other=_difference(bound["worker"], gemms if gemms is not None else 0.0),
        split=_difference(bound["cnnblas"], bound["worker"]),
        rate=rate, rate_fraction=rate / (sgemm_gflops / threads) if rate else None,
        gemms_vs_torch=gemms / bound["torch"] if gemms and bound["torch"] else None)


def _gap_sentence(bound: dict, numbers: dict) -> str:
    """One pass of a shape that misses a target, in words and milliseconds."""
    text = (f"{bound['shape']} {bound['pass_name']} ({bound['algorithm']}): cnnblas "
            f"{_ms(bound['cnnblas'])} ms vs PyTorch {_ms(bound['torch'])} ms; one worker's "
            f"{bound['worker_images']} images on one thread {_ms(bound['worker'])} ms, of which ")
    if bound["gemms"] is not None:
        versus = ("" if numbers["gemms_vs_torch"] is None
                  else f"{numbers['gemms_vs_torch']:.0%} of PyTorch's whole pass, ")
        text += (f"GEMMs {_ms(bound['gemms'])} ms ({versus}at {numbers['rate']:.0f} GFLOP/s = "
                 f"{numbers['rate_fraction']:.0%} of the SGEMM rate / threads) and other "
                 f"stages {_ms(numbers['other'])} ms")
    else:
        text += f"no GEMM (direct kernels {_ms(numbers['other'])} ms)"
    return text + f"; split cost {_ms(numbers['split'])} ms."


def _targets_section(results: dict) -> str:
    sgemm, threads = results["sgemm"]["gflops"], results["machine"]["threads"]
    rows, sentences = [], []
    bounds = results.get("bounds", [])
    evaluated = targets.evaluate(results)
    for target in evaluated:
        met = {True: "**yes**", False: "no", None: "not measured"}[target["met"]]
        short = ", ".join(target["gaps"])
        if target.get("explained_by"):
            short = "see " + "; ".join(f"*{title}*" for title in target["explained_by"])
        rows.append([target["name"], target["measured"], met,
                     short if target["met"] is False else ""])
    gap_shapes = {name for target in evaluated if target["met"] is False
                  for name in target["gaps"]}
    for bound in bounds:
        if bound["shape"] in gap_shapes:
            sentences.append("- " + _gap_sentence(bound, _bound_numbers(bound, sgemm, threads)))
    text = ("## Targets, measured in this run\n\n"
            + _table(["target", "measured (cnnblas / PyTorch time unless stated)", "met?",
                      "shapes short of it (or the profile of the gap)"], rows, "llll"))
    if sentences:
        text += ("\n\nWhere the time of the shapes short of a target goes (stage profile, "
                 "table *Where the time goes* below):\n\n" + "\n".join(sentences))
    if any(target["met"] is False for target in evaluated):
        text += ("\n\nWhat was tried against each gap, kept or not, with its measurements: "
                 "`benchmarks/LOG.md` (one section per topic: the GEMM engine and its chunks, "
                 "Winograd F(2×2) and F(4×4) and their transforms, the direct kernels, "
                 "BatchNorm, the thread hand-off and the stage profile, the whole networks, "
                 "the second core through processes).")
    return text


def _bounds_section(results: dict) -> str:
    sgemm, threads = results["sgemm"]["gflops"], results["machine"]["threads"]
    rows = []
    for bound in results["bounds"]:
        numbers = _bound_numbers(bound, sgemm, threads)
        rate = ("—" if numbers["rate"] is None
                else f"{numbers['rate']:.0f} ({numbers['rate_fraction']:.0%})")
        rows.append([bound["shape"], bound["pass_name"], bound["algorithm"],
                     _ms(bound["torch"]), _ms(bound["cnnblas"]),
                     f"{_ms(bound['worker'])} ({bound['worker_images']})", _ms(bound["gemms"]),
                     rate, _ms(numbers["other"]), _ms(numbers["split"]),
                     "—" if numbers["gemms_vs_torch"] is None
                     else _ratio(numbers["gemms_vs_torch"])])
    return (f"## Where the time goes (stage profile, {threads} thread(s))\n\n"
            + _table(["shape", "pass", "algorithm", "PyTorch ms", "cnnblas ms",
                      "one worker ms (images)", "GEMMs alone ms", "GEMM GFLOP/s on one thread "
                      "(% of SGEMM rate / threads)", "other stages ms", "split cost ms",
                      "GEMMs alone / PyTorch"], rows, "lll" + "r" * 8)
            + "\n\n*one worker*: cnnblas on one thread, on the images one worker thread gets "
              "when the batch is split: what the threads would take if splitting cost nothing. "
              "*GEMMs alone*: that worker's BLAS products by themselves (`numpy.matmul` on "
              "random operands of the algorithm's shapes, one thread), as one product per "
              "stage over all its images: the engine's chunks are smaller, and their "
              "products ran 8-18 % faster or slower than these. *other stages* = one "
              "worker − GEMMs: im2col, col2im, Winograd transforms, reorders, or the whole "
              "direct kernels. *split cost* = cnnblas − one worker: the hand-off to the worker "
              "thread through the GIL, the serial steps left in the calling thread (summing "
              "the workers' weight gradients) and the cores sharing caches and memory (with "
              "fewer images than threads the batch is not split, and this is the cost of "
              "the other parallel path). "
              "Where the GEMMs "
              "alone take as long as PyTorch's whole pass (last column ≥ 1), no im2col or "
              "Winograd bookkeeping can close the gap. Timed in alternation like the tables "
              "above, at half their budget; backward = (dx, dweight, dbias) from a fixed dy. "
              "See `benchmarks/bounds.py`.")


def to_markdown(results: dict, charts: list[Path]) -> str:
    settings = results["settings"]
    parts = [
        "# cnnblas benchmark report",
        f"`{results['command']}` — {settings['mode']} run "
        f"({settings['budget']:g} s of timed calls per measurement, median reported), "
        f"{results['wall_seconds'] / 60:.1f} min. All float32, NCHW. Before any timing every "
        f"implementation's outputs were checked against a reference "
        f"({LABELS[settings['reference']]} for single convolutions, max |difference| / "
        f"max |value| ≤ {settings['tolerance']:g}; PyTorch for whole networks): all agreed. "
        "See `benchmarks/README.md` for the method and the column meanings.",
        _targets_section(results),
        _machine_section(results),
    ]
    if results.get("networks"):
        parts.append(netreport.section(results))
    if results["convolutions"]:
        parts += [_shapes_section(results),
                  *(_conv_section(results, pass_name) for pass_name in PASSES)]
    if results.get("bounds"):
        parts.append(_bounds_section(results))
    if results["memory"]:
        parts.append(_memory_section(results))
    if charts:
        parts.append("## Charts\n\n" + "\n\n".join(f"![{p.stem}]({p.name})" for p in charts))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the report; returns 0, or 1 if two implementations disagreed (nothing written)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    try:
        results = run(args)
    except DisagreementError as error:
        print(f"benchmarks.report: implementations disagree, nothing timed further:\n{error}",
              file=sys.stderr)
        return 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(results, indent=1) + "\n")
    charts = ([] if args.no_charts or not results["convolutions"]
              else _write_charts(results, out_dir))
    (out_dir / "report.md").write_text(to_markdown(results, charts))
    print(f"wrote {out_dir / 'report.md'} ({results['wall_seconds']:.0f} s)", file=sys.stderr)
    return 0


def _write_charts(results: dict, out_dir: Path) -> list[Path]:
    from benchmarks.charts import write_charts

    return write_charts(results, out_dir)


if __name__ == "__main__":
    sys.exit(main())
