"""Tests of cnnblas.optim: hand-computed steps, PyTorch agreement, state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnblas.optim import SGD, Adam, CosineAnnealingLR, StepLR, adam_update, sgd_update


class Param:
    """Stand-in for cnnblas.nn.Parameter: just ``.data`` and ``.grad``."""

    def __init__(self, data, grad=None):
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data) if grad is None else np.asarray(grad)


SHAPES = [(3, 2, 3, 3), (3,), (4, 5)]


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [Param(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]


def grad_sequence(steps, dtype=np.float64, seed=1):
    """``steps`` lists of gradients (one per parameter), fixed in advance."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape).astype(dtype) for shape in SHAPES] for _ in range(steps)]


def run(optimizer, params, grads):
    for step_grads in grads:
        for param, grad in zip(params, step_grads, strict=True):
            param.grad[...] = grad
        optimizer.step()


# --------------------------------------------------------------------------- hand-computed


def test_sgd_plain_step_by_hand():
    param = Param(np.array([1.0, -2.0], dtype=np.float32), np.array([0.5, 4.0], np.float32))
    SGD([param], lr=0.1).step()
    np.testing.assert_allclose(param.data, [0.95, -2.4], rtol=1e-6)
    assert param.data.dtype == np.float32


def test_sgd_momentum_weight_decay_dampening_by_hand():
    param = Param(np.array([1.0]), np.array([2.0]))
    opt = SGD([param], lr=0.5, momentum=0.9, weight_decay=0.1, dampening=0.5)
    opt.step()
    # g = 2 + 0.1*1 = 2.1; first buffer = g (no dampening); w = 1 - 0.5*2.1
    assert param.data[0] == pytest.approx(1 - 0.5 * 2.1)
    w1 = param.data[0]
    opt.step()
    g = 2.0 + 0.1 * w1
    buffer = 0.9 * 2.1 + 0.5 * g
    assert param.data[0] == pytest.approx(w1 - 0.5 * buffer)


def test_sgd_nesterov_by_hand():
    param = Param(np.array([0.0]), np.array([1.0]))
    opt = SGD([param], lr=1.0, momentum=0.5, nesterov=True)
    opt.step()  # b = 1, step = 1 + 0.5*1
    assert param.data[0] == pytest.approx(-1.5)
    opt.step()  # b = 0.5 + 1 = 1.5, step = 1 + 0.75
    assert param.data[0] == pytest.approx(-3.25)


def test_adam_first_step_is_lr_times_sign():
    grad = np.array([3.0, -0.25, 1e-3], dtype=np.float32)
    param = Param(np.zeros(3, np.float32), grad)
    Adam([param], lr=0.01, eps=0.0).step()
    np.testing.assert_allclose(param.data, -0.01 * np.sign(grad), rtol=1e-6)
    assert param.data.dtype == np.float32


def test_adam_two_steps_by_hand():
    param = Param(np.array([1.0]), np.array([2.0]))
    opt = Adam([param], lr=0.1, betas=(0.5, 0.75), eps=1e-3, weight_decay=0.5)
    w = 1.0
    m = v = 0.0
    for t in (1, 2):
        g = 2.0 + 0.5 * w
        m = 0.5 * m + 0.5 * g
        v = 0.75 * v + 0.25 * g * g
        w -= 0.1 / (1 - 0.5**t) * m / (math.sqrt(v) / math.sqrt(1 - 0.75**t) + 1e-3)
        opt.step()
        assert param.data[0] == pytest.approx(w, rel=1e-12)


def test_none_grad_is_skipped_and_zero_grad():
    a, b = Param(np.ones(2)), Param(np.ones(2))
    a.grad[...] = 1.0
    b.grad = None
    opt = Adam([a, b], lr=0.1)
    opt.step()
    assert np.all(a.data < 1) and np.all(b.data == 1)
    assert list(opt.state_dict()["step"]) == [1, 0]
    grad_array = a.grad
    opt.zero_grad()
    assert a.grad is grad_array and not a.grad.any() and b.grad is None


def test_update_functions_are_the_optimizers_steps():
    grads = grad_sequence(3)
    params = make_params()
    run(SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2), params, grads)
    adam_params = make_params()
    run(Adam(adam_params, lr=0.01, weight_decay=1e-2), adam_params, grads)
    for index, data in enumerate(make_params()):
        sgd_data, adam_data = data.data.copy(), data.data.copy()
        sgd_state: dict = {}
        adam_state = {"step": 0, "exp_avg": np.zeros_like(adam_data),
                      "exp_avg_sq": np.zeros_like(adam_data)}
        for step_grads in grads:
            sgd_update(sgd_data, step_grads[index], sgd_state, lr=0.05, momentum=0.9,
                       dampening=0.0, nesterov=True, weight_decay=1e-2)
            adam_update(adam_data, step_grads[index], adam_state, lr=0.01, beta1=0.9,
                        beta2=0.999, eps=1e-8, weight_decay=1e-2)
        np.testing.assert_array_equal(sgd_data, params[index].data)
        np.testing.assert_array_equal(adam_data, adam_params[index].data)
        assert adam_state["step"] == 3


# --------------------------------------------------------------------------- vs PyTorch

SGD_CONFIGS = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    {"lr": 0.02, "momentum": 0.8, "dampening": 0.3, "weight_decay": 5e-3},
]
ADAM_CONFIGS = [
    {},
    {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-2},
]


def torch_run(torch_cls, config, grads, dtype):
    torch = pytest.importorskip("torch")
    tensors = [torch.tensor(p.data.copy(), requires_grad=True)
               for p in make_params(dtype)]
    opt = torch_cls(tensors, **config)
    for step_grads in grads:
        for tensor, grad in zip(tensors, step_grads, strict=True):
            tensor.grad = torch.from_numpy(grad.copy())
        opt.step()
    return [t.detach().numpy() for t in tensors]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "optimizer, config",
    [(SGD, config) for config in SGD_CONFIGS] + [(Adam, config) for config in ADAM_CONFIGS],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_optimizer_matches_torch(optimizer, config, dtype):
    torch = pytest.importorskip("torch")
    grads = grad_sequence(6, dtype)
    params = make_params(dtype)
    run(optimizer(params, **config), params, grads)
    expected = torch_run(getattr(torch.optim, optimizer.__name__), config, grads, dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for param, want in zip(params, expected, strict=True):
        assert param.data.dtype == dtype
        np.testing.assert_allclose(param.data, want, rtol=rtol, atol=rtol)


@pytest.mark.torch
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda o: StepLR(o, step_size=3, gamma=0.5), ("StepLR", {"step_size": 3, "gamma": 0.5})),
        (lambda o: CosineAnnealingLR(o, t_max=7),
         ("CosineAnnealingLR", {"T_max": 7})),
        (lambda o: CosineAnnealingLR(o, t_max=5, eta_min=1e-3),
         ("CosineAnnealingLR", {"T_max": 5, "eta_min": 1e-3})),
    ],
)
def test_schedules_match_torch(ours, theirs):
    torch = pytest.importorskip("torch")
    opt = SGD(make_params(), lr=0.1, momentum=0.9)
    schedule = ours(opt)
    torch_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    torch_schedule = getattr(torch.optim.lr_scheduler, theirs[0])(torch_opt, **theirs[1])
    for _ in range(25):
        assert opt.lr == pytest.approx(torch_schedule.get_last_lr()[0], rel=1e-9, abs=1e-15)
        assert schedule.lr == opt.lr
        torch_opt.step()
        torch_schedule.step()
        schedule.step()


# --------------------------------------------------------------------------- schedules by hand


def test_step_lr_values():
    opt = SGD(make_params(), lr=1.0)
    schedule = StepLR(opt, step_size=2, gamma=0.1)
    seen = []
    for _ in range(6):
        seen.append(opt.lr)
        schedule.step()
    np.testing.assert_allclose(seen, [1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_values():
    opt = Adam(make_params(), lr=1.0)
    schedule = CosineAnnealingLR(opt, t_max=4, eta_min=0.0)
    seen = []
    for _ in range(9):
        seen.append(opt.lr)
        schedule.step()
    half = 0.5 + 0.5 * math.cos(math.pi / 4)
    np.testing.assert_allclose(seen, [1, half, 0.5, 1 - half, 0, 1 - half, 0.5, half, 1],
                               atol=1e-15)


# --------------------------------------------------------------------------- state dicts


def npz_round_trip(state, tmp_path, name):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **state)
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.mark.parametrize("factory", [
    lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda p: SGD(p, lr=0.05, momentum=0.5, dampening=0.2),
    lambda p: Adam(p, lr=0.01, betas=(0.8, 0.95), weight_decay=1e-3),
])
def test_state_dict_round_trip_continues_identically(factory, tmp_path):
    grads = grad_sequence(6, np.float32)
    params = make_params(np.float32)
    opt = factory(params)
    schedule = StepLR(opt, step_size=2, gamma=0.5)
    run(opt, params, grads[:3])
    schedule.step()
    schedule.step()
    opt_state = npz_round_trip(opt.state_dict(), tmp_path, "opt")
    sched_state = npz_round_trip(schedule.state_dict(), tmp_path, "sched")

    clones = [Param(p.data.copy()) for p in params]
    clone_opt = factory(clones)
    clone_schedule = StepLR(clone_opt, step_size=2, gamma=0.5)
    clone_opt.load_state_dict(opt_state)
    clone_schedule.load_state_dict(sched_state)
    assert clone_opt.lr == opt.lr == schedule.base_lr * 0.5

    for step_grads in grads[3:]:
        run(opt, params, [step_grads])
        run(clone_opt, clones, [step_grads])
        schedule.step()
        clone_schedule.step()
    assert clone_opt.lr == opt.lr
    for param, clone in zip(params, clones, strict=True):
        assert clone.data.dtype == np.float32
        np.testing.assert_array_equal(clone.data, param.data)


def test_state_dict_is_flat_and_pickle_free():
    params = make_params()
    opt = SGD(params, lr=0.1, momentum=0.9)
    assert not any(key.startswith("momentum.") for key in opt.state_dict())
    run(opt, params, grad_sequence(1))
    state = opt.state_dict()
    assert {f"momentum.{i}" for i in range(3)} <= set(state)
    for value in state.values():
        assert np.asarray(value).dtype != object
    state["momentum.0"][...] = 123.0  # a copy, not the live buffer
    assert not np.any(opt.state_dict()["momentum.0"] == 123.0)


def test_load_state_dict_rejects_mismatches():
    params = make_params()
    opt = Adam(params)
    state = opt.state_dict()

    bad_shape = dict(state, **{"exp_avg.1": np.zeros(4)})
    with pytest.raises(ValueError, match=r"exp_avg\.1.*shape \(4,\).*\(3,\)"):
        Adam(make_params()).load_state_dict(bad_shape)

    missing = {k: v for k, v in state.items() if k != "exp_avg_sq.2"}
    with pytest.raises(ValueError, match=r"missing keys \['exp_avg_sq\.2'\]"):
        Adam(make_params()).load_state_dict(missing)

    extra = dict(state, bogus=1)
    with pytest.raises(ValueError, match=r"unexpected keys \['bogus'\]"):
        Adam(make_params()).load_state_dict(extra)

    with pytest.raises(ValueError, match="'Adam', expected 'SGD'"):
        SGD(make_params(), lr=0.1).load_state_dict(state)

    with pytest.raises(ValueError, match="num_params.*3.*2 parameters"):
        Adam(make_params()[:2]).load_state_dict(state)

    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\), got 1.5"):
        Adam(make_params()).load_state_dict(dict(state, beta2=1.5))

    sgd_state = SGD(make_params(), lr=0.1).state_dict()
    with pytest.raises(ValueError, match=r"unexpected keys \['momentum\.7'\]"):
        SGD(make_params(), lr=0.1).load_state_dict(dict(sgd_state, **{"momentum.7": 0.0}))

    # An overflowed buffer (finite parameters, inf second moment) loads as it is,
    # so a run can resume from its own checkpoint.
    overflowed = dict(state, **{"exp_avg_sq.0": np.full(SHAPES[0], np.inf)})
    resumed = Adam(make_params())
    resumed.load_state_dict(overflowed)
    assert np.isinf(resumed.state_dict()["exp_avg_sq.0"]).all()

    with pytest.raises(ValueError, match=r"'step'\] must be >= 0"):
        Adam(make_params()).load_state_dict(dict(state, step=np.array([0, -1, 0])))

    # A failed load leaves the optimizer unchanged.
    target = Adam(make_params(), lr=0.5)
    with pytest.raises(ValueError):
        target.load_state_dict(dict(state, eps=-1.0))
    assert target.lr == 0.5 and target.eps == 1e-8


def test_schedule_state_dict_round_trip_and_validation():
    opt = SGD(make_params(), lr=1.0)
    schedule = CosineAnnealingLR(opt, t_max=10, eta_min=0.01)
    for _ in range(4):
        schedule.step()
    state = schedule.state_dict()
    other_opt = SGD(make_params(), lr=1.0)
    other = CosineAnnealingLR(other_opt, t_max=10, eta_min=0.01)
    other.load_state_dict(state)
    assert other.last_epoch == 4 and other_opt.lr == opt.lr
    with pytest.raises(ValueError, match=r"missing keys \['t_max'\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "t_max"})
    with pytest.raises(ValueError, match="last_epoch must be an int >= 0, got -1"):
        other.load_state_dict(dict(state, last_epoch=-1))


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("make, message", [
    (lambda p: SGD(p, lr=0.0), "lr must be > 0, got 0.0"),
    (lambda p: SGD(p, lr=-1), "lr must be > 0, got -1"),
    (lambda p: SGD(p, lr=float("nan")), "lr must be finite"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), "momentum must be >= 0, got -0.5"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1e-4), "weight_decay must be >= 0, got -0.0001"),
    (lambda p: SGD(p, lr=0.1, dampening=2.0), r"dampening must be in \[0, 1\], got 2.0"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "nesterov=True requires momentum > 0"),
    (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "dampening == 0, got momentum=0.9, dampening=0.1"),
    (lambda p: Adam(p, betas=(1.0, 0.9)), r"betas\[0\] must be in \[0, 1\), got 1.0"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), r"betas\[1\] must be in \[0, 1\), got -0.1"),
    (lambda p: Adam(p, eps=-1e-8), "eps must be >= 0, got -1e-08"),
    (lambda p: Adam([]), "at least one parameter"),
    (lambda p: Adam([p[0], p[0]]), r"params\[1\] appears more than once"),
    (lambda p: StepLR(SGD(p, lr=0.1), step_size=0), "step_size must be an int >= 1, got 0"),
    (lambda p: StepLR(SGD(p, lr=0.1), step_size=2, gamma=0), "gamma must be > 0, got 0"),
    (lambda p: CosineAnnealingLR(SGD(p, lr=0.1), t_max=0), "t_max must be an int >= 1, got 0"),
    (lambda p: CosineAnnealingLR(SGD(p, lr=0.1), t_max=3, eta_min=-1),
     "eta_min must be >= 0, got -1"),
])
def test_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_params())


def test_type_errors():
    with pytest.raises(TypeError, match=r"params\[0\]\.data must be a floating-point"):
        SGD([Param(np.arange(3))], lr=0.1)
    with pytest.raises(TypeError, match="lr must be a real number"):
        SGD(make_params(), lr="0.1")
    with pytest.raises(TypeError, match="betas must be a pair"):
        Adam(make_params(), betas=0.9)
    param = Param(np.zeros(3, np.float32))
    opt = SGD([param], lr=0.1)
    param.grad = np.zeros(3, np.float64)
    with pytest.raises(TypeError, match=r"params\[0\]\.grad has dtype float64.*float32"):
        opt.step()
    param.grad = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"params\[0\]\.grad has shape \(4,\).*\(3,\)"):
        opt.step()
