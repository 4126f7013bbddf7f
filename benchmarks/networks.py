"""Whole networks, as a user runs them: training steps and one-image predictions.

The report's *Whole networks* section (:func:`run`, :mod:`benchmarks.netreport`):

- the training step of LeNet-5 (batch 64) and ResNet-20 (batch 128) and the
  eval-mode one-image prediction of both (:mod:`benchmarks.netmodels`), in
  cnnblas, PyTorch and (predictions only) onnxruntime on the models
  exported by :mod:`cnnblas.onnx`;
- a per-layer-type profile of both training steps and one-image
  predictions in cnnblas (:mod:`benchmarks.netprofile`), and ResNet-20's Winograd convolutions
  stage by stage on one thread (:mod:`benchmarks.winograd_stages`);
- LeNet-5 trained on mnist5k for a fixed number of steps in several
  configurations against one thread: ``cnnblas train``'s default on the
  run's cores (one process per core, :mod:`cnnblas.cli.processes`, started
  and connected by the same code as the command line), every thread in one
  process, and MPI ranks (the second core's speed-up).

Each engine runs in a process of its own (:mod:`benchmarks.networker`),
the engines alternating in rounds whose order rotates; every process starts
from the same initial weights (cnnblas's ``state_dict`` in an ``.npz``). The
first step / prediction of every process is dumped and checked against
PyTorch's of the same round before its times count, else
:class:`~benchmarks.common.DisagreementError`: the loss and the logits to
:data:`TOLERANCE` (``max|a - b| / max|b|``), and the change of every
parameter and buffer in the step (not the weights themselves, under which a
wrong gradient would hide) to the network's ``step_tolerance``
(``||a - b|| / ||b||``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from benchmarks import netmodels
from benchmarks.common import REPO_DIR, DisagreementError, relative_error
from benchmarks.mpi_scaling import find_mpiexec, launch
from benchmarks.netmodels import NETWORKS

#: Largest relative difference of the losses and of the logits of two engines:
#: looser than one convolution's 1e-4, as a network chains up to 20 layers.
TOLERANCE = 1e-3
MNIST5K = (REPO_DIR / ".." / "shared" / "data" / "mnist5k").resolve()
#: The measured rows: (network, kind) with kind "step" (training) or "predict" (batch 1).
ROWS = (("lenet5", "step"), ("resnet20", "step"), ("lenet5", "predict"),
        ("resnet20", "predict"))
#: The networks whose cnnblas training step and one-image prediction are profiled by
#: layer type (last round).
PROFILED = ("resnet20", "lenet5")
ENGINES = ("cnnblas", "torch", "onnxruntime")
ENGINE_LABELS = {"cnnblas": "cnnblas", "torch": "PyTorch", "onnxruntime": "onnxruntime"}


@dataclass(frozen=True)
class Settings:
    """How long each measurement runs (seconds per engine per round, minimum calls)."""

    rounds: int = 5
    # network -> seconds of timed training steps per round
    step_budget: dict = field(default_factory=lambda: {"lenet5": 0.8, "resnet20": 2.5})
    predict_budget: float = 0.4
    min_calls: int = 3
    warmups: int = 2
    # network -> profiled steps (LeNet-5's step is short: more of them for a stable mean)
    profile_steps: dict = field(default_factory=lambda: {"resnet20": 3, "lenet5": 40})
    stage_repeats: int = 5  # calls per pass and shape in the Winograd stage profile
    predict_profile_calls: int = 200  # one-image predictions profiled per network
    mnist_steps: int = 300
    mnist_rounds: int = 3
    mnist_warmups: int = 10
    batch: int | None = None  # overrides both networks' training batch (smoke tests)

    def budget(self, network: str, kind: str) -> float:
        if kind == "predict":
            return self.predict_budget
        return self.step_budget[network]


FULL = Settings()
QUICK = Settings(rounds=2, step_budget={"lenet5": 0.15, "resnet20": 0.5}, predict_budget=0.1,
                 min_calls=2, warmups=1, profile_steps={"resnet20": 1, "lenet5": 3},
                 stage_repeats=1, predict_profile_calls=5, mnist_steps=40, mnist_rounds=1,
                 mnist_warmups=3)


def configure(quick: bool = False, *, rounds: int | None = None, budget_scale: float = 1.0,
              batch: int | None = None) -> Settings:
    """:data:`FULL` or :data:`QUICK`, with ``rounds``, the time budgets and the step
    count of the scaling run times ``budget_scale`` (at least 2 steps), and ``batch``."""
    base = QUICK if quick else FULL
    return replace(
        base, rounds=rounds or base.rounds,
        step_budget={name: seconds * budget_scale for name, seconds in base.step_budget.items()},
        predict_budget=base.predict_budget * budget_scale,
        mnist_steps=max(2, round(base.mnist_steps * budget_scale)),
        mnist_rounds=min(base.mnist_rounds, rounds or base.mnist_rounds), batch=batch)


def available_engines() -> list[str]:
    """cnnblas, plus PyTorch and onnxruntime (with onnx) when installed."""
    engines = ["cnnblas"]
    if find_spec("torch") is not None:
        engines.append("torch")
    if find_spec("onnxruntime") is not None and find_spec("onnx") is not None:
        engines.append("onnxruntime")
    return engines


def _tasks(engine: str, settings: Settings, profile: bool) -> list[dict]:
    tasks = []
    for network, kind in ROWS:
        if engine == "onnxruntime" and kind == "step":
            continue
        batch = 1 if kind == "predict" else settings.batch or NETWORKS[network].batch
        tasks.append(dict(kind=kind, network=network, batch=batch,
                          budget=settings.budget(network, kind), min_steps=settings.min_calls,
                          warmups=settings.warmups))
    if profile:
        for network in PROFILED:
            tasks.append(dict(kind="profile", network=network,
                              batch=settings.batch or NETWORKS[network].batch,
                              steps=settings.profile_steps[network], warmups=settings.warmups))
            tasks.append(dict(kind="predict_profile", network=network, batch=1,
                              steps=settings.predict_profile_calls, warmups=settings.warmups))
        tasks.append(dict(kind="stages", network="resnet20",
                          batch=settings.batch or NETWORKS["resnet20"].batch,
                          repeats=settings.stage_repeats))
    return tasks


def run_worker(engine: str, threads: int, workdir: Path, round_index: int,
               tasks: list[dict], ranks: int = 1, launcher: str = "mpi") -> dict:
    """Run :mod:`benchmarks.networker` for ``engine`` in a fresh process: ``ranks`` ranks
    of ``threads`` threads each when ``ranks`` > 1, started by ``mpiexec`` (``launcher``
    "mpi") or by cnnblas's own launcher as ``cnnblas train`` does ("processes"); its JSON."""
    spec = workdir / f"spec-{engine}-{round_index}-{launcher}{ranks}x{threads}.json"
    processes = ranks if launcher == "processes" else 1
    spec.write_text(json.dumps(dict(engine=engine, threads=threads, workdir=str(workdir),
                                    round=round_index, tasks=tasks, processes=processes)))
    command, env = launch([sys.executable, "-m", "benchmarks.networker", str(spec)],
                          ranks if launcher == "mpi" else 1)
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_DIR,
                            timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.networker ({engine}, round {round_index}) failed:\n"
                           f"{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def prepare(workdir: Path, engines: list[str], settings: Settings) -> dict:
    """Initial weights (and ONNX files) of both networks in ``workdir``; their flops."""
    flops = {}
    for name, network in NETWORKS.items():
        model = netmodels.cnnblas_model(name, rng=0)
        netmodels.save_state(model, workdir / f"{name}.npz")
        batch = settings.batch or network.batch
        flops[name] = dict(netmodels.network_flops(model, network, batch), batch=batch)
        if "onnxruntime" in engines:
            from cnnblas import onnx as cnnblas_onnx

            cnnblas_onnx.export(model, workdir / f"{name}.onnx", network.input_shape)
    return flops


# --------------------------------------------------------------------------- checks

def check_round(workdir: Path, round_index: int, engines: list[str]) -> dict[str, float]:
    """Compare this round's dumps with PyTorch's (or, without PyTorch, onnxruntime's
    logits with cnnblas's); the worst relative difference per row.

    Raises :class:`DisagreementError` beyond the tolerances (module docstring).
    """
    errors: dict[str, float] = {}
    reference = "torch" if "torch" in engines else "cnnblas"
    for network, kind in ROWS:
        label = f"{NETWORKS[network].label} {'training step' if kind == 'step' else 'prediction'}"
        worst = 0.0
        for engine in engines:
            if engine == reference or (kind == "step" and engine == "onnxruntime"):
                continue
            if kind == "step":
                error, where, tolerance = _step_error(workdir, network, round_index, engine,
                                                      reference)
            else:
                error, where = _predict_error(workdir, network, round_index, engine, reference)
                tolerance = TOLERANCE
            if not error <= tolerance:
                raise DisagreementError(
                    f"{label}: {ENGINE_LABELS[engine]} and {ENGINE_LABELS[reference]} differ in "
                    f"{where} by {error:.3g} (relative; tolerance {tolerance:g}), round "
                    f"{round_index + 1}")
            worst = max(worst, error)
        if len(engines) > 1:
            errors[f"{kind}:{network}"] = worst
    return errors


def _dump(workdir: Path, engine: str, round_index: int, network: str, kind: str):
    stem = workdir / f"{engine}-r{round_index}-{network}-{kind}"
    if kind == "predict":
        return np.load(stem.with_suffix(".npy"))
    return netmodels.load_state(stem.with_suffix(".npz"))


def _step_error(workdir, network, round_index, engine, reference
                ) -> tuple[float, str, float]:
    """(error, where, tolerance) of the worst of: the loss, and every entry's change in
    one step, each as a fraction of its tolerance."""
    initial = netmodels.load_state(workdir / f"{network}.npz")
    ours = _dump(workdir, engine, round_index, network, "step")
    theirs = _dump(workdir, reference, round_index, network, "step")
    step_tolerance = NETWORKS[network].step_tolerance
    errors = {"the loss": (relative_error(ours["loss"], theirs["loss"]), TOLERANCE)}
    for key, start in initial.items():
        if key not in ours or key not in theirs:
            errors[f"{key} (missing)"] = (float("inf"), step_tolerance)
        elif np.issubdtype(start.dtype, np.integer):
            equal = np.array_equal(ours[key], theirs[key])
            errors[key] = (0.0 if equal else float("inf"), step_tolerance)
        else:
            change = _norm_error(ours[key].astype(np.float64) - start,
                                 theirs[key].astype(np.float64) - start)
            errors[f"the change of {key}"] = (change, step_tolerance)
    worst = max(errors, key=lambda key: errors[key][0] / errors[key][1])
    return errors[worst][0], worst, errors[worst][1]


def _norm_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """||actual - expected|| / ||expected|| (0 when both are 0)."""
    scale = np.linalg.norm(expected)
    difference = np.linalg.norm(actual - expected)
    return float(difference / scale) if scale > 0 else (0.0 if difference == 0 else np.inf)


def _predict_error(workdir, network, round_index, engine, reference) -> tuple[float, str]:
    ours = _dump(workdir, engine, round_index, network, "predict")
    theirs = _dump(workdir, reference, round_index, network, "predict")
    return relative_error(ours, theirs), "the logits"


# --------------------------------------------------------------------------- driver

def run(threads: int, settings: Settings = FULL, *, sgemm_gflops: float | None = None,
        engines: list[str] | None = None, mnist: Path | None = None,
        progress=None) -> dict:
    """Measure the section; the JSON-ready results (see :mod:`benchmarks.netreport`).

    ``mnist`` is the mnist5k directory (default :data:`MNIST5K`); the
    scaling run is skipped when it does not exist or ``threads`` is 1.
    ``progress`` (optional) has ``start(text)`` and ``done()``, called around
    each process (:func:`steps` of them).
    """
    engines = engines or available_engines()
    mnist = _mnist_dir(mnist)
    with tempfile.TemporaryDirectory(prefix="cnnblas-networks-") as tmp:
        workdir = Path(tmp)
        _note(progress, "networks: initial weights")
        flops = prepare(workdir, engines, settings)
        _note(progress)
        rounds, errors = [], {}
        for round_index in range(settings.rounds):
            first = round_index % len(engines)
            outputs = {}
            for engine in engines[first:] + engines[:first]:
                profile = engine == "cnnblas" and round_index == settings.rounds - 1
                _note(progress, f"networks round {round_index + 1}/{settings.rounds}: "
                                f"{ENGINE_LABELS[engine]}")
                outputs[engine] = run_worker(engine, threads, workdir, round_index,
                                             _tasks(engine, settings, profile))
                _note(progress)
            for key, error in check_round(workdir, round_index, engines).items():
                errors[key] = max(errors.get(key, 0.0), error)
            rounds.append(outputs)
        scaling = (_scaling(threads, settings, workdir, mnist, progress)
                   if mnist and threads > 1 else None)
    last = rounds[-1]["cnnblas"]["results"]
    profiles = {network: last.pop(f"profile:{network}") for network in PROFILED}
    predict_profiles = {network: last.pop(f"predict_profile:{network}") for network in PROFILED}
    stages = last.pop("stages:resnet20")
    return dict(threads=threads, engines=engines, settings=_settings_json(settings),
                tolerance=TOLERANCE, max_rel_error=errors, flops=flops,
                sgemm_gflops=sgemm_gflops, rows=summarize(rounds, engines, flops, sgemm_gflops),
                profiles=profiles, predict_profiles=predict_profiles, winograd_stages=stages,
                scaling=scaling)


def steps(settings: Settings, engines: list[str], threads: int, mnist: Path | None = None
          ) -> int:
    """How many ``progress.done()`` calls :func:`run` makes."""
    scaling = (len(scaling_configurations(threads)) * settings.mnist_rounds
               if _mnist_dir(mnist) and threads > 1 else 0)
    return 1 + settings.rounds * len(engines) + scaling


def _mnist_dir(mnist: Path | None) -> Path | None:
    """``mnist`` (default :data:`MNIST5K`) if it is a directory, else None."""
    mnist = Path(MNIST5K if mnist is None else mnist)
    return mnist if mnist.is_dir() else None


def _note(progress, text: str | None = None) -> None:
    if progress is None:
        return
    if text is None:
        progress.done()
    else:
        progress.start(text)


def _settings_json(settings: Settings) -> dict:
    return {key: getattr(settings, key) for key in settings.__dataclass_fields__}


#: The global batch of the second-core run.
SCALING_BATCH = 64


def default_configuration(threads: int) -> tuple[int, int]:
    """(processes, threads per process) that ``cnnblas train`` chooses by default on
    ``threads`` cores for the global batch :data:`SCALING_BATCH`."""
    from cnnblas.cli.processes import auto_processes

    count, _ = auto_processes(threads, SCALING_BATCH)
    return count, max(1, threads // count)


def scaling_configurations(threads: int) -> list[tuple[str, int, int]]:
    """(launcher, ranks, threads per rank) of the second-core run: ``cnnblas train``'s
    default (launcher "processes" when it starts several processes), every thread in one
    process, one thread, and, with mpi4py and mpiexec, ``threads`` MPI ranks of one
    thread."""
    configurations = [("mpi", 1, threads), ("mpi", 1, 1)]
    count, per_process = default_configuration(threads)
    if count > 1:
        configurations.insert(0, ("processes", count, per_process))
    if find_spec("mpi4py") is not None and find_mpiexec() is not None:
        configurations.append(("mpi", threads, 1))
    return configurations


def configuration_name(launcher: str, ranks: int, threads: int) -> str:
    """``"2x1"`` (MPI ranks, or one process), ``"processes:2x1"`` (cnnblas's launcher)."""
    return f"{'processes:' if launcher == 'processes' else ''}{ranks}x{threads}"


def parse_configuration(name: str) -> tuple[str, int, int]:
    """(launcher, ranks, threads) of a :func:`configuration_name`; launcher "processes"
    or "mpi"."""
    launcher, _, shape = name.rpartition(":")
    ranks, threads = (int(part) for part in shape.split("x"))
    return launcher or "mpi", ranks, threads


def _scaling(threads: int, settings: Settings, workdir: Path, mnist: Path, progress) -> dict:
    """LeNet-5 on mnist5k in each of :func:`scaling_configurations`, alternating; the
    speed-ups over one thread, per round (``speedup``: the median of ``cnnblas train``'s
    default configuration's, named ``default``)."""
    task = dict(kind="mnist", network="lenet5", data=str(mnist), seed=0, batch=SCALING_BATCH,
                steps=settings.mnist_steps, warmups=settings.mnist_warmups)
    configurations = scaling_configurations(threads)
    runs: dict[tuple, list[dict]] = {config: [] for config in configurations}
    for round_index in range(settings.mnist_rounds):
        shift = round_index % len(configurations)
        for launcher, ranks, count in configurations[shift:] + configurations[:shift]:
            _note(progress, f"mnist5k LeNet-5, {ranks} process(es) x {count} thread(s)"
                            f"{' (cnnblas train default)' if launcher == 'processes' else ''}"
                            f", round {round_index + 1}")
            output = run_worker("cnnblas", count, workdir, round_index, [task], ranks=ranks,
                                launcher=launcher)
            runs[(launcher, ranks, count)].append(output["results"]["mnist:lenet5"])
            _note(progress)
    names = {config: configuration_name(*config) for config in configurations}
    one = [run["seconds"] for run in runs[("mpi", 1, 1)]]
    speedups = {names[config]: [a / run["seconds"] for a, run in zip(one, values, strict=True)]
                for config, values in runs.items()}
    count, per_process = default_configuration(threads)
    default = configuration_name("processes" if count > 1 else "mpi", count, per_process)
    return dict(threads=threads, steps=settings.mnist_steps, batch=SCALING_BATCH,
                warmups=settings.mnist_warmups, configurations=list(names.values()),
                default=default,
                seconds={names[c]: statistics.median(r["seconds"] for r in v)
                         for c, v in runs.items()},
                allreduce_seconds={names[c]: statistics.median(r.get("allreduce_seconds", 0.0)
                                                               for r in v)
                                   for c, v in runs.items()},
                speedups=speedups, speedup=statistics.median(speedups[default]),
                last_loss={names[c]: v[-1]["last_loss"] for c, v in runs.items()})


def summarize(rounds: list[dict], engines: list[str], flops: dict,
              sgemm_gflops: float | None) -> list[dict]:
    """One dict per row: each engine's median (all its timed calls), the median of the
    same-round ratios to PyTorch, and the ResNet-20 step's rate."""
    rows = []
    for network, kind in ROWS:
        key = f"{kind}:{network}"
        row = dict(network=network, kind=kind, label=NETWORKS[network].label,
                   seconds={}, ratio_to_torch={}, round_ratios={})
        per_round: dict[str, list[float]] = {}
        for engine in engines:
            results = [r[engine]["results"][key] for r in rounds
                       if key in r[engine]["results"]]
            if not results:
                continue
            row["seconds"][engine] = statistics.median(t for r in results for t in r["times"])
            per_round[engine] = [r["median"] for r in results]
        row["batch"] = 1 if kind == "predict" else flops[network]["batch"]
        if "torch" in per_round:
            for engine, medians in per_round.items():
                if engine != "torch":
                    ratios = [a / b for a, b in zip(medians, per_round["torch"], strict=True)]
                    row["round_ratios"][engine] = ratios
                    row["ratio_to_torch"][engine] = statistics.median(ratios)
        if kind == "step":
            row["flops"] = flops[network]["step"]
            row["gflops"] = {engine: row["flops"] / s / 1e9 for engine, s in row["seconds"].items()}
            if sgemm_gflops:
                row["sgemm_fraction"] = {engine: g / sgemm_gflops
                                         for engine, g in row["gflops"].items()}
        rows.append(row)
    return rows
