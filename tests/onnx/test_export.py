"""cnnblas.onnx.export: onnxruntime runs the exported graphs and gives our outputs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cnnblas import nn
from cnnblas.nn.blocks import downsample
from tests.onnx.common import randomize_batchnorm, relative_error

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx.reference")
ort = pytest.importorskip("onnxruntime")

from cnnblas.onnx import export  # noqa: E402


def onnxruntime_output(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def mixed_sequential():
    """Every leaf layer, with asymmetric padding, dilation, groups and a transposed conv."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=((1, 2), (0, 1)), stride=2, dilation=2, rng=0),
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1, groups=2, rng=1),
        nn.Tanh(),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Sigmoid(),
        nn.MaxPool2d(2, padding=1),
        nn.Conv2d(6, 4, 3, padding="same", groups=2, rng=2),
        nn.Dropout(0.3),
        nn.Identity(),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(4, 3, rng=3),
    )


CASES = {
    "lenet5": (lambda: nn.lenet5(rng=0), (1, 28, 28)),
    "tutorial_cnn": (lambda: nn.tutorial_cnn(input_size=8, rng=0), (1, 8, 8)),
    "resnet20": (lambda: randomize_batchnorm(nn.resnet20(rng=0)), (3, 16, 16)),
    "resnet18": (lambda: randomize_batchnorm(nn.resnet18(num_classes=5, rng=0)), (3, 32, 32)),
    "bottleneck": (lambda: randomize_batchnorm(nn.Sequential(
        nn.Bottleneck(8, 4, stride=2, downsample=downsample(8, 16, 2, rng=0), rng=0),
        nn.Bottleneck(16, 4, rng=1), nn.AdaptiveAvgPool2d(2), nn.Flatten())), (8, 8, 8)),
    "sequential": (mixed_sequential, (3, 13, 11)),
    "ceil_mode": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.MaxPool2d(2, ceil_mode=True),
                                        nn.AvgPool2d(3, 2, padding=1, ceil_mode=True)),
                  (1, 10, 10)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnxruntime_gives_our_outputs(name, tmp_path):
    build, shape = CASES[name]
    model = build()
    path = export(model, tmp_path / f"{name}.onnx", shape)
    x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    expected = model.eval()(x)
    assert relative_error(onnxruntime_output(path, x), expected) < 1e-4


def test_graph_names_follow_the_model_and_training_mode_is_restored(tmp_path):
    model = randomize_batchnorm(nn.resnet20(rng=0))
    model.train()
    path = export(model, tmp_path / "r20.onnx", (3, 8, 8), batch_size=2)
    assert model.training and all(module.training for module in model.modules())
    proto = onnx.load(str(path))
    initializers = {tensor.name for tensor in proto.graph.initializer}
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "fc.bias",
            "layer3.2.bn2.running_var"} <= initializers
    nodes = {node.name: node.op_type for node in proto.graph.node}
    assert nodes["layer1.0.add"] == "Add" and nodes["layer1.0.relu_1"] == "Relu"
    assert nodes["avgpool"] == "GlobalAveragePool" and nodes["fc"] == "Gemm"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert proto.opset_import[0].version == 17


def test_float64_models_export_as_double(tmp_path):
    model = nn.lenet5(input_size=8, dtype=np.float64, rng=0)
    path = export(model, tmp_path / "lenet64.onnx", (1, 8, 8), opset=13)
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    # onnxruntime has no double Conv on the CPU: onnx's own reference evaluator runs it.
    got = onnx.reference.ReferenceEvaluator(proto).run(None, {"input": x})[0]
    assert got.dtype == np.float64
    assert relative_error(got, model.eval()(x)) < 1e-12


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, rng=0)

    def forward(self, x):
        return x + self.conv(x)


class Scale(nn.Module):
    def forward(self, x):
        return 2 * x


@pytest.mark.parametrize(("model", "message"), [
    (nn.Sequential(nn.ReLU(), Custom()), r"cannot export 1 \(Custom\): its forward is Python"),
    (nn.Sequential(nn.Sequential(nn.ReLU(), Scale())), r"cannot export 0\.1 \(Scale\): no ONNX"),
    (Scale(), r"cannot export the model \(Scale\)"),
])
def test_unknown_layers_and_composites_are_named(model, message, tmp_path):
    target = tmp_path / "bad.onnx"
    with pytest.raises(TypeError, match=message):
        export(model, target, (2, 4, 4))
    assert not target.exists()


def test_a_subclass_that_changes_forward_is_refused(tmp_path):
    class DoubleReLU(nn.ReLU):
        def forward(self, x):
            return 2 * super().forward(x)

    class PlainReLU(nn.ReLU):
        pass

    export(nn.Sequential(PlainReLU()), tmp_path / "plain.onnx", (2,))
    with pytest.raises(TypeError, match=r"cannot export 0 \(DoubleReLU\)"):
        export(nn.Sequential(DoubleReLU()), tmp_path / "double.onnx", (2,))


def test_ceil_mode_where_onnx_sizes_the_output_differently_is_refused(tmp_path):
    """A 5x5 input, kernel 2, stride 2, padding 1: PyTorch's rule drops the window that
    would start in the padding (3x3 out), ONNX's shape rule keeps it (4x4 out)."""
    model = nn.Sequential(nn.MaxPool2d(2, 2, padding=1, ceil_mode=True))
    with pytest.raises(TypeError, match=r"cannot export 0 \(MaxPool2d.*ceil_mode.*\(3, 3\)"):
        export(model, tmp_path / "m.onnx", (1, 5, 5))


def test_bad_arguments(tmp_path):
    model = nn.lenet5(input_size=8, rng=0)
    with pytest.raises(ValueError, match="lenet5|input channels"):
        export(model, tmp_path / "a.onnx", (3, 8, 8))
    with pytest.raises(TypeError, match="input_shape"):
        export(model, tmp_path / "a.onnx", 8)
    with pytest.raises(ValueError, match="opset"):
        export(model, tmp_path / "a.onnx", (1, 8, 8), opset=7)
    with pytest.raises(TypeError, match="model must be"):
        export("lenet5", tmp_path / "a.onnx", (1, 8, 8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(model, tmp_path / "missing" / "a.onnx", (1, 8, 8))


def test_without_onnx_the_error_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(ImportError, match=r"pip install 'cnnblas\[onnx\]'"):
        export(nn.lenet5(input_size=8, rng=0), tmp_path / "a.onnx", (1, 8, 8))
