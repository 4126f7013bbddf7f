"""One ONNX node -> one cnnblas layer: the operators :func:`cnnblas.onnx.load` reads.

Each converter gets a :class:`NodeView` (the node's attributes, its constant
inputs as arrays, its computed inputs' one-batch probe values) and returns a
layer whose weights are copies of the node's initializers. Attributes are
taken one by one; one left over, or one with a value cnnblas does not
implement (``auto_pad`` other than ``NOTSET``, asymmetric pooling pads, ...),
raises ValueError naming the node and the operator.
"""

from __future__ import annotations

import numpy as np

from cnnblas import nn
from cnnblas.onnx.graph import Add

__all__ = ["CONVERTERS", "NodeView", "NodeError"]


class NodeError(ValueError):
    """A node that cannot be read; the message starts with its name and operator."""


class NodeView:
    """What a converter sees of one node.

    Attributes
    ----------
    node : onnx.NodeProto
    attributes : dict of str to value
        Decoded (``onnx.helper.get_attribute_value``); strings as str.
    constants : list of (ndarray or None)
        Per input: its value when it is an initializer or a constant, else None.
    probes : list of (ndarray or None)
        Per input: its value on the probe batch when it is computed, else None.
    """

    def __init__(self, node, attributes, constants, probes):
        self.node = node
        self.attributes = dict(attributes)
        self.constants = constants
        self.probes = probes

    def fail(self, message: str) -> NodeError:
        return NodeError(f"node {self.node.name!r} ({self.node.op_type}): {message}")

    def take(self, name: str, default=None):
        """Pop attribute ``name`` (``default`` when absent)."""
        return self.attributes.pop(name, default)

    def expect(self, name: str, supported, default):
        """Pop attribute ``name`` and refuse any value but ``supported``."""
        value = self.take(name, default)
        if value != supported:
            raise self.fail(f"attribute {name}={value!r} is not supported (only {supported!r})")

    def finish(self) -> None:
        """Refuse the attributes no converter took."""
        if self.attributes:
            raise self.fail(f"attribute {sorted(self.attributes)[0]!r} is not supported")

    def constant(self, index: int, what: str, optional: bool = False):
        """The constant input ``index`` (an initializer or Constant output)."""
        inputs = self.node.input
        if index >= len(inputs) or not inputs[index]:
            if optional:
                return None
            raise self.fail(f"the {what} (input {index}) is missing")
        if self.constants[index] is None:
            raise self.fail(f"the {what} {inputs[index]!r} is computed in the graph; only "
                            "initializers and constants are supported there")
        return self.constants[index]

    def data_inputs(self, count: int = 1) -> None:
        """Check that the first ``count`` inputs are computed and the rest constant."""
        for index, name in enumerate(self.node.input[:count]):
            if self.probes[index] is None:
                raise self.fail(f"input {name!r} is a constant; it must be computed from the "
                                "graph's input")

    def window(self, spatial_default_stride=1):
        """``(kernel, stride, ((top, bottom), (left, right)), dilation)`` of a 2-D window;
        ``auto_pad`` must be ``NOTSET``."""
        self.expect("auto_pad", "NOTSET", "NOTSET")
        kernel = self.take("kernel_shape")
        if kernel is None or len(kernel) != 2:
            raise self.fail(f"kernel_shape {kernel!r} is not 2-D; only 2-D windows are "
                            "supported")
        stride = self.take("strides", [spatial_default_stride] * 2)
        pads = self.take("pads", [0, 0, 0, 0])
        dilation = self.take("dilations", [1, 1])
        if len(stride) != 2 or len(pads) != 4 or len(dilation) != 2:
            raise self.fail(f"strides {stride}, pads {pads}, dilations {dilation} are not 2-D")
        padding = ((pads[0], pads[2]), (pads[1], pads[3]))
        return tuple(kernel), tuple(stride), padding, tuple(dilation)

    def symmetric(self, padding) -> tuple[int, int]:
        (top, bottom), (left, right) = padding
        if top != bottom or left != right:
            raise self.fail(f"pads {[top, left, bottom, right]} differ between the two sides "
                            "of an axis; only symmetric padding is supported here")
        return top, left


def _with_weights(layer, weight, bias):
    layer.weight.data[...] = weight
    if bias is not None:
        layer.bias.data[...] = np.broadcast_to(bias, layer.bias.shape)
    return layer


def _conv_parts(view):
    """What Conv and ConvTranspose read alike: (weight, bias or None, kernel, stride,
    ((top, bottom), (left, right)), dilation, groups); ``kernel_shape`` defaults to
    the weight's."""
    view.data_inputs()
    weight = view.constant(1, "weight")
    bias = view.constant(2, "bias", optional=True)
    if weight.ndim != 4:
        raise view.fail(f"weight of shape {weight.shape} is not 4-D; only 2-D convolutions "
                        "are supported")
    view.attributes.setdefault("kernel_shape", list(weight.shape[2:]))
    kernel, stride, padding, dilation = view.window()
    if tuple(weight.shape[2:]) != kernel:
        raise view.fail(f"weight of shape {weight.shape} does not fit kernel_shape {kernel}")
    return weight, bias, kernel, stride, padding, dilation, view.take("group", 1)


def _conv(view):
    weight, bias, kernel, stride, padding, dilation, groups = _conv_parts(view)
    layer = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], kernel, stride=stride,
                      padding=padding, dilation=dilation, groups=groups, bias=bias is not None,
                      dtype=weight.dtype, rng=0)
    return _with_weights(layer, weight, bias)


def _conv_transpose(view):
    weight, bias, kernel, stride, padding, dilation, groups = _conv_parts(view)
    output_padding = view.take("output_padding", [0, 0])
    if view.take("output_shape") is not None:
        raise view.fail("attribute 'output_shape' is not supported; give pads and "
                        "output_padding instead")
    # A smaller end padding is output_padding: the output extends at the bottom/right.
    (top, bottom), (left, right) = padding
    if bottom > top or right > left:
        raise view.fail(f"pads {[top, left, bottom, right]} are larger at the end than at the "
                        "start; only the start padding and output_padding are supported")
    output_padding = (output_padding[0] + top - bottom, output_padding[1] + left - right)
    layer = nn.ConvTranspose2d(weight.shape[0], weight.shape[1] * groups, kernel, stride=stride,
                               padding=(top, left), output_padding=output_padding,
                               groups=groups, bias=bias is not None, dilation=dilation,
                               dtype=weight.dtype, rng=0)
    return _with_weights(layer, weight, bias)


def _gemm(view):
    view.data_inputs()
    weight = view.constant(1, "matrix B")
    bias = view.constant(2, "bias C", optional=True)
    view.expect("alpha", 1.0, 1.0)
    view.expect("transA", 0, 0)
    if bias is not None:
        view.expect("beta", 1.0, 1.0)
    else:
        view.take("beta")
    if view.take("transB", 0) == 0:
        weight = weight.T
    if weight.ndim != 2:
        raise view.fail(f"matrix B must be 2-D, got shape {weight.shape}")
    out_features = weight.shape[0]
    if bias is not None and bias.size not in (1, out_features):
        raise view.fail(f"bias C of shape {bias.shape} does not broadcast to ({out_features},)")
    layer = nn.Linear(weight.shape[1], out_features, bias=bias is not None, dtype=weight.dtype,
                      rng=0)
    return _with_weights(layer, weight, None if bias is None else bias.reshape(-1))


def _pool(view):
    view.data_inputs()
    if len([name for name in view.node.output if name]) != 1:
        raise view.fail("only the pooled output is supported (no Indices output)")
    kernel, stride, padding, dilation = view.window()
    if dilation != (1, 1):
        raise view.fail(f"dilations {list(dilation)} are not supported (only [1, 1])")
    ceil_mode = bool(view.take("ceil_mode", 0))
    return kernel, stride, view.symmetric(padding), ceil_mode


def _max_pool(view):
    kernel, stride, padding, ceil_mode = _pool(view)
    view.expect("storage_order", 0, 0)
    return nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)


def _average_pool(view):
    kernel, stride, padding, ceil_mode = _pool(view)
    # Without padding both divisors are the window size.
    include = view.take("count_include_pad", 0)
    if not include and padding != (0, 0):
        raise view.fail("count_include_pad=0 with padding is not supported (AvgPool2d "
                        "divides every window by its full size)")
    return nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode)


def _batch_norm(view):
    view.data_inputs()
    if len([name for name in view.node.output if name]) != 1:
        raise view.fail("only the normalised output is supported (no running-statistics "
                        "outputs)")
    names = ("scale", "bias B", "input_mean", "input_var")
    scale, shift, mean, var = (view.constant(index + 1, name) for index, name in enumerate(names))
    view.expect("training_mode", 0, 0)
    view.expect("spatial", 1, 1)
    epsilon = view.take("epsilon", 1e-5)
    momentum = view.take("momentum", 0.9)
    # ONNX: running = momentum * running + (1 - momentum) * batch; cnnblas the other way.
    layer = nn.BatchNorm2d(scale.shape[0], eps=epsilon, momentum=round(1.0 - momentum, 7),
                           dtype=scale.dtype)
    layer.weight.data[...] = scale
    layer.bias.data[...] = shift
    layer.running_mean[...] = mean
    layer.running_var[...] = var
    return layer


def _flatten(view):
    view.data_inputs()
    view.expect("axis", 1, 1)
    return nn.Flatten()


def _reshape(view):
    """A Reshape that flattens ``(N, ...)`` into ``(N, rest)``, the only one supported."""
    view.data_inputs()
    shape = view.constant(1, "shape")
    view.expect("allowzero", 0, 0)
    source = view.probes[0].shape
    target = [source[axis] if size == 0 else int(size) for axis, size in enumerate(shape)]
    try:
        result = np.empty(source, np.uint8).reshape(target).shape
    except ValueError as error:
        raise view.fail(f"cannot reshape {source} to {list(shape)}") from error
    if len(source) < 2 or result != (source[0], int(np.prod(source[1:]))):
        raise view.fail(f"only a Reshape that flattens (N, ...) to (N, -1) is supported; this "
                        f"one gives {result} from {source}")
    return nn.Flatten()


def _dropout(view):
    view.data_inputs()
    if len([name for name in view.node.output if name]) != 1:
        raise view.fail("the mask output is not supported")
    ratio = view.constant(1, "ratio", optional=True)
    training = view.constant(2, "training_mode", optional=True)
    if training is not None and bool(training):
        raise view.fail("training_mode=True is not supported (the graph is read in "
                        "inference form)")
    view.take("seed")  # the loaded layer draws its own masks
    return nn.Dropout(0.5 if ratio is None else float(ratio))


def _leaky_relu(view):
    view.data_inputs()
    return nn.LeakyReLU(view.take("alpha", 0.01))


def _plain(layer_class, inputs=1):
    def convert(view):
        view.data_inputs(inputs)
        if len(view.node.input) != inputs:
            raise view.fail(f"expects {inputs} input(s), got {len(view.node.input)}")
        return layer_class()
    return convert


def _global_average_pool(view):
    view.data_inputs()
    return nn.AdaptiveAvgPool2d((1, 1))


#: ONNX operator -> converter (NodeView -> layer). Constant and Identity of a
#: constant are folded by the loader before any converter runs.
CONVERTERS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "Relu": _plain(nn.ReLU),
    "LeakyRelu": _leaky_relu,
    "Sigmoid": _plain(nn.Sigmoid),
    "Tanh": _plain(nn.Tanh),
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_average_pool,
    "BatchNormalization": _batch_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Dropout": _dropout,
    "Identity": _plain(nn.Identity),
    "Add": _plain(Add, inputs=2),
}
