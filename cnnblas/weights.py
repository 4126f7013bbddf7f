"""Weight files: a flat state dict of named arrays, with no code in the file.

Two formats, chosen by the file's suffix:

``.safetensors``
    The format PyTorch users already share weights in: a JSON header (names,
    dtypes, shapes, byte offsets) followed by the raw little-endian data,
    read and written through the ``safetensors`` package's NumPy API (an
    optional dependency: ``pip install 'cnnblas[safetensors]'``). A file from
    ``safetensors.torch.save_file(model.state_dict(), path)`` loads into the
    cnnblas model of the same architecture, and a file written here loads into
    PyTorch with ``safetensors.torch.load_file``.
``.npz``
    NumPy's zip of ``.npy`` arrays, written without pickle and read with
    ``allow_pickle=False`` (:mod:`cnnblas.checkpoint`'s reader).

Both store the keys as given (``"0.weight"``, ``"layer1.0.bn1.running_mean"``,
...) and the arrays with their dtype and shape, 0-d arrays included (BatchNorm's
``num_batches_tracked`` is an int64 of shape ``()``). Only real numeric and
bool dtypes are accepted, the ones both formats and PyTorch share:
float16/32/64, int8/16/32/64, uint8/16/32/64 and bool.

Writes are atomic (:func:`cnnblas.checkpoint.write_atomic`): a temporary file in
the destination's directory, fsync'ed, then renamed over the destination.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cnnblas.checkpoint import load_npz, save_npz_atomic, write_atomic

__all__ = ["SUFFIXES", "save_weights", "load_weights"]

#: File suffixes :func:`save_weights` and :func:`load_weights` understand.
SUFFIXES = (".safetensors", ".npz")

_DTYPES = frozenset(np.dtype(name) for name in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
))
# The same dtypes as the safetensors header spells them.
_SAFETENSORS_DTYPES = frozenset((
    "BOOL", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "F16", "F32", "F64",
))
_DTYPE_NAMES = ", ".join(sorted(dtype.name for dtype in _DTYPES))
_INSTALL_HINT = "pip install 'cnnblas[safetensors]'"


def _native(dtype: np.dtype) -> np.dtype:
    """``dtype`` in this machine's byte order (``>f4`` -> ``float32`` on x86)."""
    return dtype.newbyteorder("=")


def _weights_path(path, what: str) -> Path:
    """``path`` as a Path whose suffix is one of :data:`SUFFIXES`."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(
            f"{what} {str(path)!r} has suffix {path.suffix or '(none)'!r}; the weight file "
            f"formats are {' and '.join(SUFFIXES)}"
        )
    return path


def _safetensors():
    """The ``safetensors`` package, imported only when a ``.safetensors`` file is used."""
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as error:
        raise ImportError(
            f".safetensors files need the safetensors package: {_INSTALL_HINT} "
            "(or use a .npz file)"
        ) from error
    return safetensors


def _storable(state_dict) -> dict[str, np.ndarray]:
    """Check every entry and return C-contiguous arrays (0-d arrays stay 0-d)."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            "state_dict must be a mapping of str to numpy arrays (e.g. model.state_dict()), "
            f"got {type(state_dict).__name__}"
        )
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(
                f"state_dict key {key!r} is a {type(key).__name__}; weight files need str keys"
            )
        if not isinstance(value, (np.ndarray, np.generic)):
            raise TypeError(
                f"state_dict[{key!r}] is a {type(value).__name__}, not a numpy array "
                "(convert it with np.asarray, or tensor.numpy() for a PyTorch tensor)"
            )
        if _native(value.dtype) not in _DTYPES:
            why = " (object arrays would need pickle)" if value.dtype.hasobject else ""
            raise TypeError(
                f"state_dict[{key!r}] has dtype {value.dtype}{why}; weight files hold "
                f"{_DTYPE_NAMES}"
            )
        # np.ascontiguousarray would turn a 0-d array into shape (1,).
        arrays[key] = np.asarray(value, dtype=_native(value.dtype), order="C")
    return arrays


def save_weights(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write a state dict to a ``.safetensors`` or ``.npz`` file, atomically.

    Parameters
    ----------
    state_dict : mapping of str to numpy.ndarray
        E.g. ``model.state_dict()``. Arrays of any shape (0-d included) with a
        dtype among float16/32/64, int8..int64, uint8..uint64 and bool.
    path : str or os.PathLike
        Destination, ending in ``.safetensors`` or ``.npz`` (the format); its
        directory must exist. An existing file is replaced only once the new
        one is completely on disk.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        ``state_dict`` not a mapping, a key that is not a str, a value that is
        not a numpy array, or an unsupported dtype (object, str, complex, ...);
        the message names the key. Nothing is written.
    ValueError
        A suffix other than ``.safetensors`` or ``.npz``.
    ImportError
        A ``.safetensors`` path without the safetensors package installed.
    FileNotFoundError
        The destination directory does not exist.

    Examples
    --------
    >>> import cnnblas as cb
    >>> model = cb.nn.lenet5(rng=0)
    >>> cb.save_weights(model.state_dict(), "lenet5.safetensors")  # doctest: +SKIP
    >>> model.load_state_dict(cb.load_weights("lenet5.safetensors"))  # doctest: +SKIP
    """
    path = _weights_path(path, "weights path")
    arrays = _storable(state_dict)
    if path.suffix.lower() == ".npz":
        return save_npz_atomic(path, arrays)
    data = _safetensors().numpy.save(arrays)
    return write_atomic(path, lambda handle: handle.write(data))


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` or ``.npz`` weight file (no pickle, no code run).

    Parameters
    ----------
    path : str or os.PathLike
        A file ending in ``.safetensors`` or ``.npz``, e.g. written by
        :func:`save_weights`, ``safetensors.torch.save_file`` or ``np.savez``.

    Returns
    -------
    dict of str to numpy.ndarray
        Every entry, with its stored dtype and shape, in native byte order;
        ready for ``model.load_state_dict``. An ``.npz`` file keeps the order
        of the saved dict; a ``.safetensors`` file has its own (its writer
        sorts the tensors by alignment, then by name).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A suffix other than ``.safetensors`` or ``.npz``; a file that is not
        what its suffix says (another format, truncated or corrupted, an
        ``.npz`` holding pickled objects); an entry whose dtype is not one of
        the supported ones (bfloat16, str, ...). The message names the file.
    ImportError
        A ``.safetensors`` file without the safetensors package installed.
    """
    path = _weights_path(path, "weights file")
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"weights file {path} is not a regular file")
    if path.suffix.lower() == ".npz":
        arrays = load_npz(path, what="weights file")
    else:
        arrays = _load_safetensors(path)
    for key, value in arrays.items():
        if _native(value.dtype) not in _DTYPES:
            raise ValueError(
                f"{path}: entry {key!r} has dtype {value.dtype}; weight files hold {_DTYPE_NAMES}"
            )
    return {key: np.asarray(value, dtype=_native(value.dtype)) for key, value in arrays.items()}


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    safetensors = _safetensors()
    try:
        with safetensors.safe_open(path, framework="np") as handle:
            keys = list(handle.keys())
            for key in keys:
                dtype = handle.get_slice(key).get_dtype()
                if dtype not in _SAFETENSORS_DTYPES:
                    raise ValueError(
                        f"{path}: tensor {key!r} has safetensors dtype {dtype}, which has no "
                        f"NumPy counterpart here (weight files hold {_DTYPE_NAMES}); convert "
                        "it, e.g. to float32, before saving"
                    )
            return {key: handle.get_tensor(key) for key in keys}
    except safetensors.SafetensorError as error:
        raise ValueError(
            f"{path} is not a readable .safetensors file (another format, or a truncated "
            f"or corrupted file): {error}"
        ) from error
