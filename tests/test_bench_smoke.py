"""Smoke test of the benchmark machinery (benchmarks/): a seconds-long report on one tiny shape.

Timing numbers are not checked for speed (that is the benchmarks' job), only
that the report is complete, its numbers are positive and finite, and every
implementation agreed with the reference before it was timed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest

import cnnblas
from benchmarks import (
    bounds,
    netmodels,
    netprofile,
    netreport,
    networker,
    networks,
    report,
    targets,
)
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
from benchmarks.netmodels import NETWORKS


def _section_rows(markdown: str, title: str) -> list[list[str]]:
    """The body rows of the first table under ``## title``, as lists of cell texts."""
    section = markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    table = section.strip().split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("|")][2:]
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
                        "--threads", "1", "--sgemm-size", "256", "--no-memory", "--no-networks",
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
    assert len(target_rows) == 4 + len(targets.NETWORK_TARGETS) + 1
    # --no-memory, --no-networks
    assert [row[2] for row in target_rows[3:]] == ["not measured"] * (len(target_rows) - 3)
    assert "## Whole networks" not in markdown
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


def _fake_results(ratios, forward_fractions, step_ms, memory_mib, speedup=1.7):
    """Results with the given layer ratios, forward SGEMM fractions, ResNet-20
    (cnnblas, PyTorch) step ms (every other network row at ratio 0.5), memory
    and 2-thread speed-up."""
    records = [dict(shape=name, impl="gemm", time_vs_torch=ratio,
                    sgemm_fraction=None, **{"pass": "forward_backward"})
               for name, ratio in ratios.items()]
    records += [dict(shape=name, impl="gemm", time_vs_torch=None, sgemm_fraction=fraction,
                     **{"pass": "forward"}) for name, fraction in forward_fractions.items()]
    rows = []
    for network, kind in targets.NETWORK_TARGETS:
        ours, theirs = step_ms if (network, kind) == ("resnet20", "step") else (1.0, 2.0)
        rows.append(dict(network=network, kind=kind,
                         seconds=dict(cnnblas=ours / 1e3, torch=theirs / 1e3),
                         ratio_to_torch=dict(cnnblas=ours / theirs)))
    return dict(convolutions=records,
                networks=dict(rows=rows, scaling=dict(threads=2, speedup=speedup)),
                memory_target=[dict(impl="gemm", peak_rss_mib=memory_mib[0]),
                               dict(impl="torch", peak_rss_mib=memory_mib[1])])


def test_targets_are_evaluated_from_the_results():
    results = _fake_results({"lenet1": 0.5, "res_s2": 1.25}, {"res56": 1.4, "res_s2": 0.7},
                            (240.0, 330.0), (60.0, 120.0))
    every_shape, mean, sgemm, memory, resnet_step, *others, scaling = targets.evaluate(results)
    assert every_shape["met"] is False and every_shape["gaps"] == ["res_s2"]
    assert every_shape["measured"] == "lenet1 0.50, res_s2 1.25"
    assert mean["measured"] == "0.79" and mean["met"] is True  # sqrt(0.5 * 1.25) = 0.79
    assert mean["gaps"] == ["res_s2"]  # the shapes above 0.8
    assert sgemm["met"] is False and sgemm["gaps"] == ["res_s2"]
    assert memory["met"] is True
    assert resnet_step["name"] == "ResNet-20 training step ≤ 0.8× PyTorch"
    assert resnet_step["measured"] == "240 vs 330 ms (0.73)" and resnet_step["met"] is True
    assert [t["met"] for t in others] == [True] * 3 and scaling["met"] is True
    slower = targets.evaluate(_fake_results({"a": 0.9}, {}, (270.0, 330.0), (130.0, 120.0),
                                            speedup=1.5))
    assert [t["met"] for t in slower] == [True, False, None, False, False, True, True, True,
                                          False]
    assert all(t["met"] is None for t in targets.evaluate(dict(convolutions=[]))[4:])


def test_targets_section_explains_each_gap_without_pytorch_too():
    results = _fake_results({"res_s2": 1.2}, {"res_s2": 0.7}, (300.0, 330.0), (60.0, 120.0))
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


# --------------------------------------------------------------------------- whole networks

def test_networks_section_at_tiny_settings(tmp_path, monkeypatch):
    """The report's whole-network section end to end (each engine in its own process)
    at batch 2, one round, a few steps; PyTorch's and onnxruntime's parts only
    where they are installed. The scaling run is left out (it has its own test)."""
    monkeypatch.setattr(networks, "MNIST5K", tmp_path / "no-mnist")
    code = report.main(["--networks-only", "--quick", "--batch", "2", "--rounds", "1",
                        "--budget", "0.005", "--threads", "1", "--sgemm-size", "128",
                        "--quiet", "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "report.json").read_text())
    markdown = (tmp_path / "report.md").read_text()
    assert results["convolutions"] == [] and results["memory"] == []
    whole = results["networks"]
    engines = whole["engines"]
    assert engines[0] == "cnnblas" and ("torch" in engines) == torch_available()
    assert [(row["network"], row["kind"]) for row in whole["rows"]] == list(networks.ROWS)
    for row in whole["rows"]:
        assert row["batch"] == (2 if row["kind"] == "step" else 1)
        expected = {e for e in engines if row["kind"] == "predict" or e != "onnxruntime"}
        assert set(row["seconds"]) == expected
        assert all(math.isfinite(s) and s > 0 for s in row["seconds"].values())
        assert set(row["ratio_to_torch"]) == (expected - {"torch"} if "torch" in engines
                                              else set())
    # Checked against PyTorch (or onnxruntime against cnnblas) before timing.
    assert all(error <= networks.TOLERANCE for error in whole["max_rel_error"].values())
    resnet_step = whole["rows"][1]
    assert resnet_step["flops"] == whole["flops"]["resnet20"]["step"]
    assert 0 < resnet_step["sgemm_fraction"]["cnnblas"]
    assert whole["scaling"] is None and "*Second core*: not measured" in markdown

    profile = whole["profiles"]["resnet20"]
    assert profile["calls"]["Conv2d forward (direct)"] == 1  # the 3 -> 16 stem
    assert sum(v for k, v in profile["calls"].items() if k.startswith("Conv2d forward")) == 21
    # Plain or fused by the blocks and the stem (a plain backward calls the fused
    # one, so those count twice): at least one call per BatchNorm layer.
    assert profile["calls"]["BatchNorm2d backward"] >= 21
    assert profile["calls"]["BasicBlock own code"] == 18  # 9 blocks, forward and backward
    assert all(seconds >= 0 for seconds in profile["seconds"].values())
    wrapped_mean = sum(profile["wrapped"]["times"]) / len(profile["wrapped"]["times"])
    assert sum(profile["seconds"].values()) <= wrapped_mean
    lenet = whole["profiles"]["lenet5"]  # 2 convolutions, 3 linear layers, 4 ReLUs
    assert sum(v for k, v in lenet["calls"].items() if k.startswith("Conv2d forward")) == 2
    assert (lenet["calls"]["Linear forward"], lenet["calls"]["Linear backward"]) == (3, 3)
    assert (lenet["calls"]["ReLU forward"], lenet["calls"]["MaxPool2d forward"]) == (4, 2)
    assert not any(k.endswith("own code") for k in lenet["calls"])  # the root is not wrapped

    # ResNet-20's 3x3 stride-1 layers, which auto runs with F(4x4): 6 on 16 channels at
    # 32x32, 5 on 32 at 16x16 (the stage's first conv has stride 2), 5 on 64 at 8x8.
    stages = whole["winograd_stages"]
    assert {tuple(layer["x_shape"]): layer["layers"] for layer in stages["layers"]} == {
        (2, 16, 32, 32): 6, (2, 32, 16, 16): 5, (2, 64, 8, 8): 5}
    for layer in stages["layers"]:
        assert layer["forward"]["stages"]["gradient transform"] == 0  # backward only
        assert layer["backward"]["stages"]["gradient transform"] > 0
        assert all(layer[p]["stages"][s] > 0 for p in ("forward", "backward")
                   for s in ("input transform", "output transform", "GEMMs"))
    assert "### ResNet-20's Winograd F(4×4) convolutions by stage" in markdown

    rows = _section_rows(markdown, "Whole networks (1 thread(s))")
    assert [row[0] for row in rows] == ["LeNet-5 training step", "ResNet-20 training step",
                                        "LeNet-5 one-image prediction (eval)",
                                        "ResNet-20 one-image prediction (eval)"]
    assert "### Where the ResNet-20 step's time goes (cnnblas, batch 2)" in markdown
    assert "### Where the LeNet-5 step's time goes (cnnblas, batch 2)" in markdown
    assert "### Where the ResNet-20 one-image prediction's time goes (cnnblas, eval mode)" \
        in markdown
    predict = whole["predict_profiles"]["resnet20"]  # eval mode: forwards only
    assert sum(v for k, v in predict["calls"].items() if k.startswith("Conv2d forward")) == 21
    assert not any("backward" in k or k in ("loss", "optimizer (zero_grad, step)")
                   for k in predict["calls"])
    target_rows = _section_rows(markdown, "Targets, measured in this run")
    measured = [row[2] != "not measured" for row in target_rows[4:]]
    assert measured == [torch_available()] * len(targets.NETWORK_TARGETS) + [False]
    readme = netreport.readme_table(results)
    assert readme.startswith("| whole network | cnnblas ms | PyTorch ms |")
    assert "ResNet-20 training step, batch 2" in readme


def test_network_flops_count_every_layer():
    from cnnblas import nn

    lenet = netmodels.network_flops(netmodels.cnnblas_lenet5(), NETWORKS["lenet5"], 4)
    forward = 2 * 4 * (6 * 25 * 28 * 28 + 16 * 150 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10)
    assert lenet == dict(forward=forward, step=3 * forward, layers=5)
    resnet = netmodels.network_flops(nn.resnet20(rng=0), NETWORKS["resnet20"], 1)
    stem = 2 * 16 * 27 * 32 * 32  # input_grad=False: forward and weight gradient only
    assert resnet["layers"] == 19 + 2 + 1  # 3x3 convolutions, shortcuts, fc
    assert resnet["step"] == 3 * resnet["forward"] - stem


def _write_dumps(workdir, network, wrong=None, loss=2.0):
    """The initial weights of ``network`` and two engines' round-0 step dumps, each
    entry changed by 0.01, except ``wrong`` in torch's by 0.0101."""
    model = netmodels.cnnblas_model(network, rng=0)
    state = model.state_dict()
    netmodels.save_state(model, workdir / f"{network}.npz")
    ours = {key: value + 0.01 if value.dtype.kind == "f" else value
            for key, value in state.items()}
    theirs = dict(ours)
    if wrong is not None:
        theirs[wrong] = state[wrong] + 0.0101
    np.savez(workdir / f"cnnblas-r0-{network}-step.npz", loss=loss, **ours)
    np.savez(workdir / f"torch-r0-{network}-step.npz", loss=loss, **theirs)


def test_a_network_disagreement_stops_before_timing(tmp_path, monkeypatch):
    monkeypatch.setattr(networks, "ROWS", (("lenet5", "step"),))
    _write_dumps(tmp_path, "lenet5")
    assert networks.check_round(tmp_path, 0, ["cnnblas", "torch"]) == {"step:lenet5": 0.0}
    # A 1 % different update is a wrong gradient, though the weights differ by 1e-4.
    _write_dumps(tmp_path, "lenet5", wrong="3.weight")
    with pytest.raises(DisagreementError, match=r"LeNet-5 training step: cnnblas and "
                                                r"PyTorch differ in the change of 3.weight"):
        networks.check_round(tmp_path, 0, ["cnnblas", "torch"])


def test_layer_profiler_charges_own_time_and_restores_the_model():
    from cnnblas import nn

    model = nn.resnet_cifar(8, rng=0)
    images, labels = netmodels.make_batch(NETWORKS["resnet20"], 2)
    step = netmodels.cnnblas_training_step(NETWORKS["resnet20"], model, images, labels)
    profiler = netprofile.LayerProfiler(model, step.criterion, step.optimizer)
    start = time.perf_counter()
    step()
    elapsed = time.perf_counter() - start
    # resnet8: stem, 3 blocks of 2 convolutions, 2 shortcuts; the stem runs the direct
    # kernels, the 16 -> 16 blocks Winograd, the strided ones the GEMM.
    assert profiler.calls["Conv2d forward (direct)"] == 1
    assert profiler.calls["Conv2d backward (winograd4x4)"] == 2 + 2
    assert profiler.calls["Conv2d forward (gemm)"] == 2 + 2
    assert profiler.calls["optimizer (zero_grad, step)"] == 2
    assert profiler.calls["BasicBlock own code"] == 6 and profiler.calls["loss"] == 2
    assert 0 < sum(profiler.seconds.values()) <= elapsed
    assert netprofile.group_of("Conv2d backward (gemm)") == "convolutions"
    profiler.remove()
    assert all("forward" not in vars(module) for module in model.modules())
    assert "step" not in vars(step.optimizer)
    assert 0 <= netprofile.wrapper_cost(1000) < 1e-3


@pytest.mark.skipif(not networks.MNIST5K.is_dir(), reason="mnist5k not found")
def test_mnist_scaling_worker_trains_on_mnist5k():
    task = dict(kind="mnist", network="lenet5", data=str(networks.MNIST5K), seed=0, batch=16,
                steps=3, warmups=1)
    result = networker.run_mnist(networker.CnnblasEngine(1), task, None, "test")
    assert result["steps"] == 3 and result["seconds"] > 0
    assert math.isfinite(result["last_loss"]) and result["first_loss"] > 0


def test_networks_only_writes_beside_the_full_report(capsys):
    assert report.parse_args(["--networks-only"]).out == report.DEFAULT_NETWORKS_OUT
    assert report.parse_args([]).out == report.DEFAULT_OUT
    with pytest.raises(SystemExit):
        report.parse_args(["--networks-only", "--no-networks"])
    assert "exclude each other" in capsys.readouterr().err


def test_second_core_table_names_each_configuration():
    scaling = dict(threads=2, steps=10, batch=64, warmups=1, default="processes:2x1",
                   configurations=["processes:2x1", "1x2", "1x1", "2x1"],
                   seconds={"processes:2x1": 0.45, "1x2": 0.5, "1x1": 0.8, "2x1": 0.4},
                   allreduce_seconds={"processes:2x1": 0.0004, "2x1": 0.0008},
                   speedups={"processes:2x1": [1.7, 1.9], "1x2": [1.5, 1.7], "1x1": [1.0, 1.0],
                             "2x1": [2.0, 2.2]},
                   speedup=1.8)
    text = netreport._scaling_text(scaling)
    # ms per step outside the Allreduce: (0.45 - 0.0004) / 10 s = 44.96 ms, and so on.
    assert ("| `cnnblas train` default: 2 processes × 1 thread | 0.45 | 1,422 | 45.0 | 40 µs | "
            "**1.80** | 1.70, 1.90 |") in text
    assert "| 1 process × 2 threads | 0.50 | 1,280 | 50.0 | — | 1.60 | 1.50, 1.70 |" in text
    assert "| 2 MPI ranks × 1 thread | 0.40 | 1,600 | 39.9 | 80 µs | 2.10 | 2.00, 2.20 |" in text
    # Without the Allreduce: 0.8 / 0.4496 = 1.78x; a process's share 0.4496 / 0.8 = 56 %.
    assert "the default would run 1.78× faster than one thread" in text
    assert "spends 56% of one thread's time per step on 1/2 of the batch" in text


def test_winograd_stage_timers_leave_the_module_as_they_found_it():
    from collections import defaultdict

    from benchmarks import winograd_stages
    from cnnblas.ops import winograd

    before = (winograd.VARIANTS[4], winograd.np, winograd.all_finite)
    seconds = defaultdict(float)
    x = np.ones((1, 8, 8, 8), np.float32)
    w = np.ones((8, 8, 3, 3), np.float32)
    expected = cnnblas.conv2d(x, w, padding=1, algorithm="winograd4x4")
    with winograd_stages.stage_timers(seconds):
        timed = cnnblas.conv2d(x, w, padding=1, algorithm="winograd4x4")
    assert (winograd.VARIANTS[4], winograd.np, winograd.all_finite) == before
    np.testing.assert_array_equal(timed, expected)
    assert {"input transform", "output transform", "GEMMs", "non-finite checks"} <= set(seconds)


def test_winograd_stage_table_sums_each_shape_over_its_layers():
    """Per step = each shape's stage times times its layer count; shares of the whole."""
    def passes(seconds, stages, flops):
        return dict(seconds=seconds, stages=stages, gemm_flops=flops)

    forward = {"input transform": 1e-3, "gradient transform": 0.0, "output transform": 5e-4,
               "GEMMs": 1e-3, "non-finite checks": 1e-4, "rest": 4e-4}
    backward = {"input transform": 2e-3, "gradient transform": 1e-3, "output transform": 5e-4,
                "GEMMs": 2e-3, "non-finite checks": 2e-4, "rest": 3e-4}
    stages = dict(batch=8, layers=[dict(x_shape=[8, 16, 32, 32], w_shape=[16, 16, 3, 3],
                                        layers=2, forward=passes(3e-3, forward, 1e8),
                                        backward=passes(6e-3, backward, 2e8))])
    text = netreport._stages_text(stages, sgemm_gflops=200.0, threads=2)
    # Whole: 2 x (3 + 6) = 18 ms; input transform 2 x 1 + 2 x 2 = 6 ms = 33 %.
    assert "| input transform | 2.00 | 4.00 | 6.00 | 33% |" in text
    assert "| gradient transform | 0.000 | 2.00 | 2.00 | 11% |" in text
    assert "| whole calls | 6.00 | 12.0 | 18.0 | 100% |" in text
    # Transforms 6 + 2 + 2 = 10 ms (56 %), GEMMs 6 ms (33 %) at 2 x 3e8 / 6e-3 s = 100
    # GFLOP/s, the SGEMM rate per thread being 100.
    assert "The transforms take 56% of these convolutions' one-thread time and the GEMMs " \
           "33%, at 100 GFLOP/s = 100% of this run's SGEMM rate per thread (100)" in text
    assert "outweigh the products" in text and "(8, 16, 32, 32) × 2 layers" in text


def test_the_second_core_runs_the_command_lines_default():
    """On 2 cores cnnblas train's default for batch 64 is 2 processes of 1 thread."""
    assert networks.default_configuration(2) == (2, 1)
    assert networks.default_configuration(1) == (1, 1)
    assert networks.scaling_configurations(2)[:3] == [("processes", 2, 1), ("mpi", 1, 2),
                                                       ("mpi", 1, 1)]
