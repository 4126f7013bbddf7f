"""Fully connected (affine) layer as two BLAS GEMMs.

The weight is ``(out_features, in_features)`` as in ``torch.nn.Linear``, so
state dicts move between the two unchanged. The tutorial's Section 4 writes
the same layer as ``x @ W + b`` with ``W`` of shape ``(in, out)``: its ``W`` is
our ``weight.T``.
"""

from __future__ import annotations

import contextlib

from cnnblas import threads
from cnnblas.checks import check_float_array, check_shape

#: GEMMs below this many flops run with BLAS held at one thread. OpenBLAS's idle
#: threads sleep at once (``OPENBLAS_THREAD_TIMEOUT``, see :mod:`cnnblas.threads`),
#: so a multi-threaded call first has to wake one, then waits for it spinning:
#: on the loaded 2-core machine LeNet-5's fc1 forward and backward (64 x 400 x 120,
#: 6 MFLOP per GEMM) took 0.29 ms on one thread against 60 ms on two.
SERIAL_GEMM_FLOPS = 16e6


def _blas_threads_for(n_rows: int, inner: int, n_cols: int):
    """One BLAS thread for a (n_rows x inner)·(inner x n_cols) product under
    :data:`SERIAL_GEMM_FLOPS`, the thread setting otherwise."""
    if 2.0 * n_rows * inner * n_cols < SERIAL_GEMM_FLOPS:
        return threads.single_threaded_blas()
    return contextlib.nullcontext()


def linear(x, weight, bias=None):
    """Affine map ``y = x @ weight.T + bias``.

    Parameters
    ----------
    x : ndarray, shape (N, in_features), float32 or float64
    weight : ndarray, shape (out_features, in_features), dtype of ``x``
    bias : ndarray, shape (out_features,), dtype of ``x``, optional

    Returns
    -------
    y : ndarray, shape (N, out_features), dtype of ``x``

    Raises
    ------
    TypeError
        Non-float arrays or mixed dtypes.
    ValueError
        Wrong ranks or ``x.shape[1] != in_features``, with both sizes.
    """
    check_float_array(x, "x", ndim=2)
    check_float_array(weight, "weight", ndim=2, dtype=x.dtype)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features but weight {weight.shape} expects "
            f"in_features={weight.shape[1]}"
        )
    with _blas_threads_for(*x.shape, weight.shape[0]):
        y = x @ weight.T  # (N, in) . (in, out): one GEMM; .T is a view, not a copy
    if bias is not None:
        check_float_array(bias, "bias", ndim=1, dtype=x.dtype)
        check_shape(bias, (weight.shape[0],), "bias")
        y += bias
    return y


def linear_backward(dy, x, weight, input_grad=True):
    """Gradients of :func:`linear`.

    Parameters
    ----------
    dy : ndarray, shape (N, out_features), dtype of ``x``
    x : ndarray, shape (N, in_features), float32 or float64
        The forward input.
    weight : ndarray, shape (out_features, in_features)
    input_grad : bool, default True
        False skips the input-gradient GEMM (first layer of a network).

    Returns
    -------
    dx : ndarray, shape (N, in_features), or None when ``input_grad`` is False
        ``dy @ weight``.
    dweight : ndarray, shape (out_features, in_features)
        ``dy.T @ x``, summed over the batch by the GEMM.
    dbias : ndarray, shape (out_features,)
        ``dy`` summed over the batch.
    """
    check_float_array(x, "x", ndim=2)
    check_float_array(weight, "weight", ndim=2, dtype=x.dtype)
    check_float_array(dy, "dy", ndim=2, dtype=x.dtype)
    check_shape(dy, (x.shape[0], weight.shape[0]), "dy")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features but weight {weight.shape} expects "
            f"in_features={weight.shape[1]}"
        )
    with _blas_threads_for(*x.shape, weight.shape[0]):  # the same flops as the forward
        dx = dy @ weight if input_grad else None  # dX = dY . W
        dweight = dy.T @ x  # dW = dYᵀ . X
    dbias = dy.sum(axis=0)  # db = Σ_n dY
    return dx, dweight, dbias


__all__ = ["linear", "linear_backward"]
