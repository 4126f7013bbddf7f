"""Tests of cnnblas.weights: .safetensors and .npz round trips, PyTorch in both
directions (LeNet-5 and ResNet-20), atomic writes and bad input."""

from __future__ import annotations

import builtins
import importlib.util
import io
import zipfile

import numpy as np
import pytest

import cnnblas as cb
from benchmarks.netmodels import torch_lenet5, torch_resnet20
from cnnblas import nn
from cnnblas import weights as weights_module

FLOAT32_RTOL = 1e-5
needs_safetensors = pytest.mark.skipif(importlib.util.find_spec("safetensors") is None,
                                       reason="safetensors is not installed")
SUFFIXES = (pytest.param(".safetensors", marks=needs_safetensors), ".npz")


def safetensors_case(*values):
    """A ``.safetensors`` parametrisation, skipped without the package."""
    return pytest.param(".safetensors", *values, marks=needs_safetensors)


def rel(actual, expected) -> float:
    """``max|actual - expected| / max|expected|``, in float64."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def sample_state():
    rng = np.random.default_rng(0)
    return {
        "0.weight": rng.standard_normal((6, 1, 5, 5)).astype(np.float32),
        "0.bias": rng.standard_normal(6),                      # float64
        "1.running_mean": np.zeros(6, np.float32),
        "1.num_batches_tracked": np.array(7, np.int64),        # 0-d, like BatchNorm's
        "scalar": np.float32(2.5),                             # a NumPy scalar
        "mask": np.array([True, False]),
        "half": np.arange(4, dtype=np.float16),
        "bytes": np.arange(5, dtype=np.uint8),
        "strided": np.arange(12.0).reshape(3, 4)[:, ::2],      # not contiguous
        "big_endian": np.arange(3, dtype=">f4"),
        "empty": np.zeros((0, 3), np.float32),
        "file": np.arange(2, dtype=np.int32),                  # np.savez's own argument names
        "allow_pickle": np.ones(1, np.int16),
        "layer1.0.downsample.0.weight": np.ones((2, 2, 1, 1), np.float32),
    }


def assert_same_arrays(loaded, state, ordered=True):
    """Same keys (in the same order when ``ordered``), dtypes, shapes and values."""
    assert (list(loaded) if ordered else sorted(loaded)) == (
        list(state) if ordered else sorted(state))
    for key, value in state.items():
        value = np.asarray(value)
        assert loaded[key].shape == value.shape, key
        assert loaded[key].dtype == value.dtype.newbyteorder("="), key
        assert loaded[key].dtype.isnative, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_keys_order_dtypes_shapes_and_values(tmp_path, suffix):
    state = sample_state()
    path = cb.save_weights(state, tmp_path / f"w{suffix}")
    assert path == tmp_path / f"w{suffix}"
    loaded = cb.load_weights(str(path))
    # .safetensors lays tensors out in its own order (by alignment, then name)
    ordered = suffix == ".npz"
    assert_same_arrays(loaded, state, ordered)
    for value in loaded.values():  # writable copies, not views of a mapped file
        value[...] = 0
    assert_same_arrays(cb.load_weights(path), state, ordered)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_model_state_round_trips_exactly(tmp_path, suffix):
    model = nn.resnet20(rng=0)
    model(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    path = cb.save_weights(model.state_dict(), tmp_path / f"resnet20{suffix}")
    other = nn.resnet20(rng=1)
    other.load_state_dict(cb.load_weights(path))
    for key, value in model.state_dict().items():
        loaded = other.state_dict()[key]
        assert loaded.dtype == value.dtype and loaded.tobytes() == value.tobytes(), key
    assert model.state_dict()["bn1.num_batches_tracked"] == 1


@needs_safetensors
def test_files_are_the_plain_formats(tmp_path):
    import safetensors.numpy

    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3, np.int64)}
    cb.save_weights(state, tmp_path / "w.safetensors")
    cb.save_weights(state, tmp_path / "w.npz")
    assert_same_arrays(safetensors.numpy.load_file(tmp_path / "w.safetensors"), state,
                       ordered=False)
    with np.load(tmp_path / "w.npz", allow_pickle=False) as archive:
        assert_same_arrays({key: archive[key] for key in archive.files}, state)


@needs_safetensors
def test_suffix_is_case_insensitive(tmp_path):
    state = {"w": np.ones(3, np.float32)}
    assert_same_arrays(cb.load_weights(cb.save_weights(state, tmp_path / "W.SafeTensors")),
                       state)
    assert_same_arrays(cb.load_weights(cb.save_weights(state, tmp_path / "W.NPZ")), state)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_write_is_atomic(tmp_path, suffix, monkeypatch):
    path = cb.save_weights({"w": np.ones(3, np.float32)}, tmp_path / f"w{suffix}")
    before = path.read_bytes()

    def exploding_write(handle):
        handle.write(b"partial garbage")
        raise OSError("disk full")

    real_write_atomic = weights_module.write_atomic
    monkeypatch.setattr(np.lib.format, "write_array",
                        lambda handle, *args, **kwargs: exploding_write(handle))
    monkeypatch.setattr(weights_module, "write_atomic",
                        lambda target, write: real_write_atomic(target, exploding_write))
    with pytest.raises(OSError, match="disk full"):
        cb.save_weights({"w": np.zeros(3, np.float32)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@needs_safetensors
def test_overwrite_replaces_content(tmp_path):
    path = tmp_path / "w.safetensors"
    cb.save_weights({"w": np.ones(3, np.float32)}, path)
    cb.save_weights({"v": np.zeros(2, np.float64)}, path)
    assert_same_arrays(cb.load_weights(path), {"v": np.zeros(2, np.float64)})
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


# --------------------------------------------------------------------------- PyTorch


NETWORKS = {
    # name: (cnnblas builder, torch builder, input shape)
    "lenet5": (nn.lenet5, torch_lenet5, (4, 1, 28, 28)),
    "resnet20": (nn.resnet20, torch_resnet20, (4, 3, 32, 32)),
}


def torch_outputs(torch, twin, x):
    with torch.no_grad():
        return twin.eval()(torch.from_numpy(x)).numpy()


def touch_batchnorm(torch, twin):
    """Non-trivial running statistics, affine parameters and batch counts."""
    generator = torch.Generator().manual_seed(0)
    for module in twin.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.2, 0.2, generator=generator)
            module.num_batches_tracked.fill_(5)


@pytest.mark.torch
@needs_safetensors
@pytest.mark.parametrize("name", NETWORKS)
def test_torch_safetensors_file_loads_into_cnnblas(torch, tmp_path, name):
    import safetensors.torch

    build, build_torch, shape = NETWORKS[name]
    torch.manual_seed(0)
    twin = build_torch(torch)
    touch_batchnorm(torch, twin)
    path = tmp_path / f"{name}.safetensors"
    safetensors.torch.save_file(twin.state_dict(), path)

    model = build(rng=1)
    model.load_state_dict(cb.load_weights(path))
    for key, value in twin.state_dict().items():  # bit for bit, dtype for dtype
        ours = model.state_dict()[key]
        assert ours.dtype == value.numpy().dtype and ours.tobytes() == value.numpy().tobytes()
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    error = rel(model.eval()(x), torch_outputs(torch, twin, x))
    print(f"{name}: torch .safetensors -> cnnblas, eval outputs max relative error {error:.2e}")
    assert error < FLOAT32_RTOL


@pytest.mark.torch
@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", NETWORKS)
def test_cnnblas_file_loads_into_torch_strict(torch, tmp_path, name, suffix):
    build, build_torch, shape = NETWORKS[name]
    model = build(rng=0)
    rng = np.random.default_rng(1)
    model(rng.standard_normal(shape).astype(np.float32))  # train mode: running statistics move
    path = cb.save_weights(model.state_dict(), tmp_path / f"{name}{suffix}")

    if suffix == ".safetensors":
        import safetensors.torch

        state = safetensors.torch.load_file(path)
    else:
        with np.load(path, allow_pickle=False) as archive:
            state = {key: torch.from_numpy(archive[key]) for key in archive.files}
    twin = build_torch(torch)
    twin.load_state_dict(state, strict=True)
    for key, value in model.state_dict().items():
        theirs = twin.state_dict()[key].numpy()
        assert theirs.dtype == value.dtype and theirs.tobytes() == value.tobytes(), key
    x = rng.standard_normal(shape).astype(np.float32)
    error = rel(model.eval()(x), torch_outputs(torch, twin, x))
    print(f"{name}: cnnblas {suffix} -> torch, eval outputs max relative error {error:.2e}")
    assert error < FLOAT32_RTOL


@pytest.mark.torch
@needs_safetensors
def test_torch_bfloat16_is_refused_naming_the_key(torch, tmp_path):
    import safetensors.torch

    path = tmp_path / "bf16.safetensors"
    safetensors.torch.save_file({"fc.weight": torch.zeros(2, 2, dtype=torch.bfloat16)}, path)
    with pytest.raises(ValueError, match=r"bf16\.safetensors.*'fc\.weight'.*BF16"):
        cb.load_weights(path)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["w.pt", "w.pth", "w", "w.safetensors.tmp", "w.npy"])
def test_wrong_suffix_lists_the_accepted_ones(tmp_path, name):
    with pytest.raises(ValueError, match=r"\.safetensors and \.npz"):
        cb.save_weights({"w": np.ones(2)}, tmp_path / name)
    (tmp_path / name).write_bytes(b"anything")
    with pytest.raises(ValueError, match=r"\.safetensors and \.npz"):
        cb.load_weights(tmp_path / name)


def test_path_of_the_wrong_type():
    with pytest.raises(TypeError, match="weights path must be a str or os.PathLike, got int"):
        cb.save_weights({"w": np.ones(2)}, 3)
    with pytest.raises(TypeError, match="weights file must be a str or os.PathLike"):
        cb.load_weights(None)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_missing_file_or_directory(tmp_path, suffix):
    with pytest.raises(FileNotFoundError, match=f"missing{suffix}"):
        cb.load_weights(tmp_path / f"missing{suffix}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cb.save_weights({"w": np.ones(2)}, tmp_path / "nowhere" / f"w{suffix}")
    (tmp_path / f"dir{suffix}").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        cb.load_weights(tmp_path / f"dir{suffix}")


def npz_with_pickle():
    buffer = io.BytesIO()
    np.savez(buffer, w=np.ones(2), obj=np.array([{"code": "runs on load"}], dtype=object))
    return buffer.getvalue()


def npz_with_strings():
    buffer = io.BytesIO()
    np.savez(buffer, w=np.ones(2), name=np.array("lenet5"))
    return buffer.getvalue()


def valid_bytes(tmp_path, suffix):
    path = cb.save_weights({"w": np.arange(100, dtype=np.float32)}, tmp_path / f"ok{suffix}")
    return path.read_bytes()


def corrupt_middle(data):
    data = bytearray(data)
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("suffix, make, problem", [
    safetensors_case(lambda ok: b"just some text, not weights\n", "header too large"),
    safetensors_case(lambda ok: b"", "header too small"),
    safetensors_case(lambda ok: ok[:-7], "not fully covered"),
    safetensors_case(lambda ok: ok[:20], "not a readable .safetensors"),
    safetensors_case(lambda ok: b"PK\x03\x04" + ok, "not a readable .safetensors"),
    (".npz", lambda ok: b"just some text, not weights\n", "not a zip archive"),
    (".npz", lambda ok: b"", "not a zip archive"),
    (".npz", lambda ok: ok[:-7], "not a zip archive"),
    (".npz", lambda ok: corrupt_middle(ok), "not a valid cnnblas weights file"),
    (".npz", lambda ok: np.lib.format.magic(1, 0) + b"{'descr': '<f8'", "not a zip archive"),
    (".npz", lambda ok: npz_with_pickle(), "pickled .* never loads"),
    (".npz", lambda ok: npz_with_strings(), "'name' has dtype <U6"),
])
def test_file_that_is_not_what_its_suffix_says(tmp_path, monkeypatch, suffix, make, problem):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(make(valid_bytes(tmp_path, suffix)))
    import pickle

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    with pytest.raises(ValueError, match=problem) as raised:
        cb.load_weights(path)
    assert str(path) in str(raised.value)


@needs_safetensors
def test_npz_holding_a_safetensors_file_and_vice_versa(tmp_path):
    state = {"w": np.ones(3, np.float32)}
    (tmp_path / "a.npz").write_bytes(cb.save_weights(state, tmp_path / "s.safetensors")
                                     .read_bytes())
    (tmp_path / "a.safetensors").write_bytes(cb.save_weights(state, tmp_path / "n.npz")
                                             .read_bytes())
    with pytest.raises(ValueError, match=r"a\.npz is not a valid cnnblas weights file: "
                                         r"it is not a zip archive \(\.npz\)"):
        cb.load_weights(tmp_path / "a.npz")
    with pytest.raises(ValueError, match=r"a\.safetensors is not a readable \.safetensors"):
        cb.load_weights(tmp_path / "a.safetensors")


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("state, error, message", [
    ({3: np.ones(2)}, TypeError, r"key 3 is a int; weight files need str keys"),
    ({("a", 1): np.ones(2)}, TypeError, r"key \('a', 1\) is a tuple"),
    ({"w": [1.0, 2.0]}, TypeError, r"state_dict\['w'\] is a list, not a numpy array"),
    ({"w": 1.5}, TypeError, r"state_dict\['w'\] is a float, not a numpy array"),
    ({"w": None}, TypeError, r"state_dict\['w'\] is a NoneType"),
    ({"ok": np.ones(2), "obj": np.array([{}], dtype=object)}, TypeError,
     r"state_dict\['obj'\] has dtype object \(object arrays would need pickle\)"),
    ({"s": np.array(["a"])}, TypeError, r"state_dict\['s'\] has dtype <U1"),
    ({"c": np.ones(2, np.complex64)}, TypeError, r"state_dict\['c'\] has dtype complex64"),
    ({"r": np.zeros(2, [("x", np.float32)])}, TypeError, r"state_dict\['r'\] has dtype"),
    ([("w", np.ones(2))], TypeError, r"state_dict must be a mapping .* got list"),
])
def test_bad_state_dicts_are_refused_naming_the_key(tmp_path, suffix, state, error, message):
    path = tmp_path / f"w{suffix}"
    with pytest.raises(error, match=message):
        cb.save_weights(state, path)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_safetensors_missing_says_how_to_install(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_safetensors(name, *args, **kwargs):
        if name == "safetensors" or name.startswith("safetensors."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    hint = r"pip install 'cnnblas\[safetensors\]'"
    with pytest.raises(ImportError, match=hint):
        cb.save_weights({"w": np.ones(2)}, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "x.safetensors").write_bytes(b"x")
    with pytest.raises(ImportError, match=hint):
        cb.load_weights(tmp_path / "x.safetensors")
    # .npz needs nothing beyond NumPy
    state = {"w": np.ones(2)}
    assert_same_arrays(cb.load_weights(cb.save_weights(state, tmp_path / "w.npz")), state)


# --------------------------------------------------------------------------- into a model


@pytest.fixture
def lenet_file(tmp_path):
    return cb.save_weights(nn.lenet5(rng=0).state_dict(), tmp_path / "lenet5.npz")


def edited_file(tmp_path, source, edit):
    state = cb.load_weights(source)
    edit(state)
    return cb.save_weights(state, tmp_path / "edited.npz")


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("7.bias"), r"missing key '7\.bias'"),
    (lambda s: s.update(extra=np.ones(1, np.float32)), r"unexpected key 'extra'"),
    (lambda s: s.update({"3.weight": np.ones((16, 6, 3, 3), np.float32)}),
     r"state_dict\['3\.weight'\] has shape \(16, 6, 3, 3\), the module expects \(16, 6, 5, 5\)"),
    (lambda s: s.update({"0.bias": s["0.bias"].astype(np.int64)}),
     r"state_dict\['0\.bias'\] has dtype int64, the module expects float32"),
])
def test_loading_a_file_that_does_not_fit_names_the_key(tmp_path, lenet_file, edit, message):
    path = edited_file(tmp_path, lenet_file, edit)
    model = nn.lenet5(rng=1)
    before = model.state_dict()
    with pytest.raises(ValueError, match=message):
        model.load_state_dict(cb.load_weights(path))
    for key, value in model.state_dict().items():  # nothing half-loaded
        assert value.tobytes() == before[key].tobytes(), key


@needs_safetensors
def test_float64_model_takes_float64_weights(tmp_path):
    model = nn.lenet5(rng=0, dtype=np.float64)
    path = cb.save_weights(model.state_dict(), tmp_path / "lenet5-f64.safetensors")
    other = nn.lenet5(rng=1, dtype=np.float64)
    other.load_state_dict(cb.load_weights(path))
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    np.testing.assert_array_equal(other.eval()(x), model.eval()(x))
    single = nn.lenet5()
    single.load_state_dict(cb.load_weights(path))   # cast to float32, as torch's copy_
    assert single[0].weight.dtype == np.float32
    np.testing.assert_array_equal(single[0].weight.data, model[0].weight.data.astype(np.float32))


def test_zip_member_names_are_the_keys(tmp_path):
    path = cb.save_weights({"layer1.0.conv1.weight": np.ones(1, np.float32)}, tmp_path / "w.npz")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["layer1.0.conv1.weight.npy"]
