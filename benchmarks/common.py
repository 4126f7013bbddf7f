"""Shared benchmark machinery: shapes, inputs, the four implementations, checks, timer, SGEMM.

Both the pytest-benchmark suites and :mod:`benchmarks.report` use this module,
so they time exactly the same calls on exactly the same shapes
(``benchmarks/shapes.csv``).

Implementations (:data:`IMPLEMENTATIONS`)
-----------------------------------------
``naive``
    :func:`cnnblas.reference.conv2d_loops`, plain Python loops (the tutorial's
    Algorithm 3.1). Far too slow for the full shapes, so it runs on a
    *subsample*: image 0 and the first ``naive_channels`` output channels, which
    is ``N*K/naive_channels`` times less work than the full convolution (the
    loops do the same work for every image and output channel, so the cost is
    exactly linear in both). The time reported for the full shape is the
    subsample's time multiplied by that factor. Forward only: there is no
    pure-Python backward.
``direct``
    :func:`cnnblas.reference.conv2d_direct` / ``conv2d_backward_direct``: the
    same loops compiled with Numba (``prange``), no im2col and no GEMM.
``gemm``
    :func:`cnnblas.conv2d` / :func:`cnnblas.conv2d_backward`: im2col + BLAS.
``torch``
    ``torch.nn.functional.conv2d`` under ``torch.no_grad()`` for the forward;
    for the backward ``torch.ops.aten.convolution_backward`` with the same
    precomputed ``dy``, which returns (dx, dweight, dbias) exactly as cnnblas
    does (no autograd graph is built or timed). ``torch.set_num_threads`` is
    set to :func:`cnnblas.get_num_threads`.

Passes: ``forward`` returns ``(y,)``; ``forward_backward`` runs the forward,
then the backward with a fixed random ``dy``, and returns ``(y, dx, dweight,
dbias)``. A pass is ``2*N*K*(C/groups)*kh*kw*out_h*out_w`` flops; the
forward+backward counts three passes (forward, input gradient, weight
gradient; the bias gradient is not counted).
"""

from __future__ import annotations

import csv
import datetime
import gc
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

import cnnblas as cb
from cnnblas.info import environment

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SHAPES_FILE = BENCH_DIR / "shapes.csv"

IMPLEMENTATIONS = ("naive", "direct", "gemm", "torch")
LABELS = {
    "naive": "naive loops",
    "direct": "Numba direct",
    "gemm": "cnnblas",
    "torch": "PyTorch",
}
PASSES = ("forward", "forward_backward")
PASS_LABELS = {"forward": "forward", "backward": "backward",
               "forward_backward": "forward+backward"}
PASS_FLOP_FACTOR = {"forward": 1, "backward": 2, "forward_backward": 3}
OUTPUT_NAMES = {"forward": ("y",), "backward": ("dx", "dweight", "dbias"),
                "forward_backward": ("y", "dx", "dweight", "dbias")}

# Largest allowed max|actual - expected| / max|expected| for float32 outputs.
TOLERANCE = 1e-4
# The implementation every other one is checked against: independent of im2col and BLAS.
REFERENCE_IMPL = "direct"


# --------------------------------------------------------------------------- shapes

@dataclass(frozen=True)
class ConvShape:
    """One benchmark convolution (square stride and padding, dilation 1)."""

    name: str
    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride: int
    pad: int
    groups: int = 1

    @property
    def out_h(self) -> int:
        return (self.height + 2 * self.pad - self.kernel_h) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.width + 2 * self.pad - self.kernel_w) // self.stride + 1

    @property
    def geometry(self) -> dict:
        """Keyword arguments for every conv function: stride, padding, dilation, groups."""
        return dict(stride=self.stride, padding=self.pad, dilation=1, groups=self.groups)

    def flops(self, pass_name: str = "forward") -> float:
        """2*N*K*(C/groups)*kh*kw*out_h*out_w per pass; forward+backward is three passes."""
        one_pass = (2.0 * self.batch * self.out_channels * (self.in_channels // self.groups)
                    * self.kernel_h * self.kernel_w * self.out_h * self.out_w)
        return one_pass * PASS_FLOP_FACTOR[pass_name]

    def column_bytes(self, itemsize: int = 4) -> int:
        """Size of one image's im2col buffer, (C*kh*kw) x (out_h*out_w)."""
        return (self.in_channels * self.kernel_h * self.kernel_w
                * self.out_h * self.out_w * itemsize)

    def auto_algorithm(self) -> str:
        """What ``cnnblas.conv2d(..., algorithm="auto")`` runs for this shape."""
        from cnnblas.ops.algorithms import choose_algorithm

        return choose_algorithm(
            (self.batch, self.in_channels, self.height, self.width),
            (self.out_channels, self.in_channels // self.groups, self.kernel_h, self.kernel_w),
            self.stride, 1, self.groups)

    def with_batch(self, batch: int) -> ConvShape:
        return replace(self, batch=batch)

    def describe(self) -> str:
        """E.g. ``64x1x28x28 -> 20, 5x5 s1 p0``."""
        return (f"{self.batch}x{self.in_channels}x{self.height}x{self.width} -> "
                f"{self.out_channels}, {self.kernel_h}x{self.kernel_w} s{self.stride} p{self.pad}")


def load_shapes(names: Sequence[str] | None = None, path: Path = SHAPES_FILE) -> list[ConvShape]:
    """The shapes of ``shapes.csv`` (columns name N C H W K kh kw stride pad), in file order.

    ``names`` selects a subset (kept in file order); an unknown name raises ValueError.
    """
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    shapes = [
        ConvShape(row["name"], *(int(row[col]) for col in
                                 ("N", "C", "H", "W", "K", "kh", "kw", "stride", "pad")))
        for row in rows
    ]
    if names is None:
        return shapes
    known = {shape.name for shape in shapes}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown shape name(s) {unknown}; {path.name} has {sorted(known)}")
    return [shape for shape in shapes if shape.name in set(names)]


@dataclass
class ConvInputs:
    """float32 x (N,C,H,W), weight (K,C/g,kh,kw), bias (K,) and a fixed dy (N,K,P,Q)."""

    x: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    dy: np.ndarray


def make_inputs(shape: ConvShape, seed: int = 0, dtype=np.float32) -> ConvInputs:
    """Standard-normal input and dy, weight scaled by 1/sqrt(fan-in) so y stays O(1)."""
    rng = np.random.default_rng(seed)
    fan_in = shape.in_channels // shape.groups * shape.kernel_h * shape.kernel_w
    x = rng.standard_normal((shape.batch, shape.in_channels, shape.height, shape.width),
                            dtype=np.float32)
    weight = rng.standard_normal(
        (shape.out_channels, shape.in_channels // shape.groups, shape.kernel_h, shape.kernel_w),
        dtype=np.float32) / np.float32(np.sqrt(fan_in))
    bias = rng.standard_normal(shape.out_channels, dtype=np.float32)
    dy = rng.standard_normal((shape.batch, shape.out_channels, shape.out_h, shape.out_w),
                             dtype=np.float32)
    return ConvInputs(*(a.astype(dtype, copy=False) for a in (x, weight, bias, dy)))


# --------------------------------------------------------------------------- implementations

def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def set_threads(threads: int | None, torch_too: bool = True) -> int:
    """Use ``threads`` (default: cnnblas's current setting) everywhere, PyTorch included.

    ``torch_too=False`` leaves PyTorch alone (and unimported) when it is not needed.
    """
    if threads is not None:
        cb.set_num_threads(threads)
    threads = cb.get_num_threads()
    if torch_too and torch_available():
        import torch

        torch.set_num_threads(threads)
    return threads


@dataclass(frozen=True)
class NaiveSample:
    """The naive implementation's subsample: image 0 and output channels [0, channels)."""

    channels: int

    def scale(self, shape: ConvShape) -> float:
        """Full-shape work / subsample work (the loops' cost is linear in N and K)."""
        return shape.batch * shape.out_channels / self.channels

    def expected(self, y: np.ndarray) -> np.ndarray:
        """The part of a full-shape output the subsample computes."""
        return y[:1, :self.channels]


def naive_sample(shape: ConvShape, channels: int) -> NaiveSample:
    return NaiveSample(max(1, min(channels, shape.out_channels)))


def conv_function(impl: str, pass_name: str, shape: ConvShape, inputs: ConvInputs,
                  naive_channels: int = 2) -> Callable[[], tuple] | None:
    """A zero-argument callable running ``pass_name`` with ``impl``, or None if not offered.

    ``pass_name`` is one of :data:`PASSES` (the report's tables) or
    ``"backward"``: (dx, dweight, dbias) from the fixed ``dy`` alone.

    The callable returns the pass's outputs (numpy arrays, or torch tensors for
    ``torch``). All argument preparation (tensor wrapping, subsampling) happens
    here, outside the timed call.
    """
    geometry = shape.geometry
    x, weight, bias, dy = inputs.x, inputs.weight, inputs.bias, inputs.dy
    if impl in ("naive", "direct"):
        from cnnblas import reference  # imports scipy.signal: only when needed
    if impl == "naive":
        if pass_name != "forward":
            return None
        sample = naive_sample(shape, naive_channels)
        x_sample = np.ascontiguousarray(x[:1])
        w_sample = np.ascontiguousarray(weight[:sample.channels])
        b_sample = np.ascontiguousarray(bias[:sample.channels])
        return lambda: (reference.conv2d_loops(x_sample, w_sample, b_sample, **geometry),)
    if impl == "direct":
        if pass_name == "forward":
            return lambda: (reference.conv2d_direct(x, weight, bias, **geometry),)
        if pass_name == "backward":
            return lambda: reference.conv2d_backward_direct(dy, x, weight, **geometry)

        def direct_forward_backward():
            y = reference.conv2d_direct(x, weight, bias, **geometry)
            return (y, *reference.conv2d_backward_direct(dy, x, weight, **geometry))
        return direct_forward_backward
    if impl == "gemm":
        args = (geometry["stride"], geometry["padding"], geometry["dilation"], geometry["groups"])
        if pass_name == "forward":
            return lambda: (cb.conv2d(x, weight, bias, *args),)
        if pass_name == "backward":
            return lambda: cb.conv2d_backward(dy, x, weight, *args)

        def gemm_forward_backward():
            y = cb.conv2d(x, weight, bias, *args)
            return (y, *cb.conv2d_backward(dy, x, weight, *args))
        return gemm_forward_backward
    if impl == "torch":
        if not torch_available():
            return None
        return _torch_function(pass_name, shape, inputs)
    raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")


def _torch_function(pass_name: str, shape: ConvShape, inputs: ConvInputs):
    import torch
    import torch.nn.functional as functional

    x, weight, bias, dy = (torch.from_numpy(a) for a in
                           (inputs.x, inputs.weight, inputs.bias, inputs.dy))
    stride, padding, groups = [shape.stride] * 2, [shape.pad] * 2, shape.groups

    def forward():
        with torch.no_grad():
            return (functional.conv2d(x, weight, bias, stride, padding, 1, groups),)

    def backward():
        # (dx, dweight, dbias) from dy, as cnnblas.conv2d_backward: no autograd graph.
        with torch.no_grad():
            return torch.ops.aten.convolution_backward(
                dy, x, weight, [shape.out_channels], stride, padding, [1, 1], False, [0, 0],
                groups, [True, True, True])

    def forward_backward():
        return (*forward(), *backward())

    return {"forward": forward, "backward": backward,
            "forward_backward": forward_backward}[pass_name]


# --------------------------------------------------------------------------- correctness

class DisagreementError(AssertionError):
    """Two implementations returned different results: the kernel must not be timed."""


def to_numpy(array) -> np.ndarray:
    return array.numpy() if hasattr(array, "numpy") else np.asarray(array)


def relative_error(actual, expected) -> float:
    """max|actual - expected| / max|expected| (inf on a shape mismatch)."""
    actual, expected = to_numpy(actual), to_numpy(expected)
    if actual.shape != expected.shape:
        return float("inf")
    scale = max(float(np.abs(expected).max(initial=0.0)), np.finfo(np.float32).tiny)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max(initial=0.0)
    return float(diff) / scale


def check_agreement(shape: ConvShape, pass_name: str, outputs: dict[str, tuple],
                    naive_channels: int = 2, tolerance: float = TOLERANCE) -> dict[str, float]:
    """Compare every implementation's outputs with :data:`REFERENCE_IMPL`'s.

    ``outputs`` maps impl -> the tuple its pass returned (naive: the subsample).
    Returns impl -> worst relative error over the outputs; raises
    :class:`DisagreementError` naming the shape, pass, impl and output when one
    exceeds ``tolerance``.
    """
    expected = outputs[REFERENCE_IMPL]
    errors = {}
    for impl, actual in outputs.items():
        if impl == REFERENCE_IMPL:
            continue
        targets = expected
        if impl == "naive":
            targets = (naive_sample(shape, naive_channels).expected(to_numpy(expected[0])),)
        worst = 0.0
        for name, got, want in zip(OUTPUT_NAMES[pass_name], actual, targets, strict=False):
            error = relative_error(got, want)
            if not error <= tolerance:
                raise DisagreementError(
                    f"{shape.name} {PASS_LABELS[pass_name]}: {LABELS[impl]} {name} differs from "
                    f"{LABELS[REFERENCE_IMPL]} by {error:.3g} (relative to max|{name}|; "
                    f"tolerance {tolerance:g}); shapes {to_numpy(got).shape} vs "
                    f"{to_numpy(want).shape}")
            worst = max(worst, error)
        errors[impl] = worst
    return errors


# --------------------------------------------------------------------------- timing

@dataclass(frozen=True)
class Timing:
    """Seconds per call: median (the reported number), best, quartiles, and how many calls."""

    median: float
    best: float
    q1: float
    q3: float
    repeats: int

    def scaled(self, factor: float) -> Timing:
        return Timing(self.median * factor, self.best * factor, self.q1 * factor,
                      self.q3 * factor, self.repeats)

    def as_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], budget: float = 1.0, *, warmups: int = 1,
            min_repeats: int = 3, max_repeats: int = 200) -> Timing:
    """Time ``fn()`` with ``time.perf_counter``: the median of repeated calls.

    ``warmups`` untimed calls first (JIT compilation, workspace allocation).
    Then calls are timed one by one until ``budget`` seconds have been spent
    and at least ``min_repeats`` calls made, but stops after ``3*budget``
    seconds or ``max_repeats`` calls whatever the count (so one slow call
    costs no more than about three budgets). The garbage collector is off
    while timing.
    """
    return measure_interleaved({"fn": fn}, budget, rounds=1, warmups=warmups,
                               min_repeats=min_repeats, max_repeats=max_repeats)["fn"]


def measure_interleaved(functions: dict[str, Callable[[], object]], budget: float = 1.0, *,
                        rounds: int = 5, warmups: int = 1, min_repeats: int = 3,
                        max_repeats: int = 200) -> dict[str, Timing]:
    """Time several functions in alternation; a :class:`Timing` for each.

    Each function gets the rules of :func:`measure` (``budget`` seconds, at
    least ``min_repeats`` and at most ``max_repeats`` calls, at most about
    ``3*budget`` seconds), spread evenly over ``rounds`` rounds in which every
    function runs in turn for its share; the order rotates from round to
    round. On a shared machine whose speed drifts by tens of percent within a
    minute, a slow phase then hits every implementation alike instead of
    whichever happened to be timed during it, and their ratio stays
    meaningful. (A function slower than three shares still runs once per
    round: ``rounds`` calls at least.)
    """
    for fn in functions.values():
        for _ in range(warmups):
            fn()
    names = list(functions)
    samples: dict[str, list[float]] = {name: [] for name in names}
    share = budget / rounds
    min_calls, max_calls = -(-min_repeats // rounds), max(1, max_repeats // rounds)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_index in range(rounds):
            first = round_index % len(names)
            for name in names[first:] + names[:first]:
                _time_calls(functions[name], samples[name], share, min_calls, max_calls)
    finally:
        if was_enabled:
            gc.enable()
    return {name: _timing(times) for name, times in samples.items()}


def _time_calls(fn: Callable[[], object], samples: list[float], budget: float,
                min_calls: int, max_calls: int) -> None:
    """Append the times of calls of ``fn`` to ``samples``: at least ``min_calls``
    and until ``budget`` seconds are spent, but at most ``max_calls`` calls or
    ``3*budget`` seconds."""
    spent = 0.0
    for calls in range(1, max_calls + 1):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        samples.append(elapsed)
        spent += elapsed
        if spent >= budget and (calls >= min_calls or spent >= 3 * budget):
            break


def _timing(samples: list[float]) -> Timing:
    if len(samples) >= 2:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    else:
        q1 = q3 = samples[0]
    return Timing(statistics.median(samples), min(samples), q1, q3, len(samples))


def sgemm_operands(size: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random float32 ``size`` x ``size`` matrices a and b and an output buffer for
    ``numpy.matmul(a, b, out=out)``, already run once (the warm-up call)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), np.float32)
    np.matmul(a, b, out=out)
    return a, b, out


def sgemm_rate(size: int = 2048, repeats: int = 5) -> dict:
    """The machine's own limit: GFLOP/s of a ``size``^3 float32 ``numpy.matmul``.

    Best of ``repeats`` calls (the median is returned too), after one warm-up
    call, with NumPy's BLAS at the current thread setting.
    """
    a, b, out = sgemm_operands(size)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    result = dict(size=size, repeats=repeats, best_seconds=min(times),
                  median_seconds=statistics.median(times), gflops=flops / min(times) / 1e9,
                  median_gflops=flops / statistics.median(times) / 1e9, torch_gflops=None)
    if torch_available():
        result["torch_gflops"] = _torch_sgemm_gflops(a, b, repeats)
    return result


def _torch_sgemm_gflops(a: np.ndarray, b: np.ndarray, repeats: int) -> float:
    """The same product with ``torch.mm`` (PyTorch's own BLAS), best of ``repeats``."""
    import torch

    a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
    out = torch.mm(a_t, b_t)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a_t, b_t, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9


def ms_text(seconds: float | None) -> str:
    """Milliseconds with three significant digits or so (``"—"`` for None)."""
    if seconds is None:
        return "—"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


# --------------------------------------------------------------------------- the machine

def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        # The report's own output in benchmarks/results does not make the code "uncommitted".
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)benchmarks/results"],
                               cwd=REPO_DIR, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + (" (uncommitted changes)" if dirty else "")) if commit else "unknown"


def machine_info() -> dict:
    """:func:`cnnblas.info.environment` (CPU, caches, BLAS libraries, thread setting and
    variables, versions), plus the run's date and the code's commit."""
    machine = environment()
    machine.update(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   commit=_git_commit())
    return machine
