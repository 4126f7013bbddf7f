"""Checks of :meth:`cnnblas.nn.Module.load_state_dict`: each array against the
module's, and the key lists of its error messages."""

from __future__ import annotations

import numpy as np


def loadable_value(key: str, value, target: np.ndarray) -> np.ndarray:
    """``value`` checked against the module's array ``target``: same shape, same
    kind (floating or integer), and in ``target``'s dtype (cast, as PyTorch's
    ``copy_``; a finite value that overflows the smaller type is refused)."""
    value = np.asarray(value)
    if value.shape != target.shape:
        raise ValueError(
            f"state_dict[{key!r}] has shape {value.shape}, the module expects "
            f"{target.shape}; nothing was loaded"
        )
    if value.dtype == target.dtype:
        return value
    for kind in (np.floating, np.integer):
        if np.issubdtype(target.dtype, kind) and np.issubdtype(value.dtype, kind):
            break
    else:
        raise ValueError(
            f"state_dict[{key!r}] has dtype {value.dtype}, the module expects "
            f"{target.dtype} (floating arrays are cast to a floating parameter's "
            "dtype, integer arrays to an integer buffer's; no other conversion is "
            "made); nothing was loaded"
        )
    if np.issubdtype(value.dtype, np.integer):
        info = np.iinfo(target.dtype)
        fits = value.size == 0 or (info.min <= value.min() and value.max() <= info.max)
        cast = value.astype(target.dtype)
    else:
        with np.errstate(over="ignore"):
            cast = value.astype(target.dtype)
        fits = np.array_equal(np.isfinite(cast), np.isfinite(value))
    if not fits:
        raise ValueError(
            f"state_dict[{key!r}] ({value.dtype}) holds values outside the range of the "
            f"module's {target.dtype}; nothing was loaded"
        )
    return cast


def key_list(keys: list[str], shown: int = 6) -> str:
    """``keys`` as a list, cut after ``shown`` entries with the total count (a
    state dict of another depth can differ by hundreds of keys)."""
    if len(keys) <= shown:
        return str(keys)
    return "[" + ", ".join(map(repr, keys[:shown])) + f", ... ({len(keys)} in all)]"
