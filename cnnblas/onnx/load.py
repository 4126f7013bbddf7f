"""Read an ONNX file into a trainable cnnblas module (:class:`~cnnblas.onnx.graph.GraphModule`).

The file is parsed and checked (``onnx.checker``), its initializers become the
layers' weights (copies), and each node becomes one layer
(:mod:`cnnblas.onnx.convert`). ``Constant`` nodes and ``Identity`` nodes of a
constant (``torch.onnx.export`` writes both) are folded into the constants;
nodes that do not lead to the output are dropped. While building, every layer
is run once on a probe batch of zeros, so a graph whose shapes do not fit
fails at load time, naming the node.

What the graph must be: one input, float or double, of static shape except
the batch axis; one output; operators and attributes of
:data:`cnnblas.onnx.convert.CONVERTERS`; opset 13 or newer of the default
domain; weights stored in the file (no external data).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnblas.onnx._common import MIN_OPSET, require_onnx
from cnnblas.onnx.convert import CONVERTERS, NodeError, NodeView
from cnnblas.onnx.graph import GraphModule, GraphNode

__all__ = ["load"]

#: Names a node's layer cannot take (the GraphModule's own attributes).
_RESERVED = {"nodes", "input_name", "output_name", "training"}


def load(path: str | os.PathLike) -> GraphModule:
    """Build a cnnblas module from the ONNX model in ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.onnx`` file, e.g. written by :func:`cnnblas.onnx.export` or by
        ``torch.onnx.export(..., dynamo=False)`` from a network of the same
        layers (BatchNorm folded into the convolutions is fine).

    Returns
    -------
    GraphModule
        In eval mode; ``.train()`` makes it trainable (forward, backward,
        optimizer steps on its ``parameters()``). It takes any batch size;
        the other input dimensions are the graph's. Weights used by several
        nodes become independent copies.

    Raises
    ------
    ImportError
        The optional ``onnx`` package is missing (``pip install 'cnnblas[onnx]'``).
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A truncated or corrupt file, an invalid model, or a graph cnnblas cannot
        run: an unsupported operator or attribute, or a dynamic shape; the
        message names the node and its operator.
    """
    onnx = require_onnx()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist")
    proto = _parse(onnx, path.read_bytes(), path)
    try:
        return _build(onnx, proto.graph, path)
    except NodeError as error:
        raise ValueError(f"{path}: {error}") from error


def _parse(onnx, data: bytes, path: Path):
    """The checked ModelProto of ``data``; ValueError for anything unreadable."""
    from google.protobuf.message import DecodeError

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise ValueError(f"{path}: not a readable ONNX model (truncated or corrupt file): "
                         f"{error}") from error
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ValueError(f"{path}: not a valid ONNX model (truncated or corrupt file?): "
                         f"{str(error).splitlines()[0]}") from error
    opsets = {entry.domain: entry.version for entry in proto.opset_import}
    version = opsets.get("", opsets.get("ai.onnx"))
    if version is None or version < MIN_OPSET:
        raise ValueError(f"{path}: opset {version} of the default domain is not supported "
                         f"(only {MIN_OPSET} and newer)")
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"{path}: initializer {tensor.name!r} is stored in an external "
                             "file, which is not supported")
    return proto


def _input_spec(onnx, graph, constants, path):
    """(name, probe batch of zeros, declared output dims) of the single graph input."""
    inputs = [value for value in graph.input if value.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"{path}: the graph must have one input and one output, it has "
                         f"{len(inputs)} inputs ({[v.name for v in inputs]}) and "
                         f"{len(graph.output)} outputs")
    value = inputs[0]
    tensor_type = value.type.tensor_type
    dtype = {onnx.TensorProto.FLOAT: np.float32,
             onnx.TensorProto.DOUBLE: np.float64}.get(tensor_type.elem_type)
    if dtype is None:
        raise ValueError(f"{path}: input {value.name!r} must be float or double, got "
                         f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}")
    if not tensor_type.HasField("shape"):
        raise ValueError(f"{path}: input {value.name!r} has no shape (a dynamic shape)")
    dims = [dim.dim_value if dim.HasField("dim_value") else None
            for dim in tensor_type.shape.dim]
    if len(dims) < 2 or None in dims[1:]:
        raise ValueError(f"{path}: input {value.name!r} has shape {dims} (None: dynamic); only "
                         "the batch axis may be dynamic")
    probe = np.zeros((dims[0] or 1, *dims[1:]), dtype)
    out_type = graph.output[0].type.tensor_type
    out_dims = None
    if out_type.HasField("shape"):
        out_dims = [dim.dim_value if dim.HasField("dim_value") else None
                    for dim in out_type.shape.dim]
    return value.name, probe, out_dims


def _needed(graph, output: str) -> set[int]:
    """Indices of the nodes the output depends on."""
    wanted, needed = {output}, set()
    for index in range(len(graph.node) - 1, -1, -1):
        node = graph.node[index]
        if wanted.intersection(node.output):
            needed.add(index)
            wanted.update(name for name in node.input if name)
    return needed


def _layer_name(node, index: int, taken: set[str]) -> str:
    """The weight's name without ``.weight`` (``conv1``), else the node's name, else
    ``<op>_<index>``; made unique and kept off the module's own attributes."""
    base = node.name or f"{node.op_type}_{index}"
    if len(node.input) > 1 and node.input[1].endswith(".weight"):
        base = node.input[1][: -len(".weight")]
    name, suffix = base, 1
    while name in taken or name in _RESERVED or hasattr(GraphModule, name) or not name:
        name, suffix = f"{base}_{suffix}", suffix + 1
    taken.add(name)
    return name


def _constant_value(onnx, node) -> np.ndarray:
    if len(node.attribute) != 1:
        raise NodeError(f"node {node.name!r} (Constant): expects exactly one value attribute")
    value = onnx.helper.get_attribute_value(node.attribute[0])
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if node.attribute[0].name in ("value_float", "value_floats", "value_int", "value_ints"):
        return np.array(value)
    raise NodeError(f"node {node.name!r} (Constant): attribute {node.attribute[0].name!r} is "
                    "not supported")


def _short_float(value: float) -> float:
    """The shortest decimal that is the same float32 (ONNX stores float attributes in
    float32: ``epsilon=1e-5`` comes back as 9.99999974738e-06, and is 1e-5 again)."""
    short = float(f"{value:.7g}")
    return short if np.float32(short) == np.float32(value) else value


def _attributes(onnx, node) -> dict:
    decoded = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, float):
            value = _short_float(value)
        decoded[attribute.name] = value
    return decoded


def _convert(onnx, node, constants, probes):
    """The layer of one node (converted, attributes all used, run on the probe)."""
    where = f"node {node.name!r} ({node.op_type})"
    if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS:
        raise NodeError(f"{where}: operator {node.domain + '.' if node.domain else ''}"
                        f"{node.op_type} is not supported (supported: "
                        f"{', '.join(sorted(CONVERTERS))})")
    outputs = [name for name in node.output if name]
    for name in node.input:
        if name and name not in constants and name not in probes:
            raise NodeError(f"{where}: input {name!r} is not computed before this node")
    view = NodeView(node, _attributes(onnx, node), [constants.get(name) for name in node.input],
                    [probes.get(name) for name in node.input])
    inputs = tuple(name for name in node.input if name in probes)
    try:
        layer = CONVERTERS[node.op_type](view)
        view.finish()
        layer.eval()
        probe = layer(*(probes[name] for name in inputs))
    except NodeError:
        raise
    except (ValueError, TypeError) as error:
        raise NodeError(f"{where}: {error}") from error
    return layer, inputs, outputs[0], probe


def _build(onnx, graph, path: Path) -> GraphModule:
    constants = {tensor.name: onnx.numpy_helper.to_array(tensor)
                 for tensor in graph.initializer}
    input_name, probe, out_dims = _input_spec(onnx, graph, constants, path)
    output_name = graph.output[0].name
    probes = {input_name: probe}
    nodes, taken = [], set()
    for index in sorted(_needed(graph, output_name)):
        node = graph.node[index]
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            constants[node.output[0]] = _constant_value(onnx, node)
            continue
        if node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
            continue
        layer, inputs, output, probes[node.output[0]] = _convert(onnx, node, constants, probes)
        nodes.append(GraphNode(_layer_name(node, index, taken), node.op_type, inputs, output,
                               layer))
    if output_name not in probes or output_name == input_name:
        raise ValueError(f"{path}: the output {output_name!r} is not computed from the input "
                         f"{input_name!r} by any node")
    got = probes[output_name].shape
    out_dims = out_dims if out_dims is not None else [None] * len(got)
    if len(got) != len(out_dims) or any(want is not None and want != size for want, size
                                        in zip(out_dims[1:], got[1:], strict=True)):
        raise ValueError(f"{path}: the graph declares output shape {out_dims}, the layers "
                         f"compute {list(got)}")
    return GraphModule(input_name, output_name, nodes).eval()
