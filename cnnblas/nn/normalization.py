"""Batch normalisation over the channels of NCHW input.

In training mode :class:`BatchNorm2d` caches ``x_hat`` (the normalised input)
and ``inv_std`` (1/σ per channel): its backward needs both and nothing else.
:mod:`cnnblas.distributed` reuses ``_normalize_and_track`` and ``_input_grad``
for the synchronised version, with statistics summed over every rank.
"""

from __future__ import annotations

import numbers

import numpy as np

from cnnblas.checks import check_int
from cnnblas.nn import init
from cnnblas.nn.layers import _Layer
from cnnblas.nn.module import Parameter


class BatchNorm2d(_Layer):
    """Batch normalisation over (N, H, W) for each channel of NCHW input.

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        Running statistics follow ``r = (1 - momentum) * r + momentum * batch``;
        None uses the cumulative average ``momentum = 1 / num_batches_tracked``.
    affine : bool, default True
        Learn a per-channel scale ``weight`` (init 1) and shift ``bias`` (init 0).
    dtype : float32 or float64, default float32

    Attributes
    ----------
    weight, bias : Parameter, shape (C,), or None when not affine
    running_mean, running_var : ndarray, shape (C,), buffers
    num_batches_tracked : ndarray, shape (), int64, buffer

    Notes
    -----
    As ``torch.nn.BatchNorm2d``: training normalises with the batch mean and
    biased variance, and stores the *unbiased* variance (``m / (m - 1)``,
    ``m = N*H*W``) in ``running_var``; eval mode uses the running statistics.
    The batch statistics are accumulated in float64.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=np.float32):
        super().__init__()
        self.num_features = check_int(num_features, "num_features", minimum=1)
        if not isinstance(eps, numbers.Real) or eps <= 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if momentum is not None and (not isinstance(momentum, numbers.Real)
                                     or not 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum must be None or in [0, 1], got {momentum!r}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        dtype = init.as_float_dtype(dtype)
        c = self.num_features
        self.weight = Parameter(np.ones(c, dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(c, dtype)) if self.affine else None
        self.register_buffer("running_mean", np.zeros(c, dtype))
        self.register_buffer("running_var", np.ones(c, dtype))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    @property
    def dtype(self) -> np.dtype:
        return self.running_mean.dtype

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}")

    def _per_channel(self, values: np.ndarray) -> np.ndarray:
        """(C,) viewed as (1, C, 1, 1) in the layer's dtype, to broadcast over NCHW."""
        return values.astype(self.dtype, copy=False).reshape(1, -1, 1, 1)

    def _checked_affine(self, x):
        """Check ``x`` (N, num_features, H, W); return (gamma, beta), ones/zeros
        when the layer has no affine parameters."""
        self._check_input(x, 4, self.dtype)
        c = x.shape[1]
        if c != self.num_features:
            raise ValueError(
                f"{self._describe()} expects {self.num_features} channels, got {c} "
                f"(input shape {x.shape})"
            )
        if self.affine:
            return self.weight.data, self.bias.data
        return np.ones(c, self.dtype), np.zeros(c, self.dtype)

    def forward(self, x):
        """Parameters: x (N, C, H, W). Returns the normalised (N, C, H, W)."""
        gamma, beta = self._checked_affine(x)
        n, c, h, w = x.shape
        if not self.training:
            # y = x * scale + shift with the running statistics: one pass, no cache.
            scale = gamma / np.sqrt(self.running_var + self.dtype.type(self.eps))
            shift = beta - self.running_mean * scale
            return x * self._per_channel(scale) + self._per_channel(shift)

        count = n * h * w
        if count < 2:
            raise ValueError(
                f"{self._describe()} needs more than 1 value per channel in training mode, "
                f"got input shape {x.shape}"
            )
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
        centered = x - self._per_channel(mean)
        var = np.square(centered).mean(axis=(0, 2, 3), dtype=np.float64)  # biased
        y, x_hat, inv_std = self._normalize_and_track(centered, mean, var, count, gamma, beta)
        self._save_for_backward(x_hat=x_hat, inv_std=inv_std)
        return y

    def _normalize_and_track(self, centered, mean, var, count, gamma, beta):
        """Training-mode output from batch statistics over ``count`` values per channel.

        ``mean`` and the biased ``var`` are float64 per channel and ``centered`` is
        ``x - mean``. Updates the running statistics (with the unbiased variance,
        as PyTorch does). Returns (y, x_hat, inv_std).
        """
        inv_std = 1.0 / np.sqrt(var + self.eps)
        x_hat = centered * self._per_channel(inv_std)
        y = x_hat * self._per_channel(gamma) + self._per_channel(beta)
        self.num_batches_tracked += 1
        factor = (self.momentum if self.momentum is not None
                  else 1.0 / float(self.num_batches_tracked))
        self.running_mean[...] = (1 - factor) * self.running_mean + factor * mean
        self.running_var[...] = (1 - factor) * self.running_var + factor * var * (
            count / (count - 1))
        return y, x_hat, inv_std

    def backward(self, dy):
        """Return dx; accumulate dweight = Σ dy·x̂ and dbias = Σ dy per channel.

        With m = N*H*W: ``dx = weight * inv_std / m * (m*dy - Σdy - x̂ Σ(dy·x̂))``.
        """
        cache = self._saved_for_backward()
        x_hat = cache["x_hat"]
        self._check_grad(dy, x_hat.shape)
        dbias = dy.sum(axis=(0, 2, 3), dtype=np.float64)
        dweight = (dy * x_hat).sum(axis=(0, 2, 3), dtype=np.float64)
        if self.affine:
            self.weight.accumulate_grad(dweight.astype(self.dtype))
            self.bias.accumulate_grad(dbias.astype(self.dtype))
        n, _, h, w = x_hat.shape
        return self._input_grad(dy, x_hat, cache["inv_std"], n * h * w, dbias, dweight)

    def _input_grad(self, dy, x_hat, inv_std, count, dbias, dweight):
        """dx from the per-channel sums Σdy (``dbias``) and Σdy·x̂ (``dweight``) over
        the ``count`` values the batch statistics came from."""
        gamma = self.weight.data if self.affine else np.ones(x_hat.shape[1], self.dtype)
        coeff = gamma * inv_std / count
        dx = self._per_channel(coeff) * (
            dy * self.dtype.type(count)
            - self._per_channel(dbias)
            - x_hat * self._per_channel(dweight)
        )
        return dx.astype(self.dtype, copy=False)


__all__ = ["BatchNorm2d"]
