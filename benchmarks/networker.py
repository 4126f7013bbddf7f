"""One engine's whole-network measurements, in a process of its own.

``python -m benchmarks.networker SPEC.json`` reads the spec written by
:mod:`benchmarks.networks`, runs its tasks with one engine and prints one
JSON line. Two libraries' thread pools in one process disturb each other,
so each engine (cnnblas, PyTorch, onnxruntime) runs alone in its process.

Spec keys: ``engine``, ``threads``, ``workdir`` (the initial weights
``<network>.npz`` and ``<network>.onnx``, and where the checks' dumps go),
``round`` and ``tasks``, each a dict with ``kind`` ("step", "predict",
"profile", "predict_profile", "stages" or "mnist"), ``network`` and the kind's
settings.

- *step*: build the network, load the initial weights, run one training
  step and dump its loss and updated state
  (``<engine>-r<round>-<network>-step.npz``, for the parent's check), then
  warm up and time steps until ``budget`` seconds and at least
  ``min_steps`` steps.
- *predict*: eval mode, one image; dump the logits
  (``<engine>-r<round>-<network>-predict.npy``), warm up, time calls.
- *profile* (cnnblas): the step under :class:`benchmarks.netprofile.LayerProfiler`;
  *predict_profile*: the same for the one-image prediction.
- *stages* (cnnblas): the network's Winograd F(4x4) layers stage by stage, on
  one thread (:mod:`benchmarks.winograd_stages`).
- *mnist* (cnnblas): ``steps`` training steps of LeNet-5 on mnist5k batches
  (data-parallel when started by ``mpiexec -n P``, or when the spec's
  ``processes`` is P > 1: then this process starts P ranks of itself with
  cnnblas's launcher and connects them as ``cnnblas train`` does).

The garbage collector stays on, as in a user's loop.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import netmodels
from benchmarks.netmodels import NETWORKS


def _timed(fn, budget: float, min_calls: int, warmups: int) -> list[float]:
    """Seconds of successive calls of ``fn`` after ``warmups`` untimed ones: at least
    ``min_calls``, then until ``budget`` seconds are spent."""
    for _ in range(warmups):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < min_calls or spent < budget:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return times


def _summary(times: list[float]) -> dict:
    return dict(median=statistics.median(times), best=min(times), times=times)


# --------------------------------------------------------------------------- engines

class CnnblasEngine:
    name = "cnnblas"

    def __init__(self, threads: int):
        import cnnblas

        cnnblas.set_num_threads(threads)

    def training_step(self, network, state, images, labels):
        model = netmodels.cnnblas_model(network.name)
        model.load_state_dict(state)
        step = netmodels.cnnblas_training_step(network, model, images, labels)
        return step, model.state_dict

    def predictor(self, network, state, image):
        model = netmodels.cnnblas_model(network.name)
        model.load_state_dict(state)
        model.eval()
        return lambda: model(image)


class TorchEngine:
    name = "torch"

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch

    def training_step(self, network, state, images, labels):
        model = netmodels.torch_model(self.torch, network.name, state)
        step = netmodels.torch_training_step(self.torch, network, model, images, labels)
        return step, lambda: netmodels.torch_state(model)

    def predictor(self, network, state, image):
        torch = self.torch
        model = netmodels.torch_model(torch, network.name, state).eval()
        x = torch.from_numpy(image)

        def predict():
            with torch.no_grad():
                return model(x).numpy()
        return predict


class OnnxruntimeEngine:
    name = "onnxruntime"

    def __init__(self, threads: int):
        import onnxruntime

        self.onnxruntime = onnxruntime
        self.threads = threads

    def predictor(self, network, path: Path, image):
        options = self.onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        session = self.onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image}
        return lambda: session.run(None, feed)[0]


ENGINES = {"cnnblas": CnnblasEngine, "torch": TorchEngine, "onnxruntime": OnnxruntimeEngine}


# --------------------------------------------------------------------------- tasks

def run_step(engine, task: dict, workdir: Path, tag: str) -> dict:
    network = NETWORKS[task["network"]]
    state = netmodels.load_state(workdir / f"{network.name}.npz")
    images, labels = netmodels.make_batch(network, task["batch"])
    step, state_of = engine.training_step(network, state, images, labels)
    loss = step()  # the checked step, from the initial weights
    np.savez(workdir / f"{tag}-{network.name}-step.npz", loss=np.float64(loss), **state_of())
    times = _timed(step, task["budget"], task["min_steps"], task["warmups"])
    return dict(_summary(times), loss=loss)


def run_predict(engine, task: dict, workdir: Path, tag: str) -> dict:
    network = NETWORKS[task["network"]]
    image = netmodels.make_batch(network, 1, seed=1)[0]
    if engine.name == "onnxruntime":
        predict = engine.predictor(network, workdir / f"{network.name}.onnx", image)
    else:
        predict = engine.predictor(network, netmodels.load_state(
            workdir / f"{network.name}.npz"), image)
    np.save(workdir / f"{tag}-{network.name}-predict.npy", np.asarray(predict()))
    return _summary(_timed(predict, task["budget"], task["min_steps"], task["warmups"]))


def run_profile(engine, task: dict, workdir: Path, tag: str) -> dict:
    """The step timed plain, then under the wrapping profiler (categories per step)."""
    network = NETWORKS[task["network"]]
    model = netmodels.cnnblas_model(network.name)
    model.load_state_dict(netmodels.load_state(workdir / f"{network.name}.npz"))
    images, labels = netmodels.make_batch(network, task["batch"])
    step = netmodels.cnnblas_training_step(network, model, images, labels)
    return _profiled(step, model, task, step.criterion, step.optimizer)


def run_predict_profile(engine, task: dict, workdir: Path, tag: str) -> dict:
    """The one-image prediction (eval mode) timed plain, then under the wrapping profiler."""
    network = NETWORKS[task["network"]]
    model = netmodels.cnnblas_model(network.name)
    model.load_state_dict(netmodels.load_state(workdir / f"{network.name}.npz"))
    model.eval()
    image = netmodels.make_batch(network, 1, seed=1)[0]
    return _profiled(lambda: model(image), model, task)


def _profiled(call, model, task: dict, criterion=None, optimizer=None) -> dict:
    """``call`` timed ``task["steps"]`` times plain (after ``task["warmups"]``), then as
    often under :class:`benchmarks.netprofile.LayerProfiler`: seconds and calls per
    category and call."""
    from benchmarks.netprofile import LayerProfiler, wrapper_cost

    plain = _timed(call, 0.0, task["steps"], task["warmups"])
    profiler = LayerProfiler(model, criterion, optimizer)
    call()  # untimed: the wrappers' first calls (algorithm choice per layer)
    profiler.reset()
    wrapped = _timed(call, 0.0, task["steps"], 0)
    count = len(wrapped)
    return dict(plain=_summary(plain), wrapped=_summary(wrapped),
                seconds={key: value / count for key, value in profiler.seconds.items()},
                calls={key: value // count for key, value in profiler.calls.items()},
                wrapper_seconds=wrapper_cost(), wrapped_calls=profiler.total_calls() // count)


def run_stages(engine, task: dict, workdir: Path, tag: str) -> dict:
    """The F(4x4) layers of the network by stage (:func:`benchmarks.winograd_stages.run`)."""
    from benchmarks import winograd_stages

    return winograd_stages.run(task["network"], task["batch"], task["repeats"])


def run_mnist(engine, task: dict, workdir: Path, tag: str) -> dict | None:
    """``steps`` LeNet-5 training steps on shuffled mnist5k batches; the seconds of
    all steps after ``warmups``. Under ``mpiexec -n P`` each rank trains on its
    part of every batch and the ranks sum their weighted gradients
    (:mod:`cnnblas.distributed`); the same with ``processes`` P in the spec, over
    shared memory. Only rank 0 returns a result (None elsewhere)."""
    from cnnblas import nn
    from cnnblas.cli.processes import connect_world
    from cnnblas.data import load_mnist
    from cnnblas.optim import SGD

    network = NETWORKS["lenet5"]
    data = load_mnist(task["data"])
    order = np.random.default_rng(task["seed"]).permutation(len(data.y_train))
    batch = task["batch"]
    batches = len(order) // batch
    model = netmodels.cnnblas_lenet5(rng=task["seed"])
    criterion = nn.SoftmaxCrossEntropy()
    optimizer = SGD(model.parameters(), lr=network.lr, momentum=network.momentum)
    world = connect_world()  # as cnnblas train: its processes, MPI, or one process
    world.attach(optimizer.params)
    low, high = world.part(batch)
    losses = []
    start = 0.0
    for index in range(task["warmups"] + task["steps"]):
        if index == task["warmups"]:
            start = time.perf_counter()
        rows = order[(index % batches) * batch:(index % batches + 1) * batch][low:high]
        optimizer.zero_grad()
        losses.append(criterion(model(data.x_train[rows]), data.y_train[rows]))
        model.backward(criterion.backward(scale=(high - low) / batch))
        world.allreduce_gradients()
        optimizer.step()
        if index == task["warmups"] - 1:
            world.reset_timer()
    seconds = time.perf_counter() - start
    if not world.is_main:
        return None
    return dict(seconds=seconds, steps=task["steps"], batch=batch, ranks=world.size,
                allreduce_seconds=world.allreduce_seconds,
                first_loss=float(losses[0]), last_loss=float(losses[-1]))


TASKS = {"step": run_step, "predict": run_predict, "profile": run_profile,
         "predict_profile": run_predict_profile, "stages": run_stages, "mnist": run_mnist}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    if spec.get("processes", 1) > 1:
        from cnnblas.distributed import launch

        if launch.child_settings() is None:  # start the ranks, which run the tasks
            return launch.run_ranks([sys.executable, "-m", "benchmarks.networker", argv[0]],
                                    spec["processes"], program="benchmarks.networker")
    workdir = Path(spec["workdir"])
    engine = ENGINES[spec["engine"]](spec["threads"])
    tag = f"{spec['engine']}-r{spec['round']}"
    results = {}
    for task in spec["tasks"]:
        key = f"{task['kind']}:{task['network']}"
        results[key] = TASKS[task["kind"]](engine, task, workdir, tag)
    if any(result is None for result in results.values()):
        return 0  # a rank other than 0 of an MPI run: rank 0 reports
    print(json.dumps(dict(engine=spec["engine"], threads=spec["threads"], results=results)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
