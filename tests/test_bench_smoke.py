"""Smoke test of the benchmark machinery (benchmarks/): a seconds-long report on one tiny shape.

Timing numbers are not checked for speed (that is the benchmarks' job), only
that the report is complete, its numbers are positive and finite, and every
implementation agreed with the reference before it was timed.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from benchmarks import bounds, report, targets
from benchmarks.common import (
    TOLERANCE,
    DisagreementError,
    check_agreement,
    conv_function,
    load_shapes,
    make_inputs,
    measure_interleaved,
    torch_available,
)
from benchmarks.memory import measure_in_subprocess


def _section_rows(markdown: str, title: str) -> list[list[str]]:
    """The body rows of the first table under ``## title``, as lists of cell texts."""
    section = markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_shapes_file_has_the_benchmark_shapes():
    shapes = {shape.name: shape for shape in load_shapes()}
    assert list(shapes) == ["lenet1", "lenet2", "cifar1", "cifar2", "res56", "res_s2", "pw1x1",
                            "alex1"]
    alex = shapes["alex1"]
    assert (alex.out_h, alex.out_w) == (55, 55)
    assert alex.flops() == 2 * 8 * 64 * 3 * 11 * 11 * 55 * 55
    assert alex.flops("forward_backward") == 3 * alex.flops()
    with pytest.raises(ValueError, match="unknown shape"):
        load_shapes(["lenet9"])


def test_quick_report_on_one_tiny_shape(tmp_path):
    # One thread: the smoke run must not depend on what else the machine is doing.
    code = report.main(["--quick", "--shapes", "lenet1", "--batch", "2", "--budget", "0.02",
                        "--threads", "1", "--sgemm-size", "256", "--no-memory", "--no-training",
                        "--quiet", "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "report.json").read_text())
    markdown = (tmp_path / "report.md").read_text()

    impls = {"naive", "direct", "gemm"} | ({"torch"} if torch_available() else set())
    expected = {("forward", impl) for impl in impls}
    expected |= {("forward_backward", impl) for impl in impls - {"naive"}}
    records = results["convolutions"]
    assert {(r["pass"], r["impl"]) for r in records} == expected
    for record in records:
        assert record["shape"] == "lenet1" and record["batch"] == 2
        for key in ("seconds", "best_seconds", "gflops", "sgemm_fraction"):
            assert math.isfinite(record[key]) and record[key] > 0, (record, key)
        assert record["repeats"] >= 1
        assert record["max_rel_error"] <= TOLERANCE  # agreed with the reference before timing
    naive = next(r for r in records if r["impl"] == "naive")
    assert naive["scale"] == 2 * 20  # image 0, one output channel, of N=2, K=20
    assert results["sgemm"]["gflops"] > 0
    assert results["machine"]["cores"] >= 1 and results["machine"]["versions"]["numpy"]

    forward_rows = _section_rows(markdown, "Forward")
    assert len(forward_rows) == len(impls)
    assert all(row[0] == "lenet1" for row in forward_rows)
    assert len(_section_rows(markdown, "Forward+backward")) == len(impls) - 1
    assert results["machine"]["threads"] == 1
    assert "SGEMM 256³" in markdown and "| threads | 1 " in markdown

    # The stage profile: lenet1 runs the direct kernels (no GEMM), one worker = the batch.
    bounds = results["bounds"]
    assert [b["pass_name"] for b in bounds] == ["forward", "backward"]
    for bound in bounds:
        assert bound["algorithm"] == "direct" and bound["worker_images"] == 2
        assert bound["gemms"] is None and bound["gemm_flops"] == 0
        assert bound["cnnblas"] > 0 and bound["worker"] > 0
    assert [row[:3] for row in _section_rows(markdown, "Where the time goes (stage profile, "
                                                       "1 thread(s))")] == [
        ["lenet1", "forward", "direct"], ["lenet1", "backward", "direct"]]
    target_rows = _section_rows(markdown, "Targets, measured in this run")
    assert len(target_rows) == 5
    assert target_rows[3][2] == target_rows[4][2] == "not measured"  # --no-training, --no-memory
    charts = {"gflops.png", "speedup.png"}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        charts = set()
    for name in charts:
        assert (tmp_path / name).stat().st_size > 1000
        assert f"({name})" in markdown


def test_disagreement_is_caught_before_timing():
    shape = load_shapes(["lenet1"])[0].with_batch(1)
    inputs = make_inputs(shape)
    outputs = {impl: conv_function(impl, "forward", shape, inputs)() for impl in ("direct", "gemm")}
    broken = outputs["gemm"][0].copy()
    broken[0, 3, 5, 7] += np.float32(0.01) * np.abs(broken).max()
    with pytest.raises(DisagreementError, match="lenet1 forward: cnnblas y"):
        check_agreement(shape, "forward", {"direct": outputs["direct"], "gemm": (broken,)})


def test_memory_probe_in_a_subprocess():
    result = measure_in_subprocess("lenet1", "gemm", threads=1, batch=2)
    assert result["shape"] == "lenet1" and result["batch"] == 2
    assert result["output_mib"] > 0 and result["input_mib"] > 0
    assert result["peak_rss_mib"] >= 0
    # y, dx, dweight, dbias are all allocated during the pass, so NumPy saw at least them.
    assert result["tracemalloc_mib"] >= result["output_mib"]


def test_measure_interleaved_alternates_rounds(monkeypatch):
    """Every function runs in each round, in turn, until its share of the budget
    and of the minimum call count; the timings are built from its own calls.
    A fake clock makes every call take exactly its function's duration."""
    clock = [0.0]
    monkeypatch.setattr("benchmarks.common.time.perf_counter", lambda: clock[0])
    calls = []

    def function(name, seconds):
        def call():
            calls.append(name)
            clock[0] += seconds
        return call

    functions = {"a": function("a", 1.0), "b": function("b", 2.0), "c": function("c", 0.25)}
    # 3 rounds of 1.5 s each and ceil(4 / 3) = 2 calls at least: a runs 2 calls per
    # round, b 2 (the minimum count), c 6 (until its 1.5 s); the order rotates.
    timings = measure_interleaved(functions, budget=4.5, rounds=3, warmups=1, min_repeats=4)
    assert calls[:3] == ["a", "b", "c"]  # the warm-ups
    runs = {"a": ["a"] * 2, "b": ["b"] * 2, "c": ["c"] * 6}
    expected = [call for order in ("abc", "bca", "cab") for name in order for call in runs[name]]
    assert calls[3:] == expected
    assert {name: timing.repeats for name, timing in timings.items()} == {"a": 6, "b": 6, "c": 18}
    assert {name: timing.median for name, timing in timings.items()} == {"a": 1.0, "b": 2.0,
                                                                         "c": 0.25}


def test_measure_interleaved_caps_calls_per_round(monkeypatch):
    """max_repeats is spread over the rounds: a fast function cannot spend it all
    in the first round and leave the others untimed by comparison."""
    clock = [0.0]
    monkeypatch.setattr("benchmarks.common.time.perf_counter", lambda: clock[0])
    calls = []

    def fast(name):
        def call():
            calls.append(name)
            clock[0] += 0.001
        return call

    timings = measure_interleaved({"a": fast("a"), "b": fast("b")}, budget=10.0, rounds=5,
                                  warmups=0, min_repeats=3, max_repeats=20)
    assert calls == (["a"] * 4 + ["b"] * 4 + ["b"] * 4 + ["a"] * 4) * 2 + ["a"] * 4 + ["b"] * 4
    assert timings["a"].repeats == timings["b"].repeats == 20


def test_gemm_operands_count_the_algorithms_flops():
    shapes = {shape.name: shape for shape in load_shapes()}
    # The im2col GEMM does exactly the direct convolution's multiply-adds, grouped or not.
    for shape in (shapes["res_s2"], shapes["pw1x1"],
                  replace(shapes["pw1x1"], name="grouped", groups=4)):
        forward = bounds.gemm_operands(shape, "gemm", shape.batch, "forward")
        backward = bounds.gemm_operands(shape, "gemm", shape.batch, "backward")
        assert bounds.gemm_flops(forward) == shape.flops("forward")
        assert bounds.gemm_flops(backward) == 2 * shape.flops("forward")
    # F(4x4, 3x3) on cifar2 (32 x 64 x 16 x 16 -> 64): 36 products of (64 x 64)(64 x T),
    # T = 32 images * 4 tile rows * (4 + 1 junk) tiles.
    cifar2 = shapes["cifar2"]
    (a, b), = bounds.gemm_operands(cifar2, "winograd4x4", 32, "forward")
    assert a == (36, 64, 64) and b == (36, 64, 32 * 4 * 5)
    assert bounds.gemm_flops([(a, b)]) == 2 * 36 * 64 * 64 * 640
    # F(2x2, 3x3) unpadded: dW over the 14x14 output's tiles, dX over the 16x16 input's.
    unpadded = replace(cifar2, pad=0)
    (dw_a, dw_b), (dx_a, dx_b) = bounds.gemm_operands(unpadded, "winograd2x2", 32, "backward")
    assert dw_a == (16, 64, 32 * 7 * 8) and dw_b == (16, 32 * 7 * 8, 64)
    assert dx_a == (16, 64, 64) and dx_b == (16, 64, 32 * 8 * 9)
    assert bounds.gemm_operands(shapes["cifar1"], "direct", 32, "forward") == []


def _fake_results(ratios, forward_fractions, step_ms, memory_mib):
    records = [dict(shape=name, impl="gemm", time_vs_torch=ratio,
                    sgemm_fraction=None, **{"pass": "forward_backward"})
               for name, ratio in ratios.items()]
    records += [dict(shape=name, impl="gemm", time_vs_torch=None, sgemm_fraction=fraction,
                     **{"pass": "forward"}) for name, fraction in forward_fractions.items()]
    return dict(convolutions=records,
                training=dict(results=[dict(impl="gemm", seconds=step_ms[0] / 1e3),
                                       dict(impl="torch", seconds=step_ms[1] / 1e3)]),
                memory_target=[dict(impl="gemm", peak_rss_mib=memory_mib[0]),
                               dict(impl="torch", peak_rss_mib=memory_mib[1])])


def test_targets_are_evaluated_from_the_results():
    results = _fake_results({"lenet1": 0.5, "res_s2": 1.25}, {"res56": 1.4, "res_s2": 0.7},
                            (3.0, 3.3), (60.0, 120.0))
    every_shape, mean, sgemm, step, memory = targets.evaluate(results)
    assert every_shape["met"] is False and every_shape["gaps"] == ["res_s2"]
    assert every_shape["measured"] == "lenet1 0.50, res_s2 1.25"
    assert mean["measured"] == "0.79" and mean["met"] is True  # sqrt(0.5 * 1.25) = 0.79
    assert mean["gaps"] == ["res_s2"]  # the shapes above 0.8
    assert sgemm["met"] is False and sgemm["gaps"] == ["res_s2"]
    assert step["met"] is True and memory["met"] is True
    slower = targets.evaluate(_fake_results({"a": 0.9}, {}, (3.4, 3.3), (130.0, 120.0)))
    assert [t["met"] for t in slower] == [True, False, None, False, False]


def test_targets_section_explains_each_gap_without_pytorch_too():
    results = _fake_results({"res_s2": 1.2}, {"res_s2": 0.7}, (3.0, 3.3), (60.0, 120.0))
    results.update(sgemm=dict(gflops=400.0), machine=dict(threads=2), bounds=[
        dict(shape="res_s2", pass_name="forward", algorithm="gemm", worker_images=4,
             gemm_flops=4e8, cnnblas=3e-3, torch=None, worker=2.5e-3, gemms=2e-3)])
    markdown = report._targets_section(results)
    # 4e8 flops in 2 ms = 200 GFLOP/s, 100 % of 400 / 2 threads; other 0.5 ms, split 0.5 ms.
    assert ("res_s2 forward (gemm): cnnblas 3.00 ms vs PyTorch — ms; one worker's 4 images on "
            "one thread 2.50 ms, of which GEMMs 2.00 ms (at 200 GFLOP/s = 100% of the SGEMM "
            "rate / threads) and other stages 0.500 ms; split cost 0.500 ms.") in markdown
    results["bounds"][0]["torch"] = 2.5e-3
    assert "(80% of PyTorch's whole pass, at 200 GFLOP/s" in report._targets_section(results)


def test_mpi_scaling_worker_trains_as_the_command_line_does(capsys):
    """One process of the scaling benchmark: the same setup as ``cnnblas train``."""
    from benchmarks import mpi_scaling

    mpi_scaling.worker(batch_size=64, threads=1, epochs=1)
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["ranks"] == 1 and record["threads"] == 1 and record["batch_size"] == 64
    assert record["images_per_second"] > 0 and 0 <= record["accuracy"] <= 1
