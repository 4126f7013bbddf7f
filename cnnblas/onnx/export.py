"""Export a cnnblas model to an ONNX file, node by node.

Each layer maps to one ONNX operator (two for a residual block's sum and
ReLU), with its parameters as initializers named by their state-dict keys
(``layer1.0.conv1.weight``) and its node named by its path in the model
(``layer1.0.conv1``):

=====================================  =========================================
cnnblas                                ONNX
=====================================  =========================================
Conv2d (any padding, stride, groups)   Conv (explicit ``pads``)
ConvTranspose2d                        ConvTranspose (output_padding as end pads)
Linear                                 Gemm (``transB=1``)
ReLU, LeakyReLU, Sigmoid, Tanh         Relu, LeakyRelu, Sigmoid, Tanh
MaxPool2d                              MaxPool
AvgPool2d                              AveragePool (``count_include_pad=1``)
AdaptiveAvgPool2d                      GlobalAveragePool for a 1x1 output,
                                       AveragePool when the sizes divide
BatchNorm2d                            BatchNormalization (running statistics)
Flatten                                Flatten (``axis=1``)
Dropout, Identity                      Identity (the model is exported in eval mode)
Sequential, BasicBlock, Bottleneck,    their layers, the shortcut sum as Add
ResNet, GraphModule (from ``load``)
=====================================  =========================================

A composite module's ``forward`` is Python code, so only the composites above
are exported; any other composite, and any layer without a mapping, raises
:class:`TypeError` naming its path and type. Shapes are followed by running
each layer on a one-image batch as it is emitted, so a layer that does not
fit its input fails here, with the layer's own message.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnblas import nn
from cnnblas.checkpoint import write_atomic
from cnnblas.checks import check_int, normalize_padding
from cnnblas.onnx._common import MIN_OPSET, require_onnx
from cnnblas.onnx.graph import Add, GraphModule
from cnnblas.ops.pooling import ceil_output_size

__all__ = ["export", "to_onnx"]


class _GraphBuilder:
    """Collects the nodes and initializers; hands out unique value names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes = []
        self.initializers = []
        self.names = {"input"}

    def unique(self, base: str) -> str:
        name, index = base, 1
        while name in self.names:
            name, index = f"{base}_{index}", index + 1
        self.names.add(name)
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        """An initializer ``name`` holding ``array`` (copied)."""
        name = self.unique(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.array(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], path: str, **attributes) -> str:
        """Append one node named after ``path``; returns its (single) output's name."""
        name = self.unique(path or op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [name], name=name,
                                                     **attributes))
        return name


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _params(builder, layer, path, names=("weight", "bias")) -> list[str]:
    """Initializers for ``layer``'s parameters that exist, in the operator's input order."""
    inputs = []
    for name in names:
        param = getattr(layer, name)
        if param is not None:
            inputs.append(builder.constant(_join(path, name), param.data))
    return inputs


def _window(kernel, stride, pads) -> dict:
    """``kernel_shape``, ``strides`` and ``pads`` (ONNX order: begins, then ends)."""
    (top, bottom), (left, right) = pads
    return dict(kernel_shape=list(kernel), strides=list(stride), pads=[top, left, bottom, right])


def _conv(builder, layer, path, x_name, x):
    pads = normalize_padding(layer.padding, layer.kernel_size, layer.stride, layer.dilation,
                             x.shape[2:])
    return builder.node("Conv", [x_name, *_params(builder, layer, path)], path,
                        dilations=list(layer.dilation), group=layer.groups,
                        **_window(layer.kernel_size, layer.stride, pads))


def _conv_transpose(builder, layer, path, x_name, x):
    # output_padding extends the output at the bottom and right. Within the padding
    # it is a smaller end padding (real values, not zeros); only the rest stays
    # output_padding, as onnxruntime accepts it only below the stride.
    ends, extra = [], []
    for pad, out_pad in zip(layer.padding, layer.output_padding, strict=True):
        ends.append(pad - min(pad, out_pad))
        extra.append(out_pad - min(pad, out_pad))
    (pad_h, pad_w) = layer.padding
    return builder.node("ConvTranspose", [x_name, *_params(builder, layer, path)], path,
                        dilations=list(layer.dilation), group=layer.groups,
                        output_padding=extra,
                        **_window(layer.kernel_size, layer.stride,
                                  ((pad_h, ends[0]), (pad_w, ends[1]))))


def _linear(builder, layer, path, x_name, x):
    return builder.node("Gemm", [x_name, *_params(builder, layer, path)], path, transB=1)


def _pool(op_type: str, **extra):
    def convert(builder, layer, path, x_name, x):
        (pad_h, pad_w) = layer.padding
        attributes = dict(extra)
        if layer.ceil_mode:
            _check_ceil_mode_shape(layer, path, x)
            attributes["ceil_mode"] = 1
        return builder.node(op_type, [x_name], path, **attributes,
                            **_window(layer.kernel_size, layer.stride,
                                      ((pad_h, pad_h), (pad_w, pad_w))))
    return convert


def _check_ceil_mode_shape(layer, path, x) -> None:
    """ONNX's shape rule for ``ceil_mode`` lacks PyTorch's (and cnnblas's) correction
    that drops a last window starting in the padding; refuse the geometries where the
    two rules differ rather than write a graph whose declared shapes are wrong."""
    axes = list(zip(x.shape[2:], layer.kernel_size, layer.stride, layer.padding, strict=True))
    out_size = tuple(ceil_output_size(*axis) for axis in axes)
    onnx_size = tuple(-(-(size + 2 * pad - kernel) // stride) + 1
                      for size, kernel, stride, pad in axes)
    if onnx_size != tuple(out_size):
        raise TypeError(
            f"cannot export {path or 'the model'} ({layer._describe()}): with ceil_mode its "
            f"output is {tuple(out_size)} on a {tuple(x.shape[2:])} input, where ONNX's rule "
            f"gives {onnx_size} (the last window would start in the padding)")


def _adaptive_avg_pool(builder, layer, path, x_name, x):
    height, width = x.shape[2:]
    out_h, out_w = layer._resolved(height, width)
    if (out_h, out_w) == (1, 1):
        return builder.node("GlobalAveragePool", [x_name], path)
    if height % out_h or width % out_w:
        raise TypeError(
            f"cannot export {path or 'the model'} ({layer._describe()}): ONNX has no adaptive "
            f"pooling, and output {out_h}x{out_w} does not divide the input {height}x{width} "
            "into equal windows (an AveragePool)"
        )
    kernel = (height // out_h, width // out_w)
    return builder.node("AveragePool", [x_name], path, kernel_shape=list(kernel),
                        strides=list(kernel))


def _batch_norm(builder, layer, path, x_name, x):
    channels = layer.num_features
    scale = layer.weight.data if layer.affine else np.ones(channels, layer.dtype)
    shift = layer.bias.data if layer.affine else np.zeros(channels, layer.dtype)
    inputs = [x_name, builder.constant(_join(path, "weight"), scale),
              builder.constant(_join(path, "bias"), shift),
              builder.constant(_join(path, "running_mean"), layer.running_mean),
              builder.constant(_join(path, "running_var"), layer.running_var)]
    return builder.node("BatchNormalization", inputs, path, epsilon=layer.eps)


def _simple(op_type: str, **attributes):
    def convert(builder, layer, path, x_name, x):
        return builder.node(op_type, [x_name], path, **attributes)
    return convert


def _leaky_relu(builder, layer, path, x_name, x):
    return builder.node("LeakyRelu", [x_name], path, alpha=float(layer.negative_slope))


#: Converters of the leaf layers: (builder, layer, path, input name, input array) -> output name.
_LEAVES = {
    nn.Conv2d: _conv,
    nn.ConvTranspose2d: _conv_transpose,
    nn.Linear: _linear,
    nn.ReLU: _simple("Relu"),
    nn.LeakyReLU: _leaky_relu,
    nn.Sigmoid: _simple("Sigmoid"),
    nn.Tanh: _simple("Tanh"),
    nn.MaxPool2d: _pool("MaxPool"),
    nn.AvgPool2d: _pool("AveragePool", count_include_pad=1),
    nn.AdaptiveAvgPool2d: _adaptive_avg_pool,
    nn.BatchNorm2d: _batch_norm,
    nn.Flatten: _simple("Flatten", axis=1),
    nn.Dropout: _simple("Identity"),
    nn.Identity: _simple("Identity"),
}


def _leaf_converter(module):
    """The converter of ``module``'s class, or of the nearest base class when the
    subclass keeps that class's ``forward`` (so it computes the same thing)."""
    for cls in type(module).__mro__:
        if cls in _LEAVES and type(module).forward is cls.forward:
            return _LEAVES[cls]
    return None


def _emit(builder, module, path, x_name, x):
    """Emit ``module`` applied to the value ``x_name`` (whose one-image value is ``x``).

    Returns (output name, output array).
    """
    kind = type(module)
    if kind is nn.Sequential:
        for name, child in module.named_children():
            x_name, x = _emit(builder, child, _join(path, name), x_name, x)
        return x_name, x
    if kind in (nn.BasicBlock, nn.Bottleneck):
        return _emit_block(builder, module, path, x_name, x)
    if kind is nn.ResNet:
        return _emit_resnet(builder, module, path, x_name, x)
    if kind is GraphModule:
        return _emit_graph(builder, module, path, x_name, x)
    convert = _leaf_converter(module)
    if convert is None:
        composite = any(True for _ in module.children())
        raise TypeError(
            f"cannot export {path or 'the model'} ({kind.__name__}): "
            + ("its forward is Python code and ONNX export knows only Sequential, BasicBlock, "
               "Bottleneck, ResNet and GraphModule among composite modules" if composite else
               "no ONNX operator is known for this layer")
        )
    name = convert(builder, module, path, x_name, x)
    return name, module.forward(x)


def _emit_block(builder, block, path, x_name, x):
    """A residual block: the branch, the shortcut, their Add and the final ReLU."""
    out_name, out = x_name, x
    pairs = [("conv1", "bn1"), ("conv2", "bn2")]
    if isinstance(block, nn.Bottleneck):
        pairs.append(("conv3", "bn3"))
    for index, (conv, bn) in enumerate(pairs):
        out_name, out = _emit(builder, getattr(block, conv), _join(path, conv), out_name, out)
        out_name, out = _emit(builder, getattr(block, bn), _join(path, bn), out_name, out)
        if index < len(pairs) - 1:
            out_name, out = _emit(builder, block.relu, _join(path, "relu"), out_name, out)
    short_name, short = x_name, x
    if block.downsample is not None:
        short_name, short = _emit(builder, block.downsample, _join(path, "downsample"),
                                  x_name, x)
    if short.shape != out.shape:
        raise ValueError(f"cannot export {path} ({block._describe()}): the shortcut gives shape "
                         f"{short.shape} but the residual branch gives {out.shape}")
    sum_name = builder.node("Add", [out_name, short_name], _join(path, "add"))
    return _emit(builder, block.relu, _join(path, "relu"), sum_name, out + short)


def _emit_resnet(builder, net, path, x_name, x):
    """Stem, stages and pooling (``ResNet._trunk``), then Flatten and ``fc``."""
    for name, layer in net._trunk():
        x_name, x = _emit(builder, layer, _join(path, name), x_name, x)
    x_name = builder.node("Flatten", [x_name], _join(path, "flatten"), axis=1)
    return _emit(builder, net.fc, _join(path, "fc"), x_name, x.reshape(x.shape[0], -1))


def _emit_graph(builder, graph, path, x_name, x):
    """A loaded graph (e.g. imported, then fine-tuned): its nodes in their order."""
    values = {graph.input_name: (x_name, x)}
    for node in graph.nodes:
        inputs = [values[name] for name in node.inputs]
        where = _join(path, node.name)
        if type(node.module) is Add:
            values[node.output] = (builder.node("Add", [name for name, _ in inputs], where),
                                   inputs[0][1] + inputs[1][1])
        else:
            values[node.output] = _emit(builder, node.module, where, *inputs[0])
    return values[graph.output_name]


def _model_dtype(model) -> np.dtype:
    dtypes = {param.dtype for param in model.parameters()}
    if len(dtypes) > 1:
        raise TypeError("cannot export a model that mixes parameter dtypes "
                        f"{sorted(map(str, dtypes))}")
    return dtypes.pop() if dtypes else np.dtype(np.float32)


def _check_arguments(model, input_shape, opset, batch_size, onnx):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a cnnblas.nn.Module, got {type(model).__name__}")
    if not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise TypeError("input_shape must be the shape of one sample without the batch axis, "
                        f"e.g. (1, 28, 28); got {input_shape!r}")
    shape = tuple(check_int(size, "input_shape entry", minimum=1) for size in input_shape)
    newest = onnx.defs.onnx_opset_version()
    opset = check_int(opset, "opset", minimum=MIN_OPSET)
    if opset > newest:
        raise ValueError(f"opset must be at most {newest} (the installed onnx's newest), got "
                         f"{opset}")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
    return shape, opset, batch_size


def to_onnx(model, input_shape, *, opset=17, batch_size=None):
    """Build the checked ``onnx.ModelProto`` of ``model`` (see :func:`export`)."""
    onnx = require_onnx()
    input_shape, opset, batch_size = _check_arguments(model, input_shape, opset, batch_size,
                                                      onnx)
    dtype = _model_dtype(model)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    builder = _GraphBuilder(onnx)
    try:
        out_name, out = _emit(builder, model, "", "input", np.zeros((1, *input_shape), dtype))
    finally:
        for module, training in modes:
            module.training = training
    if out_name == "input":  # a model that computes the identity still needs one node
        out_name = builder.node("Identity", ["input"], "identity")
    for node in builder.nodes:  # the last value is the graph's "output"
        node.output[:] = ["output" if name == out_name else name for name in node.output]
        node.input[:] = ["output" if name == out_name else name for name in node.input]
    helper = onnx.helper
    elem_type = helper.np_dtype_to_tensor_dtype(dtype)
    batch = batch_size if batch_size is not None else "N"
    graph = helper.make_graph(
        builder.nodes, "cnnblas",
        [helper.make_tensor_value_info("input", elem_type, [batch, *input_shape])],
        [helper.make_tensor_value_info("output", elem_type, [batch, *out.shape[1:]])],
        initializer=builder.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="cnnblas",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path: str | os.PathLike, input_shape, *, opset=17, batch_size=None) -> Path:
    """Write ``model`` as an ONNX file, computed in eval mode.

    Parameters
    ----------
    model : cnnblas.nn.Module
        Any network the builders make (``lenet5``, ``tutorial_cnn``, the
        ResNets) or a :class:`~cnnblas.nn.Sequential` / residual block of
        the layers in the module docstring's table. Its parameters' dtype
        (float32 or float64) is the graph's.
    path : str or os.PathLike
        Destination ``.onnx``, written atomically (temporary file, then rename)
        after ``onnx.checker.check_model`` passed.
    input_shape : sequence of int
        Shape of one sample without the batch axis, e.g. ``(1, 28, 28)``.
    opset : int, default 17
        ONNX opset of the default domain, 13 up to the installed onnx's newest.
    batch_size : int or None, default None
        None gives a symbolic batch axis ``"N"``; an int fixes it.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ImportError
        The optional ``onnx`` package is missing (``pip install 'cnnblas[onnx]'``).
    TypeError
        A layer or composite module with no ONNX mapping; the message names its
        path in the model (e.g. ``"layer2.0.relu"``) and its type.
    ValueError
        An ``input_shape`` that a layer does not accept (the layer's message),
        or a bad ``opset`` / ``batch_size``.

    Notes
    -----
    The model is run once on a one-image batch of zeros to follow the shapes;
    every layer's training flag is restored afterwards, and pending caches are
    dropped (as by :meth:`~cnnblas.nn.Module.eval`).
    """
    proto = to_onnx(model, input_shape, opset=opset, batch_size=batch_size)
    data = proto.SerializeToString()
    return write_atomic(path, lambda handle: handle.write(data))
