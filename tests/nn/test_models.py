"""Model builders: the tutorial's toy CNN (Tables 4.1-4.9), LeNet-5, whole-network
gradients, and PyTorch state dicts loaded from .npz."""

from __future__ import annotations

import numpy as np
import pytest

from cnnblas import nn, tutorial
from cnnblas.nn.gradcheck import check_module_gradients, numerical_gradient

# Printed values of the tutorial's Section 4 (8 significant digits at most).
TABLE_4_1_X1 = [[[-85, 76, 64], [109, -1, 10], [118, 71, 67]],
                [[-144, -291, 66], [-347, 102, -192], [-239, -52, -162]]]
TABLE_4_2_RELU1 = [[[0, 76, 64], [109, 0, 10], [118, 71, 67]],
                   [[0, 0, 66], [0, 102, 0], [0, 0, 0]]]
TABLE_4_6_DW3_COL0 = [4.178911e+02, 6.020791e+00, 8.674518e-02, 1.249788e-03, 1.800645e-05,
                      2.594295e-07, 3.737754e-09, 2.594295e-07, 1.800645e-05, -4.24e+02]
TABLE_4_6_DRELU2 = [0.07985382, 0.01014405]
TABLE_4_7_DW2_T = [[9.42275079, 0], [8.145089, 0]]  # (δW2.T): rows = X2 entries
TABLE_4_7_DB2 = [0.07985382, 0]
TABLE_4_7_DX2 = [0.07985382, 0.23956146]
TABLE_4_8_DX1 = [[[0, 0, 0], [0, 0, 0], [0.07985382, 0, 0]],
                 [[0, 0, 0], [0, 0.23956146, 0], [0, 0, 0]]]
TABLE_4_9_DB1 = [0.07985382, 0.23956146]
TABLE_4_9_DW1 = [[[0.3992691, 0.3992691, 0.07985382], [0.15970764, 0.15970764, 0.31941528],
                  [0.3992691, 0.07985382, 0.23956146]],
                 [[0.23956146, 0.23956146, 0.47912292], [1.1978073, 0.23956146, 0.47912292],
                  [0.47912292, 0.95824584, 0.71868438]]]
TABLE_4_9_DX = [[0, 0, 0, 0, 0],
                [0, 2.87473753, 4.31210629, 2.87473753, 0],
                [0.07985382, 4.47181394, -17.48798664, 10.78026574, 0],
                [0.31941528, -21.48067765, 11.17953484, -4.31210629, 0],
                [0.23956146, -2.55532225, 1.99634551, 0, 0]]

# The tables come from single-precision code (see cnnblas.tutorial.toy_cnn's notes): the printed
# softmax output[1] is 1.419998e-02 where float64 gives 1.420001e-02, a 2.4e-6 difference.
RTOL = 5e-6


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tutorial_toy_cnn_reproduces_tables_4_1_to_4_9(dtype):
    model = tutorial.toy_cnn(dtype=dtype)
    x, labels = tutorial.toy_input(dtype)
    rtol = RTOL if dtype == np.float64 else 2e-5
    activations = [x]
    for layer in model:
        activations.append(layer(activations[-1]))
    x1, relu1, x2, x2_flat, x3, relu2, x4 = activations[1:]
    np.testing.assert_array_equal(x1[0], TABLE_4_1_X1)
    np.testing.assert_array_equal(relu1[0], TABLE_4_2_RELU1)
    np.testing.assert_array_equal(x2_flat[0], [118, 102])               # Table 4.3
    np.testing.assert_array_equal(x3[0], [424, -172])                   # Table 4.4
    np.testing.assert_array_equal(relu2[0], [424, 0])
    np.testing.assert_allclose(x4[0], 424 * np.array(tutorial.toy_state_dict()["6.weight"]
                                                     [:, 0]), rtol=1e-6)  # Table 4.5
    criterion = nn.SoftmaxCrossEntropy()
    loss = criterion(x4, labels)
    assert round(loss, 4) == 33.9345                                     # Table 4.6
    doutput = criterion.backward()
    assert doutput[0, 9] == pytest.approx(-1.0)

    # Backward layer by layer, checking the intermediate errors of Tables 4.6-4.9.
    layers = list(model)
    drelu2 = layers[6].backward(doutput)
    np.testing.assert_allclose(drelu2[0], TABLE_4_6_DRELU2, rtol=rtol)
    np.testing.assert_allclose(layers[6].weight.grad[:, 0], TABLE_4_6_DW3_COL0, rtol=rtol)
    np.testing.assert_array_equal(layers[6].weight.grad[:, 1], 0)
    np.testing.assert_allclose(layers[6].bias.grad, doutput[0], rtol=1e-12)  # δB3 = δoutput
    dx3 = layers[5].backward(drelu2)
    dx2_flat = layers[4].backward(dx3)
    np.testing.assert_allclose(dx2_flat[0], TABLE_4_7_DX2, rtol=rtol)
    np.testing.assert_allclose(layers[4].weight.grad.T, TABLE_4_7_DW2_T, rtol=rtol)
    np.testing.assert_allclose(layers[4].bias.grad, TABLE_4_7_DB2, rtol=rtol)
    dx2 = layers[3].backward(dx2_flat)
    drelu1 = layers[2].backward(dx2)
    dx1 = layers[1].backward(drelu1)
    np.testing.assert_allclose(dx1[0], TABLE_4_8_DX1, rtol=rtol)
    dx = layers[0].backward(dx1)
    np.testing.assert_allclose(layers[0].bias.grad, TABLE_4_9_DB1, rtol=rtol)
    np.testing.assert_allclose(layers[0].weight.grad[:, 0], TABLE_4_9_DW1, rtol=rtol)
    np.testing.assert_allclose(dx[0, 0], TABLE_4_9_DX, rtol=rtol, atol=1e-12)

    # The same through Sequential.backward in one call.
    model.zero_grad()
    criterion(model(x), labels)
    np.testing.assert_allclose(model.backward(criterion.backward()), dx, rtol=1e-12)


def test_tutorial_toy_cnn_random_initialisation():
    model = tutorial.toy_cnn(tutorial_weights=False, rng=0)
    assert model(tutorial.toy_input()[0]).shape == (1, 10)
    assert not np.array_equal(model[0].weight.data, tutorial.toy_cnn()[0].weight.data)


@pytest.mark.parametrize("input_size, features", [(28, 400), (32, 400), (8, 64), (16, 256),
                                                  ((8, 12), 16 * 2 * 3), (4, 16)])
def test_lenet5_shapes(input_size, features):
    model = nn.lenet5(input_size=input_size, rng=0)
    assert model[7].in_features == features
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    x = np.zeros((2, 1, h, w), np.float32)
    assert model(x).shape == (2, 10)


def test_lenet5_configuration():
    model = nn.lenet5(num_classes=7, in_channels=3, input_size=28, rng=0)
    assert model[0].padding == (2, 2) and model[3].padding == (0, 0)
    assert nn.lenet5(input_size=32)[0].padding == (0, 0)
    assert model[11].out_features == 7 and model[0].in_channels == 3
    # Classic LeNet-5 parameter count for one input channel and 10 classes: 61,706.
    assert sum(p.size for p in nn.lenet5().parameters()) == 61706
    with pytest.raises(ValueError, match="at least 4x4"):
        nn.lenet5(input_size=3)


def test_lenet5_gradients_match_finite_differences():
    model = nn.lenet5(num_classes=4, input_size=8, dtype=np.float64, rng=3)
    x = np.random.default_rng(4).standard_normal((2, 1, 8, 8))
    errors = check_module_gradients(model, x, max_checks=12, rng=5)
    assert max(errors.values()) < 1e-6, errors


def test_whole_network_with_loss_matches_finite_differences():
    """Every layer type in one network, differentiated through the loss."""
    f64 = np.float64
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, dtype=f64, rng=0),
        nn.BatchNorm2d(3, dtype=f64),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, (2, 3), stride=(1, 2), padding=(1, 1), dtype=f64, rng=1),
        nn.Tanh(),
        nn.AvgPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(4 * 3 * 1, 6, dtype=f64, rng=2),
        nn.Sigmoid(),
        nn.Linear(6, 5, dtype=f64, rng=3),
        nn.ReLU(),
        nn.Linear(5, 3, dtype=f64, rng=4),
    )
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 6, 6))
    labels = np.array([0, 2, 1])
    criterion = nn.SoftmaxCrossEntropy()

    model.zero_grad()
    criterion(model(x), labels)
    dx = model.backward(criterion.backward())
    arrays = {"input": (x, dx)}
    arrays.update({name: (p.data, p.grad.copy()) for name, p in model.named_parameters()})

    def loss() -> float:
        return criterion(model(x), labels)

    for name, (array, analytic) in arrays.items():
        indices = rng.choice(array.size, size=min(array.size, 10), replace=False)
        numeric = numerical_gradient(loss, array, eps=1e-6, indices=indices).reshape(-1)
        for index in indices:
            assert numeric[index] == pytest.approx(analytic.reshape(-1)[index], rel=1e-5,
                                                   abs=1e-9), (name, index)


@pytest.mark.torch
def test_torch_state_dict_from_npz_loads_unchanged(torch, tmp_path):
    """A trained PyTorch nn.Sequential, exported with np.savez(tensor.numpy()), loads into the
    same cnnblas architecture and gives the same outputs."""
    torch.manual_seed(0)
    t_net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 16, 5, padding=2), torch.nn.ReLU(),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.Tanh(),
        torch.nn.Dropout(0.2), torch.nn.Linear(32, 10))
    for _ in range(3):  # move BatchNorm's running statistics away from their defaults
        t_net(torch.randn(8, 1, 8, 8) * 2 + 1)
    t_net.eval()
    path = tmp_path / "torch_model.npz"
    np.savez(path, **{key: value.numpy() for key, value in t_net.state_dict().items()})

    net = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(64, 32), nn.Tanh(), nn.Dropout(0.2), nn.Linear(32, 10))
    with np.load(path, allow_pickle=False) as archive:
        net.load_state_dict(archive)
    net.eval()
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = t_net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net(x), expected, rtol=1e-4, atol=1e-5)
    assert int(net[1].num_batches_tracked) == 3


@pytest.mark.torch
def test_lenet5_matches_torch_training_step(torch):
    """Same weights, same batch: forward, loss and every gradient agree with PyTorch."""
    net = nn.lenet5(input_size=8, rng=0)
    t_net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84),
        torch.nn.ReLU(), torch.nn.Linear(84, 10))
    t_net.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 10, 4)
    criterion = nn.SoftmaxCrossEntropy()
    loss = criterion(net(x), labels)
    net.backward(criterion.backward())
    t_loss = torch.nn.functional.cross_entropy(t_net(torch.from_numpy(x)),
                                               torch.from_numpy(labels))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-5)
    t_params = dict(t_net.named_parameters())
    for name, param in net.named_parameters():
        np.testing.assert_allclose(param.grad, t_params[name].grad.numpy(), rtol=1e-4,
                                   atol=1e-6, err_msg=name)
