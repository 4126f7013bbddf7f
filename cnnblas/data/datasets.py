"""Image-classification data sets: embedded digits, IDX (MNIST-format) and CIFAR-10 files.

Every loader returns a :class:`Dataset` of NCHW float32 images scaled to
[0, 1] and int64 class labels. Nothing here downloads anything: the IDX and
CIFAR-10 loaders read files the user already has, and :func:`load_digits`
reads the small data set shipped inside scikit-learn.

Error policy, shared by every file loader:

- a missing directory or file raises ``FileNotFoundError`` naming the
  directory and the file names that were expected in it;
- a corrupt or truncated file (bad magic number, unknown type, wrong rank or
  sizes, short or overlong payload, invalid gzip stream, out-of-range label)
  raises ``ValueError`` naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cnnblas.checks import check_int, check_real

__all__ = [
    "Dataset", "load_digits", "load_idx", "load_mnist", "load_cifar10",
    "MNIST_FILES", "CIFAR10_TRAIN_FILES", "CIFAR10_TEST_FILE", "CIFAR10_CLASSES",
]


class Dataset(NamedTuple):
    """A train/test split of an image-classification data set.

    A named tuple, so ``x_train, y_train, x_test, y_test = load_mnist(path)``
    works as well as attribute access.

    Attributes
    ----------
    x_train : numpy.ndarray, shape (N_train, C, H, W), float32
        Training images, values in [0, 1], C-contiguous.
    y_train : numpy.ndarray, shape (N_train,), int64
        Training labels, class indices ``0 .. num_classes - 1``.
    x_test : numpy.ndarray, shape (N_test, C, H, W), float32
        Test images, values in [0, 1].
    y_test : numpy.ndarray, shape (N_test,), int64
        Test labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        """``max(label) + 1`` over both splits (0 when both are empty)."""
        largest = max(self.y_train.max(initial=-1), self.y_test.max(initial=-1))
        return int(largest) + 1

    def __repr__(self) -> str:
        return (
            f"Dataset(x_train={_describe(self.x_train)}, y_train={_describe(self.y_train)}, "
            f"x_test={_describe(self.x_test)}, y_test={_describe(self.y_test)})"
        )


def _describe(array: np.ndarray) -> str:
    return f"<{array.dtype} {tuple(array.shape)}>"


def _to_unit_float32(pixels: np.ndarray, maximum: float) -> np.ndarray:
    """Integer-valued pixels in [0, maximum] -> float32 in [0, 1] (a new array)."""
    images = pixels.astype(np.float32)
    images /= np.float32(maximum)
    return images


# --------------------------------------------------------------------------- digits


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int):
    """Index arrays (train, test): ``round(test_fraction * n_c)`` of each class to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_fraction * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The 1,797 real 8x8 handwritten digits shipped with scikit-learn, split in two.

    The UCI "Optical Recognition of Handwritten Digits" test set (about 180
    images per class, 16 grey levels), read from the file inside the
    scikit-learn package: no network access. The split is stratified (each
    class contributes ``round(test_fraction * n_class)`` images to the test
    set) and deterministic for a given ``seed``; both splits are shuffled.

    Parameters
    ----------
    test_fraction : float, default 0.2
        Fraction of each class put in the test set, in [0, 1).
    seed : int, default 0
        Seed of the split (a non-negative int).

    Returns
    -------
    Dataset
        ``x_*`` of shape (N, 1, 8, 8) float32 in [0, 1] (the raw 0..16 values
        divided by 16); ``y_*`` of shape (N,) int64 in 0..9. With the default
        fraction: 1,438 training and 359 test images.

    Raises
    ------
    ImportError
        When scikit-learn is not installed.
    ValueError
        When ``test_fraction`` or ``seed`` is out of range.
    """
    test_fraction = check_real(test_fraction, "test_fraction")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    seed = check_int(seed, "seed", minimum=0)
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as err:
        raise ImportError(
            "cnnblas.data.load_digits reads the digits shipped inside scikit-learn, which is "
            "not installed; install it with: pip install 'cnnblas[data]'"
        ) from err
    bunch = sklearn_load_digits()
    images = _to_unit_float32(bunch.images, 16.0)[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = _stratified_split(labels, float(test_fraction), int(seed))
    return Dataset(images[train], labels[train], images[test], labels[test])


# --------------------------------------------------------------------------- IDX

# Type byte of the IDX magic number -> big-endian element type (LeCun's format spec).
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

#: MNIST / Fashion-MNIST file names (each may also be gzipped, with ``.gz``).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_maybe_gzip(path: Path) -> bytes:
    """File contents, decompressed when they start with the gzip magic bytes."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({err})") from err


def load_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (the MNIST format), raw or gzip-compressed.

    The file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then
    ``ndim`` big-endian uint32 sizes, then the elements in row-major order,
    big-endian. Type bytes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64 (so MNIST images have magic 2051 = 0x0803 and
    labels 2049 = 0x0801). Compression is detected from the content, not the
    file name.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    magic : int, optional
        The magic number the file must start with (2051 for MNIST images,
        2049 for labels); checked before anything else, so a file of the
        wrong kind is reported as such. ``None`` accepts any valid IDX file.

    Returns
    -------
    numpy.ndarray
        Shape given by the header, dtype from the type byte in native byte
        order (``uint8`` for MNIST), a new writable array.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        On a bad magic number (or not the expected ``magic``), an unknown
        type byte, zero dimensions, a truncated header, a payload shorter or
        longer than the header promises, or an invalid gzip stream; the
        message names the file.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes is too short for the 4-byte IDX magic number")
    zero, type_code, ndim = data[:2], data[2], data[3]
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise ValueError(
            f"{path}: expected IDX magic {magic} (0x{magic:08X}), found {found} "
            f"(0x{found:08X}): not the expected kind of IDX file"
        )
    magic = found
    if zero != b"\x00\x00":
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08X}: the first two bytes must be zero "
            "(not an IDX file?)"
        )
    if type_code not in _IDX_TYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_TYPES)
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08X}: unknown type byte 0x{type_code:02X} "
            f"(expected one of {known})"
        )
    if ndim == 0:
        raise ValueError(f"{path}: IDX magic number 0x{magic:08X} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
            f"the file holds {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[type_code]
    count = math.prod(shape)
    expected, found = count * dtype.itemsize, len(data) - header
    if found != expected:
        problem = "truncated payload" if found < expected else "trailing bytes after the payload"
        raise ValueError(
            f"{path}: {problem}: the header declares shape {shape} of {dtype.newbyteorder('=')} "
            f"({expected} bytes), the file holds {found} bytes after the header"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header)
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _find_file(directory: Path, name: str, what: str, expected: list[str]) -> Path:
    for candidate in (name, name + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    raise FileNotFoundError(
        f"{what} file {name!r} (or {name + '.gz'!r}) not found in {directory}; "
        f"expected the files {expected} there (each optionally gzipped)"
    )


def _check_directory(directory, what: str, expected: list[str]) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{what} directory {directory} does not exist or is not a directory; "
            f"expected it to contain {expected}"
        )
    return directory


# What load_mnist expects in each IDX file: the words of its error message, and the
# magic number (0x0803: uint8, 3 dimensions; 0x0801: uint8, 1 dimension).
_MNIST_IMAGES = ("images of shape (N, rows, cols)", 2051)
_MNIST_LABELS = ("labels of shape (N,)", 2049)


#: Class indices of the MNIST-format data sets (MNIST, Fashion-MNIST, KMNIST): 0..9.
_MNIST_CLASSES = 10


def _read_mnist_idx(path: Path, expected: tuple[str, int]) -> np.ndarray:
    """:func:`load_idx` of ``path``, which must start with the ``expected`` magic number."""
    what, magic = expected
    try:
        return load_idx(path, magic=magic)
    except ValueError as err:
        raise ValueError(f"{err}; expected uint8 {what}") from err


def _check_labels(path: Path, labels: np.ndarray, classes: int) -> None:
    """Raise ValueError naming ``path``, the index and the value of the first label >= classes."""
    bad = np.flatnonzero(labels >= classes)
    if bad.size:
        raise ValueError(
            f"{path}: label {bad[0]} is {labels[bad[0]]}, expected a class index "
            f"0..{classes - 1} (corrupt file?)"
        )


def load_mnist(directory: str | os.PathLike) -> Dataset:
    """Read MNIST (or Fashion-MNIST, KMNIST, ...) from its four IDX files.

    Expects in ``directory``: ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each raw or gzipped (with a ``.gz`` suffix;
    the uncompressed file wins when both exist). Never downloads.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder holding the four files.

    Returns
    -------
    Dataset
        ``x_*`` of shape (N, 1, rows, cols) float32 in [0, 1] (pixels / 255;
        28x28 for MNIST, 60,000 training and 10,000 test images for the full
        set); ``y_*`` of shape (N,) int64.

    Raises
    ------
    FileNotFoundError
        When the directory or one of the files is missing; the message lists
        the expected file names and the directory.
    ValueError
        On a corrupt file (see :func:`load_idx`), an images file without the
        magic number 2051 (3-D uint8) or a labels file without 2049 (1-D
        uint8), a label above 9, or image and label counts that differ; the
        message names the file(s).
    """
    expected = list(MNIST_FILES.values())
    directory = _check_directory(directory, "MNIST", expected)
    paths = {key: _find_file(directory, name, "MNIST", expected)
             for key, name in MNIST_FILES.items()}
    splits = []
    for split in ("train", "test"):
        images = _read_mnist_idx(paths[f"{split}_images"], _MNIST_IMAGES)
        labels = _read_mnist_idx(paths[f"{split}_labels"], _MNIST_LABELS)
        _check_labels(paths[f"{split}_labels"], labels, _MNIST_CLASSES)
        if len(images) != len(labels):
            raise ValueError(
                f"{paths[f'{split}_images']} holds {len(images)} images but "
                f"{paths[f'{split}_labels']} holds {len(labels)} labels"
            )
        splits += [_to_unit_float32(images, 255.0)[:, None, :, :], labels.astype(np.int64)]
    return Dataset(*splits)


# --------------------------------------------------------------------------- CIFAR-10

#: Training batch file names of the CIFAR-10 binary version.
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
#: Test batch file name of the CIFAR-10 binary version.
CIFAR10_TEST_FILE = "test_batch.bin"
#: Class names, indexed by label (from ``batches.meta.txt``).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
_CIFAR_IMAGE_BYTES = 3 * 32 * 32
_CIFAR_RECORD_BYTES = 1 + _CIFAR_IMAGE_BYTES


def _read_cifar_batches(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated (images (N,3,32,32) float32 in [0,1], labels (N,) int64) of the files."""
    records = []
    for path in paths:
        size = path.stat().st_size
        if size == 0 or size % _CIFAR_RECORD_BYTES:
            raise ValueError(
                f"{path}: size {size} bytes is not a positive multiple of the "
                f"{_CIFAR_RECORD_BYTES}-byte CIFAR-10 record (1 label byte + 3x32x32 pixel "
                "bytes); truncated or not a CIFAR-10 binary batch"
            )
        batch = np.fromfile(path, dtype=np.uint8).reshape(-1, _CIFAR_RECORD_BYTES)
        bad = np.flatnonzero(batch[:, 0] >= len(CIFAR10_CLASSES))
        if bad.size:
            raise ValueError(
                f"{path}: record {bad[0]} has label byte {batch[bad[0], 0]}, expected a class "
                f"index 0..{len(CIFAR10_CLASSES) - 1} (corrupt, or the CIFAR-100 format?)"
            )
        records.append(batch)
    total = sum(len(batch) for batch in records)
    images = np.empty((total, 3, 32, 32), dtype=np.float32)
    labels = np.empty(total, dtype=np.int64)
    start = 0
    for batch in records:  # convert batch by batch: no full-size temporary
        stop = start + len(batch)
        images[start:stop] = batch[:, 1:].reshape(-1, 3, 32, 32)
        labels[start:stop] = batch[:, 0]
        start = stop
    images /= np.float32(255.0)
    return images, labels


def load_cifar10(directory: str | os.PathLike) -> Dataset:
    """Read the CIFAR-10 binary version (``cifar-10-binary.tar.gz``, extracted).

    Expects ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin``
    in ``directory``, or in its ``cifar-10-batches-bin`` subfolder (what the
    archive extracts to). Each file is a sequence of 3,073-byte records: one
    label byte (0..9) then 3,072 pixel bytes, the 1,024 red, then green, then
    blue values of a 32x32 image in row-major order. Never downloads.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder holding the six batch files (or their ``cifar-10-batches-bin``
        folder).

    Returns
    -------
    Dataset
        ``x_*`` of shape (N, 3, 32, 32) float32 in [0, 1] (pixels / 255;
        50,000 training and 10,000 test images for the real files); ``y_*`` of
        shape (N,) int64 in 0..9, named by :data:`CIFAR10_CLASSES`.

    Raises
    ------
    FileNotFoundError
        When the directory or a batch file is missing; the message lists the
        expected file names and the directory.
    ValueError
        When a file's size is not a positive multiple of 3,073 bytes or a label
        byte is above 9; the message names the file.
    """
    expected = [*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE]
    directory = _check_directory(directory, "CIFAR-10", expected)
    nested = directory / "cifar-10-batches-bin"
    if not (directory / CIFAR10_TEST_FILE).is_file() and nested.is_dir():
        directory = nested
    missing = [name for name in expected if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 files {missing} not found in {directory}; expected the binary-version "
            f"files {expected} there"
        )
    x_train, y_train = _read_cifar_batches([directory / name for name in CIFAR10_TRAIN_FILES])
    x_test, y_test = _read_cifar_batches([directory / CIFAR10_TEST_FILE])
    return Dataset(x_train, y_train, x_test, y_test)
