"""cnnblas.load_model and the Predictor: a checkpoint's model with its preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

import cnnblas as cb
from cnnblas import checkpoint, nn
from cnnblas.data import Preprocessing
from cnnblas.inference import Predictor

PREP = Preprocessing(shape=(1, 8, 8), pixel_max=16, upsample=2, mean=0.3, std=0.4)


@pytest.fixture(scope="module")
def raw():
    """Twelve 8x8 images of integer pixels 0..16, as the digits' raw files hold them."""
    return np.random.default_rng(0).integers(0, 17, (12, 8, 8), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A lenet5 checkpoint for 16x16 inputs with PREP as its metadata['input']."""
    model = nn.build_model("lenet5", num_classes=5, input_size=16, rng=0)
    path = tmp_path_factory.mktemp("inference") / "lenet.npz"
    checkpoint.save_checkpoint(path, {"model": model.state_dict()}, epoch=2,
                               metadata={"model": model.build_spec, "input": PREP.to_metadata()})
    return path, model.eval()


def by_hand(raw):
    """PREP written out in float32 steps: /16, each pixel twice along both axes, standardise."""
    x = raw[:, None].astype(np.float32) / np.float32(16)
    return (x.repeat(2, axis=2).repeat(2, axis=3) - np.float32(0.3)) / np.float32(0.4)


def test_load_model_predicts_from_raw_images(saved, raw):
    path, model = saved
    predictor = cb.load_model(path)
    assert isinstance(predictor, cb.Predictor) and predictor.preprocessing == PREP
    assert predictor.epoch == 2 and predictor.metadata["model"]["name"] == "lenet5"
    logits = model(by_hand(raw))
    np.testing.assert_array_equal(predictor.predict(raw), logits.argmax(axis=1))
    assert predictor.predict(raw).dtype == np.int64
    proba = predictor.predict_proba(raw)
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-5)
    # Batches change nothing; the (N, C, H, W) form and [0, 1] floats are the same input.
    np.testing.assert_array_equal(predictor.predict(raw, batch_size=5), predictor.predict(raw))
    np.testing.assert_array_equal(predictor.predict(raw[:, None] / np.float32(16)),
                                  predictor.predict(raw))
    assert "lenet5, epoch 2" in repr(predictor)


def test_predictor_refuses_what_the_model_was_not_trained_on(saved, raw):
    predictor = cb.load_model(saved[0])
    images = raw.astype(np.float32) / 16
    images[7, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\), first in image 7"):
        predictor.predict(images)
    with pytest.raises(ValueError, match=r"integer pixels in \[0, 4080\] \(uint16\); the model "
                                         r"was trained on pixels in \[0, 16\]"):
        predictor.predict_proba(raw.astype(np.uint16) * 255)
    with pytest.raises(ValueError, match=r"float64 values in \[0, 16\]; .* \[0, 1\] \(pixels / "
                                         r"16\): divide by 16"):
        predictor.predict(raw.astype(np.float64))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        predictor.predict(raw, batch_size=0)


def test_predictor_puts_the_model_in_eval_mode():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5, rng=0), nn.Linear(4, 3, rng=0))
    predictor = Predictor(model.train())
    assert not model.training
    model.train()  # set back by the user: predictions still come from eval mode
    x = np.ones((6, 1, 2, 2), np.float32)
    np.testing.assert_array_equal(predictor.predict(x), predictor.predict(x))
    assert not model.training


def test_without_preprocessing_the_images_are_the_models_input(tmp_path):
    model = nn.build_model("lenet5", num_classes=3, input_size=8, rng=0)
    path = checkpoint.save_checkpoint(tmp_path / "bare.npz", {"model": model.state_dict()},
                                      epoch=1, metadata={"model": model.build_spec})
    predictor = cb.load_model(path)
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32) * 50
    np.testing.assert_array_equal(predictor.predict(x), model.eval()(x).argmax(axis=1))
    with pytest.raises(TypeError, match=r"integer pixels \(uint8\).*give float images"):
        predictor.predict(np.zeros((1, 1, 8, 8), np.uint8))


def test_unreadable_preprocessing_names_the_file(tmp_path):
    model = nn.build_model("lenet5", num_classes=3, input_size=8, rng=0)
    path = checkpoint.save_checkpoint(
        tmp_path / "odd.npz", {"model": model.state_dict()}, epoch=1,
        metadata={"model": model.build_spec, "input": {"shape": [1, 8, 8], "std": 0.0}})
    with pytest.raises(ValueError, match=r"odd\.npz: cannot read the preprocessing "
                                         r"\(metadata\['input'\]\): std must be non-zero"):
        cb.load_model(path)


def test_predictor_checks_its_parts():
    with pytest.raises(TypeError, match="model must be a cnnblas.nn.Module, got str"):
        Predictor("lenet5")
    with pytest.raises(TypeError, match="preprocessing must be a cnnblas.data.Preprocessing"):
        Predictor(nn.Identity(), {"mean": 0.5})


def test_a_float64_model_gets_float64_input():
    model = nn.build_model("lenet5", num_classes=3, input_size=8, rng=0, dtype=np.float64)
    prep = Preprocessing(shape=(1, 8, 8), pixel_max=255)
    images = np.random.default_rng(2).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    expected = model.eval()(images.astype(np.float64) / 255).argmax(axis=1)
    np.testing.assert_array_equal(Predictor(model, prep).predict(images), expected)
