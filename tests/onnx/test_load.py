"""cnnblas.onnx.load: graphs from our exporter and from PyTorch's, trainable, and refused
clearly when cnnblas cannot run them."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cnnblas import nn, optim
from cnnblas.nn.gradcheck import check_module_gradients

onnx = pytest.importorskip("onnx")

from cnnblas.onnx import GraphModule, export, load  # noqa: E402
from tests.onnx.common import randomize_batchnorm, relative_error  # noqa: E402

helper = onnx.helper


def residual_net(dtype=np.float32):
    from cnnblas.nn.blocks import downsample

    return randomize_batchnorm(nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=dtype, rng=0),
        nn.BasicBlock(4, 4, dtype=dtype, rng=1),
        nn.BasicBlock(4, 6, stride=2, downsample=downsample(4, 6, 2, dtype, rng=2), dtype=dtype,
                      rng=3),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(6, 3, dtype=dtype, rng=4)))


def test_round_trip_keeps_outputs_and_state_dict_keys(tmp_path):
    model = randomize_batchnorm(nn.resnet20(rng=0))
    path = export(model, tmp_path / "r20.onnx", (3, 8, 8))
    loaded = load(path)
    assert isinstance(loaded, GraphModule) and not loaded.training
    assert list(loaded.state_dict()) == list(model.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert relative_error(loaded(x), model.eval()(x)) < 1e-6
    loaded.load_state_dict(model.state_dict())  # same keys, shapes and dtypes


def test_graph_backward_matches_the_blocks_backward(tmp_path):
    """The DAG walk (summing where a value forks) against BasicBlock's hand-written backward."""
    model = residual_net(np.float64)
    loaded = load(export(model, tmp_path / "res.onnx", (2, 6, 6)))
    model.train()
    loaded.train()
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6))
    dy = np.random.default_rng(2).standard_normal((3, 3))
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-12, atol=1e-12)
    dx_loaded, dx_model = loaded.backward(dy), model.backward(dy)
    np.testing.assert_allclose(dx_loaded, dx_model, rtol=1e-10, atol=1e-12)
    grads = {name: param.grad for name, param in model.named_parameters()}
    for name, param in loaded.named_parameters():
        np.testing.assert_allclose(param.grad, grads[name], rtol=1e-10, atol=1e-12)


def test_graph_gradients_match_finite_differences(tmp_path):
    loaded = load(export(residual_net(np.float64), tmp_path / "res.onnx", (2, 6, 6)))
    loaded.train()
    x = np.random.default_rng(3).standard_normal((4, 2, 6, 6))
    errors = check_module_gradients(loaded, x, max_checks=12)
    assert max(errors.values()) < 1e-6, errors


def test_one_sgd_step_lowers_the_loss_of_an_imported_lenet(tmp_path):
    loaded = load(export(nn.lenet5(input_size=8, rng=0), tmp_path / "lenet.onnx", (1, 8, 8)))
    loaded.train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    criterion = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(loaded.parameters(), lr=0.05)
    before = criterion(loaded(x), labels)
    loaded.backward(criterion.backward())
    opt.step()
    loaded.zero_grad()
    after = criterion(loaded(x), labels)
    assert after < before


# ----------------------------------------------------------------- errors


def write(tmp_path, nodes, inputs, outputs, initializers=(), opset=17, name="g.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def tensor(name, shape):
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def weight(name, shape):
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return onnx.numpy_helper.from_array(array, name)


@pytest.mark.parametrize(("node", "out_shape", "message"), [
    (helper.make_node("Softmax", ["x"], ["y"], name="soft"), [1, 2, 6, 6],
     r"node 'soft' \(Softmax\): operator Softmax is not supported"),
    (helper.make_node("Conv", ["x", "w"], ["y"], name="c", kernel_shape=[3, 3],
                      auto_pad="SAME_UPPER"), [1, 2, 6, 6],
     r"node 'c' \(Conv\): attribute auto_pad='SAME_UPPER' is not supported"),
    (helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[3, 3],
                      pads=[1, 1, 0, 0]), [1, 2, 5, 5],
     r"node 'p' \(MaxPool\): pads \[1, 1, 0, 0\] differ"),
    (helper.make_node("Gemm", ["x", "w"], ["y"], name="g", alpha=2.0), [1, 2],
     r"node 'g' \(Gemm\): attribute alpha=2.0 is not supported"),
    (helper.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[3, 3],
                      pads=[1, 1, 1, 1]), [1, 2, 6, 6],
     r"node 'avg' \(AveragePool\): count_include_pad=0 with padding is not supported"),
    (helper.make_node("Conv", ["x", "w"], ["y"], name="c", kernel_shape=[3, 3],
                      pads=[1, 1, 1, 1], group=2), [1, 2, 6, 6],
     r"node 'c' \(Conv\): .*groups"),
])
def test_unsupported_operators_and_attributes_name_the_node(node, out_shape, message, tmp_path):
    inits = [weight("w", (2, 2, 3, 3))] if node.op_type == "Conv" else []
    if node.op_type == "Gemm":
        inits = [weight("w", (2, 72))]
        node = helper.make_node("Flatten", ["x"], ["f"], name="flat"), \
            helper.make_node("Gemm", ["f", "w"], ["y"], name="g", alpha=2.0, transB=1)
    nodes = list(node) if isinstance(node, tuple) else [node]
    path = write(tmp_path, nodes, [tensor("x", [1, 2, 6, 6])], [tensor("y", out_shape)], inits)
    with pytest.raises(ValueError, match=message):
        load(path)


def test_dynamic_shapes_are_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    path = write(tmp_path, nodes, [tensor("x", ["N", 2, "H", 6])],
                 [tensor("y", ["N", 2, "H", 6])])
    with pytest.raises(ValueError, match=r"input 'x' has shape \[None, 2, None, 6\].*dynamic"):
        load(path)
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape")]
    path = write(tmp_path, nodes, [tensor("x", ["N", 2, 6, 6])], [tensor("y", ["N", "M"])])
    with pytest.raises(ValueError, match=r"node 'shape' \(Shape\): operator Shape is not"):
        load(path)


def test_a_reshape_that_does_not_flatten_is_refused(tmp_path):
    shape = onnx.numpy_helper.from_array(np.array([1, 12, 6], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")]
    path = write(tmp_path, nodes, [tensor("x", [1, 2, 6, 6])], [tensor("y", [1, 12, 6])],
                 [shape])
    with pytest.raises(ValueError, match=r"node 'reshape' \(Reshape\): only a Reshape that "
                                         "flattens"):
        load(path)


def test_a_layer_that_does_not_fit_its_input_names_the_node(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3])]
    path = write(tmp_path, nodes, [tensor("x", [1, 3, 6, 6])], [tensor("y", [1, 2, 4, 4])],
                 [weight("w", (2, 2, 3, 3))])
    with pytest.raises(ValueError, match=r"node 'conv' \(Conv\): .*expects 2 input channels"):
        load(path)


def test_truncated_and_corrupt_files_raise_value_error(tmp_path):
    data = export(nn.lenet5(input_size=8, rng=0), tmp_path / "lenet.onnx",
                  (1, 8, 8)).read_bytes()
    broken = tmp_path / "broken.onnx"
    for length in sorted({*range(0, 64), *range(64, len(data), max(1, len(data) // 97))}):
        broken.write_bytes(data[:length])
        with pytest.raises(ValueError, match="broken.onnx"):
            load(broken)
    rng = np.random.default_rng(0)
    for _ in range(20):
        broken.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match="broken.onnx"):
            load(broken)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "missing.onnx")


def test_without_onnx_the_error_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'cnnblas\[onnx\]'"):
        load(tmp_path / "a.onnx")


def test_a_loaded_graph_exports_again(tmp_path):
    """Import, change the weights (as fine-tuning would), export: onnxruntime agrees."""
    ort = pytest.importorskip("onnxruntime")
    loaded = load(export(residual_net(), tmp_path / "a.onnx", (2, 6, 6)))
    for param in loaded.parameters():
        param.data *= 1.5
    path = export(loaded, tmp_path / "b.onnx", (2, 6, 6))
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert relative_error(session.run(None, {"input": x})[0], loaded(x)) < 1e-5
    assert list(load(path).state_dict()) == list(loaded.state_dict())
