"""Centred finite differences for checking a layer's backward pass.

Use float64 and keep inputs away from non-differentiable points (ReLU at 0,
ties inside a max-pooling window), as Caffe's ``GradientChecker`` and CS231n's
``gradient_check`` do: a centred difference straddling a kink measures the
average of two slopes, not the gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnblas.nn.init import as_rng
from cnnblas.nn.module import Module


def numerical_gradient(f: Callable[[], float], array: np.ndarray, eps: float = 1e-6,
                       indices=None) -> np.ndarray:
    """Centred-difference gradient of the scalar ``f()`` with respect to ``array``.

    ``array`` is perturbed in place, one element at a time, and restored.

    Parameters
    ----------
    f : callable
        Takes no argument and returns a float that depends on ``array``.
    array : ndarray, C-contiguous (ideally float64)
    eps : float, default 1e-6
    indices : sequence of int, optional
        Flat indices to differentiate; the other entries of the result stay 0.
        Default: every element.

    Returns
    -------
    ndarray, shape of ``array``, float64
        ``(f(a + eps e_i) - f(a - eps e_i)) / (2 eps)`` at each index.
    """
    if not array.flags.c_contiguous:
        raise ValueError("numerical_gradient needs a C-contiguous array to perturb in place")
    flat = array.reshape(-1)
    grad = np.zeros(array.shape, np.float64)
    grad_flat = grad.reshape(-1)
    for index in range(flat.size) if indices is None else indices:
        original = flat[index]
        flat[index] = original + eps
        plus = f()
        flat[index] = original - eps
        minus = f()
        flat[index] = original
        grad_flat[index] = (plus - minus) / (2 * eps)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``max|a - n| / max(max|a|, max|n|)`` (0 when both are 0)."""
    scale = max(float(np.abs(analytic).max(initial=0.0)), float(np.abs(numeric).max(initial=0.0)))
    if scale == 0.0:
        return 0.0
    return float(np.abs(np.asarray(analytic, np.float64) - numeric).max()) / scale


def check_module_gradients(module: Module, x: np.ndarray, eps: float = 1e-6,
                           max_checks: int | None = None, rng=0) -> dict[str, float]:
    """Compare ``module.backward`` with finite differences of ``sum(forward(x) * dy)``.

    A fixed random ``dy`` projects the output to a scalar, so every output
    element contributes to the check.

    Parameters
    ----------
    module : Module
        In the mode to check (normally ``train()``); its parameter gradients
        are zeroed, then hold the analytic gradient on return.
    x : ndarray, float64
        Input; perturbed during the check and restored.
    eps : float, default 1e-6
    max_checks : int, optional
        Differentiate at most this many randomly chosen elements per array
        (the whole array when None), to keep big layers fast.
    rng : None, int or numpy.random.Generator
        Source of ``dy`` and of the chosen elements.

    Returns
    -------
    dict of str to float
        Relative error (see :func:`relative_error`) on the checked elements,
        for ``"input"`` and every parameter name.
    """
    rng = as_rng(rng)
    x = np.ascontiguousarray(x)
    dy = rng.standard_normal(module.forward(x).shape).astype(x.dtype)

    def objective() -> float:
        value = float(np.sum(module.forward(x) * dy, dtype=np.float64))
        module.clear_caches()  # no backward follows: keep no activations
        return value

    module.zero_grad()
    module.forward(x)
    analytic = {"input": module.backward(dy)}
    arrays = {"input": x}
    for name, param in module.named_parameters():
        analytic[name] = param.grad.copy()
        arrays[name] = param.data

    errors = {}
    for name, array in arrays.items():
        if max_checks is None or array.size <= max_checks:
            chosen = np.arange(array.size)
        else:
            chosen = rng.choice(array.size, size=max_checks, replace=False)
        numeric = numerical_gradient(objective, array, eps, chosen)
        errors[name] = relative_error(analytic[name].reshape(-1)[chosen],
                                      numeric.reshape(-1)[chosen])
    return errors


__all__ = ["numerical_gradient", "relative_error", "check_module_gradients"]
