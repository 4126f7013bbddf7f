"""Parameter, Module and Sequential: registration, state dicts, modes, caches, errors."""

from __future__ import annotations

import numpy as np
import pytest

from cnnblas import nn
from cnnblas.nn.gradcheck import check_module_gradients


def small_net(dtype=np.float32):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, dtype=dtype, rng=0),  # 0
        nn.BatchNorm2d(4, dtype=dtype),                     # 1
        nn.ReLU(),                                          # 2
        nn.MaxPool2d(2),                                    # 3
        nn.Flatten(),                                       # 4
        nn.Dropout(0.5, rng=0),                             # 5
        nn.Linear(4 * 3 * 3, 5, dtype=dtype, rng=1),        # 6
        nn.Tanh(),                                          # 7
        nn.Linear(5, 3, bias=False, dtype=dtype, rng=2),    # 8
    )


EXPECTED_KEYS = [
    "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
    "1.num_batches_tracked", "6.weight", "6.bias", "8.weight",
]


def test_parameter_holds_data_and_accumulated_grad():
    data = np.ones((2, 3), np.float32)
    param = nn.Parameter(data)
    assert param.data is data and param.grad.shape == (2, 3) and not param.grad.any()
    param.accumulate_grad(np.full((2, 3), 2.0, np.float32))
    param.accumulate_grad(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(param.grad, 3)
    grad = param.grad
    param.zero_grad()
    assert param.grad is grad and not grad.any()  # zeroed in place
    with pytest.raises(ValueError, match="gradient"):
        param.accumulate_grad(np.ones(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Parameter(np.ones(3, int))
    assert "shape=(2, 3)" in repr(param)


def test_parameters_state_dict_keys_and_order():
    net = small_net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias",
                     "8.weight"]
    assert [p.shape for p in net.parameters()] == [(4, 1, 3, 3), (4,), (4,), (4,), (5, 36),
                                                   (5,), (3, 5)]
    state = net.state_dict()
    assert list(state) == EXPECTED_KEYS
    assert state["1.num_batches_tracked"].dtype == np.int64
    assert state["1.num_batches_tracked"].shape == ()
    assert [name for name, _ in net.named_buffers()] == [
        "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    # Copies: changing the model later does not change a saved state.
    net[0].weight.data += 1
    assert not np.array_equal(state["0.weight"], net[0].weight.data)
    assert len(net) == 9 and isinstance(net[-1], nn.Linear)
    assert [type(m).__name__ for m in net.modules()][:2] == ["Sequential", "Conv2d"]


def test_shared_parameter_listed_once_and_none_bias_unregistered():
    a = nn.Linear(3, 3, rng=0)
    b = nn.Linear(3, 3, rng=1)
    b.weight = a.weight
    net = nn.Sequential(a, b)
    assert len(net.parameters()) == 3
    b.bias = None
    assert [name for name, _ in net.named_parameters()] == ["0.weight", "0.bias"]


@pytest.mark.torch
def test_state_dict_keys_match_torch(torch):
    t_net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Dropout(0.5),
        torch.nn.Linear(36, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3, bias=False))
    t_state = t_net.state_dict()
    state = small_net().state_dict()
    assert list(state) == list(t_state) == EXPECTED_KEYS
    for key in state:
        assert state[key].shape == tuple(t_state[key].shape), key
        assert state[key].dtype == t_state[key].numpy().dtype, key


def test_load_state_dict_roundtrip_through_npz(tmp_path):
    source, target = small_net(), small_net()
    source.train()
    source(np.random.default_rng(0).standard_normal((4, 1, 6, 6)).astype(np.float32))
    for param in source.parameters():
        param.data += 0.5
    np.savez(tmp_path / "model.npz", **source.state_dict())
    weight_before = target[0].weight.data
    with np.load(tmp_path / "model.npz", allow_pickle=False) as archive:
        result = target.load_state_dict(archive)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target[0].weight.data is weight_before  # updated in place
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value, err_msg=key)
    assert int(target[1].num_batches_tracked) == 1
    x = np.random.default_rng(1).standard_normal((2, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(source.eval()(x), target.eval()(x))


def test_load_state_dict_errors_name_the_key_and_change_nothing():
    net = small_net()
    good = net.state_dict()
    before = net.state_dict()

    bad = dict(good)
    bad["6.weight"] = np.zeros((5, 35), np.float32)
    bad["0.weight"] = good["0.weight"] + 1  # valid, but must not be written either
    with pytest.raises(ValueError, match=r"'6\.weight'.*\(5, 35\).*\(5, 36\)"):
        net.load_state_dict(bad)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)

    bad = dict(good)
    bad["1.running_var"] = good["1.running_var"].astype(np.int64)
    with pytest.raises(ValueError, match=r"'1\.running_var'.*int64.*float32"):
        net.load_state_dict(bad)

    bad = dict(good)
    del bad["1.running_mean"]
    bad["9.weight"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match=r"missing keys \['1\.running_mean'\].*\['9\.weight'\]"):
        net.load_state_dict(bad)
    result = net.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["1.running_mean"] and result.unexpected_keys == ["9.weight"]


def test_train_eval_recursive_and_eval_keeps_no_activations():
    net = small_net()
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    net(x)
    cached = {name: module.cached for name, module in net.named_modules() if module.cached}
    assert cached == {"0": ("x",), "1": ("x", "mean", "inv_std", "count"), "2": ("mask", "dtype"),
                      "3": ("argmax", "input_shape"), "4": ("input_shape",), "5": ("mask",),
                      "6": ("x",), "7": ("y",), "8": ("x",)}
    net.eval()
    assert all(not module.training for module in net.modules())
    assert all(module.cached == () for module in net.modules())  # eval() drops caches
    y1 = net(x)
    assert all(module.cached == () for module in net.modules())  # and keeps none
    np.testing.assert_array_equal(net(x), y1)  # deterministic: no dropout, running stats
    with pytest.raises(RuntimeError, match=r"Sequential\[8\]: Linear.*eval mode"):
        net.backward(np.ones_like(y1))
    net.train()
    assert all(module.training for module in net.modules())


def test_backward_fills_every_gradient_and_zero_grad_clears_them():
    net = small_net()
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    y = net(x)
    dx = net.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert all(param.grad.any() for param in net.parameters())
    net.zero_grad()
    assert not any(param.grad.any() for param in net.parameters())


def test_sequential_errors_name_the_layer_and_sizes():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.Flatten(), nn.Linear(50, 3, rng=0))
    with pytest.raises(ValueError, match=r"Sequential\[2\]: Linear\(in_features=50, "
                                         r"out_features=3\).*expects 50 .*got 32"):
        net(np.zeros((1, 1, 6, 6), np.float32))
    with pytest.raises(RuntimeError, match=r"Sequential\[2\].*backward\(\) called"):
        net.backward(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="layer 1 must be a cnnblas.nn.Module"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_repr_and_append():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU()).append(nn.Linear(3, 1, bias=False))
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3)\n"
        "  (1): ReLU()\n"
        "  (2): Linear(in_features=3, out_features=1, bias=False)\n"
        ")"
    )
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight"]
    head = net[1:]
    assert isinstance(head, nn.Sequential) and head[1] is net[2]
    assert list(head.state_dict()) == ["1.weight"]


def test_buffer_must_stay_an_array():
    layer = nn.BatchNorm2d(2)
    with pytest.raises(TypeError, match="running_mean"):
        layer.running_mean = [0.0, 0.0]


# -- a layer used several times per forward: one cache per use, LIFO ---------------------


class TwiceReLU(nn.Module):
    """``relu(W2 relu(W1 x))`` with one ReLU object applied twice."""

    def __init__(self, relus=1, dtype=np.float64):
        super().__init__()
        self.fc1 = nn.Linear(4, 5, dtype=dtype, rng=0)
        self.fc2 = nn.Linear(5, 3, dtype=dtype, rng=1)
        self.relu = nn.ReLU()
        self.relu2 = nn.ReLU() if relus == 2 else self.relu

    def forward(self, x):
        return self.relu2(self.fc2(self.relu(self.fc1(x))))

    def backward(self, dy):
        return self.fc1.backward(self.relu.backward(self.fc2.backward(self.relu2.backward(dy))))


def test_relu_used_twice_matches_two_relus_and_finite_differences():
    x = np.random.default_rng(3).standard_normal((6, 4))
    dy = np.random.default_rng(4).standard_normal((6, 3))
    shared, separate = TwiceReLU(relus=1), TwiceReLU(relus=2)
    assert list(shared.state_dict()) == list(separate.state_dict())
    np.testing.assert_array_equal(shared(x), separate(x))
    np.testing.assert_array_equal(shared.backward(dy), separate.backward(dy))
    for (name, a), (_, b) in zip(shared.named_parameters(), separate.named_parameters(),
                                 strict=True):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)
    errors = check_module_gradients(shared, x)
    assert max(errors.values()) < 1e-7, errors
    assert shared.relu.pending_backwards == 0


def test_two_forwards_then_two_backwards_give_each_forward_its_own_gradient():
    rng = np.random.default_rng(5)
    x1, x2 = rng.standard_normal((2, 3, 1, 6, 6)).astype(np.float32)
    dy1, dy2 = rng.standard_normal((2, 3, 3)).astype(np.float32)
    reference = {}
    for key, x, dy in (("1", x1, dy1), ("2", x2, dy2)):  # one forward, one backward each
        net = small_net()
        net[5].p = 0.0  # no dropout: both nets must see the same function
        net(x)
        reference[key] = (net.backward(dy), {n: p.grad for n, p in net.named_parameters()})
    net = small_net()
    net[5].p = 0.0
    net(x1)
    net(x2)  # used to overwrite the caches of the first forward
    assert net[2].pending_backwards == 2
    dx2 = net.backward(dy2)  # the newest forward's backward comes first
    dx1 = net.backward(dy1)
    np.testing.assert_allclose(dx2, reference["2"][0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx1, reference["1"][0], rtol=1e-6, atol=1e-7)
    for name, param in net.named_parameters():  # the parameter gradients add up
        np.testing.assert_allclose(param.grad, reference["1"][1][name] + reference["2"][1][name],
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    with pytest.raises(RuntimeError, match=r"Linear\(in_features=5.*nothing cached"):
        net.backward(dy1)


def test_losses_keep_one_gradient_per_forward():
    criterion = nn.SoftmaxCrossEntropy()
    logits = np.random.default_rng(6).standard_normal((2, 4, 3))
    labels = np.array([0, 2, 1, 1])
    criterion(logits[0], labels)
    criterion(logits[1], labels)
    second, first = criterion.backward(), criterion.backward()
    for grad, batch in ((first, logits[0]), (second, logits[1])):
        softmax = np.exp(batch) / np.exp(batch).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(grad, (softmax - np.eye(3)[labels]) / len(labels), rtol=1e-12)


@pytest.mark.parametrize("reset", ["train", "eval", "clear_caches"])
def test_mode_changes_and_resets_drop_pending_caches(reset):
    net = small_net()
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    net(x)
    net(x)
    assert net[0].pending_backwards == 2
    getattr(net, reset)()
    assert all(module.pending_backwards == 0 for module in net.modules())
    with pytest.raises(RuntimeError, match="nothing cached"):
        net.backward(np.ones((3, 3), np.float32))


def test_zero_grad_between_forward_and_backward_keeps_the_cache():
    """PyTorch's order (forward, loss, zero_grad, backward) works: zero_grad only zeroes."""
    net = small_net()
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    y = net(x)
    net.zero_grad()
    net.backward(np.ones_like(y))
    assert any(np.any(param.grad != 0) for param in net.parameters())
