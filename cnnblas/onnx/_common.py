"""What export and import share: the lazy ``onnx`` import and the atomic file write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Opsets this package writes and reads (the operators used exist unchanged in all).
MIN_OPSET = 13


def require_onnx():
    """Import and return the ``onnx`` package, an optional extra of cnnblas.

    Raises
    ------
    ImportError
        ``onnx`` is not installed; the message says how to install it.
    """
    try:
        import onnx
    except ImportError as error:
        raise ImportError(
            "cnnblas.onnx needs the 'onnx' package, which is not installed: "
            "pip install 'cnnblas[onnx]'"
        ) from error
    return onnx


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory,
    renamed over ``path`` once complete: a reader never sees a partial file."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return path
