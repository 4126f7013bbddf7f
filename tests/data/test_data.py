"""Tests of cnnblas.data: IDX/CIFAR-10 parsers on hand-written files, the real
mnist5k subset, the embedded digits split and the DataLoader."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnblas.data import (
    CIFAR10_TRAIN_FILES,
    MNIST_FILES,
    DataLoader,
    Dataset,
    load_cifar10,
    load_digits,
    load_idx,
    load_mnist,
)
from cnnblas.data.datasets import _stratified_split
from tests.conftest import MNIST5K

IDX_TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
                  np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray, type_code: int | None = None) -> bytes:
    """IDX encoding written independently of the parser: header + big-endian payload."""
    code = IDX_TYPE_CODES[array.dtype.type] if type_code is None else type_code
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, payload: bytes, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", list(IDX_TYPE_CODES))
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write(tmp_path / ("a.idx.gz" if compress else "a.idx"), idx_bytes(array), compress)
    loaded = load_idx(path)
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    assert loaded.flags.writeable and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, array)


def test_idx_mnist_magic_numbers_and_content_detected_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    image_bytes = idx_bytes(images)
    assert struct.unpack(">I", image_bytes[:4])[0] == 2051
    assert struct.unpack(">I", idx_bytes(labels)[:4])[0] == 2049
    # gzip is recognised from the content, whatever the file name says
    np.testing.assert_array_equal(load_idx(write(tmp_path / "x", image_bytes, True)), images)
    np.testing.assert_array_equal(load_idx(str(write(tmp_path / "y", idx_bytes(labels)))),
                                  labels)


def test_idx_big_endian_payload_is_decoded(tmp_path):
    # 0x0102 stored big-endian as bytes 01 02 must read as 258.
    payload = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])
    np.testing.assert_array_equal(load_idx(write(tmp_path / "s", payload)), [258, -2])


GOOD = idx_bytes(np.zeros((2, 3), np.uint8))
CORRUPT_IDX = {
    "empty file": (b"", "too short"),
    "first bytes nonzero": (b"\x01\x00" + GOOD[2:], "bad IDX magic number 0x01000802"),
    "unknown type byte": (GOOD[:2] + b"\x07" + GOOD[3:], "unknown type byte 0x07"),
    "zero dimensions": (b"\x00\x00\x08\x00", "declares 0 dimensions"),
    "truncated header": (GOOD[:9], "truncated IDX header: 2 dimensions need 12 bytes"),
    "short payload": (GOOD[:-1], r"truncated payload.*\(2, 3\).*6 bytes.*holds 5"),
    "trailing bytes": (GOOD + b"\x00", "trailing bytes after the payload"),
    "truncated gzip": (gzip.compress(GOOD)[:-6], "corrupt or truncated gzip"),
    "garbage gzip": (b"\x1f\x8b" + b"\x00" * 30, "corrupt or truncated gzip"),
}


@pytest.mark.parametrize("case", list(CORRUPT_IDX))
def test_idx_corruption_raises_value_error_naming_file(tmp_path, case):
    payload, message = CORRUPT_IDX[case]
    path = write(tmp_path / "broken-idx1-ubyte", payload)
    with pytest.raises(ValueError, match=message) as info:
        load_idx(path)
    assert str(path) in str(info.value)


def test_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "nope")


# --------------------------------------------------------------------------- MNIST format


def write_mnist(directory: Path, n_train=5, n_test=3, rows=28, cols=28, compress=(True, False)):
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["train_images"][0, 0, :2] = [0, 255]
    for index, (key, array) in enumerate(arrays.items()):
        gz = compress[index % 2]
        write(directory / (MNIST_FILES[key] + (".gz" if gz else "")), idx_bytes(array), gz)
    return arrays


def test_load_mnist_synthetic(tmp_path):
    arrays = write_mnist(tmp_path)
    data = load_mnist(tmp_path)
    assert isinstance(data, Dataset)
    x_train, y_train, x_test, y_test = data
    assert x_train.shape == (5, 1, 28, 28) and x_test.shape == (3, 1, 28, 28)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    assert x_train[0, 0, 0, 0] == 0.0 and x_train[0, 0, 0, 1] == 1.0
    np.testing.assert_allclose(x_test[:, 0] * 255, arrays["test_images"], atol=1e-4)
    np.testing.assert_array_equal(y_train, arrays["train_labels"])
    assert "float32 (5, 1, 28, 28)" in repr(data)


def test_load_mnist_other_image_size(tmp_path):
    write_mnist(tmp_path, rows=4, cols=6, compress=(False, False))
    assert load_mnist(tmp_path).x_train.shape == (5, 1, 4, 6)


def test_load_mnist_missing_file_lists_expected_names(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / (MNIST_FILES["test_labels"])).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path) in message
    assert all(name in message for name in MNIST_FILES.values())


def test_load_mnist_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*train-images-idx3-ubyte"):
        load_mnist(tmp_path / "absent")


@pytest.mark.parametrize("key, array, message", [
    ("train_labels", np.zeros((5, 1), np.uint8), r"expected uint8 labels of shape \(N,\)"),
    ("test_images", np.zeros((3, 784), np.uint8), r"expected uint8 images of shape \(N, rows"),
    ("test_images", np.zeros((3, 28, 28), np.int32), r"found 3075 \(0x00000C03\)"),
    ("test_labels", np.zeros(4, np.uint8), "holds 3 images but .* holds 4 labels"),
])
def test_load_mnist_wrong_dims(tmp_path, key, array, message):
    write_mnist(tmp_path, compress=(False, False))
    write(tmp_path / MNIST_FILES[key], idx_bytes(array))
    with pytest.raises(ValueError, match=message):
        load_mnist(tmp_path)


def _swap_magic(payload: bytes, ndim: int) -> bytes:
    """The same IDX payload with the dimension byte of its magic number replaced."""
    return payload[:3] + bytes([ndim]) + payload[4:]


@pytest.mark.parametrize("key, payload, found", [
    # an images file whose magic says 4 dimensions (0x0804 = 2052)
    ("train_images", _swap_magic(idx_bytes(np.zeros((5, 28, 28), np.uint8)), 4), 2052),
    # a labels file where the images belong
    ("test_images", idx_bytes(np.zeros(3, np.uint8)), 2049),
    # an images file where the labels belong
    ("train_labels", idx_bytes(np.zeros((5, 28, 28), np.uint8)), 2051),
])
def test_load_mnist_wrong_magic_names_file_expected_and_found(tmp_path, key, payload, found):
    write_mnist(tmp_path, compress=(False, False))
    path = write(tmp_path / MNIST_FILES[key], payload)
    expected = 2051 if key.endswith("images") else 2049
    with pytest.raises(ValueError, match=f"expected IDX magic {expected} .*found {found} ") as info:
        load_mnist(tmp_path)
    assert str(path) in str(info.value)
    assert "trailing" not in str(info.value) and "truncated" not in str(info.value)


@pytest.mark.parametrize("key", ["train_labels", "test_labels"])
def test_load_mnist_label_out_of_range_names_file_index_value(tmp_path, key):
    arrays = write_mnist(tmp_path, compress=(False, False))
    labels = arrays[key].copy()
    labels[2] = 200
    path = write(tmp_path / MNIST_FILES[key], idx_bytes(labels))
    with pytest.raises(ValueError, match=r"label 2 is 200, expected a class index 0\.\.9") as info:
        load_mnist(tmp_path)
    assert str(path) in str(info.value)


def test_load_idx_checks_an_expected_magic(tmp_path):
    path = write(tmp_path / "labels", idx_bytes(np.zeros(3, np.uint8)))
    np.testing.assert_array_equal(load_idx(path, magic=2049), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="expected IDX magic 2051 .*found 2049 "):
        load_idx(path, magic=2051)


def test_load_mnist_corrupt_file_is_named(tmp_path):
    write_mnist(tmp_path)  # train images gzipped
    path = tmp_path / (MNIST_FILES["train_images"] + ".gz")
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="gzip") as info:
        load_mnist(tmp_path)
    assert str(path) in str(info.value)


def test_mnist5k():
    if not MNIST5K.is_dir():
        pytest.skip(f"{MNIST5K} is absent")
    x_train, y_train, x_test, y_test = load_mnist(MNIST5K)
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    counts = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    np.testing.assert_array_equal(counts, [500] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [100] * 10)


# --------------------------------------------------------------------------- CIFAR-10


def cifar_bytes(labels, rng) -> tuple[bytes, np.ndarray]:
    images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    records = [bytes([label]) + image.tobytes()
               for label, image in zip(labels, images, strict=True)]
    return b"".join(records), images


def write_cifar(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    train_images, train_labels = [], []
    for index, name in enumerate(CIFAR10_TRAIN_FILES):
        labels = [(index + k) % 10 for k in range(index + 1)]  # 1..5 records per batch
        payload, images = cifar_bytes(labels, rng)
        write(directory / name, payload)
        train_images.append(images)
        train_labels += labels
    payload, test_images = cifar_bytes([9, 0], rng)
    write(directory / "test_batch.bin", payload)
    return np.concatenate(train_images), np.array(train_labels), test_images


def test_load_cifar10_synthetic(tmp_path):
    train_images, train_labels, test_images = write_cifar(tmp_path)
    x_train, y_train, x_test, y_test = load_cifar10(tmp_path)
    assert x_train.shape == (15, 3, 32, 32) and x_test.shape == (2, 3, 32, 32)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    np.testing.assert_array_equal(y_train, train_labels)
    np.testing.assert_array_equal(y_test, [9, 0])
    # The first 1,024 pixel bytes are the red plane, row-major.
    np.testing.assert_allclose(x_train * 255, train_images, atol=1e-4)
    np.testing.assert_allclose(x_test * 255, test_images, atol=1e-4)


def test_load_cifar10_channel_layout_by_hand(tmp_path):
    record = bytes([3]) + bytes([10]) * 1024 + bytes([20]) * 1024 + bytes([30, 40]) * 512
    for name in [*CIFAR10_TRAIN_FILES, "test_batch.bin"]:
        write(tmp_path / name, record)
    x = load_cifar10(tmp_path).x_test[0] * 255
    np.testing.assert_allclose(x[0], 10, atol=1e-4)
    np.testing.assert_allclose(x[1], 20, atol=1e-4)
    np.testing.assert_allclose(x[2, 0, :4], [30, 40, 30, 40], atol=1e-4)


def test_load_cifar10_nested_folder(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-bin")
    assert load_cifar10(tmp_path).x_test.shape == (2, 3, 32, 32)


def test_load_cifar10_missing(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"\['data_batch_4.bin'\] not found") as info:
        load_cifar10(tmp_path)
    assert str(tmp_path) in str(info.value) and "test_batch.bin" in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "absent")


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[:-1], "not a positive multiple of the 3073-byte"),
    (lambda b: b"", "size 0 bytes"),
    (lambda b: b[:3073] + bytes([10]) + b[3074:], "record 1 has label byte 10"),
    (lambda b: b[:3073] + bytes([200]) + b[3074:], "record 1 has label byte 200"),
])
def test_load_cifar10_corrupt(tmp_path, corrupt, message):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as info:
        load_cifar10(tmp_path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- digits


def test_stratified_split_is_a_partition():
    labels = np.repeat(np.arange(4), [10, 7, 5, 1])
    train, test = _stratified_split(labels, 0.2, seed=3)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(23))
    np.testing.assert_array_equal(np.bincount(labels[test], minlength=4), [2, 1, 1, 0])


def test_load_digits_split():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    data = load_digits()
    assert data.x_train.shape == (1438, 1, 8, 8) and data.x_test.shape == (359, 1, 8, 8)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0 and data.num_classes == 10
    # stratified: each class is ~20 % of the test set's share
    full = sklearn_datasets.load_digits()
    expected_test = np.round(0.2 * np.bincount(full.target)).astype(int)
    np.testing.assert_array_equal(np.bincount(data.y_test), expected_test)
    # disjoint and complete: train + test is exactly the data set, as a multiset of rows
    ours = np.concatenate([
        np.column_stack([data.x_train.reshape(-1, 64) * 16, data.y_train]),
        np.column_stack([data.x_test.reshape(-1, 64) * 16, data.y_test]),
    ])
    theirs = np.column_stack([full.data, full.target])
    np.testing.assert_array_equal(np.unique(ours, axis=0, return_counts=True)[1],
                                  np.unique(theirs, axis=0, return_counts=True)[1])
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))


def test_load_digits_deterministic_per_seed():
    pytest.importorskip("sklearn")
    first, again, other = load_digits(seed=5), load_digits(seed=5), load_digits(seed=6)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.y_test, other.y_test)
    counts = np.bincount(first.y_train) + np.bincount(first.y_test)
    half = load_digits(test_fraction=0.5)
    np.testing.assert_array_equal(np.bincount(half.y_test), np.round(0.5 * counts))
    assert load_digits(test_fraction=0.0).x_test.shape == (0, 1, 8, 8)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"test_fraction": 1.0}, ValueError, r"test_fraction must be in \[0, 1\), got 1.0"),
    ({"test_fraction": -0.1}, ValueError, "got -0.1"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
    ({"seed": "0"}, TypeError, "seed must be an int >= 0, got '0'"),
])
def test_load_digits_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_digits(**kwargs)


def test_load_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'cnnblas\[data\]'"):
        load_digits()


# --------------------------------------------------------------------------- DataLoader


def arrays(n=10):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 1, 2)
    return x, np.arange(n, dtype=np.int64)


def epoch_labels(loader):
    return [yb.tolist() for _, yb in loader]


def test_loader_in_order_batches_are_views():
    x, y = arrays(10)
    loader = DataLoader(x, y, batch_size=4)
    assert len(loader) == 3
    batches = list(loader)
    assert [yb.tolist() for _, yb in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert np.shares_memory(batches[0][0], x)
    np.testing.assert_array_equal(batches[1][0], x[4:8])


def test_loader_drop_last():
    x, y = arrays(10)
    loader = DataLoader(x, y, batch_size=4, shuffle=True, seed=0, drop_last=True)
    assert len(loader) == 2
    labels = epoch_labels(loader)
    assert [len(b) for b in labels] == [4, 4]
    assert len(set(sum(labels, []))) == 8
    assert len(DataLoader(x, y, batch_size=11, drop_last=True)) == 0
    assert len(DataLoader(x, y, batch_size=11)) == 1


def test_loader_shuffle_covers_each_sample_once_per_epoch():
    x, y = arrays(23)
    loader = DataLoader(x, y, batch_size=5, shuffle=True, seed=1)
    orders = []
    for _ in range(3):
        labels = []
        for xb, yb in loader:
            np.testing.assert_array_equal(xb, x[yb])  # x and y rows stay paired
            assert xb.flags.c_contiguous
            labels += yb.tolist()
        assert sorted(labels) == list(range(23))
        orders.append(labels)
    assert orders[0] != orders[1] != orders[2]  # a new permutation every epoch
    assert loader.epoch == 3


def test_loader_seed_reproducible():
    x, y = arrays(30)
    first = DataLoader(x, y, 7, shuffle=True, seed=42)
    second = DataLoader(x, y, 7, shuffle=True, seed=42)
    other = DataLoader(x, y, 7, shuffle=True, seed=43)
    for _ in range(2):
        a, b, c = epoch_labels(first), epoch_labels(second), epoch_labels(other)
        assert a == b and a != c
    unseeded = [epoch_labels(DataLoader(x, y, 7, shuffle=True)) for _ in range(2)]
    assert unseeded[0] != unseeded[1]


def npz(state, tmp_path):
    np.savez(tmp_path / "loader.npz", **state)
    with np.load(tmp_path / "loader.npz", allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.mark.parametrize("seed", [3, None])
def test_loader_resume_mid_epoch_and_between_epochs(tmp_path, seed):
    x, y = arrays(20)
    original = DataLoader(x, y, batch_size=3, shuffle=True, seed=seed)
    epoch_labels(original)
    iterator = iter(original)
    consumed = [next(iterator)[1].tolist() for _ in range(2)]
    state = npz(original.state_dict(), tmp_path)
    assert int(state["epoch"]) == 2 and int(state["batch"]) == 2

    resumed = DataLoader(x, y, batch_size=3, shuffle=True, seed=999)
    resumed.load_state_dict(state)
    rest = [yb.tolist() for _, yb in iterator]
    assert epoch_labels(resumed) == rest
    assert sorted(sum(consumed + rest, [])) == list(range(20))
    # the following epochs match as well
    assert epoch_labels(resumed) == epoch_labels(original)

    between = original.state_dict()
    again = DataLoader(x, y, batch_size=3, shuffle=True)
    again.load_state_dict(between)
    assert epoch_labels(again) == epoch_labels(original)


def test_loader_validation():
    x, y = arrays(10)
    with pytest.raises(ValueError, match=r"len\(x\)=10 and len\(y\)=9"):
        DataLoader(x, y[:9], batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        DataLoader(x, y, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        DataLoader(x, y, batch_size=2.0)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -3"):
        DataLoader(x, y, batch_size=2, seed=-3)
    with pytest.raises(TypeError, match="seed must be an int >= 0, got 1.5"):
        DataLoader(x, y, batch_size=2, seed=1.5)

    state = DataLoader(x, y, batch_size=2, shuffle=True, seed=0).state_dict()
    with pytest.raises(ValueError, match=r"'batch_size'\] is 2, but this loader has batch_size=5"):
        DataLoader(x, y, batch_size=5, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match=r"'num_samples'\] is 10.*num_samples=9"):
        DataLoader(x[:9], y[:9], batch_size=2, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match=r"missing keys \['seed'\]"):
        DataLoader(x, y, batch_size=2, shuffle=True).load_state_dict(
            {k: v for k, v in state.items() if k != "seed"})
    with pytest.raises(ValueError, match=r"'batch'\] must be an int in \[0, 5\]"):
        DataLoader(x, y, batch_size=2, shuffle=True).load_state_dict(dict(state, epoch=1,
                                                                          batch=6))
    with pytest.raises(ValueError, match=r"'seed'\] must be 4 uint32 words"):
        DataLoader(x, y, batch_size=2, shuffle=True).load_state_dict(dict(state, seed=[1, 2]))


def test_shifted_copies_moves_pixels_and_repeats_labels():
    from cnnblas.data import shifted_copies

    image = np.zeros((1, 1, 3, 3), np.float32)
    image[0, 0, 1, 1] = 1.0
    images, labels = shifted_copies(image, np.array([7]))
    assert images.shape == (5, 1, 3, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, [7] * 5)
    # The single lit pixel lands at: original, up, down, left, right.
    positions = [tuple(np.argwhere(img[0])[0]) for img in images]
    assert positions == [(1, 1), (0, 1), (2, 1), (1, 0), (1, 2)]
    with pytest.raises(ValueError, match="pixels must be an int"):
        shifted_copies(image, np.array([7]), pixels=3)
    with pytest.raises(ValueError, match="labels must have shape"):
        shifted_copies(image, np.array([7, 8]))


def test_shifted_copies_two_pixels_rectangular_multichannel():
    from cnnblas.data import shifted_copies

    rng = np.random.default_rng(0)
    images = rng.random((3, 2, 5, 7))
    shifted, labels = shifted_copies(images, np.arange(3), pixels=2)
    assert shifted.shape == (15, 2, 5, 7)
    np.testing.assert_array_equal(labels, np.tile(np.arange(3), 5))
    original, up, down, left, right = shifted.reshape(5, 3, 2, 5, 7)
    np.testing.assert_array_equal(original, images)
    np.testing.assert_array_equal(up[:, :, :3], images[:, :, 2:])
    np.testing.assert_array_equal(up[:, :, 3:], 0)
    np.testing.assert_array_equal(down[:, :, 2:], images[:, :, :3])
    np.testing.assert_array_equal(left[..., :5], images[..., 2:])
    np.testing.assert_array_equal(right[..., 2:], images[..., :5])
    np.testing.assert_array_equal(right[..., :2], 0)
