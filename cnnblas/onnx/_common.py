"""What export and import share: the lazy ``onnx`` import and the opsets."""

from __future__ import annotations

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
