"""Where a cnnblas training step spends its time, by layer type: a wrapping profiler.

:class:`LayerProfiler` replaces, on one model's instances, the ``forward`` and
``backward`` of every module below the root (the layers, and the blocks and
containers that hold them), and the loss's and the optimizer's methods, by
timers (``time.perf_counter``). Each timer charges its call's *own* time,
its elapsed time minus that of the timed calls inside it, to a category:

- a convolution (:class:`cnnblas.nn.Conv2d`): ``"Conv2d forward (ALG)"`` /
  ``"Conv2d backward (ALG)"`` with ALG the algorithm it runs
  (:func:`cnnblas.ops.algorithms.choose_algorithm` on its input's shape and
  its ``algorithm`` setting);
- any other layer: ``"<Class> forward"`` / ``"<Class> backward"``, a
  BatchNorm's fused passes (which the residual blocks call with the ReLU and
  the residual add folded in) included;
- a module holding others (a residual block, a Sequential): ``"<Class> own
  code"``, what it does itself: for the blocks the residual adds and
  shape checks, for a Sequential its loop;
- the loss (``loss``), and the optimizer's ``zero_grad`` and ``step``
  (``optimizer``).

The step's wall time minus all of these is the root model's own code and the
loop's Python (``"Python overhead"``). Only cnnblas's public module API is
used (instance attributes shadow the class methods and are deleted again by
:meth:`LayerProfiler.remove`), so it measures whatever the layers do.
"""

from __future__ import annotations

import time
from collections import defaultdict

#: Categories grouped for the report's headline, by the start of their name.
GROUPS = (("Conv2d", "convolutions"), ("BatchNorm", "BatchNorm"), ("ReLU", "ReLU"),
          ("MaxPool", "pooling"), ("AvgPool", "pooling"), ("AdaptiveAvgPool", "pooling"),
          ("Linear", "linear"), ("loss", "loss"), ("optimizer", "optimizer"))


def group_of(category: str) -> str:
    """The headline group of a category (e.g. every ``Conv2d ...`` is "convolutions")."""
    for prefix, group in GROUPS:
        if category.startswith(prefix):
            return group
    if category.startswith("Sequential"):
        return "Sequential loops"
    if category.endswith("own code"):
        return "blocks' own code (residual adds)"
    return category


class LayerProfiler:
    """Per-category own time of the wrapped calls (seconds, summed over the calls).

    Parameters
    ----------
    model : cnnblas.nn.Module
        Every module below it gets timed forward/backward methods.
    criterion, optimizer : the loss module and the optimizer of the step, or None.
    """

    def __init__(self, model, criterion=None, optimizer=None):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._inside = [0.0]  # time of the timed calls inside each open call
        self._patched: list[tuple[object, str]] = []
        for name, module in model.named_modules():
            if not name:
                continue
            leaf = not any(True for _ in module.children())
            self._wrap_module(module, leaf)
        if criterion is not None:
            for method in ("forward", "backward"):
                self._patch(criterion, method, "loss")
        if optimizer is not None:
            for method in ("zero_grad", "step"):
                self._patch(optimizer, method, "optimizer (zero_grad, step)")

    def _wrap_module(self, module, leaf: bool) -> None:
        kind = type(module).__name__
        if not leaf:
            for method in ("forward", "backward"):
                self._patch(module, method, f"{kind} own code")
            return
        if _is_conv2d(module):
            algorithm = _AlgorithmOf(module)
            self._patch(module, "forward", lambda x: f"{kind} forward ({algorithm(x)})")
            self._patch(module, "backward", lambda dy: f"{kind} backward ({algorithm.last})")
            return
        for method in ("forward", "backward"):
            self._patch(module, method, f"{kind} {method}")
        # Blocks call these instead of forward/backward to fuse the ReLU and the
        # residual add into BatchNorm's passes (cnnblas.nn.BatchNorm2d); the plain
        # methods may call them too, so calls can count twice, never the time.
        for method in ("forward_fused", "backward_fused"):
            if hasattr(module, method):
                self._patch(module, method, f"{kind} {method.split('_')[0]}")

    def _patch(self, owner, method: str, category) -> None:
        original = getattr(owner, method)
        name_of = category if callable(category) else None
        inside = self._inside
        seconds, calls = self.seconds, self.calls

        def timed(*args, **kwargs):
            inside.append(0.0)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                children = inside.pop()
                key = name_of(*args) if name_of else category
                seconds[key] += elapsed - children
                calls[key] += 1
                inside[-1] += elapsed

        object.__setattr__(owner, method, timed)
        self._patched.append((owner, method))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def total_calls(self) -> int:
        return sum(self.calls.values())

    def remove(self) -> None:
        """Restore the class methods (delete the instance attributes)."""
        for owner, method in self._patched:
            owner.__dict__.pop(method, None)
        self._patched.clear()


class _AlgorithmOf:
    """The algorithm name of a Conv2d for an input, remembered for its backward."""

    def __init__(self, layer):
        self.layer = layer
        self.last = "?"
        self._by_shape: dict[tuple, str] = {}

    def __call__(self, x) -> str:
        shape = getattr(x, "shape", None)
        if shape not in self._by_shape:
            self._by_shape[shape] = self._choose(shape)
        self.last = self._by_shape[shape]
        return self.last

    def _choose(self, shape) -> str:
        from cnnblas.ops.algorithms import choose_algorithm

        layer = self.layer
        try:
            return choose_algorithm(shape, layer.weight.shape, layer.stride, layer.dilation,
                                    layer.groups, getattr(layer, "algorithm", "auto"))
        except (TypeError, ValueError):
            return "?"


def _is_conv2d(module) -> bool:
    from cnnblas.nn import Conv2d

    return isinstance(module, Conv2d)


def wrapper_cost(calls: int = 20000) -> float:
    """Seconds one timer adds to a call: a timed no-op minus the plain no-op."""

    class Owner:
        def noop(self, x):
            return x

    owner = Owner()
    plain = owner.noop
    profiler = LayerProfiler.__new__(LayerProfiler)
    profiler.seconds, profiler.calls, profiler._inside = defaultdict(float), defaultdict(int), [0.0]
    profiler._patched = []
    profiler._patch(owner, "noop", "noop")
    timed = owner.noop
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            plain(None)
        middle = time.perf_counter()
        for _ in range(calls):
            timed(None)
        end = time.perf_counter()
        best = min(best, ((end - middle) - (middle - start)) / calls)
    return max(best, 0.0)
