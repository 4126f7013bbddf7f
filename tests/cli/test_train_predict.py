"""End-to-end tests of ``cnnblas train`` and ``cnnblas predict``."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnblas.nn import model_from_checkpoint
from tests.cli.conftest import EPOCH_LINE, run_cli, training_input
from tests.conftest import REPO


@pytest.fixture(scope="module")
def raw_digits():
    """The scikit-learn digits as the raw 0..16 integers (what a user's file would hold)."""
    from cnnblas.data import load_digits

    data = load_digits()
    return (data.x_test[:, 0] * 16).round().astype(np.uint8), data.y_test


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short `cnnblas train` run with every output file, shared by the tests."""
    directory = tmp_path_factory.mktemp("train")
    paths = {name: directory / name for name in ("run.npz", "history.json", "history.png")}
    argv = ["train", "--epochs", "2", "--limit", "400", "--no-progress", "--threads", "1",
            "--checkpoint", str(paths["run.npz"]), "--history", str(paths["history.json"]),
            "--plot", str(paths["history.png"])]
    return argv, paths


def test_train_prints_epoch_lines_and_writes_files(trained, capsys):
    argv, paths = trained
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("lenet5 on digits: 400 training and 359 test images 1x8x8 "
                               "(+4 copies shifted by 1 px) upsampled to 16x16, 10 classes; "
                               "sgd (momentum 0.9, nesterov)")
    epochs = [EPOCH_LINE.fullmatch(line) for line in lines[1:3]]
    assert all(epochs), lines[1:3]
    assert [int(match.group(1)) for match in epochs] == [1, 2]
    assert re.fullmatch(r"test accuracy 0\.\d{4} \(\d+/359\), loss \d+\.\d{4}, [\d.]+ s in all",
                        lines[3])
    history = json.loads(paths["history.json"].read_text())
    assert [record["epoch"] for record in history] == [1, 2]
    assert paths["history.png"].read_bytes()[:4] == b"\x89PNG"
    model, saved = model_from_checkpoint(paths["run.npz"])
    assert saved.epoch == 2 and saved.metadata["model"]["name"] == "lenet5"
    assert saved.metadata["input"]["upsample"] == 2 and saved.metadata["input"]["pixel_max"] == 16
    assert not model.training


def test_resume_continues_to_the_requested_epoch(trained, capsys, tmp_path):
    argv, paths = trained
    if not paths["run.npz"].exists():
        assert run_cli(argv, capsys)[0] == 0
    copy = tmp_path / "copy.npz"
    copy.write_bytes(paths["run.npz"].read_bytes())
    code, out, err = run_cli(["train", "--epochs", "3", "--limit", "400", "--no-progress",
                              "--threads", "1", "--checkpoint", str(copy), "--resume"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1] == f"resumed from {copy} at epoch 2"
    assert lines[2].startswith("the cosine schedule now spans 3 epochs instead of 2: lr ")
    assert EPOCH_LINE.fullmatch(lines[3]).group(1) == "3"
    assert model_from_checkpoint(copy)[1].epoch == 3


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    return path


def test_predict_round_trip(trained, raw_digits, capsys, tmp_path):
    argv, paths = trained
    if not paths["run.npz"].exists():
        assert run_cli(argv, capsys)[0] == 0
    images, labels = raw_digits
    images, labels = images[:50], labels[:50]
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)

    code, out, err = run_cli(["predict", str(paths["run.npz"]), str(tmp_path / "images.npy"),
                              "--labels", str(tmp_path / "labels.npy")], capsys)
    assert code == 0, err
    lines = out.splitlines()
    predictions = np.array([int(line) for line in lines[:-1]])
    # The same model applied in-process to the images preprocessed as in training:
    model, saved = model_from_checkpoint(paths["run.npz"])
    spec = saved.metadata["input"]
    expected = model(training_input(images[:, None], 16, 2, spec["mean"], spec["std"]))
    np.testing.assert_array_equal(predictions, expected.argmax(axis=1))
    correct = int(np.sum(predictions == labels))
    assert lines[-1] == f"accuracy {correct / 50:.4f} ({correct}/50)"

    # IDX input (N, 1, H, W via the channel axis added for 3-D input) and --output.
    write_idx(tmp_path / "images.idx", images)
    write_idx(tmp_path / "labels.idx", labels)
    code, out, err = run_cli(["predict", str(paths["run.npz"]), str(tmp_path / "images.idx"),
                              "--labels", str(tmp_path / "labels.idx"),
                              "--output", str(tmp_path / "out.npy")], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), predictions)
    assert out.splitlines()[-1] == lines[-1]


def test_predict_errors(trained, raw_digits, capsys, tmp_path):
    argv, paths = trained
    if not paths["run.npz"].exists():
        assert run_cli(argv, capsys)[0] == 0
    images, labels = raw_digits
    np.save(tmp_path / "wrong.npy", np.zeros((3, 28, 28), np.uint8))
    np.save(tmp_path / "images.npy", images[:10])
    np.save(tmp_path / "labels.npy", labels[:9])
    cases = [
        ([str(tmp_path / "wrong.npy")], r"shape \(1, 28, 28\) per sample.*\(1, 8, 8\)"),
        ([str(tmp_path / "images.npy"), "--labels", str(tmp_path / "labels.npy")],
         "holds 9 labels but .* holds 10 images"),
        ([str(tmp_path / "missing.npy")], "does not exist"),
    ]
    for extra, message in cases:
        code, out, err = run_cli(["predict", str(paths["run.npz"]), *extra], capsys)
        assert code == 1 and re.search(message, err), err
    broken = tmp_path / "broken.npz"
    broken.write_bytes(paths["run.npz"].read_bytes()[:1000])
    code, _, err = run_cli(["predict", str(broken), str(tmp_path / "images.npy")], capsys)
    assert code == 1 and "broken.npz" in err


def test_train_errors(capsys, tmp_path):
    for argv, message in [
        (["train", "--data", "imagenet"], "--data must be digits, mnist:DIR or cifar10:DIR"),
        (["train", "--data", f"mnist:{tmp_path / 'none'}"], "does not exist|not found|missing"),
        (["train", "--resume"], "--resume needs --checkpoint"),
        (["train", "--epochs", "0"], "--epochs must be >= 1"),
    ]:
        code, _, err = run_cli(argv, capsys)
        assert code == 1 and re.search(message, err), err


def test_train_diverging_run_reports_epoch_and_step(capsys, tmp_path):
    code, out, err = run_cli(["train", "--epochs", "1", "--limit", "64", "--no-progress",
                              "--threads", "1", "--lr", "1e30"], capsys)
    assert code == 1
    assert re.search(r"cnnblas train: error: training diverged: the loss is (nan|inf) at "
                     r"epoch 1, step \d+", err), err


def test_entry_point_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cnnblas", "train", "--epochs", "1", "--limit", "100",
         "--batch-size", "25", "--model", "tutorial", "--optimizer", "adam"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("tutorial on digits: 100 training and 100 test images")
    assert EPOCH_LINE.fullmatch(lines[1]), lines[1]
    assert "epoch 1:" not in result.stderr  # not a terminal: no progress bar
