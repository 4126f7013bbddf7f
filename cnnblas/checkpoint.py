"""Checkpoint files: one ``.npz`` written atomically and read without pickle.

A checkpoint is a flat NumPy ``.npz`` archive (uncompressed) of named arrays:

====================  ==========================================================
key                   content
====================  ==========================================================
``format``            0-d str array, always ``"cnnblas.checkpoint"``
``version``           0-d int64, the layout version (:data:`VERSION`)
``epoch``             0-d int64, epochs completed when the file was written
``metadata``          JSON object as UTF-8 bytes (uint8 array): how to rebuild
                      the model (builder name and arguments), the input shape
                      and pixel scale, the optimizer and schedule names, ...
``history``           JSON list as UTF-8 bytes (uint8 array): per-epoch records
``<section>.<key>``   the flat state dict of one section: ``model.`` (the
                      model's PyTorch-style keys), ``optim.``, ``sched.``,
                      ``loader.``, ``rng.`` (see :mod:`cnnblas.train.state`)
====================  ==========================================================

Writing goes to a temporary file in the destination's directory, which is
flushed and fsync'ed, then renamed over the destination with
:func:`os.replace`: a reader sees either the old file or the new one, never a
partial write, and a crash mid-write leaves the previous checkpoint intact.
Reading uses ``np.load(..., allow_pickle=False)`` and reads every array, so a
truncated or corrupted file fails at load time with a :class:`ValueError`
naming the file, never later and never by running code.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

__all__ = [
    "FORMAT", "VERSION", "SECTIONS", "Checkpoint",
    "write_atomic", "save_npz_atomic", "load_npz", "json_to_array", "array_to_json",
    "save_checkpoint", "load_checkpoint",
]

#: Value of the ``format`` entry.
FORMAT = "cnnblas.checkpoint"
#: Layout version written by this module; files with a larger version are refused.
VERSION = 1
#: Prefixes of the state-dict sections a checkpoint may hold.
SECTIONS = ("model", "optim", "sched", "loader", "rng")
_HEADER_KEYS = ("format", "version", "epoch", "metadata", "history")


# --------------------------------------------------------------------------- raw .npz I/O


def _as_storable(key: str, value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise TypeError(
            f"checkpoint entry {key!r} has dtype object ({type(value).__name__}); only numeric, "
            "bool and str arrays can be stored without pickle"
        )
    return array


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace the file ``path`` atomically with what ``write`` writes.

    ``write(handle)`` fills a temporary file in the destination's directory;
    the file is then flushed, fsync'ed and renamed over ``path`` with
    :func:`os.replace`. A reader sees the old file or the new one, never a
    partial write; if ``write`` raises, the temporary file is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist.
    write : callable taking a binary file object

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileNotFoundError
        The destination directory does not exist.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=directory)
    try:
        # mkstemp creates the file private (0600); give it the permissions any
        # other new file would get, since weights and models are meant to be shared.
        os.fchmod(descriptor, 0o666 & ~_umask())
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)
    return path


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_npz(handle: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    # What np.savez writes (an uncompressed zip of "<key>.npy" members), done
    # here so that every key is allowed: np.savez takes the entries as keyword
    # arguments, where a key "file" or "allow_pickle" would collide with its own.
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for key, value in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, value, allow_pickle=False)


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, object]) -> Path:
    """Write ``arrays`` to the ``.npz`` file ``path`` atomically (see :func:`write_atomic`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist. Any existing file is replaced
        only once the new one is completely on disk.
    arrays : mapping of str to array_like
        Entries to store; object arrays (which would need pickle) are refused.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        An entry that is not a numeric, bool or str array.
    FileNotFoundError
        The destination directory does not exist.
    """
    storable = {key: _as_storable(key, value) for key, value in arrays.items()}
    return write_atomic(path, lambda handle: _write_npz(handle, storable))


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


_ZIP_MAGIC = b"PK\x03\x04"  # a local file header: the start of every non-empty zip
_NPY_MAGIC = b"\x93NUMPY"


def load_npz(path: str | os.PathLike, data: bytes | None = None, *,
             what: str = "checkpoint") -> dict[str, np.ndarray]:
    """Read every array of the ``.npz`` file ``path`` (no pickle).

    ``data``, when given, is the file's content already read (e.g. broadcast
    by another MPI rank): it is parsed instead of the file, and ``path`` only
    names it in errors. ``what`` names the kind of file in errors.

    Returns
    -------
    dict of str to numpy.ndarray

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a readable ``.npz`` archive (truncated, corrupted,
        holding pickled objects, ...); the message names the file.
    """
    path = Path(path)
    if data is None and not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    invalid = f"{path} is not a valid cnnblas {what}"
    if data is None:
        with open(path, "rb") as handle:
            start = handle.read(len(_ZIP_MAGIC))
        is_zip = zipfile.is_zipfile(path)
    else:
        start = data[:len(_ZIP_MAGIC)]
        is_zip = zipfile.is_zipfile(io.BytesIO(data))
    # np.load takes any file that is neither a zip nor a .npy for a pickle and
    # suggests loading it unsafely: refuse such files (and zips cut short, whose
    # end record is missing) before it sees them.
    if not is_zip:
        kind = "a single .npy array" if start and _NPY_MAGIC.startswith(start) else "another format"
        raise ValueError(
            f"{invalid}: it is not a zip archive (.npz) but {kind}, or a truncated or "
            f"corrupted file (starts with {start!r})"
        )
    try:
        with np.load(path if data is None else io.BytesIO(data), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "pickle" not in str(error):
            raise ValueError(f"{invalid}: not a readable .npz archive: {error}") from error
        raise ValueError(
            f"{invalid}: an entry holds pickled (object) data, which cnnblas never loads"
        ) from error
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError,
            NotImplementedError) as error:  # NotImplementedError: a flipped zip method or flag
        raise ValueError(f"{invalid}: not a readable .npz archive: {error}") from error


def json_to_array(value) -> np.ndarray:
    """``value`` as JSON text encoded in UTF-8, in a uint8 array (storable without pickle)."""
    text = json.dumps(value, sort_keys=True, allow_nan=True)
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def array_to_json(array: np.ndarray, what: str = "entry"):
    """Decode an array written by :func:`json_to_array` (ValueError naming ``what``)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError(
            f"{what} must be a 1-D uint8 array of UTF-8 JSON, got dtype {array.dtype} and "
            f"shape {array.shape}"
        )
    try:
        return json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{what} is not valid UTF-8 JSON: {error}") from error


# --------------------------------------------------------------------------- checkpoints


class Checkpoint(NamedTuple):
    """The decoded content of a checkpoint file.

    Attributes
    ----------
    path : pathlib.Path
    version : int
    epoch : int
        Epochs completed.
    metadata : dict
    history : list of dict
    sections : dict of str to dict of str to numpy.ndarray
        ``sections["model"]`` is the model's state dict (keys without the
        ``model.`` prefix), and so on for every prefix of :data:`SECTIONS`
        present in the file (absent sections are empty dicts).
    """

    path: Path
    version: int
    epoch: int
    metadata: dict
    history: list
    sections: dict


def save_checkpoint(path: str | os.PathLike, sections: Mapping[str, Mapping[str, object]], *,
                    epoch: int, metadata: Mapping | None = None,
                    history: list | None = None) -> Path:
    """Write a checkpoint atomically (see the module docstring for the layout).

    Parameters
    ----------
    path : str or os.PathLike
    sections : mapping of section name to flat state dict
        Section names from :data:`SECTIONS`; values as ``np.savez`` stores them.
    epoch : int
        Epochs completed.
    metadata : dict, optional
        JSON-serialisable.
    history : list of dict, optional
        JSON-serialisable.
    """
    arrays: dict[str, object] = {
        "format": np.array(FORMAT),
        "version": np.int64(VERSION),
        "epoch": np.int64(epoch),
        "metadata": json_to_array(dict(metadata or {})),
        "history": json_to_array(list(history or [])),
    }
    for section, state in sections.items():
        if section not in SECTIONS:
            raise ValueError(f"unknown checkpoint section {section!r}; expected one of {SECTIONS}")
        for key, value in state.items():
            arrays[f"{section}.{key}"] = value
    return save_npz_atomic(path, arrays)


def load_checkpoint(path: str | os.PathLike, data: bytes | None = None) -> Checkpoint:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    ``data``: the file's bytes already read (see :func:`load_npz`).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unreadable file, a missing header entry, a wrong format or an
        unsupported version, undecodable metadata or history, or an entry
        outside the known sections; the message names the file and the problem.
    """
    path = Path(path)
    arrays = load_npz(path, data)
    invalid = f"{path} is not a valid cnnblas checkpoint"
    missing = [key for key in _HEADER_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{invalid}: missing entries {missing}")

    def scalar(key, kind):
        value = arrays[key]
        if value.shape != () or value.dtype.kind not in kind:
            raise ValueError(
                f"{invalid}: checkpoint entry {key!r} has dtype {value.dtype} and shape "
                f"{value.shape}, expected a scalar"
            )
        return value.item()

    if scalar("format", "U") != FORMAT:
        raise ValueError(f"{invalid}: format is {arrays['format'].item()!r}, expected {FORMAT!r}")
    version = scalar("version", "iu")
    if not 1 <= version <= VERSION:
        raise ValueError(
            f"{path}: checkpoint version {version} is not supported (this cnnblas reads "
            f"versions 1 to {VERSION})"
        )
    epoch = scalar("epoch", "iu")
    if epoch < 0:
        raise ValueError(f"{invalid}: checkpoint entry 'epoch' is negative ({epoch})")
    metadata = array_to_json(arrays["metadata"], f"{invalid}: checkpoint entry 'metadata'")
    history = array_to_json(arrays["history"], f"{invalid}: checkpoint entry 'history'")
    if not isinstance(metadata, dict) or not isinstance(history, list):
        raise ValueError(f"{invalid}: 'metadata' must be a JSON object and 'history' a JSON list")
    sections: dict[str, dict[str, np.ndarray]] = {name: {} for name in SECTIONS}
    for key, value in arrays.items():
        if key in _HEADER_KEYS:
            continue
        section, dot, rest = key.partition(".")
        if not dot or section not in sections:
            raise ValueError(f"{invalid}: unexpected checkpoint entry {key!r}")
        sections[section][rest] = value
    return Checkpoint(path, version, epoch, metadata, history, sections)
