"""The model registry: register_model, build_model's recorded spec, model_from_checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from cnnblas import checkpoint, nn


@pytest.fixture(autouse=True)
def clean_registry():
    """Every test leaves MODEL_BUILDERS as it found it."""
    before = dict(nn.MODEL_BUILDERS)
    yield
    nn.MODEL_BUILDERS.clear()
    nn.MODEL_BUILDERS.update(before)


def two_layer(num_classes=10, in_channels=1, input_size=8, dtype=np.float32, rng=None):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1, dtype=dtype, rng=rng),
                         nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * input_size ** 2, num_classes, dtype=dtype, rng=rng))


def test_register_as_function_and_as_decorator():
    assert nn.register_model("two_layer", two_layer) is two_layer
    assert nn.MODEL_BUILDERS["two_layer"] is two_layer

    @nn.register_model("decorated")
    def decorated(num_classes=10, rng=None):
        return nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes, rng=rng))

    assert nn.MODEL_BUILDERS["decorated"] is decorated
    model = nn.build_model("decorated", num_classes=3, rng=0)
    assert model(np.ones((2, 1, 2, 2), np.float32)).shape == (2, 3)


def test_register_refuses_a_different_builder_under_a_taken_name():
    nn.register_model("two_layer", two_layer)
    nn.register_model("two_layer", two_layer)  # the same builder again: fine
    with pytest.raises(ValueError, match=r"'lenet5'.*cnnblas\.nn\.models\.lenet5.*replace=True"):
        nn.register_model("lenet5", two_layer)
    assert nn.MODEL_BUILDERS["lenet5"] is nn.lenet5
    nn.register_model("lenet5", two_layer, replace=True)
    assert nn.MODEL_BUILDERS["lenet5"] is two_layer


def test_the_same_definition_run_again_replaces_itself():
    namespace: dict = {"nn": nn, "__name__": "user_models"}
    source = ("@nn.register_model('again')\n"
              "def again(num_classes=10):\n"
              "    return nn.Linear(2, num_classes)\n")
    exec(source, namespace)  # a notebook cell run twice defines a new function each time
    first = namespace["again"]
    exec(source, namespace)
    assert nn.MODEL_BUILDERS["again"] is namespace["again"] is not first


@pytest.mark.parametrize("name, builder, error, message", [
    (3, two_layer, TypeError, "name must be a string, got int"),
    ("", two_layer, ValueError, "name must be non-empty"),
    ("my net", two_layer, ValueError, "no whitespace, got 'my net'"),
    ("net", "not callable", TypeError, "builder must be callable, got str"),
])
def test_register_checks_its_arguments(name, builder, error, message):
    with pytest.raises(error, match=message):
        nn.register_model(name, builder)


def test_build_model_names_the_registered_models_and_how_to_register():
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; registered: lenet5, resnet110.*"
                                         r"register_model\('vgg', builder\).*--import MODULE"):
        nn.build_model("vgg")
    nn.register_model("not_a_module", lambda: "a string")
    with pytest.raises(TypeError, match="'not_a_module' must return a cnnblas.nn.Module, got str"):
        nn.build_model("not_a_module")


def test_build_model_records_its_arguments_as_json():
    model = nn.build_model("lenet5", num_classes=4, input_size=(8, 8), dtype=np.float64, rng=3)
    assert model.build_spec == {"name": "lenet5", "kwargs": {
        "num_classes": 4, "input_size": [8, 8], "dtype": "float64", "rng": 3}}
    # A generator only draws initial weights, which a checkpoint replaces: left out.
    model = nn.build_model("lenet5", input_size=8, rng=np.random.default_rng(0))
    assert model.build_spec == {"name": "lenet5", "kwargs": {"input_size": 8}}
    # An argument with no JSON form: nothing recorded rather than something wrong.
    nn.register_model("takes_anything", lambda init=None: nn.Linear(2, 2))
    assert nn.build_model("takes_anything", init=object()).build_spec is None


def save(tmp_path, model, spec, name="model.npz"):
    return checkpoint.save_checkpoint(tmp_path / name, {"model": model.state_dict()}, epoch=1,
                                      metadata={"model": spec})


def test_model_from_checkpoint_rebuilds_a_registered_builder(tmp_path):
    nn.register_model("two_layer", two_layer)
    model = nn.build_model("two_layer", num_classes=3, input_size=6, dtype="float64", rng=0)
    path = save(tmp_path, model, model.build_spec)
    loaded, saved = nn.model_from_checkpoint(path)
    assert saved.metadata["model"]["kwargs"]["dtype"] == "float64"
    x = np.random.default_rng(1).random((2, 1, 6, 6))
    np.testing.assert_array_equal(loaded(x), model.eval()(x))
    assert not loaded.training

    del nn.MODEL_BUILDERS["two_layer"]  # a new process that did not import the builder
    with pytest.raises(ValueError, match=r"model\.npz: the checkpoint's model 'two_layer' is not "
                                         r"registered \(registered: lenet5, .*\); register its "
                                         r"builder with cnnblas\.nn\.register_model\('two_layer', "
                                         r"builder\).*cnnblas train/predict --import MODULE"):
        nn.model_from_checkpoint(path)


def test_model_from_checkpoint_without_a_builder_says_what_is_missing(tmp_path):
    path = checkpoint.save_checkpoint(tmp_path / "bare.npz",
                                      {"model": nn.lenet5(input_size=8).state_dict()}, epoch=0)
    with pytest.raises(ValueError, match=r"bare\.npz: the checkpoint's metadata does not say how "
                                         r"to build the model.*cnnblas\.nn\.build_model"):
        nn.model_from_checkpoint(path)
