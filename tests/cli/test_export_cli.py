"""End to end: ``cnnblas train`` a tiny checkpoint, ``cnnblas export`` it, run it in
onnxruntime and compare with the model and with ``cnnblas predict``."""

from __future__ import annotations

import numpy as np
import pytest

from cnnblas.nn import model_from_checkpoint
from tests.cli.conftest import run_cli, training_input

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from cnnblas.cli import main

    path = tmp_path_factory.mktemp("export") / "run.npz"
    code = main(["train", "--epochs", "1", "--limit", "100", "--no-progress", "--threads", "1",
                 "--checkpoint", str(path)])
    assert code == 0
    return path


def test_exported_checkpoint_runs_in_onnxruntime_as_predict(checkpoint, tmp_path, capsys):
    from cnnblas.data import load_digits

    target = tmp_path / "model.onnx"
    code, out, err = run_cli(["export", str(checkpoint), str(target), "--threads", "1"], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == (f"lenet5 written to {target}: input 'input' (N, 1, 16, 16) "
                                   "float32, output 'output' (logits)")
    assert "pixels / 16, upsampled x2" in out

    raw = (load_digits().x_test[:40, 0] * 16).round().astype(np.uint8)  # 0..16 pixels
    images = tmp_path / "images.npy"
    np.save(images, raw)
    code, out, err = run_cli(["predict", str(checkpoint), str(images), "--threads", "1"],
                             capsys)
    assert code == 0, err
    predicted = np.array(out.split(), dtype=np.int64)

    model, saved = model_from_checkpoint(checkpoint)
    spec = saved.metadata["input"]
    x = training_input(raw[:, None], spec["pixel_max"], spec["upsample"], spec["mean"],
                       spec["std"])
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x})[0]
    expected = model(x)
    assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()
    np.testing.assert_array_equal(logits.argmax(axis=1), predicted)


def test_export_errors_are_one_line(checkpoint, tmp_path, capsys):
    code, _, err = run_cli(["export", str(tmp_path / "missing.npz"), str(tmp_path / "a.onnx")],
                           capsys)
    assert code == 1 and err.startswith("cnnblas export: error: ")
    code, _, err = run_cli(["export", str(checkpoint), str(tmp_path / "a.onnx"), "--opset", "5"],
                           capsys)
    assert code == 1 and "opset" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a.onnx").exists()
