"""PNG charts for the report (only when matplotlib is installed).

- ``gflops.png``: GFLOP/s per shape and implementation, one panel per pass,
  with the machine's 2048^3 SGEMM rate (``numpy.matmul``; dashed) and, when
  PyTorch is installed, ``torch.mm``'s (dotted) as horizontal lines (linear
  axis, so the bar heights read directly as fractions of them). The naive loops are left
  out here: at well under 1 GFLOP/s they would not show; see the next chart.
- ``speedup.png``: forward-pass speed-up of each implementation over the naive
  Python loops (log axis).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import LABELS, PASS_LABELS, PASSES

COLORS = {"naive": "#999999", "direct": "#e69f00", "gemm": "#0072b2", "torch": "#cc3311"}


def _records(results: dict, pass_name: str, impl: str) -> dict[str, dict]:
    return {r["shape"]: r for r in results["convolutions"]
            if r["pass"] == pass_name and r["impl"] == impl}


def _grouped_bars(axis, shape_names, series, value_key, label_fmt=None):
    """Draw one bar group per shape; ``series`` is [(impl, {shape: record})]."""
    width = 0.8 / max(len(series), 1)
    for index, (impl, records) in enumerate(series):
        positions = [s + (index - (len(series) - 1) / 2) * width
                     for s in range(len(shape_names))]
        values = [records[name][value_key] if name in records else 0.0 for name in shape_names]
        bars = axis.bar(positions, values, width, label=LABELS[impl], color=COLORS[impl])
        if label_fmt:
            axis.bar_label(bars, [label_fmt(v) if v else "" for v in values], fontsize=6,
                           padding=1, rotation=90)
    axis.set_xticks(range(len(shape_names)), shape_names)


def _save(plt, figure, path: Path) -> Path:
    """Lay out, write (120 dpi) and close one figure; returns its path."""
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_charts(results: dict, out_dir: Path) -> list[Path]:
    """Write the charts into ``out_dir``; returns their paths ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    shape_names = [shape["name"] for shape in results["shapes"]]
    sgemm = results["sgemm"]["gflops"]
    torch_sgemm = results["sgemm"].get("torch_gflops")
    size = results["sgemm"]["size"]
    threads = results["machine"]["threads"]
    written = []

    figure, axes = plt.subplots(1, len(PASSES), figsize=(6 + 1.1 * len(shape_names), 4.6),
                                sharey=True, squeeze=False)
    peak = max(sgemm, torch_sgemm or 0.0)
    for axis, pass_name in zip(axes[0], PASSES, strict=True):
        series = [(impl, _records(results, pass_name, impl))
                  for impl in ("direct", "gemm", "torch")]
        series = [(impl, recs) for impl, recs in series if recs]
        _grouped_bars(axis, shape_names, series, "gflops", label_fmt=lambda v: f"{v:.0f}")
        peak = max([peak] + [r["gflops"] for _, recs in series for r in recs.values()])
        axis.axhline(sgemm, color="black", linestyle="--", linewidth=1,
                     label=f"SGEMM {size}³, numpy: {sgemm:.0f} GFLOP/s")
        if torch_sgemm:
            axis.axhline(torch_sgemm, color=COLORS["torch"], linestyle=":", linewidth=1,
                         label=f"SGEMM {size}³, torch.mm: {torch_sgemm:.0f} GFLOP/s")
        axis.set_title(PASS_LABELS[pass_name])
        axis.tick_params(axis="x", labelrotation=30)
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylim(0, peak * 1.3)
    axes[0][0].set_ylabel("GFLOP/s (higher is better)")
    axes[0][0].legend(loc="upper left", fontsize=8, ncols=2)
    figure.suptitle(f"float32 convolution throughput, {threads} thread(s)")
    written.append(_save(plt, figure, Path(out_dir) / "gflops.png"))

    naive = _records(results, "forward", "naive")
    if naive:
        series = []
        for impl in ("direct", "gemm", "torch"):
            recs = _records(results, "forward", impl)
            speedups = {name: {"speedup": naive[name]["seconds"] / rec["seconds"]}
                        for name, rec in recs.items() if name in naive}
            if speedups:
                series.append((impl, speedups))
        figure, axis = plt.subplots(figsize=(4 + 0.9 * len(shape_names), 4.4))
        _grouped_bars(axis, shape_names, series, "speedup",
                      label_fmt=lambda v: f"{v:,.0f}×")
        axis.set_yscale("log")
        axis.set_ylabel("speed-up over naive Python loops (log scale)")
        axis.set_title(f"Forward pass: speed-up over the naive loops, {threads} thread(s)\n"
                       "(naive time estimated from a subsample, see benchmarks/README.md)",
                       fontsize=10)
        axis.tick_params(axis="x", labelrotation=30)
        axis.grid(axis="y", which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
        top = max([1.0] + [v["speedup"] for _, recs in series for v in recs.values()])
        axis.set_ylim(1, top * 8)
        written.append(_save(plt, figure, Path(out_dir) / "speedup.png"))
    return written
