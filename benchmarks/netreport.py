"""Markdown of the whole-network results (:mod:`benchmarks.networks`).

:func:`section` is the report's *Whole networks* section: the rows, the
second core's speed-up and both training steps' profiles by layer type.
:func:`readme_table` is the short table of the project README, pasted from
a report's JSON::

    python -m benchmarks.netreport benchmarks/results/report.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from benchmarks import targets
from benchmarks.common import ms_text as _ms
from benchmarks.netmodels import NETWORKS
from benchmarks.netprofile import group_of
from benchmarks.networks import ENGINE_LABELS, parse_configuration
from benchmarks.winograd_stages import STAGES, per_step

KIND_LABELS = {"step": "training step", "predict": "one-image prediction (eval)"}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "| --- | " + " | ".join("--:" for _ in header[1:]) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _met(row: dict) -> str:
    limit, met = targets.network_target(row)
    if limit is None:
        return "—"
    return f"≤ {limit:g}: " + {True: "**met**", False: "not met", None: "not measured"}[met]


def _rate(row: dict, engine: str) -> str:
    if "gflops" not in row or engine not in row["gflops"]:
        return "—"
    gflops = row["gflops"][engine]
    text = f"{gflops:.0f}" if gflops >= 100 else f"{gflops:.3g}"
    if row.get("sgemm_fraction"):
        text += f" ({row['sgemm_fraction'][engine]:.0%})"
    return text


def _rows_table(networks: dict) -> str:
    engines = networks["engines"]
    header = (["network", "batch"] + [f"{ENGINE_LABELS[e]} ms" for e in engines]
              + ["cnnblas / PyTorch"] + (["onnxruntime / PyTorch"] if "onnxruntime" in engines
                                         else [])
              + ["GFLOP/s cnnblas (% of SGEMM)", "GFLOP/s PyTorch", "target (cnnblas / PyTorch)"])
    rows = []
    for row in networks["rows"]:
        ratios = row["ratio_to_torch"]
        cells = [f"{row['label']} {KIND_LABELS[row['kind']]}", str(row["batch"])]
        cells += [_ms(row["seconds"].get(engine)) for engine in engines]
        cells.append(f"**{ratios['cnnblas']:.2f}**" if "cnnblas" in ratios else "—")
        if "onnxruntime" in engines:
            cells.append(f"{ratios['onnxruntime']:.2f}" if "onnxruntime" in ratios else "—")
        cells += [_rate(row, "cnnblas"), _rate(row, "torch"), _met(row)]
        rows.append(cells)
    return _table(header, rows)


def _configuration_label(name: str) -> str:
    launcher, ranks, threads = parse_configuration(name)
    plural = "s" if threads > 1 else ""
    if launcher == "processes":
        return f"`cnnblas train` default: {ranks} processes × {threads} thread{plural}"
    if ranks > 1:
        return f"{ranks} MPI ranks × {threads} thread{plural}"
    return f"1 process × {threads} thread{plural}"


def _scaling_text(scaling: dict | None) -> str:
    if not scaling:
        return ("*Second core*: not measured (one thread, or mnist5k not found at "
                "`../shared/data/mnist5k`).")
    images = scaling["steps"] * scaling["batch"]
    default = scaling.get("default", f"1x{scaling['threads']}")
    allreduce = scaling.get("allreduce_seconds", {})
    rows = []
    for name in scaling["configurations"]:
        seconds, speedups = scaling["seconds"][name], scaling["speedups"][name]
        median = statistics.median(speedups)
        share = allreduce.get(name, 0.0)
        rows.append([_configuration_label(name), f"{seconds:.2f}", f"{images / seconds:,.0f}",
                     _ms((seconds - share) / scaling["steps"]),
                     f"{1e6 * share / scaling['steps']:.0f} µs" if share else "—",
                     f"**{median:.2f}**" if name == default else f"{median:.2f}",
                     ", ".join(f"{value:.2f}" for value in speedups)])
    return (f"### {targets.SCALING_TITLE}: LeNet-5 on mnist5k, {scaling['threads']} thread(s) "
            "against 1"
            "\n\n"
            + _table(["configuration", f"seconds for {scaling['steps']} steps", "images/s",
                      "ms per step outside the Allreduce", "Allreduce per step",
                      "speed-up (median)", "speed-up per round"], rows)
            + f"\n\nThe training loop of the LeNet-5 row on shuffled mnist5k batches of "
              f"{scaling['batch']} (seed 0), {scaling['warmups']} untimed steps first; each "
              "configuration in its own process(es), alternating. With several processes or MPI "
              "ranks each trains on its part of every batch and the gradients are summed "
              "(`cnnblas.distributed`; the Allreduce time includes waiting for the slower rank); "
              "the `cnnblas train` default's processes are started and connected by the "
              "command line's own code. Target for the default (bold): "
              f"≥ {targets.MIN_SCALING_SPEEDUP:g}."
            + _scaling_bound(scaling, default))


def _scaling_bound(scaling: dict, default: str) -> str:
    """What the default's speed-up would be without the Allreduce, and how much of one
    thread's step a rank's share of the batch still costs (the work that does not shrink
    with the batch: Python, per-layer calls, the optimizer)."""
    one = scaling["seconds"].get("1x1")
    share = scaling.get("allreduce_seconds", {}).get(default, 0.0)
    _, ranks, _ = parse_configuration(default)
    if one is None or not share or ranks < 2:
        return ""
    compute = scaling["seconds"][default] - share
    return (f" Without the Allreduce (which includes the wait for the slower rank) the "
            f"default would run {one / compute:.2f}× faster than one thread; each of its "
            f"{ranks} processes spends {compute / one:.0%} of one thread's time per step on "
            f"1/{ranks} of the batch, against {1 / ranks:.0%} if every cost shrank with "
            "the batch.")


def _profile_text(profile: dict, title: str, detail: str, unit: str = "step") -> str:
    """One profile's subsection, headed ``title`` (``detail`` in brackets); ``unit``
    names one run of what was profiled ("step" or "prediction")."""
    # Means, as the categories are (their totals over the wrapped runs / the runs):
    # a median of a few noisy runs could fall below their sum.
    plain = statistics.fmean(profile["plain"]["times"])
    wrapped = statistics.fmean(profile["wrapped"]["times"])
    seconds = dict(profile["seconds"])
    overhead = wrapped - sum(seconds.values())
    groups: dict[str, float] = {}
    for category, value in seconds.items():
        groups[group_of(category)] = groups.get(group_of(category), 0.0) + value
    groups["Python overhead"] = overhead
    headline = ", ".join(f"{name} {_ms(value)}" for name, value in
                         sorted(groups.items(), key=lambda item: -item[1]))
    rows = [[category, _ms(value), f"{value / wrapped:.0%}",
             str(profile["calls"].get(category, ""))]
            for category, value in sorted(seconds.items(), key=lambda item: -item[1])]
    rows.append([f"Python overhead ({unit} − the rest)", _ms(overhead),
                 f"{overhead / wrapped:.0%}", ""])
    cost = profile["wrapper_seconds"] * profile["wrapped_calls"]
    return (f"### {title} ({detail})\n\n"
            f"By group, ms per {unit}: {headline}.\n\n"
            + _table(["category", f"ms per {unit}", "share", f"calls per {unit}"], rows)
            + f"\n\nOwn time of each call (its time minus the timed calls inside it), "
              f"mean of {len(profile['wrapped']['times'])} {unit}(s) under the wrappers "
              f"({_ms(wrapped)} ms per {unit}; {_ms(plain)} ms without them, same process). "
              "Convolutions are split by the algorithm `choose_algorithm` picks for the "
              "layer's input; *own code* of a block is what it does itself (the residual add, "
              "its checks), of a Sequential its loop. Each of the "
              f"{profile['wrapped_calls']} timed calls per {unit} costs about "
              f"{profile['wrapper_seconds'] * 1e6:.1f} µs ({_ms(cost)} ms per {unit}), most of "
              "it landing in *Python overhead*. See `benchmarks/netprofile.py`.")


def _stages_text(stages: dict, sgemm_gflops: float | None, threads: int) -> str:
    """ResNet-20's F(4x4) convolutions by stage, ms per step on one thread."""
    totals = per_step(stages)
    forward, backward = totals["forward"], totals["backward"]
    whole = forward["whole"] + backward["whole"]
    rows = [[stage, _ms(forward[stage]), _ms(backward[stage]),
             _ms(forward[stage] + backward[stage]),
             f"{(forward[stage] + backward[stage]) / whole:.0%}"] for stage in STAGES]
    rows.append(["whole calls", _ms(forward["whole"]), _ms(backward["whole"]), _ms(whole),
                 "100%"])
    gemm_seconds = forward["GEMMs"] + backward["GEMMs"]
    rate = (forward["gemm_flops"] + backward["gemm_flops"]) / gemm_seconds / 1e9
    versus = (f" = {rate / (sgemm_gflops / threads):.0%} of this run's SGEMM rate per thread "
              f"({sgemm_gflops / threads:.0f})" if sgemm_gflops else "")
    transforms = sum(forward[stage] + backward[stage] for stage in STAGES[:3])
    shapes = "; ".join(f"{tuple(layer['x_shape'])} × {layer['layers']} layers"
                       for layer in stages["layers"])
    channels = ", ".join(str(c) for c in sorted({layer["w_shape"][1]
                                                 for layer in stages["layers"]}))
    return (f"### {targets.STAGES_TITLE} (cnnblas, one thread, batch {stages['batch']})\n\n"
            + _table(["stage", "forward ms per step", "backward ms per step", "both",
                      "share"], rows)
            + f"\n\nThe transforms take {transforms / whole:.0%} of these convolutions' "
              f"one-thread time and the GEMMs {gemm_seconds / whole:.0%}, at {rate:.0f} "
              f"GFLOP/s{versus} (products of C×C matrices by C×T tiles, C = {channels}). "
            + ("The transforms, which move every value through memory a few times with "
               "little arithmetic, outweigh the products: fewer passes over memory (fused "
               "kernels), not a faster GEMM, is what would shorten these layers. "
               if transforms > gemm_seconds else
               "The products outweigh the transforms here. ")
            + f"Shapes (input, per layer): {shapes}. Each shape's forward and backward "
              "(dx, dweight, dbias) timed plain and with timers around the stages, medians, "
              "multiplied by its number of layers; *rest* = plain call − stages (the chunk loop, "
              "allocations, the bias gradient). See `benchmarks/winograd_stages.py`.")


def section(results: dict) -> str:
    """The report's *Whole networks* section."""
    networks = results["networks"]
    settings = networks["settings"]
    errors = ", ".join(f"{key.replace(':', ' ')} {error:.1e}"
                       for key, error in networks["max_rel_error"].items()) or "no second engine"
    flops = networks["flops"]["resnet20"]
    text = (f"## Whole networks ({networks['threads']} thread(s))\n\n"
            + _rows_table(networks)
            + f"\n\nEach engine in a process of its own, {settings['rounds']} round(s) alternating "
              "the engines (order rotating), every process starting from the same initial "
              "weights (cnnblas's `state_dict`). ms: median of every timed call of the engine "
              "(garbage collector on, as in a user's loop); ratios: the median over rounds of "
              "the two engines' same-round medians. Training step = zero_grad, forward, "
              "softmax cross-entropy, backward, SGD step (LeNet-5: lr 0.01, momentum 0.9, a "
              "`cnnblas.nn.Sequential` of the layers, no flags; ResNet-20: lr 0.1, momentum "
              "0.9, weight decay 5e-4, BatchNorm in training mode). Prediction: eval mode, "
              "one 1×28×28 / 3×32×32 image, PyTorch under `torch.no_grad()`, onnxruntime on "
              "the model exported by `cnnblas.onnx.export` (CPU provider, same intra-op "
              f"threads). GFLOP/s counts direct-convolution flops ({flops['step'] / 1e9:.2f} "
              f"GFLOP per ResNet-20 step at batch {flops['batch']}): forward, weight gradient "
              "and input gradient of every convolution and linear layer (not the input "
              "gradient of the first convolution, whose input is data, except in LeNet-5's "
              "written-out Sequential, which computes it); BatchNorm, ReLU, pooling, adds, "
              "loss and update not counted. % of SGEMM: of this run's SGEMM rate. Before its "
              "times counted, every process's first step / prediction was checked against "
              "PyTorch's of the same round: the loss and the logits (max |a − b| / max |b| ≤ "
              f"{networks['tolerance']:g}) and the change of every parameter and buffer in the "
              "step (‖a − b‖ / ‖b‖ ≤ " + ", ".join(
                  f"{NETWORKS[name].step_tolerance:g} for {NETWORKS[name].label}"
                  for name in NETWORKS)
            + "; at batch 128, float32 rounding alone moves ResNet-20's gradients by up to "
              f"about 1e-2 in that norm); worst {errors}.")
    text += "\n\n" + _scaling_text(networks.get("scaling"))
    # Reports written before both steps were profiled hold ResNet-20's alone.
    profiles = networks.get("profiles") or (
        {"resnet20": networks["profile"]} if networks.get("profile") else {})
    for name, profile in profiles.items():
        text += "\n\n" + _profile_text(profile, targets.profile_title(name, "step"),
                                        f"cnnblas, batch {networks['flops'][name]['batch']}")
        if name in networks.get("predict_profiles", {}):
            text += "\n\n" + _profile_text(networks["predict_profiles"][name],
                                            targets.profile_title(name, "predict"),
                                            "cnnblas, eval mode", "prediction")
    if networks.get("winograd_stages"):
        text += "\n\n" + _stages_text(networks["winograd_stages"], networks["sgemm_gflops"],
                                       networks["threads"])
    return text


def readme_table(results: dict) -> str:
    """Markdown rows for the project README's speed section, from a report's results."""
    networks = results["networks"]
    machine = results.get("machine", {})
    rows = []
    for row in networks["rows"]:
        limit, _ = targets.network_target(row)
        ratio = row["ratio_to_torch"].get("cnnblas")
        rows.append([f"{row['label']} {KIND_LABELS[row['kind']]}, batch {row['batch']}",
                     _ms(row["seconds"].get("cnnblas")), _ms(row["seconds"].get("torch")),
                     _ms(row["seconds"].get("onnxruntime")),
                     "—" if ratio is None else f"{ratio:.2f}",
                     "—" if limit is None else f"≤ {limit:g}"])
    scaling = networks.get("scaling")
    note = ""
    if scaling:
        default = scaling.get("default", f"1x{scaling['threads']}")
        note = (f" Second core: LeNet-5 training on mnist5k, the default "
                f"({_configuration_label(default).replace('`cnnblas train` default: ', '')}) "
                f"against 1 thread, speed-up {scaling['speedup']:.2f} (target ≥ "
                f"{targets.MIN_SCALING_SPEEDUP:g})")
        ranks = f"{scaling['threads']}x1"
        if ranks in scaling.get("speedups", {}):
            note += (f"; {scaling['threads']} MPI ranks of one thread: "
                     f"{statistics.median(scaling['speedups'][ranks]):.2f}")
        note += "."
    load = results.get("load_average", {})
    where = (f"{machine.get('cpu', 'unknown CPU')} ({machine.get('cores', '?')} cores), "
             f"{networks['threads']} thread(s), SGEMM "
             f"{results.get('sgemm', {}).get('gflops', float('nan')):.0f} GFLOP/s, load average "
             f"{load.get('start', [float('nan')])[0]:.1f} at start and "
             f"{load.get('end', [float('nan')])[0]:.1f} at end, "
             f"{machine.get('date', '')[:10]}, commit `{machine.get('commit', '?')}`")
    return (_table(["whole network", "cnnblas ms", "PyTorch ms", "onnxruntime ms",
                    "cnnblas / PyTorch", "target"], rows)
            + f"\n\nMeasured by `python -m benchmarks.report --networks-only` on {where}; "
              "each engine in its own process, alternating rounds. Times on this shared VM "
              "vary by tens of percent between runs, and far more under load." + note)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.netreport REPORT.json", file=sys.stderr)
        return 2
    results = json.loads(Path(argv[0]).read_text())
    if not results.get("networks"):
        print(f"{argv[0]} has no whole-network results", file=sys.stderr)
        return 1
    print(readme_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
