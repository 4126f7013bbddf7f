"""``cnnblas train`` / ``predict`` with the residual networks on a small CIFAR-10-format folder.

The folder is written by the test (random 3x32x32 images in the CIFAR-10
binary format: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
``test_batch.bin``, each record one label byte then the red, green and blue
planes); no real CIFAR-10 data is needed.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from cnnblas.checkpoint import load_checkpoint
from cnnblas.cli import main
from cnnblas.cli.defaults import DEFAULTS, model_kwargs, resolve_defaults
from cnnblas.cli.pipeline import EpochAugmentation, training_data
from cnnblas.data import CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, augmentation_rng, random_crop_flip
from cnnblas.nn import MODEL_BUILDERS, model_from_checkpoint
from tests.cli.conftest import EPOCH_LINE, run_cli
from tests.distributed.test_distributed import BIN, needs_mpi, run

TRAIN_PER_FILE, TEST_IMAGES = 8, 12  # 40 training images in 5 files, 12 test images


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A CIFAR-10 binary folder of random images; returns it and the raw uint8 arrays."""
    directory = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    raw = {}
    for name in [*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE]:
        count = TEST_IMAGES if name == CIFAR10_TEST_FILE else TRAIN_PER_FILE
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        # channel bias per class, so that a class is learnable at all
        images[:, 0] = np.clip(images[:, 0].astype(int) // 2 + labels[:, None, None] * 12, 0, 255)
        records = np.concatenate([labels[:, None], images.reshape(count, -1)], axis=1)
        (directory / name).write_bytes(records.tobytes())
        raw[name] = images, labels
    train = [raw[name] for name in CIFAR10_TRAIN_FILES]
    return {
        "dir": directory,
        "x_train": np.concatenate([images for images, _ in train]),
        "y_train": np.concatenate([labels for _, labels in train]),
        "x_test": raw[CIFAR10_TEST_FILE][0],
        "y_test": raw[CIFAR10_TEST_FILE][1],
    }


def train_argv(cifar, *extra) -> list[str]:
    return ["train", "--model", "resnet20", "--data", f"cifar10:{cifar['dir']}", "--epochs", "1",
            "--no-progress", "--threads", "1", *extra]


def weights(path) -> dict:
    return dict(load_checkpoint(path).sections["model"])


@pytest.fixture(scope="module")
def trained(cifar, tmp_path_factory):
    """One epoch of resnet20 with every output file: (argv, paths, stdout)."""
    directory = tmp_path_factory.mktemp("resnet")
    paths = {name: directory / name for name in ("run.npz", "history.json", "history.png")}
    argv = train_argv(cifar, "--checkpoint", str(paths["run.npz"]), "--history",
                      str(paths["history.json"]), "--plot", str(paths["history.png"]))
    code = main(argv)
    assert code == 0
    return paths


def test_resnet_train_header_metadata_and_files(cifar, trained, capsys):
    code, out, err = run_cli(train_argv(cifar, "--batch-size", "20"), capsys)
    assert code == 0, err
    header = out.splitlines()[0]
    assert header == (
        f"resnet20 on cifar10:{cifar['dir']}: 40 training and 12 test images 3x32x32, "
        "10 classes, random 4-px crops and flips every epoch; sgd (momentum 0.9, weight decay "
        "0.0005), lr 0.1, cosine schedule, batch 20 (resnet defaults; --batch-size given), "
        "1 epoch, 1 thread(s)"
    )
    assert EPOCH_LINE.fullmatch(out.splitlines()[1]).group(1) == "1"

    model, saved = model_from_checkpoint(trained["run.npz"])
    meta = saved.metadata
    # The builder takes no input_size: only the arguments of its signature are recorded.
    assert meta["model"] == {"name": "resnet20", "kwargs": {
        "num_classes": 10, "in_channels": 3, "rng": 0, "input_grad": False}}
    assert meta["train"]["augment"] == "crop+flip" and meta["train"]["crop_pad"] == 4
    assert (meta["train"]["lr"], meta["train"]["momentum"], meta["train"]["weight_decay"],
            meta["train"]["batch_size"], meta["train"]["nesterov"]) == (0.1, 0.9, 5e-4, 128,
                                                                       False)
    # Per-channel statistics of the training images, before augmentation.
    pixels = (cifar["x_train"] / np.float32(255)).astype(np.float64)  # the loader's floats
    np.testing.assert_allclose(meta["input"]["mean"], pixels.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(meta["input"]["std"], pixels.std(axis=(0, 2, 3)), rtol=1e-9)
    assert meta["input"]["shape"] == [3, 32, 32] and meta["input"]["pixel_max"] == 255
    assert saved.epoch == 1 and not model.training
    assert [r["epoch"] for r in json.loads(trained["history.json"].read_text())] == [1]
    assert trained["history.png"].read_bytes()[:4] == b"\x89PNG"


def test_predict_applies_the_stored_normalisation(cifar, trained, capsys, tmp_path):
    np.save(tmp_path / "images.npy", cifar["x_test"])
    np.save(tmp_path / "labels.npy", cifar["y_test"].astype(np.int64))
    code, out, err = run_cli(["predict", str(trained["run.npz"]), str(tmp_path / "images.npy"),
                              "--labels", str(tmp_path / "labels.npy"), "--threads", "1"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    predictions = np.array([int(line) for line in lines[:-1]])
    model, saved = model_from_checkpoint(trained["run.npz"])
    mean = np.array(saved.metadata["input"]["mean"])[:, None, None]
    std = np.array(saved.metadata["input"]["std"])[:, None, None]
    inputs = ((cifar["x_test"] / 255.0 - mean) / std).astype(np.float32)  # no augmentation
    np.testing.assert_array_equal(predictions, model(inputs).argmax(axis=1))
    correct = int(np.sum(predictions == cifar["y_test"]))
    assert lines[-1] == f"accuracy {correct / TEST_IMAGES:.4f} ({correct}/{TEST_IMAGES})"


class Interrupted(Exception):
    """Stands for a run killed between two epochs."""


def test_resume_with_augmentation_is_bit_exact(cifar, capsys, tmp_path, monkeypatch):
    argv = train_argv(cifar, "--limit", "16", "--batch-size", "8", "--epochs", "2")
    straight, split = tmp_path / "straight.npz", tmp_path / "split.npz"
    assert run_cli([*argv, "--checkpoint", str(straight)], capsys)[0] == 0

    redraw = EpochAugmentation.on_epoch_begin

    def interrupt_at_epoch_2(self, trainer, epoch, num_batches):
        if epoch == 2:
            raise Interrupted
        redraw(self, trainer, epoch, num_batches)

    with monkeypatch.context() as patch:
        patch.setattr(EpochAugmentation, "on_epoch_begin", interrupt_at_epoch_2)
        with pytest.raises(Interrupted):
            main([*argv, "--checkpoint", str(split)])
    assert load_checkpoint(split).epoch == 1
    code, out, err = run_cli([*argv, "--checkpoint", str(split), "--resume"], capsys)
    assert code == 0, err
    assert f"resumed from {split} at epoch 1" in out
    one, other = weights(straight), weights(split)
    assert one.keys() == other.keys()
    for key in one:
        np.testing.assert_array_equal(other[key], one[key], err_msg=key)
    # ... and the augmentation did change the run:
    plain = tmp_path / "plain.npz"
    assert run_cli([*argv, "--no-augment", "--checkpoint", str(plain)], capsys)[0] == 0
    assert not np.array_equal(weights(plain)["conv1.weight"], one["conv1.weight"])


def test_each_epoch_redraws_the_training_images_and_never_the_test_images(cifar):
    args = argparse.Namespace(data=f"cifar10:{cifar['dir']}", limit=None, upsample=None,
                              shift_augment=None, augment=None, crop_pad=4, standardize=True)
    data = training_data(args)
    test_before = data.x_test.copy()
    augmentation = EpochAugmentation(data, seed=5)
    raw = cifar["x_train"].astype(np.float32) / np.float32(255)
    mean = np.float32(data.mean)[:, None, None]
    std = np.float32(data.std)[:, None, None]
    for epoch in (1, 2, 1):
        augmentation.on_epoch_begin(None, epoch, 1)
        expected = (random_crop_flip(raw, augmentation_rng(5, epoch)) - mean) / std
        np.testing.assert_allclose(data.x_train, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(data.x_test, test_before)
    np.testing.assert_allclose(data.x_test, (cifar["x_test"] / np.float32(255) - mean) / std,
                               rtol=1e-6, atol=1e-6)


def test_resnet_on_one_channel_digits(capsys):
    code, out, err = run_cli(["train", "--model", "resnet20", "--epochs", "1", "--limit", "48",
                              "--no-progress", "--threads", "1", "--lr", "0.05"], capsys)
    assert code == 0, err
    assert out.splitlines()[0].startswith(
        "resnet20 on digits: 48 training and 48 test images 1x8x8 (+4 copies shifted by 1 px) "
        "upsampled to 16x16, 10 classes; sgd (momentum 0.9, weight decay 0.0005), lr 0.05, "
        "cosine schedule, batch 128 (resnet defaults; --lr given), 1 epoch")


def parse_train(argv):
    from cnnblas.cli import build_parser

    args = build_parser().parse_args(["train", *argv])
    return args, resolve_defaults(args)


def test_family_defaults_and_overrides():
    args, given = parse_train([])
    assert given == [] and args.family is None
    assert (args.batch_size, args.lr, args.momentum, args.nesterov, args.weight_decay,
            args.schedule) == (16, 0.02, 0.9, True, 0.0, "cosine")
    args, _ = parse_train(["--optimizer", "adam"])
    assert args.lr == DEFAULTS["lr"]["adam"]
    args, given = parse_train(["--model", "resnet56"])
    assert given == [] and args.family == "resnet"
    assert (args.batch_size, args.lr, args.momentum, args.nesterov, args.weight_decay,
            args.schedule) == (128, 0.1, 0.9, False, 5e-4, "cosine")
    args, given = parse_train(["--model", "resnet20", "--lr", "0.05", "--weight-decay", "0",
                               "--schedule", "none", "--nesterov"])
    assert (args.lr, args.weight_decay, args.schedule, args.nesterov) == (0.05, 0.0, "none", True)
    assert given == ["--nesterov", "--weight-decay", "--schedule", "--lr"]
    args, _ = parse_train(["--data", "cifar10:x", "--no-augment"])
    assert args.augment == "none"


def test_model_kwargs_follow_the_builder_signature(monkeypatch):
    candidates = {"num_classes": 10, "in_channels": 1, "input_size": [28, 28], "rng": 0,
                  "input_grad": False}
    assert model_kwargs("lenet5", candidates) == candidates
    assert model_kwargs("resnet20", candidates) == {"num_classes": 10, "in_channels": 1,
                                                    "rng": 0, "input_grad": False}

    def anything(**kwargs):
        return kwargs

    def few(num_classes, rng=None):
        return num_classes

    monkeypatch.setitem(MODEL_BUILDERS, "anything", anything)
    monkeypatch.setitem(MODEL_BUILDERS, "few", few)
    assert model_kwargs("anything", candidates) == candidates
    assert model_kwargs("few", candidates) == {"num_classes": 10, "rng": 0}


def test_bad_augmentation_options(cifar, capsys):
    code, _, err = run_cli(train_argv(cifar, "--crop-pad", "-1"), capsys)
    assert code == 1 and "--crop-pad must be >= 0, got -1" in err
    with pytest.raises(SystemExit):
        main(train_argv(cifar, "--augment", "rotate"))
    capsys.readouterr()


@needs_mpi
def test_two_ranks_with_synchronised_batchnorm(cifar, tmp_path):
    argv = [str(BIN / "cnnblas"), "train", "--model", "resnet20", "--data",
            f"cifar10:{cifar['dir']}", "--epochs", "1", "--limit", "16", "--batch-size", "16",
            "--no-progress", "--threads", "1", "--checkpoint"]
    single = run([*argv, str(tmp_path / "single.npz")])
    synced = run([*argv, str(tmp_path / "synced.npz"), "--sync-batchnorm"], 2)
    local = run([*argv, str(tmp_path / "local.npz")], 2)
    for result in (single, synced, local):
        assert result.returncode == 0, result.stderr
    assert synced.stdout.count("resnet20 on cifar10") == 1
    assert "2 MPI ranks x 1 thread(s), 8 images per rank and step, synchronised BatchNorm" \
        in synced.stdout
    assert load_checkpoint(tmp_path / "synced.npz").metadata["train"]["sync_batchnorm"]
    # One step on the same global batch: with the global batch's BatchNorm statistics two
    # ranks take one process's step up to float32 rounding (measured: 1.1e-4 at most, on a
    # BatchNorm bias), with per-rank statistics a different one (measured: 2.0e-2).
    one = weights(tmp_path / "single.npz")

    def largest_difference(name):
        other = weights(tmp_path / name)
        return max(float(np.abs(other[key] - one[key]).max()) for key in one)

    assert largest_difference("synced.npz") < 1e-3
    assert largest_difference("local.npz") > 10 * largest_difference("synced.npz")
