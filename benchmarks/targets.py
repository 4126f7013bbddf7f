"""The performance targets, evaluated on one report's results.

Each target becomes a dict ``name``, ``measured`` (text), ``met`` (True,
False, or None when the run did not measure it) and ``gaps``: the shapes
that miss it, whose stage profile (:mod:`benchmarks.bounds`) the report
prints next to it; a whole-network target also names, in ``explained_by``,
the report's subsections whose profile explains a gap. The layer suite's
targets come first, then the whole networks' (:mod:`benchmarks.networks`):
cnnblas time / PyTorch time of each row of :data:`NETWORK_TARGETS` (the
median of the same-round ratios) and the second core's speed-up.
"""

from __future__ import annotations

import math

from benchmarks.common import ms_text
from benchmarks.netmodels import NETWORKS

#: The targets' thresholds and the shape and batch of the memory target.
MAX_GEOMETRIC_MEAN = 0.8
MIN_FORWARD_SGEMM_FRACTION = 0.85
SGEMM_TARGET_SHAPES = ("res56", "cifar2", "res_s2")
MEMORY_SHAPE, MEMORY_BATCH = "res56", 32
#: (network, kind) -> largest cnnblas / PyTorch time; kind "step" is a training
#: step, "predict" a one-image prediction.
NETWORK_TARGETS = {("resnet20", "step"): 0.8, ("lenet5", "step"): 0.8,
                   ("resnet20", "predict"): 1.0, ("lenet5", "predict"): 1.0}
#: Smallest speed-up of LeNet-5 training on mnist5k with the default settings (on
#: every core: ``cnnblas train``'s processes) over one thread.
MIN_SCALING_SPEEDUP = 1.6
#: Titles of the report's subsections (:mod:`benchmarks.netreport` writes them) that
#: explain a whole-network target's gap.
STAGES_TITLE = "ResNet-20's Winograd F(4×4) convolutions by stage"
SCALING_TITLE = "The second core"


def profile_title(network: str, kind: str) -> str:
    """The title of the profile of ``network``'s ``kind`` ("step" or "predict")."""
    what = "step" if kind == "step" else "one-image prediction"
    return f"Where the {NETWORKS[network].label} {what}'s time goes"


#: (network, kind), or "scaling" -> the subsections whose profile explains its gap.
EXPLAINED_BY = {
    **{key: (profile_title(*key),) + ((STAGES_TITLE,) if key == ("resnet20", "step") else ())
       for key in NETWORK_TARGETS},
    "scaling": (SCALING_TITLE,),
}


def _ratios(results: dict) -> dict[str, float]:
    """cnnblas / PyTorch forward+backward time per shape, in the report's order."""
    return {r["shape"]: r["time_vs_torch"] for r in results["convolutions"]
            if r["impl"] == "gemm" and r["pass"] == "forward_backward"
            and r["time_vs_torch"] is not None}


def evaluate(results: dict) -> list[dict]:
    """Every target (the layer suite's four, then :func:`network_targets`), each a dict
    as the module docstring describes."""
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
    memory = {m["impl"]: m["peak_rss_mib"] for m in results.get("memory_target", [])}
    peak = dict(name=f"{MEMORY_SHAPE} forward+backward peak memory at batch {MEMORY_BATCH} "
                     "no more than PyTorch's", measured="—", met=None, gaps=[])
    if "gemm" in memory and "torch" in memory:
        peak.update(measured=f"{memory['gemm']:.1f} vs {memory['torch']:.1f} MiB",
                    met=memory["gemm"] <= memory["torch"])
    targets.append(peak)
    return targets + network_targets(results.get("networks"))


def network_target(row: dict) -> tuple[float | None, bool | None]:
    """(threshold, met) of one row of the whole-network results (None: no target
    or not measured)."""
    limit = NETWORK_TARGETS.get((row["network"], row["kind"]))
    ratio = row["ratio_to_torch"].get("cnnblas")
    if limit is None or ratio is None:
        return limit, None
    return limit, ratio <= limit


def _row_name(network: str, kind: str) -> str:
    what = "training step" if kind == "step" else "batch-1 prediction"
    return f"{NETWORKS[network].label} {what}"


def network_targets(networks: dict | None) -> list[dict]:
    """The whole-network targets (each "not measured" without the section or PyTorch)."""
    rows = {(row["network"], row["kind"]): row for row in (networks or {}).get("rows", [])}
    targets = []
    for key, limit in NETWORK_TARGETS.items():
        target = dict(name=f"{_row_name(*key)} ≤ {limit:g}× PyTorch", measured="—", met=None,
                      gaps=[], explained_by=EXPLAINED_BY[key])
        row = rows.get(key)
        if row is not None and "torch" in row["seconds"]:
            _, met = network_target(row)
            target.update(measured=(f"{ms_text(row['seconds']['cnnblas'])} vs "
                                    f"{ms_text(row['seconds']['torch'])} ms "
                                    f"({row['ratio_to_torch']['cnnblas']:.2f})"), met=met)
        targets.append(target)
    scaling = (networks or {}).get("scaling")
    target = dict(name=f"LeNet-5 training on mnist5k ≥ {MIN_SCALING_SPEEDUP:g}× faster with "
                       "the default settings on every core than with one thread", measured="—",
                  met=None, gaps=[], explained_by=EXPLAINED_BY["scaling"])
    if scaling and scaling["threads"] > 1:
        default = scaling.get("default", f"1x{scaling['threads']}")
        target.update(measured=f"{scaling['speedup']:.2f}× ({default} against 1x1 on "
                               f"{scaling['threads']} cores)",
                      met=scaling["speedup"] >= MIN_SCALING_SPEEDUP)
    targets.append(target)
    return targets
