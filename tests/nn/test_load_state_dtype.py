"""load_state_dict casts floating arrays to the module's dtype, as PyTorch's
``copy_`` does, and still refuses other kinds, shapes and overflowing values."""

from __future__ import annotations

import numpy as np
import pytest

import cnnblas as cb
from cnnblas import nn


def _net(dtype):
    return nn.Sequential(nn.Conv2d(1, 3, 3, dtype=dtype, rng=0), nn.BatchNorm2d(3, dtype=dtype),
                         nn.Flatten(), nn.Linear(12, 2, dtype=dtype, rng=1))


def _random_state(model, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {key: (rng.standard_normal(value.shape).astype(dtype)
                  if value.dtype.kind == "f" else value + 5)
            for key, value in model.state_dict().items()}


@pytest.mark.parametrize("saved, model_dtype", [(np.float64, np.float32),
                                                (np.float32, np.float64),
                                                (np.float16, np.float32)])
def test_floating_state_is_cast_to_the_model_dtype(saved, model_dtype):
    model = _net(model_dtype)
    live = model._state_arrays()
    state = _random_state(model, saved)
    model.load_state_dict(state)
    for key, array in model._state_arrays().items():
        assert array is live[key], key                    # loaded in place
        assert array.dtype == live[key].dtype and array.flags.c_contiguous, key
        expected = state[key].astype(array.dtype) if array.dtype.kind == "f" else state[key]
        np.testing.assert_array_equal(array, expected, err_msg=key)
    assert model[0].weight.dtype == model_dtype
    x = np.ones((2, 1, 4, 4), model_dtype)
    assert model(x).dtype == model_dtype


def test_integer_buffer_takes_another_integer_type():
    model = _net(np.float32)
    state = model.state_dict()
    state["1.num_batches_tracked"] = np.array(7, np.int32)
    model.load_state_dict(state)
    assert model[1].num_batches_tracked.dtype == np.int64 and model[1].num_batches_tracked == 7


@pytest.mark.parametrize("key, value, pattern", [
    ("0.weight", np.ones((3, 1, 3, 3), np.int64), r"'0\.weight'.*int64.*float32"),
    ("0.weight", np.ones((3, 1, 3, 3), bool), r"'0\.weight'.*bool.*float32"),
    ("0.bias", np.ones(3, np.complex64), r"'0\.bias'.*complex64.*float32"),
    ("1.num_batches_tracked", np.array(3.0), r"'1\.num_batches_tracked'.*float64.*int64"),
    ("3.weight", np.ones((2, 12)) * 1e39, r"'3\.weight'.*outside the range.*float32"),
    ("1.num_batches_tracked", np.array(2 ** 63, np.uint64), r"outside the range.*int64"),
    ("3.weight", np.ones((12, 2)), r"'3\.weight'.*\(12, 2\).*\(2, 12\)"),
])
def test_other_conversions_are_refused_and_nothing_is_loaded(key, value, pattern):
    model = _net(np.float32)
    before = model.state_dict()
    state = _random_state(model, np.float64)
    state[key] = value
    with pytest.raises(ValueError, match=pattern):
        model.load_state_dict(state)
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_infinities_and_nans_load_as_they_are():
    model = _net(np.float32)
    state = model.state_dict()
    state["0.bias"] = np.array([np.inf, -np.inf, np.nan])
    model.load_state_dict(state)
    np.testing.assert_array_equal(model[0].bias.data, np.array([np.inf, -np.inf, np.nan],
                                                               np.float32))


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_float64_weight_file_loads_into_a_float32_model(tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    source = nn.lenet5(input_size=8, dtype=np.float64, rng=0)
    path = tmp_path / f"lenet5{suffix}"
    cb.save_weights(source.state_dict(), path)
    target = nn.lenet5(input_size=8, rng=1)
    target.load_state_dict(cb.load_weights(path))
    pairs = zip(source.state_dict().items(), target.state_dict().values(), strict=True)
    for (key, theirs), ours in pairs:
        assert ours.dtype == np.float32, key
        np.testing.assert_array_equal(ours, theirs.astype(np.float32), err_msg=key)
