"""Tests of cnnblas.train: fitting, evaluation, history, checkpoints and exact resume."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

import cnnblas
from cnnblas import nn, optim
from cnnblas.data import DataLoader, load_digits, load_mnist
from cnnblas.nn import build_model, model_from_checkpoint, tutorial_cnn
from cnnblas.train import Trainer
from cnnblas.train.callbacks import Callback
from cnnblas.train.history import plot_history
from cnnblas.train.inputs import check_finite_images
from tests.conftest import MNIST5K


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small problems run fastest on one thread; results are compared at a fixed count."""
    before = cnnblas.get_num_threads()
    cnnblas.set_num_threads(1)
    yield
    cnnblas.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    """384 training and 96 test digits, standardised (LeNet-5 learns them in 4 epochs)."""
    data = load_digits()
    mean, std = data.x_train.mean(), data.x_train.std()
    return ((data.x_train[:384] - mean) / std, data.y_train[:384],
            (data.x_test[:96] - mean) / std, data.y_test[:96])


def make_trainer(optimizer="adam", seed=0, scheduler=True, metadata=None):
    model = nn.lenet5(num_classes=10, input_size=8, rng=seed)
    if optimizer == "adam":
        opt = optim.Adam(model.parameters(), lr=3e-3)
    else:
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = optim.CosineAnnealingLR(opt, t_max=4) if scheduler else None
    return Trainer(model, nn.SoftmaxCrossEntropy(), opt, sched, metadata=metadata)


def weights_bytes(trainer):
    return {key: (value.dtype, value.tobytes()) for key, value in
            trainer.model.state_dict().items()}


def without_timing(history):
    return [{k: v for k, v in record.items() if k not in ("seconds", "images_per_second")}
            for record in history]


# --------------------------------------------------------------------------- fitting


def test_training_lowers_the_loss(digits):
    x, y, xt, yt = digits
    trainer = make_trainer()
    before = trainer.evaluate(xt, yt)
    history = trainer.fit((x, y), 4, batch_size=16, val=(xt, yt), log=None, progress=False)
    assert history is trainer.history and trainer.epoch == 4
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    after = trainer.evaluate(xt, yt)
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.6
    assert history[-1]["val_accuracy"] == after["accuracy"]
    assert history[-1]["val_loss"] == pytest.approx(after["loss"])


def test_history_records(digits, tmp_path):
    x, y, xt, yt = digits
    trainer = make_trainer()
    lines = []
    trainer.fit((x, y), 2, batch_size=32, val=(xt, yt), val_name="test", log=lines.append,
                progress=False)
    assert [record["epoch"] for record in trainer.history] == [1, 2]
    first = trainer.history[0]
    assert set(first) == {"epoch", "loss", "accuracy", "test_loss", "test_accuracy",
                          "seconds", "images_per_second", "lr"}
    assert first["lr"] == 3e-3 and trainer.history[1]["lr"] == trainer.scheduler.lr_at(1)
    assert first["images_per_second"] == pytest.approx(len(x) / first["seconds"])
    assert 0.0 <= first["accuracy"] <= 1.0
    pattern = (r"epoch 1 \| loss \d+\.\d{4} \| accuracy [01]\.\d{4} \| test [01]\.\d{4} "
               r"\| \d+\.\d s \| \d+ img/s")
    assert re.fullmatch(pattern, lines[0]), lines[0]

    saved = trainer.save_history(tmp_path / "history.json")
    assert json.loads(saved.read_text()) == trainer.history
    png = trainer.plot_history(tmp_path / "history.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="needs matplotlib.*pip install"):
        plot_history([{"epoch": 1, "loss": 1.0, "accuracy": 0.5}], tmp_path / "x.png")


def test_fit_accepts_a_data_loader_and_continues_epochs(digits):
    x, y, _, _ = digits
    loader = DataLoader(x, y, batch_size=32, shuffle=True, seed=3)
    trainer = make_trainer(scheduler=False)
    trainer.fit(loader, 1, log=None, progress=False)
    trainer.fit(loader, 2, log=None, progress=False)  # trains epoch 2 only
    assert trainer.epoch == 2 and loader.epoch == 2
    trainer.fit(loader, 2, log=None, progress=False)  # already done: nothing happens
    assert loader.epoch == 2 and len(trainer.history) == 2


def test_fit_calls_extra_callbacks_after_its_own(digits, tmp_path):
    x, y, _, _ = digits

    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_epoch_begin(self, trainer, epoch, num_batches):
            self.events.append(("begin", epoch, num_batches))

        def on_train_batch_end(self, trainer, step, mean_loss):
            self.events.append(("batch", step))

        def on_epoch_end(self, trainer, record):
            # the epoch is recorded and its checkpoint written before the extra callbacks
            self.events.append(("end", record["epoch"], trainer.epoch, path.exists()))

    path = tmp_path / "run.npz"
    recorder = Recorder()
    make_trainer().fit((x, y), 2, batch_size=128, checkpoint=path, log=None, progress=False,
                       callbacks=[recorder])
    assert recorder.events == [("begin", 1, 3), ("batch", 1), ("batch", 2), ("batch", 3),
                               ("end", 1, 1, True), ("begin", 2, 3), ("batch", 1),
                               ("batch", 2), ("batch", 3), ("end", 2, 2, True)]


def test_same_seed_same_weights(digits):
    x, y, _, _ = digits
    runs = []
    for _ in range(2):
        trainer = make_trainer(optimizer="sgd")
        trainer.fit((x, y), 2, batch_size=16, seed=5, log=None, progress=False)
        runs.append(weights_bytes(trainer))
    assert runs[0] == runs[1]


def test_evaluation_uses_eval_mode_and_restores_modes(digits):
    x, y, xt, yt = digits
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32, rng=0), nn.ReLU(),
                          nn.Dropout(0.5, rng=1), nn.Linear(32, 10, rng=2))
    trainer = Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1))
    model.train()
    model[3].eval()  # a mixed state is restored module by module
    first = trainer.evaluate(xt, yt)
    assert first == trainer.evaluate(xt, yt)  # dropout is off: deterministic
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True]
    model.eval()
    trainer.predict(xt)
    assert not any(m.training for m in model.modules())


def test_predict_and_probabilities(digits):
    x, y, xt, yt = digits
    trainer = make_trainer()
    trainer.fit((x, y), 1, log=None, progress=False)
    labels = trainer.predict(xt, batch_size=10)
    proba = trainer.predict_proba(xt, batch_size=7)
    assert labels.dtype == np.int64 and labels.shape == (len(xt),)
    assert proba.shape == (len(xt), 10) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(labels, proba.argmax(axis=1))
    accuracy = trainer.evaluate(xt, yt, batch_size=13)["accuracy"]
    assert accuracy == pytest.approx(np.mean(labels == yt))


def test_tutorial_model_shapes():
    for size, features in ((28, 64 * 5 * 5), (8, 64 * 2 * 2), (4, 64)):
        model = tutorial_cnn(input_size=size, rng=0)
        assert model[7].weight.shape == (100, features)
        assert model.eval()(np.zeros((2, 1, size, size), np.float32)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 4x4"):
        tutorial_cnn(input_size=3)
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("labels, error, message", [
    (lambda y: np.where(y == 0, 10, y), ValueError, r"lie in \[0, 9\].*10 outputs.*up to 10"),
    (lambda y: y[:-1], ValueError, "has 383 labels but .* has 384 samples"),
    (lambda y: y.astype(np.float32), TypeError, "integer class indices.*float32"),
    (lambda y: y[:, None], ValueError, "must be 1-D"),
    (lambda y: np.where(y == 0, -1, y), ValueError, ">= 0"),
])
def test_bad_training_labels(digits, labels, error, message):
    x, y, _, _ = digits
    trainer = make_trainer()
    before = weights_bytes(trainer)
    with pytest.raises(error, match=message):
        trainer.fit((x, labels(y)), 1, log=None, progress=False)
    assert weights_bytes(trainer) == before and trainer.epoch == 0


def _with_value(x, index, value):
    x = x.copy()
    x[index] = value
    return x


@pytest.mark.parametrize("split, value, as_loader", [
    ("training", np.nan, False), ("training", np.inf, True), ("val", np.nan, False),
    ("val", -np.inf, False),
])
def test_non_finite_input_is_named_before_the_first_step(digits, split, value, as_loader):
    x, y, xt, yt = digits
    if split == "training":
        x = _with_value(x, (37, 0, 4, 5), value)
    else:
        xt = _with_value(xt, (5, 0, 0, 0), value)
    train = DataLoader(x, y, batch_size=32) if as_loader else (x, y)
    trainer = make_trainer()
    before = weights_bytes(trainer)
    with pytest.raises(ValueError) as info:
        trainer.fit(train, 1, val=(xt, yt), log=None, progress=False)
    message = str(info.value)
    assert f"the {split} images" in message and "non-finite" in message
    assert f"sample {37 if split == 'training' else 5}" in message
    assert "diverged" not in message
    assert weights_bytes(trainer) == before and trainer.epoch == 0


def test_finite_overflowing_sums_are_not_reported():
    big = np.full((8, 1, 8, 8), np.finfo(np.float32).max / 2, np.float32)
    check_finite_images(big, "the training images")  # the sums overflow, the values are finite
    with pytest.raises(ValueError, match="sample 2"):
        check_finite_images(_with_value(big, (2, 0, 1, 1), np.nan), "x")


def test_bad_validation_and_evaluation_data(digits):
    x, y, xt, yt = digits
    trainer = make_trainer()
    with pytest.raises(ValueError, match=r"val labels must lie in \[0, 9\]"):
        trainer.fit((x, y), 1, val=(xt, yt + 5), log=None, progress=False)
    with pytest.raises(ValueError, match="y has 95 labels but x has 96 samples"):
        trainer.evaluate(xt, yt[1:])
    with pytest.raises(ValueError, match=r"y must lie in \[0, 9\]"):
        trainer.evaluate(xt, yt * 3)
    with pytest.raises(TypeError, match="floating-point images"):
        trainer.predict((xt * 16).astype(np.uint8))
    with pytest.raises(ValueError, match="no samples"):
        trainer.evaluate(xt[:0], yt[:0])
    with pytest.raises(TypeError, match="DataLoader or a pair"):
        trainer.fit(x, 1, log=None, progress=False)
    with pytest.raises(TypeError, match="epochs must be an int >= 0, got 1.5"):
        trainer.fit((x, y), 1.5, log=None, progress=False)
    with pytest.raises(ValueError, match="epochs must be an int >= 0, got -1"):
        trainer.fit((x, y), -1, log=None, progress=False)
    with pytest.raises(ValueError, match="resume=True needs a checkpoint"):
        trainer.fit((x, y), 1, resume=True, log=None, progress=False)


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_is_bit_exact(digits, tmp_path):
    x, y, _, _ = digits
    path = tmp_path / "run.npz"
    trainer = make_trainer(metadata={"note": "hello"})
    trainer.fit((x, y), 2, batch_size=16, checkpoint=path, log=None, progress=False)

    restored = make_trainer(seed=99)  # different initial weights, overwritten by the load
    saved = restored.load_checkpoint(path)
    assert saved.metadata["note"] == "hello" and saved.metadata["optimizer"] == "Adam"
    assert saved.metadata["scheduler"] == "CosineAnnealingLR"
    assert weights_bytes(restored) == weights_bytes(trainer)
    for name in ("optimizer", "scheduler"):
        mine, theirs = getattr(trainer, name).state_dict(), getattr(restored, name).state_dict()
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert np.asarray(mine[key]).tobytes() == np.asarray(theirs[key]).tobytes(), key
    assert restored.optimizer.lr == trainer.optimizer.lr
    assert restored.epoch == 2 and restored.history == trainer.history


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_interrupted_then_resumed_equals_uninterrupted(digits, tmp_path, optimizer):
    x, y, xt, yt = digits
    straight = make_trainer(optimizer)
    straight.fit((x, y), 4, batch_size=16, seed=7, val=(xt, yt), log=None, progress=False)

    path = tmp_path / "run.npz"
    first = make_trainer(optimizer)
    first.fit((x, y), 2, batch_size=16, seed=7, val=(xt, yt), checkpoint=path, log=None,
              progress=False)
    del first  # "interrupted": only the file survives
    lines = []
    second = make_trainer(optimizer, seed=123)
    second.fit((x, y), 4, batch_size=16, seed=7, val=(xt, yt), checkpoint=path, resume=True,
               log=lines.append, progress=False)
    assert lines[0] == f"resumed from {path} at epoch 2"
    assert weights_bytes(second) == weights_bytes(straight)
    assert without_timing(second.history) == without_timing(straight.history)
    assert make_trainer(optimizer).load_checkpoint(path).epoch == 4


def test_resume_restores_layer_random_generators(digits, tmp_path):
    x, y, _, _ = digits

    def dropout_trainer(seed):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32, rng=seed), nn.ReLU(),
                              nn.Dropout(0.3, rng=seed + 1), nn.Linear(32, 10, rng=seed + 2))
        return Trainer(model, nn.SoftmaxCrossEntropy(),
                       optim.SGD(model.parameters(), lr=0.1, momentum=0.9))

    straight = dropout_trainer(0)
    straight.fit((x, y), 3, batch_size=32, log=None, progress=False)
    path = tmp_path / "dropout.npz"
    dropout_trainer(0).fit((x, y), 1, batch_size=32, checkpoint=path, log=None, progress=False)
    resumed = dropout_trainer(50)
    resumed.fit((x, y), 3, batch_size=32, checkpoint=path, resume=True, log=None,
                progress=False)
    assert weights_bytes(resumed) == weights_bytes(straight)


def test_resume_without_a_checkpoint_starts_from_scratch(digits, tmp_path):
    x, y, _, _ = digits
    lines = []
    trainer = make_trainer()
    trainer.fit((x, y), 1, checkpoint=tmp_path / "new.npz", resume=True, log=lines.append,
                progress=False)
    assert lines[0].startswith("no checkpoint at") and trainer.epoch == 1
    assert (tmp_path / "new.npz").exists()


def test_checkpoint_must_fit_the_trainer(digits, tmp_path):
    x, y, _, _ = digits
    path = tmp_path / "run.npz"
    make_trainer().fit((x, y), 1, checkpoint=path, log=None, progress=False)

    other = make_trainer(scheduler=False)
    with pytest.raises(ValueError, match=r"run\.npz.*schedule 'CosineAnnealingLR'"):
        other.load_checkpoint(path)

    sgd = make_trainer(optimizer="sgd")
    before = weights_bytes(sgd)
    with pytest.raises(ValueError, match=r"run\.npz: cannot restore.*'Adam'"):
        sgd.load_checkpoint(path)
    assert weights_bytes(sgd) == before and sgd.epoch == 0  # nothing half-restored

    wide = nn.lenet5(num_classes=7, input_size=8, rng=0)
    adam = optim.Adam(wide.parameters())
    trainer = Trainer(wide, nn.SoftmaxCrossEntropy(), adam, optim.CosineAnnealingLR(adam, 4))
    with pytest.raises(ValueError, match=r"run\.npz: cannot restore.*11\.weight"):
        trainer.load_checkpoint(path)

    resumed = make_trainer()
    with pytest.raises(ValueError, match=r"run\.npz: the data-loader state does not fit"):
        resumed.fit((x[:100], y[:100]), 2, checkpoint=path, resume=True, log=None,
                    progress=False)


def test_corrupt_checkpoint_gives_value_error(digits, tmp_path):
    x, y, _, _ = digits
    path = tmp_path / "run.npz"
    make_trainer().fit((x, y), 1, checkpoint=path, log=None, progress=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    trainer = make_trainer()
    before = weights_bytes(trainer)
    with pytest.raises(ValueError, match=r"run\.npz"):
        trainer.load_checkpoint(path)
    with pytest.raises(ValueError, match=r"run\.npz"):
        trainer.fit((x, y), 2, checkpoint=path, resume=True, log=None, progress=False)
    assert weights_bytes(trainer) == before

    path.write_bytes(b"")  # an empty file
    with pytest.raises(ValueError, match=r"run\.npz"):
        model_from_checkpoint(path)


def test_missing_model_entries_give_value_error(digits, tmp_path):
    x, y, _, _ = digits
    path = tmp_path / "run.npz"
    make_trainer().fit((x, y), 1, checkpoint=path, log=None, progress=False)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "model.0.weight"}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"run\.npz: cannot restore.*missing keys \['0\.weight'\]"):
        make_trainer().load_checkpoint(path)


# --------------------------------------------------------------------------- divergence


def test_nan_loss_raises_with_epoch_and_step_and_keeps_checkpoint(digits, tmp_path):
    x, y, _, _ = digits
    path = tmp_path / "run.npz"
    trainer = make_trainer(optimizer="sgd", scheduler=False)
    trainer.fit((x, y), 1, batch_size=16, checkpoint=path, log=None, progress=False)
    good = path.read_bytes()

    trainer.optimizer.lr = 1e30
    with pytest.raises(FloatingPointError,
                       match=r"loss is (nan|inf) at epoch 2, step \d+.*run\.npz of epoch 1 "
                             r"was left untouched"):
        trainer.fit((x, y), 3, batch_size=16, checkpoint=path, log=None, progress=False)
    assert path.read_bytes() == good
    assert trainer.epoch == 1 and len(trainer.history) == 1


def test_nan_weights_raise_at_the_first_step(digits, tmp_path):
    x, y, _, _ = digits
    path = tmp_path / "run.npz"
    trainer = make_trainer()
    trainer.fit((x, y), 1, checkpoint=path, log=None, progress=False)
    good = path.read_bytes()
    trainer.model[0].weight.data[0, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="at epoch 2, step 1 "):
        trainer.fit((x, y), 2, checkpoint=path, log=None, progress=False)
    with pytest.raises(FloatingPointError, match=r"'0\.weight' holds NaN or Inf.*not writing"):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == good


# --------------------------------------------------------------------------- mnist5k


@pytest.mark.slow
@pytest.mark.skipif(not MNIST5K.is_dir(), reason="shared/data/mnist5k is absent")
def test_lenet5_on_mnist5k_reaches_95_percent():
    data = load_mnist(MNIST5K)
    mean, std = data.x_train.mean(), data.x_train.std()
    x_train, x_test = (data.x_train - mean) / std, (data.x_test - mean) / std
    model = nn.lenet5(num_classes=10, input_size=28, rng=0)
    opt = optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True)
    trainer = Trainer(model, nn.SoftmaxCrossEntropy(), opt, optim.CosineAnnealingLR(opt, 3))
    trainer.fit((x_train, data.y_train), 3, batch_size=16, log=None, progress=False)
    result = trainer.evaluate(x_test, data.y_test)
    assert len(data.y_test) == 1000
    assert result["accuracy"] >= 0.95, result
