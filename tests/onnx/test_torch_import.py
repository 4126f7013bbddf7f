"""Graphs written by ``torch.onnx.export(..., dynamo=False)``: cnnblas.onnx.load gives
PyTorch's outputs, and PyTorch's gradients once training."""

from __future__ import annotations

import pytest

from benchmarks.torch_resnet import torch_resnet_classes
from cnnblas import nn, optim

pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore")]
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from cnnblas.onnx import load  # noqa: E402
from tests.onnx.common import relative_error  # noqa: E402


def torch_lenet5():
    tnn = torch.nn
    torch.manual_seed(0)
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
        tnn.Dropout(0.2),  # dropped by the exporter in eval mode
        tnn.Linear(84, 10))


def export_torch(model, x, path, **kwargs):
    torch.onnx.export(model.eval(), x, str(path), dynamo=False, opset_version=17,
                      input_names=["input"], **kwargs)
    return path


def test_lenet5_from_pytorch_gives_its_outputs(tmp_path):
    model = torch_lenet5()
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    loaded = load(export_torch(model, x, tmp_path / "lenet.onnx"))
    with torch.no_grad():
        expected = model(x).numpy()
    assert relative_error(loaded(x.numpy()), expected) < 1e-4
    # A fixed batch of 4 in the file; the loaded module takes any batch.
    assert loaded(x.numpy()[:1]).shape == (1, 10)


def test_resnet20_from_pytorch_with_folded_batchnorm(tmp_path):
    block, _, resnet = torch_resnet_classes(torch)
    torch.manual_seed(0)
    model = resnet(block, (3, 3, 3), 10, imagenet_stem=False)
    with torch.no_grad():  # non-trivial statistics, so that folding them matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    path = export_torch(model, x, tmp_path / "r20.onnx", dynamic_axes={"input": {0: "N"}})
    loaded = load(path)
    assert not any(isinstance(layer, nn.BatchNorm2d) for layer in loaded.modules())
    assert sum(node.op_type == "Add" for node in loaded.nodes) == 9
    with torch.no_grad():
        expected = model(x).numpy()
    assert relative_error(loaded(x.numpy()), expected) < 1e-4


def test_imported_lenet5_trains_like_pytorch(tmp_path):
    """Gradients of every parameter and one SGD step, against PyTorch from the same weights."""
    model = torch_lenet5()
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    labels = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(3))
    loaded = load(export_torch(model, x, tmp_path / "lenet.onnx")).train()
    model.train()
    model[11].p = 0.0  # the export dropped it; keep PyTorch deterministic too

    criterion = nn.SoftmaxCrossEntropy()
    loss = criterion(loaded(x.numpy()), labels.numpy())
    loaded.backward(criterion.backward())
    torch_loss = torch.nn.functional.cross_entropy(model(x), labels)
    torch_loss.backward()
    assert abs(loss - torch_loss.item()) < 1e-5
    torch_grads = {name: param.grad.numpy() for name, param in model.named_parameters()}
    for name, param in loaded.named_parameters():  # keys as PyTorch's: "0.weight", ...
        assert relative_error(param.grad, torch_grads[name]) < 1e-4, name

    optim.SGD(loaded.parameters(), lr=0.1).step()
    with torch.no_grad():
        for param in model.parameters():
            param -= 0.1 * param.grad
        torch_after = torch.nn.functional.cross_entropy(model(x), labels).item()
    after = criterion(loaded(x.numpy()), labels.numpy())
    assert after < loss
    assert abs(after - torch_after) < 1e-4


def test_other_layers_from_pytorch(tmp_path):
    """Average pooling with padding, a BatchNorm the exporter cannot fold (after a ReLU),
    a transposed convolution, smooth activations and ``view(N, -1)`` (Constant + Reshape)."""
    tnn = torch.nn

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(
                tnn.Conv2d(3, 6, 3, stride=2, padding=(1, 0), dilation=(1, 2), groups=3),
                tnn.ReLU(), tnn.BatchNorm2d(6), tnn.LeakyReLU(0.1),
                tnn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1),
                tnn.Tanh(), tnn.AvgPool2d(3, 2, 1), tnn.Sigmoid(), tnn.MaxPool2d(2),
                tnn.Identity())
            self.fc = tnn.Linear(4 * 3 * 2, 5)

        def forward(self, x):
            y = self.features(x)
            return self.fc(y.view(y.size(0), -1))

    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        bn = model.features[2]
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 11, 13, generator=torch.Generator().manual_seed(1))
    loaded = load(export_torch(model, x, tmp_path / "net.onnx"))
    assert {node.op_type for node in loaded.nodes} >= {"BatchNormalization", "AveragePool",
                                                        "ConvTranspose", "Reshape"}
    with torch.no_grad():
        expected = model(x).numpy()
    assert relative_error(loaded(x.numpy()), expected) < 1e-4
