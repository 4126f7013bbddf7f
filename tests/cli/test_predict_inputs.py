"""``cnnblas predict``: images it refuses, a user's own architecture, MNIST accuracy kept."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cnnblas as cb
from cnnblas.cli import main
from cnnblas.data import load_digits
from tests.cli.conftest import run_cli
from tests.conftest import MNIST5K, REPO


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A one-epoch ``cnnblas train`` checkpoint on the digits (raw pixels 0..16, upsampled x2)."""
    path = tmp_path_factory.mktemp("predict") / "run.npz"
    assert main(["train", "--epochs", "1", "--limit", "200", "--no-progress", "--threads", "1",
                 "--checkpoint", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def raw_digits():
    return (load_digits().x_test[:20, 0] * 16).round().astype(np.uint8)  # (20, 8, 8), 0..16


def predict(run, images, tmp_path, capsys, *extra):
    np.save(tmp_path / "images.npy", images)
    return run_cli(["predict", str(run), str(tmp_path / "images.npy"), "--threads", "1",
                    *extra], capsys)


def test_non_finite_images_are_an_error_naming_the_image(digits_run, raw_digits, tmp_path,
                                                         capsys):
    images = raw_digits / np.float32(16)
    images[2, 4, 4] = np.nan
    images[5, 0, 0] = np.inf
    code, out, err = predict(digits_run, images, tmp_path, capsys)
    assert (code, out) == (1, "")
    assert re.fullmatch(r"cnnblas predict: error: the images of .*images\.npy hold non-finite "
                        r"values \(NaN or inf\), first in image 2; the model only takes finite "
                        r"pixels\n", err), err


def test_pixels_outside_the_training_range_are_an_error(digits_run, raw_digits, tmp_path,
                                                        capsys):
    sixteen_bit = raw_digits.astype(np.uint16) * 4095  # 0..65520 for a model trained on 0..16
    code, out, err = predict(digits_run, sixteen_bit, tmp_path, capsys)
    assert (code, out) == (1, "")
    assert re.search(r"integer pixels in \[0, 65520\] \(uint16\); the model was trained on "
                     r"pixels in \[0, 16\]: rescale them to that range", err), err

    unscaled = raw_digits.astype(np.float32)  # 0..16 floats for a model trained on 0..1
    code, out, err = predict(digits_run, unscaled, tmp_path, capsys)
    assert (code, out) == (1, "")
    assert re.search(r"float32 values in \[0, 16\]; the model was trained on floats in \[0, 1\] "
                     r"\(pixels / 16\): divide by 16 or give the integer pixels", err), err


def test_integer_and_scaled_float_pixels_give_the_same_answers(digits_run, raw_digits, tmp_path,
                                                               capsys):
    code, from_integers, err = predict(digits_run, raw_digits, tmp_path, capsys)
    assert code == 0, err
    code, from_floats, err = predict(digits_run, raw_digits / 16.0, tmp_path, capsys)
    assert code == 0, err
    assert from_floats == from_integers and len(from_integers.split()) == 20


def test_help_says_which_images_are_accepted(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("Integer pixels must lie in the training data's range",
                   "float pixels must already be scaled to the training range (0..1",
                   "NaN or inf", "never silently converted", "--import MODULE",
                   "cnnblas.nn.register_model"):
        assert phrase in text, phrase


# --------------------------------------------------------------------------- a user's model

USER_MODULE = '''
"""A user's own architecture: a composite module, registered under a name."""
from cnnblas import nn


class Residual(nn.Module):
    """relu(x + conv(x))."""

    def __init__(self, channels, rng=None):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, rng=rng)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.conv(x))

    def backward(self, dy):
        d_sum = self.relu.backward(dy)
        return d_sum + self.conv.backward(d_sum)


@nn.register_model("user_resnet")
def user_resnet(num_classes=10, in_channels=1, input_size=(8, 8), width=6, rng=None):
    height, wide = input_size  # cnnblas train passes [H, W], after its upsampling
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, rng=rng), nn.ReLU(),
                         Residual(width, rng=rng), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(width * (height // 2) * (wide // 2), num_classes, rng=rng))
'''

TRAIN_SCRIPT = '''
import numpy as np
import user_models  # registers user_resnet
from cnnblas import nn, optim
from cnnblas.data import Preprocessing, load_digits
from cnnblas.train import Trainer

data = load_digits()
prep = Preprocessing.fit(data.x_train, pixel_max=16)
model = nn.build_model("user_resnet", input_size=(8, 8), width=5, rng=0)
opt = optim.Adam(model.parameters(), lr=3e-3)
trainer = Trainer(model, nn.SoftmaxCrossEntropy(), opt, preprocessing=prep)
trainer.fit((prep(data.x_train), data.y_train), 2, batch_size=32, log=None, progress=False,
            checkpoint="user.npz")
raw = (data.x_test[:, 0] * 16).round().astype(np.uint8)
np.save("images.npy", raw)
np.save("labels.npy", data.y_test)
np.save("expected.npy", trainer.predict(prep(raw)))
'''


def run_python(argv, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_predict_rebuilds_a_users_registered_architecture(tmp_path, capsys):
    (tmp_path / "user_models.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "train_user.py").write_text(TRAIN_SCRIPT)
    trained = run_python(["train_user.py"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    expected = np.load(tmp_path / "expected.npy")

    # By module name (found in the current directory) and by file path.
    for module in ("user_models", str(tmp_path / "user_models.py")):
        result = run_python(["-m", "cnnblas", "predict", "user.npz", "images.npy", "--labels",
                             "labels.npy", "--import", module, "--threads", "1"], tmp_path)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        np.testing.assert_array_equal(np.array(lines[:-1], dtype=np.int64), expected)
        correct = int(np.sum(expected == np.load(tmp_path / "labels.npy")))
        assert lines[-1] == f"accuracy {correct / len(expected):.4f} ({correct}/{len(expected)})"
        assert correct > 0.8 * len(expected)

    # Without the module, the error names the builder and how to make it known.
    code, out, err = run_cli(["predict", str(tmp_path / "user.npz"),
                              str(tmp_path / "images.npy")], capsys)
    assert (code, out) == (1, "")
    assert re.search(r"user\.npz: the checkpoint's model 'user_resnet' is not registered "
                     r"\(registered: lenet5, .*\); register its builder with "
                     r"cnnblas\.nn\.register_model\('user_resnet', builder\) in a module "
                     r"imported before the model is built or loaded \(cnnblas train/predict "
                     r"--import MODULE\)",
                     err), err
    code, out, err = run_cli(["predict", str(tmp_path / "user.npz"), str(tmp_path / "images.npy"),
                              "--import", "no_such_module_here"], capsys)
    assert code == 1 and re.search(r"--import no_such_module_here: ModuleNotFoundError", err), err


def test_train_command_trains_a_users_registered_architecture(tmp_path, capsys):
    (tmp_path / "user_models.py").write_text(textwrap.dedent(USER_MODULE))
    trained = run_python(["-m", "cnnblas", "train", "--import", "user_models", "--model",
                          "user_resnet", "--epochs", "1", "--limit", "300", "--no-progress",
                          "--threads", "1", "--checkpoint", "cli.npz"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.startswith("user_resnet on digits: 300 training")
    correct = re.search(r"test accuracy [01]\.\d{4} \((\d+)/300\)", trained.stdout).group(1)
    data = load_digits()
    np.save(tmp_path / "images.npy", (data.x_test[:300, 0] * 16).round().astype(np.uint8))
    np.save(tmp_path / "labels.npy", data.y_test[:300])
    result = run_python(["-m", "cnnblas", "predict", "cli.npz", "images.npy", "--labels",
                         "labels.npy", "--import", "user_models", "--threads", "1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith(f"({correct}/300)")

    code, _, err = run_cli(["train", "--model", "vgg"], capsys)
    assert code == 1 and re.search(r"--model: unknown model 'vgg'; registered: lenet5, .*"
                                   r"register_model\('vgg', builder\)", err), err


# --------------------------------------------------------------------------- MNIST


@pytest.mark.skipif(not MNIST5K.is_dir(), reason="shared/data/mnist5k is absent")
def test_mnist_run_predicts_raw_images_with_the_reported_accuracy(tmp_path, capsys):
    run = tmp_path / "mnist.npz"
    code, out, err = run_cli(["train", "--data", f"mnist:{MNIST5K}", "--epochs", "1", "--limit",
                              "1000", "--no-progress", "--threads", "1", "--checkpoint",
                              str(run)], capsys)
    assert code == 0, err
    reported = re.search(r"test accuracy [01]\.\d{4} \((\d+)/1000\)", out)
    assert reported, out
    correct = int(reported.group(1))

    # The test images as the raw IDX file holds them (uint8 0..255), through the command...
    code, out, err = run_cli(["predict", str(run), str(MNIST5K / "t10k-images-idx3-ubyte.gz"),
                              "--labels", str(MNIST5K / "t10k-labels-idx1-ubyte.gz"),
                              "--threads", "1"], capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == f"accuracy {correct / 1000:.4f} ({correct}/1000)"
    # ... and through the library.
    raw = cb.data.load_idx(MNIST5K / "t10k-images-idx3-ubyte.gz")
    labels = cb.data.load_idx(MNIST5K / "t10k-labels-idx1-ubyte.gz")
    assert np.count_nonzero(cb.load_model(run).predict(raw) == labels) == correct


def test_an_imported_file_does_not_replace_a_module_of_the_same_name(tmp_path):
    import json
    import sys

    from cnnblas.cli.common import import_user_modules

    user_file = tmp_path / "json.py"
    user_file.write_text("LOADED = True\n")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    before = set(sys.modules)
    import_user_modules([str(user_file)])
    assert sys.modules["json"] is json and hasattr(json, "dumps")
    with pytest.raises(ImportError, match="boom"):
        import_user_modules([str(broken)])
    assert not [name for name in set(sys.modules) - before if "broken" in name]
