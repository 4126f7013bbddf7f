"""Where a network's Winograd F(4x4, 3x3) convolutions spend their time, stage by stage.

The ResNet-20 step's profile (:mod:`benchmarks.netprofile`) puts most of
the step in its 3x3 stride-1 convolutions, which cnnblas runs with
F(4x4, 3x3) (:mod:`cnnblas.ops.winograd`). This module splits that time.
For every distinct shape among the network's layers that ``auto`` sends to
F(4x4) (found by running one forward), the forward and the backward (dx,
dweight and dbias from a fixed dy) of :func:`cnnblas.conv2d` /
:func:`cnnblas.conv2d_backward` run on one thread at the training batch,
first plain and then with timers around the stages:

- *input transform*: ``Bᵀ d B`` of the input tiles (in the backward twice:
  of x for dW, of the padded dy for dx);
- *gradient transform*: ``A dY Aᵀ`` (backward, for dW);
- *output transform*: ``Aᵀ M A`` (the forward's y, the backward's dx);
- *GEMMs*: every ``numpy.matmul`` of the Winograd module, i.e. the 36
  stacked products per chunk (and the tiny weight transforms);
- *non-finite checks*: the sums that send non-finite inputs to the GEMM
  backend;
- *rest*: the plain call minus all of these (the chunk loop, allocations,
  the bias gradient).

Stage times are charged to the shape and summed over its layers to give
milliseconds per training step. One thread, so that nothing here is the
cost of splitting the batch; the step itself runs on the report's threads.
The GEMMs' rate (direct products over the tiles, junk column included, as
the engine multiplies them) is next to the SGEMM rate of one thread.

``python -m benchmarks.winograd_stages`` prints the table for ResNet-20 at
batch 128.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

#: The stages, in the order of the report's table.
STAGES = ("input transform", "gradient transform", "output transform", "GEMMs",
          "non-finite checks", "rest")
_KERNEL_STAGES = {"input_transform": "input transform", "grad_transform": "gradient transform",
                  "output_transform": "output transform"}
TILE = 4


def winograd_layers(model, x: np.ndarray) -> list[dict]:
    """The distinct F(4x4) convolutions of ``model`` on input ``x``: dicts with the
    input and weight shapes, the convolution's keyword arguments and how many
    layers share them (one forward in eval mode finds them)."""
    from cnnblas.nn import Conv2d
    from cnnblas.ops.algorithms import choose_algorithm

    found: dict[tuple, dict] = {}
    layers = [module for module in model.modules() if isinstance(module, Conv2d)]
    originals = {id(layer): layer._forward_op for layer in layers}

    def recorder(layer):
        def record(inputs, weight, bias, **kwargs):
            algorithm = choose_algorithm(inputs.shape, weight.shape, kwargs["stride"],
                                         kwargs["dilation"], kwargs["groups"],
                                         kwargs["algorithm"])
            if algorithm == f"winograd{TILE}x{TILE}":
                key = (inputs.shape, weight.shape, repr(kwargs["padding"]))
                entry = found.setdefault(key, dict(x_shape=inputs.shape, w_shape=weight.shape,
                                                   padding=kwargs["padding"], layers=0))
                entry["layers"] += 1
            return originals[id(layer)](inputs, weight, bias, **kwargs)
        return record

    training = model.training
    model.eval()
    try:
        for layer in layers:
            object.__setattr__(layer, "_forward_op", recorder(layer))
        model(x)
    finally:
        for layer in layers:
            layer.__dict__.pop("_forward_op", None)
        model.train(training)
    return list(found.values())


class _TimedNumpy:
    """numpy, with ``matmul`` timed into ``seconds["GEMMs"]``."""

    def __init__(self, seconds: dict):
        self._seconds = seconds

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return np.matmul(*args, **kwargs)
        finally:
            self._seconds["GEMMs"] += time.perf_counter() - start


def _timed(function, seconds: dict, stage: str):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[stage] += time.perf_counter() - start
    return timed


@contextmanager
def stage_timers(seconds: dict):
    """Within the block, the F(4x4) kernels, the Winograd module's matmuls and its
    non-finite checks add their time to ``seconds`` (a ``defaultdict(float)``)."""
    from cnnblas.ops import winograd

    variant = winograd.VARIANTS[TILE]
    fields = {}
    for name, stage in _KERNEL_STAGES.items():
        for field in (name, f"{name}_serial"):
            fields[field] = _timed(getattr(variant, field), seconds, stage)
    saved = (winograd.VARIANTS[TILE], winograd.np, winograd.all_finite)
    winograd.VARIANTS[TILE] = variant._replace(**fields)
    winograd.np = _TimedNumpy(seconds)
    winograd.all_finite = _timed(winograd.all_finite, seconds, "non-finite checks")
    try:
        yield
    finally:
        winograd.VARIANTS[TILE], winograd.np, winograd.all_finite = saved


def _gemm_flops(layer: dict, out_size: tuple[int, int], pass_name: str) -> float:
    """Multiply-adds x 2 of the stacked products over the output's tiles (the
    engine's own count, junk tiles included)."""
    from cnnblas.ops import winograd

    n, channels = layer["x_shape"][:2]
    n_out = layer["w_shape"][0]
    _, tiles_per_image = winograd._tiles(out_size, TILE)
    products = 1 if pass_name == "forward" else 2  # backward: dW and dx
    return (2.0 * winograd.VARIANTS[TILE].points * n_out * channels * n * tiles_per_image
            * products)


def profile_layer(layer: dict, repeats: int = 5, rng=0) -> dict:
    """Stage seconds of one shape's forward and backward (medians over ``repeats``)."""
    import cnnblas

    generator = np.random.default_rng(rng)
    x = generator.standard_normal(layer["x_shape"], dtype=np.float32)
    weight = generator.standard_normal(layer["w_shape"], dtype=np.float32)
    weight *= np.float32(1 / np.sqrt(9 * layer["w_shape"][1]))
    kwargs = dict(padding=layer["padding"], algorithm=f"winograd{TILE}x{TILE}")
    y = cnnblas.conv2d(x, weight, **kwargs)
    dy = generator.standard_normal(y.shape, dtype=np.float32)
    passes = {"forward": lambda: cnnblas.conv2d(x, weight, **kwargs),
              "backward": lambda: cnnblas.conv2d_backward(dy, x, weight, **kwargs)}
    result = {}
    for pass_name, call in passes.items():
        call()  # warm-up (and compilation)
        plain = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            plain.append(time.perf_counter() - start)
        runs = []
        for _ in range(repeats):
            seconds: dict[str, float] = defaultdict(float)
            with stage_timers(seconds):
                call()
            runs.append(seconds)
        whole = statistics.median(plain)
        stages = {stage: statistics.median(run.get(stage, 0.0) for run in runs)
                  for stage in STAGES[:-1]}
        stages["rest"] = max(0.0, whole - sum(stages.values()))
        result[pass_name] = dict(seconds=whole, stages=stages,
                                 gemm_flops=_gemm_flops(layer, y.shape[2:], pass_name))
    return result


def run(network: str = "resnet20", batch: int = 128, repeats: int = 5) -> dict:
    """Stage profile of ``network``'s F(4x4) layers at ``batch`` on one thread (JSON-ready)."""
    import cnnblas
    from benchmarks import netmodels
    from benchmarks.netmodels import NETWORKS

    before = cnnblas.get_num_threads()
    cnnblas.set_num_threads(1)
    try:
        model = netmodels.cnnblas_model(network)
        images, _ = netmodels.make_batch(NETWORKS[network], batch)
        layers = winograd_layers(model, images)
        for layer in layers:
            layer.update(profile_layer(layer, repeats))
            layer["x_shape"], layer["w_shape"] = list(layer["x_shape"]), list(layer["w_shape"])
            layer["padding"] = repr(layer["padding"])
    finally:
        cnnblas.set_num_threads(before)
    return dict(network=network, batch=batch, threads=1, layers=layers)


def per_step(stages: dict) -> dict:
    """Per training step, for each pass: the seconds of each stage and of the whole
    calls (``"whole"``) and the GEMMs' flops (``"gemm_flops"``), each shape's
    numbers times its number of layers."""
    totals = {pass_name: defaultdict(float) for pass_name in ("forward", "backward")}
    for layer in stages["layers"]:
        for pass_name, total in totals.items():
            for stage, seconds in layer[pass_name]["stages"].items():
                total[stage] += seconds * layer["layers"]
            total["whole"] += layer[pass_name]["seconds"] * layer["layers"]
            total["gemm_flops"] += layer[pass_name]["gemm_flops"] * layer["layers"]
    return totals


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    batch = int(argv[0]) if argv else 128
    stages = run(batch=batch)
    for layer in stages["layers"]:
        for pass_name in ("forward", "backward"):
            record = layer[pass_name]
            parts = ", ".join(f"{stage} {1e3 * seconds:.2f}"
                              for stage, seconds in record["stages"].items())
            print(f"{layer['x_shape']} x {layer['layers']} layers, {pass_name}: "
                  f"{1e3 * record['seconds']:.2f} ms ({parts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
