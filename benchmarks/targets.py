"""The performance targets, evaluated on one report's results.

Each target becomes a dict ``name``, ``measured`` (text), ``met`` (True,
False, or None when the run did not measure it) and ``gaps``: the shapes
that miss it, whose stage profile (:mod:`benchmarks.bounds`) the report
prints next to it.
"""

from __future__ import annotations

import math

#: The targets' thresholds and the shape and batch of the memory target.
MAX_GEOMETRIC_MEAN = 0.8
MIN_FORWARD_SGEMM_FRACTION = 0.85
SGEMM_TARGET_SHAPES = ("res56", "cifar2", "res_s2")
MEMORY_SHAPE, MEMORY_BATCH = "res56", 32


def _ratios(results: dict) -> dict[str, float]:
    """cnnblas / PyTorch forward+backward time per shape, in the report's order."""
    return {r["shape"]: r["time_vs_torch"] for r in results["convolutions"]
            if r["impl"] == "gemm" and r["pass"] == "forward_backward"
            and r["time_vs_torch"] is not None}


def evaluate(results: dict) -> list[dict]:
    """The five targets, each a dict as the module docstring describes."""
    targets = []
    ratios = _ratios(results)
    slower = [name for name, ratio in ratios.items() if ratio > 1]
    targets.append(dict(
        name="forward+backward no slower than PyTorch on every shape",
        measured=", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items()) or "—",
        met=(not slower) if ratios else None, gaps=slower))
    geometric_mean = (math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
                      if ratios else None)
    targets.append(dict(
        name=f"geometric mean of cnnblas/PyTorch ≤ {MAX_GEOMETRIC_MEAN:g}",
        measured="—" if geometric_mean is None else f"{geometric_mean:.2f}",
        met=None if geometric_mean is None else geometric_mean <= MAX_GEOMETRIC_MEAN,
        gaps=[name for name, ratio in ratios.items() if ratio > MAX_GEOMETRIC_MEAN]))
    fractions = {r["shape"]: r["sgemm_fraction"] for r in results["convolutions"]
                 if r["impl"] == "gemm" and r["pass"] == "forward"
                 and r["shape"] in SGEMM_TARGET_SHAPES}
    short = [name for name, fraction in fractions.items()
             if fraction < MIN_FORWARD_SGEMM_FRACTION]
    targets.append(dict(
        name=(f"forward ≥ {MIN_FORWARD_SGEMM_FRACTION:.0%} of the SGEMM rate on "
              + ", ".join(SGEMM_TARGET_SHAPES) + " (rate in direct-convolution flops)"),
        measured=", ".join(f"{name} {fraction:.0%}" for name, fraction in fractions.items())
        or "—",
        met=(not short) if fractions else None, gaps=short))
    train = results.get("training")
    steps = {r["impl"]: r["seconds"] for r in train["results"]} if train else {}
    step = dict(name="LeNet-5 training step no slower than PyTorch", measured="—", met=None,
                gaps=[])
    if "gemm" in steps and "torch" in steps:
        step_ratio = steps["gemm"] / steps["torch"]
        step.update(measured=(f"{steps['gemm'] * 1e3:.2f} vs {steps['torch'] * 1e3:.2f} ms "
                              f"({step_ratio:.2f})"), met=step_ratio <= 1)
    targets.append(step)
    memory = {m["impl"]: m["peak_rss_mib"] for m in results.get("memory_target", [])}
    peak = dict(name=f"{MEMORY_SHAPE} forward+backward peak memory at batch {MEMORY_BATCH} "
                     "no more than PyTorch's", measured="—", met=None, gaps=[])
    if "gemm" in memory and "torch" in memory:
        peak.update(measured=f"{memory['gemm']:.1f} vs {memory['torch']:.1f} MiB",
                    met=memory["gemm"] <= memory["torch"])
    targets.append(peak)
    return targets
