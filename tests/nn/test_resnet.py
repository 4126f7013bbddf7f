"""Residual blocks and ResNets: PyTorch equivalence (a hand-written torch ResNet with
torchvision's names), finite differences, builders, initialisation and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.torch_resnet import torch_resnet_classes
from cnnblas import checkpoint, nn, optim
from cnnblas.nn.blocks import downsample
from cnnblas.nn.gradcheck import check_module_gradients

F64 = np.float64
CIFAR_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}


def rel(actual, expected) -> float:
    """``max|actual - expected| / max|expected|``, in float64."""
    actual, expected = np.asarray(actual, F64), np.asarray(expected, F64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def to_torch(torch, state):
    return {key: torch.from_numpy(np.array(value)) for key, value in state.items()}


def torch_twin(torch, model, name):
    """The hand-written torch network of the same architecture, holding ``model``'s weights."""
    basic, _, resnet = torch_resnet_classes(torch)
    if name in CIFAR_DEPTHS:
        n = CIFAR_DEPTHS[name]
        twin = resnet(basic, (n, n, n), model.fc.out_features, imagenet_stem=False)
    else:
        twin = resnet(basic, {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}[name],
                      model.fc.out_features, imagenet_stem=True)
    if model.fc.weight.dtype == F64:
        twin = twin.double()  # before loading: a float32 twin would round the weights
    twin.load_state_dict(to_torch(torch, model.state_dict()), strict=True)
    return twin


# -- ResNet-20 is PyTorch's network: forward, loss, gradients, statistics, SGD ---------------


def compare_training(torch, model, twin, x, labels, steps=3):
    """Train ``model`` and its torch ``twin`` side by side on one batch with SGD (momentum
    0.9, weight decay 5e-4); return the max relative error of each quantity.

    Gradients are compared at the first step only. From then on the weights differ by
    rounding, and a ReLU whose input lies within rounding of 0 can switch in one network
    and not the other, moving a few gradient entries by their whole size: only the
    weights they lead to are compared after that, per tensor and (``"weights after 3
    steps, global"``) relative to the largest weight of the model, which a switch in
    float32 leaves near 1e-4 where the per-tensor error of a BatchNorm bias (which
    starts at 0, so its value is its few updates) can reach 1e-2.
    """
    tx, tlabels = torch.from_numpy(x), torch.from_numpy(labels)
    criterion = nn.SoftmaxCrossEntropy()
    hyper = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt = optim.SGD(model.parameters(), **hyper)
    t_opt = torch.optim.SGD(twin.parameters(), **hyper)
    t_params, t_buffers = dict(twin.named_parameters()), dict(twin.named_buffers())
    errors = {"logits": 0.0, "loss": 0.0}
    for step in range(steps):
        opt.zero_grad()
        t_opt.zero_grad()
        logits = model(x)
        loss = criterion(logits, labels)
        model.backward(criterion.backward())
        t_logits = twin(tx)
        t_loss = torch.nn.functional.cross_entropy(t_logits, tlabels)
        t_loss.backward()
        errors["logits"] = max(errors["logits"], rel(logits, t_logits.detach()))
        errors["loss"] = max(errors["loss"], rel(loss, t_loss.item()))
        if step == 0:
            errors["gradients"] = max(rel(param.grad, t_params[name].grad)
                                      for name, param in model.named_parameters())
            errors["running stats"] = max(rel(buffer, t_buffers[name])
                                          for name, buffer in model.named_buffers())
        opt.step()
        t_opt.step()
    errors[f"weights after {steps} steps"] = max(rel(param.data, t_params[name].detach())
                                                 for name, param in model.named_parameters())
    errors[f"weights after {steps} steps, global"] = max(
        float(np.abs(param.data - t_params[name].detach().numpy()).max())
        for name, param in model.named_parameters()) / max(
        float(np.abs(param.data).max()) for param in model.parameters())
    errors[f"running stats after {steps} steps"] = max(
        rel(buffer, t_buffers[name]) for name, buffer in model.named_buffers())
    model.eval()
    twin.eval()
    with torch.no_grad():
        errors["eval logits"] = rel(model(x), twin(tx))
    return errors


@pytest.mark.torch
def test_resnet20_float32_training_steps_match_torch(torch):
    """float32 with the im2col GEMM, the arithmetic of PyTorch's CPU convolution. (The
    float32 Winograd F(4x4, 3x3) that ``"auto"`` picks for most of these layers rounds
    differently, ~5e-6 per layer (tests/ops), enough to switch a ReLU whose input is
    ~1e-5; the float64 test below checks the default algorithms.)"""
    model = nn.resnet20(rng=0)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.algorithm = "gemm"
    twin = torch_twin(torch, model, "resnet20")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    errors = compare_training(torch, model, twin, x, rng.integers(0, 10, 8))
    print("ResNet-20 float32 (gemm) vs torch, max relative errors:", errors)
    # ReLUs switch after the first step here: at the second step a stem BatchNorm output
    # is -9.2e-8 in PyTorch, within one float32 rounding of 0, and either sign is right
    # (see compare_training; one such switch moves a BatchNorm bias's few updates by
    # ~2.5% and the weights by 6e-4 of the largest). The first step is exact to
    # rounding, and the float64 test below checks every step to 1e-12.
    assert errors.pop("weights after 3 steps") < 5e-2, errors
    assert errors.pop("gradients") < 2e-3, errors
    assert errors.pop("weights after 3 steps, global") < 2e-3, errors
    assert errors.pop("eval logits") < 5e-3, errors
    assert max(errors.values()) < 1e-4, errors


@pytest.mark.torch
def test_resnet20_float64_training_steps_match_torch(torch):
    """float64, default algorithms (Winograd, direct and GEMM convolutions)."""
    model = nn.resnet20(rng=0, dtype=F64)
    twin = torch_twin(torch, model, "resnet20")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32))
    errors = compare_training(torch, model, twin, x, rng.integers(0, 10, 8))
    print("ResNet-20 float64 (auto) vs torch, max relative errors:", errors)
    assert max(errors.values()) < 1e-12, errors


@pytest.mark.torch
@pytest.mark.parametrize("name, size", [("resnet20", 32), ("resnet18", 64)])
def test_torch_state_dict_loads_key_for_key(torch, name, size):
    twin = torch_twin(torch, getattr(nn, name)(rng=0), name)
    generator = torch.Generator().manual_seed(0)
    for module in twin.modules():  # non-trivial running statistics for the eval forward
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
    t_state = {key: value.detach().numpy() for key, value in twin.state_dict().items()}
    model = getattr(nn, name)(rng=1)
    ours = model.state_dict()
    assert list(ours) == list(t_state)
    assert [value.shape for value in ours.values()] == [value.shape for value in t_state.values()]
    assert [value.dtype for value in ours.values()] == [value.dtype for value in t_state.values()]
    model.load_state_dict(t_state)
    x = np.random.default_rng(2).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = twin.eval()(torch.from_numpy(x))
    assert rel(model.eval()(x), expected) < 1e-4


@pytest.mark.torch
def test_bottleneck_matches_torch(torch):
    _, t_bottleneck, _ = torch_resnet_classes(torch)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 7, 7))
    for block, t_block in [
        (nn.Bottleneck(8, 4, 2, downsample(8, 16, 2, F64, rng=0), dtype=F64, rng=1),
         t_bottleneck(8, 4, 2, torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1, 2, bias=False),
                                                   torch.nn.BatchNorm2d(16)))),
        (nn.Bottleneck(8, 2, dtype=F64, rng=2), t_bottleneck(8, 2)),
    ]:
        t_block = t_block.double()
        t_block.load_state_dict(to_torch(torch, block.state_dict()), strict=True)
        tx = torch.tensor(x, requires_grad=True)
        t_y = t_block(tx)
        dy = rng.standard_normal(t_y.shape)
        t_y.backward(torch.from_numpy(dy))
        y = block(x)
        assert rel(y, t_y.detach()) < 1e-12
        assert rel(block.backward(dy), tx.grad) < 1e-10
        t_params = dict(t_block.named_parameters())
        for name, param in block.named_parameters():
            assert rel(param.grad, t_params[name].grad) < 1e-10, name
        assert block.relu.pending_backwards == 0


# -- finite differences --------------------------------------------------------------------


def test_tiny_residual_network_matches_finite_differences():
    net = nn.Sequential(
        nn.BasicBlock(2, 2, dtype=F64, rng=0),
        nn.BasicBlock(2, 3, stride=2, downsample=downsample(2, 3, 2, F64, rng=1), dtype=F64,
                      rng=2),
    )
    x = np.random.default_rng(4).standard_normal((3, 2, 5, 5))
    errors = check_module_gradients(net, x, max_checks=25, rng=0)
    assert max(errors.values()) < 1e-6, errors
    assert all(module.pending_backwards == 0 for module in net.modules())


def test_bottleneck_and_small_resnet_match_finite_differences():
    block = nn.Bottleneck(4, 2, stride=2, downsample=downsample(4, 8, 2, F64, rng=0), dtype=F64,
                          rng=1)
    x = np.random.default_rng(5).standard_normal((2, 4, 5, 5))
    errors = check_module_gradients(block, x, max_checks=20, rng=0)
    assert max(errors.values()) < 1e-6, errors
    model = nn.ResNet(nn.BasicBlock, (1, 1, 1), num_classes=3, stem="cifar", dtype=F64, rng=0,
                      input_grad=True)
    x = np.random.default_rng(6).standard_normal((2, 3, 8, 8))
    errors = check_module_gradients(model, x, max_checks=6, rng=0)
    assert max(errors.values()) < 1e-6, errors


# -- builders, layout, initialisation -----------------------------------------------------------


@pytest.mark.parametrize("name, n", CIFAR_DEPTHS.items())
def test_cifar_builders_have_the_paper_layout(name, n):
    model = nn.build_model(name, num_classes=7, rng=0)
    assert nn.MODEL_BUILDERS[name] is getattr(nn, name)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [n, n, n]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 6 * n + 2  # 3x3 convolutions and fc are the weighted layers
    state = model.state_dict()
    assert state["conv1.weight"].shape == (16, 3, 3, 3) and "conv1.bias" not in state
    assert state["layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
    assert state["layer3.0.downsample.1.bias"].shape == (64,)
    assert "layer1.0.downsample.0.weight" not in state and "maxpool" not in repr(model)
    assert state["fc.weight"].shape == (7, 64)
    assert state["bn1.num_batches_tracked"].dtype == np.int64
    assert model.conv1.stride == (1, 1) and model.layer2[0].conv1.stride == (2, 2)


def test_resnet20_parameter_count_and_output():
    model = nn.resnet20(rng=0)
    # He et al. 2016, Table 6: 0.27M (with 1x1 projections at the two stage changes).
    assert sum(param.size for param in model.parameters()) == 272_474
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, 10) and y.dtype == np.float32
    assert model.backward(np.ones_like(y)) is None
    model = nn.resnet20(rng=0, input_grad=True)
    model(x)
    dx = model.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.dtype == np.float32


def test_resnet18_and_34_layout():
    for name, counts in (("resnet18", [2, 2, 2, 2]), ("resnet34", [3, 4, 6, 3])):
        model = getattr(nn, name)(num_classes=5, rng=0)
        assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3, 4)] == counts
        assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
        assert model.maxpool.kernel_size == (3, 3) and model.fc.weight.shape == (5, 512)
    assert sum(p.size for p in nn.resnet18(rng=0).parameters()) == 11_689_512  # torchvision's
    model = nn.ResNet(nn.Bottleneck, (1, 1, 1, 1), num_classes=3, rng=0)  # expansion 4
    state = model.state_dict()
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer4.0.conv3.weight"].shape == (2048, 512, 1, 1)
    assert state["fc.weight"].shape == (3, 2048)
    assert model.eval()(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3)


def test_initialisation_is_torchvisions():
    model = nn.resnet18(rng=0)
    weight = model.layer4[1].conv2.weight.data  # fan_out = 512 * 9
    assert abs(weight.std() / np.sqrt(2 / (512 * 9)) - 1) < 0.01 and abs(weight.mean()) < 1e-4
    stem = model.conv1.weight.data  # fan_out = 64 * 49
    assert abs(stem.std() / np.sqrt(2 / (64 * 49)) - 1) < 0.05
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert (module.weight.data == 1).all() and (module.bias.data == 0).all()
    assert np.abs(model.fc.weight.data).max() <= 1 / np.sqrt(512)
    a, b = nn.resnet20(rng=3), nn.resnet20(rng=3)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        np.testing.assert_array_equal(x, y, err_msg=key)


def test_float64_resnet():
    model = nn.resnet20(dtype=F64, rng=0, num_classes=4, in_channels=1)
    y = model(np.zeros((2, 1, 8, 8)))
    assert y.dtype == F64 and y.shape == (2, 4)


# -- bad input ------------------------------------------------------------------------------


def test_block_channel_errors_name_the_block_and_both_counts():
    block = nn.BasicBlock(16, 16)
    with pytest.raises(ValueError, match=r"BasicBlock\(inplanes=16, planes=16, stride=1\) "
                                         r"expects 16 input channels, got 8"):
        block(np.zeros((1, 8, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"Bottleneck\(inplanes=16, planes=8, stride=1\) needs a "
                                         r"downsample.*32 channels.*16 channels"):
        nn.Bottleneck(16, 8)
    with pytest.raises(ValueError, match=r"BasicBlock.*needs a downsample.*stride 2"):
        nn.BasicBlock(16, 16, stride=2)
    with pytest.raises(ValueError, match=r"shortcut gives shape \(1, 8, 4, 4\).*\(1, 8, 2, 2\)"):
        nn.BasicBlock(4, 8, stride=2, downsample=downsample(4, 8, 1))(
            np.zeros((1, 4, 4, 4), np.float32))
    with pytest.raises(TypeError, match="downsample must be a cnnblas.nn.Module"):
        nn.BasicBlock(4, 8, downsample="conv")
    with pytest.raises(ValueError, match="BasicBlock planes must be an int >= 1, got 0"):
        nn.BasicBlock(4, 0)
    model = nn.resnet20(rng=0)
    with pytest.raises(ValueError, match=r"ResNet\.conv1.*expects 3 input channels, got 1"):
        model(np.zeros((1, 1, 32, 32), np.float32))
    with pytest.raises(RuntimeError, match=r"ResNet\.fc: Linear.*nothing cached"):
        model.backward(np.zeros((1, 10), np.float32))


def test_builder_argument_errors():
    with pytest.raises(ValueError, match=r"depth of a CIFAR ResNet must be 6n \+ 2.*got 21"):
        nn.resnet_cifar(21)
    with pytest.raises(ValueError, match="depth must be an int >= 8, got 2"):
        nn.resnet_cifar(2)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1, got 0"):
        nn.resnet20(num_classes=0)
    with pytest.raises(TypeError, match="input_grad must be a bool"):
        nn.resnet20(input_grad=1)
    with pytest.raises(ValueError, match=r"ResNet stem must be one of .*got 'mnist'"):
        nn.ResNet(nn.BasicBlock, (1, 1, 1), stem="mnist")
    with pytest.raises(ValueError, match=r"layers must give 4 block counts.*got \(1, 1, 1\)"):
        nn.ResNet(nn.BasicBlock, (1, 1, 1))
    with pytest.raises(TypeError, match="block must be a cnnblas.nn.Module class with an int "
                                        "expansion"):
        nn.ResNet(nn.ReLU, (1, 1, 1, 1))


@pytest.mark.parametrize("source, target, first", [
    ("resnet32", "resnet20", "first unexpected key 'layer1.3.conv1.weight'"),
    ("resnet20", "resnet32", "first missing key 'layer1.3.conv1.weight'"),
    ("resnet18", "resnet20", "first missing key 'layer1.2.conv1.weight'"),
])
def test_state_dict_of_another_depth_is_refused_whole(source, target, first):
    model = getattr(nn, target)(rng=0)
    before = model.state_dict()
    with pytest.raises(ValueError, match=rf"{first}.*in all\).*Nothing was loaded"):
        model.load_state_dict(getattr(nn, source)(rng=1).state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_state_dict_shape_or_dtype_mismatch_loads_nothing():
    model = nn.resnet20(rng=0)
    before = model.state_dict()
    wrong = nn.resnet20(rng=1, num_classes=5).state_dict()  # every key fits but fc's shapes
    with pytest.raises(ValueError, match=r"state_dict\['fc.weight'\] has shape \(5, 64\), the "
                                         r"module expects \(10, 64\); nothing was loaded"):
        model.load_state_dict(wrong)
    source = nn.resnet20(rng=1).state_dict()
    integers = {key: value.astype(np.int32) if value.dtype == np.float32 else value
                for key, value in source.items()}
    with pytest.raises(ValueError, match=r"state_dict\['conv1.weight'\] has dtype int32, "
                                         r"the module expects float32"):
        model.load_state_dict(integers)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    # float64 is cast to the model's float32, as torch's copy_ does.
    model.load_state_dict({key: value.astype(F64) if value.dtype == np.float32 else value
                           for key, value in source.items()})
    for key, value in model.state_dict().items():
        assert value.dtype == source[key].dtype, key
        np.testing.assert_array_equal(value, source[key], err_msg=key)


def test_model_from_checkpoint_rebuilds_a_resnet_checkpoint(tmp_path):
    model = nn.resnet20(num_classes=4, rng=0)
    model(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    path = checkpoint.save_checkpoint(
        tmp_path / "r20.npz", {"model": model.state_dict()}, epoch=1,
        metadata={"model": {"name": "resnet20", "kwargs": {"num_classes": 4}}})
    loaded, _ = nn.model_from_checkpoint(path)
    assert not loaded.training
    for (key, value), expected in zip(loaded.state_dict().items(), model.state_dict().values(),
                                      strict=True):
        np.testing.assert_array_equal(value, expected, err_msg=key)
    checkpoint.save_checkpoint(
        tmp_path / "wrong.npz", {"model": model.state_dict()}, epoch=1,
        metadata={"model": {"name": "resnet32", "kwargs": {"num_classes": 4}}})
    with pytest.raises(ValueError, match=r"wrong\.npz: cannot rebuild the model 'resnet32'.*"
                                         r"first missing key 'layer1\.3\.conv1\.weight'"):
        nn.model_from_checkpoint(tmp_path / "wrong.npz")


def test_resnet_layers_must_be_a_sequence():
    with pytest.raises(TypeError, match="ResNet layers must be a sequence of 3 block counts"):
        nn.ResNet(nn.BasicBlock, 3, stem="cifar")
