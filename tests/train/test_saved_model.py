"""What a Trainer's checkpoint records for later use: the model's builder and the preprocessing,
so that cnnblas.load_model(path) predicts from raw images as the trainer evaluated."""

from __future__ import annotations

import numpy as np
import pytest

import cnnblas as cb
from cnnblas import nn, optim
from cnnblas.data import Preprocessing, load_digits, load_idx, load_mnist
from cnnblas.train import Trainer
from tests.conftest import MNIST5K


def sgd_trainer(model, **kwargs):
    opt = optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True)
    return Trainer(model, nn.SoftmaxCrossEntropy(), opt, **kwargs)


def test_checkpoint_records_the_builder_and_the_preprocessing(tmp_path):
    data = load_digits()
    prep = Preprocessing.fit(data.x_train, pixel_max=16)
    model = nn.build_model("lenet5", input_size=8, rng=0, input_grad=False)
    trainer = sgd_trainer(model, preprocessing=prep, metadata={"note": "digits"})
    trainer.fit((prep(data.x_train[:64]), data.y_train[:64]), 1, batch_size=32, log=None,
                progress=False, checkpoint=tmp_path / "run.npz")
    predictor = cb.load_model(tmp_path / "run.npz")
    assert predictor.metadata["model"] == {"name": "lenet5", "kwargs": {
        "input_size": 8, "rng": 0, "input_grad": False}}
    assert predictor.metadata["note"] == "digits" and predictor.preprocessing == prep
    raw = (data.x_test[:30, 0] * 16).round().astype(np.uint8)
    np.testing.assert_array_equal(predictor.predict(raw), trainer.predict(prep(raw)))


def test_metadata_given_by_the_user_wins_and_conflicts_are_refused():
    model = nn.build_model("lenet5", input_size=8, rng=0)
    spec = {"name": "lenet5", "kwargs": {"input_size": 8, "num_classes": 10}}
    assert sgd_trainer(model, metadata={"model": spec}).metadata["model"] == spec
    with pytest.raises(ValueError, match=r"either as preprocessing= or as metadata\['input'\]"):
        sgd_trainer(model, preprocessing=Preprocessing(), metadata={"input": {}})
    with pytest.raises(TypeError, match="preprocessing must be a cnnblas.data.Preprocessing, "
                                        "got dict"):
        sgd_trainer(model, preprocessing={"mean": 0.5})
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        sgd_trainer(model, metadata={"when": object()})
    # A model not made by build_model has no builder to record.
    assert "model" not in sgd_trainer(nn.lenet5(input_size=8)).metadata


@pytest.mark.skipif(not MNIST5K.is_dir(), reason="shared/data/mnist5k is absent")
def test_mnist_checkpoint_on_raw_images_gives_the_reported_test_accuracy(tmp_path):
    data = load_mnist(MNIST5K)
    prep = Preprocessing.fit(data.x_train, pixel_max=255)
    model = nn.build_model("lenet5", input_size=28, rng=0, input_grad=False)
    trainer = sgd_trainer(model, preprocessing=prep)
    trainer.fit((prep(data.x_train[:1500]), data.y_train[:1500]), 1, batch_size=32, log=None,
                progress=False, checkpoint=tmp_path / "mnist.npz")
    reported = trainer.evaluate(prep(data.x_test), data.y_test)["accuracy"]
    assert reported > 0.5  # trained, not a constant answer

    raw = load_idx(MNIST5K / "t10k-images-idx3-ubyte.gz")  # uint8 (1000, 28, 28), 0..255
    assert raw.dtype == np.uint8 and raw.shape == (1000, 28, 28)
    predictions = cb.load_model(tmp_path / "mnist.npz").predict(raw)
    assert np.count_nonzero(predictions == data.y_test) == round(reported * 1000)
