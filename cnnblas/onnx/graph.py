"""A module that runs a DAG of layers: what :func:`cnnblas.onnx.load` returns.

An ONNX graph is a DAG of named values. :class:`GraphModule` keeps its nodes
in topological order, each a cnnblas layer reading one or more values and
writing one. Forward evaluates them in order, keeping each value until its
last reader has run. Backward walks the nodes in reverse: each node's layer
turns the gradient of its output into gradients of its inputs, and where a
value fed several nodes (a residual block's input feeds the branch and the
shortcut) their gradients are *added*.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnnblas.nn import Module

__all__ = ["Add", "GraphNode", "GraphModule"]


class Add(Module):
    """``y = a + b`` for two arrays of the same shape and dtype (no broadcasting);
    ``backward(dy)`` returns ``(dy, dy)``. It caches nothing."""

    def forward(self, a, b):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"Add needs two inputs of the same shape and dtype, got "
                             f"{a.shape} {a.dtype} and {b.shape} {b.dtype}")
        return a + b

    def backward(self, dy):
        return dy, dy


class GraphNode(NamedTuple):
    """One step of a :class:`GraphModule`: ``output = module(*inputs)``.

    ``name`` is the attribute holding ``module`` (so the prefix of its
    state-dict keys), ``op_type`` the ONNX operator it came from.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    output: str
    module: Module


class GraphModule(Module):
    """Layers wired as a DAG of named values, with forward and backward.

    Parameters
    ----------
    input_name, output_name : str
        The value fed by :meth:`forward`'s argument and the value it returns.
    nodes : list of GraphNode
        In topological order: every input of a node is ``input_name`` or the
        output of an earlier node; every node contributes to ``output_name``.

    Notes
    -----
    The nodes' modules are registered as attributes named ``node.name``, so
    :meth:`parameters`, :meth:`state_dict`, :meth:`train` and :meth:`eval`
    cover them. ``backward`` returns the gradient of the input (None when no
    layer on the input's paths computes one).
    """

    def __init__(self, input_name: str, output_name: str, nodes: list[GraphNode]):
        super().__init__()
        self.input_name = input_name
        self.output_name = output_name
        known = {input_name}
        for node in nodes:
            missing = [name for name in node.inputs if name not in known]
            if missing:
                raise ValueError(f"node {node.name!r} ({node.op_type}) reads {missing[0]!r} "
                                 "before any node computes it; the nodes must be in "
                                 "topological order")
            known.add(node.output)
            setattr(self, node.name, node.module)
        if output_name not in known:
            raise ValueError(f"no node computes the output {output_name!r}")
        self.nodes = tuple(nodes)
        # After which node each value is read for the last time (then it is dropped).
        last_use: dict[str, int] = {}
        for index, node in enumerate(nodes):
            for name in node.inputs:
                last_use[name] = index
        self._drop_after = [[name for name in node.inputs if last_use[name] == index
                             and name != output_name] for index, node in enumerate(nodes)]

    def extra_repr(self) -> str:
        return f"{len(self.nodes)} nodes, {self.input_name!r} -> {self.output_name!r}"

    def forward(self, x):
        """Evaluate the nodes in order on ``x``; returns the output value."""
        values = {self.input_name: x}
        for node, dropped in zip(self.nodes, self._drop_after, strict=True):
            try:
                values[node.output] = node.module(*(values[name] for name in node.inputs))
            except (ValueError, TypeError) as error:
                raise type(error)(f"node {node.name!r} ({node.op_type}): {error}") from error
            for name in dropped:
                del values[name]
        return values[self.output_name]

    def backward(self, dy):
        """Back-propagate ``dy`` (the output's gradient) through the nodes in reverse,
        summing the gradients of values read by several nodes; returns dx or None."""
        grads: dict[str, np.ndarray] = {self.output_name: dy}
        for node in reversed(self.nodes):
            grad = grads.pop(node.output, None)
            if grad is None:  # nothing downstream passes a gradient back:
                node.module.clear_caches()  # its forward's cache will never be used
                continue
            try:
                result = node.module.backward(grad)
            except (ValueError, TypeError, RuntimeError) as error:
                raise type(error)(f"node {node.name!r} ({node.op_type}): {error}") from error
            results = result if isinstance(result, tuple) else (result,)
            for name, value in zip(node.inputs, results, strict=True):
                if value is not None:
                    # Not in place: Add hands the same array to both of its inputs.
                    grads[name] = value if name not in grads else grads[name] + value
        return grads.get(self.input_name)
