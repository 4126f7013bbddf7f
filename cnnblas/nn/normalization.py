"""Batch normalisation over the channels of NCHW input.

The arithmetic is :mod:`cnnblas.ops.batchnorm`: one pass over memory for the
statistics, one for the output, two for the backward. In training mode
:class:`BatchNorm2d` caches its input ``x`` (which the layer before made
anyway), the per-channel ``mean`` and ``inv_std`` (1/σ), and, when a ReLU is
fused in (:meth:`BatchNorm2d.forward_fused`, used by the residual blocks),
its output ``y``, whose sign is the ReLU's mask (the next layer caches ``y``
anyway). :mod:`cnnblas.distributed` overrides ``_batch_statistics`` and
``_reduce_gradient_sums`` for the synchronised version, with statistics summed
over every rank.
"""

from __future__ import annotations

import numbers

import numpy as np

from cnnblas.checks import check_int
from cnnblas.nn import init
from cnnblas.nn.layers import _Layer
from cnnblas.nn.module import Parameter
from cnnblas.ops import batchnorm as bn_ops


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
    The batch statistics are accumulated in float64. :meth:`forward_fused`
    adds a residual and applies a ReLU in the same pass over memory (what the
    residual blocks use); :meth:`backward_fused` is its backward.
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
        return self._affine()

    def _affine(self):
        if self.affine:
            return self.weight.data, self.bias.data
        return np.ones(self.num_features, self.dtype), np.zeros(self.num_features, self.dtype)

    def forward(self, x):
        """Parameters: x (N, C, H, W). Returns the normalised (N, C, H, W)."""
        return self.forward_fused(x)

    def forward_fused(self, x, residual=None, relu=False):
        """``relu(bn(x) + residual)`` in one pass over memory (sum and ReLU optional).

        A residual block's tail in one call. In training mode its backward is
        :meth:`backward_fused`, or :meth:`backward` when no ``residual`` was
        added. With ``relu`` the cache also holds the output ``y``, whose sign
        is the ReLU's mask.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W), the layer's dtype
        residual : ndarray, shape and dtype of ``x``, optional
        relu : bool, default False

        Returns
        -------
        y : ndarray, shape and dtype of ``x``
        """
        gamma, beta = self._checked_affine(x)
        if residual is not None:
            self._check_input(residual, 4, self.dtype)
            if residual.shape != x.shape:
                raise ValueError(
                    f"{self._describe()}: the residual has shape {residual.shape} but the "
                    f"normalised input has {x.shape}"
                )
        if not self.training:
            inv_std = 1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
            return bn_ops.batch_norm_apply(x, self.running_mean, inv_std, gamma, beta,
                                           residual, relu)
        mean, var, count = self._batch_statistics(x)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        self._track(mean, var, count)
        y = bn_ops.batch_norm_apply(x, mean, inv_std, gamma, beta, residual, relu)
        fused = {} if not relu else {"y": y}
        if residual is not None:
            fused["residual"] = True
        self._save_for_backward(x=x, mean=mean, inv_std=inv_std, count=count, **fused)
        return y

    def _batch_statistics(self, x):
        """(mean, biased var, count) of the training batch, mean and var float64 (C,).

        The synchronised subclass sums them over the ranks.
        """
        n, _, h, w = x.shape
        count = n * h * w
        if count < 2:
            raise ValueError(
                f"{self._describe()} needs more than 1 value per channel in training mode, "
                f"got input shape {x.shape}"
            )
        mean, var = self._moments(x)
        return mean, var, count

    #: Per-channel (mean, biased variance) of an (N, C, H, W) array, float64.
    _moments = staticmethod(bn_ops.batch_norm_statistics)

    def _track(self, mean, var, count) -> None:
        """Update the running statistics from the batch's ``mean`` and biased ``var``
        over ``count`` values (storing the unbiased variance, as PyTorch does)."""
        self.num_batches_tracked += 1
        factor = (self.momentum if self.momentum is not None
                  else 1.0 / float(self.num_batches_tracked))
        self.running_mean[...] = (1 - factor) * self.running_mean + factor * mean
        self.running_var[...] = (1 - factor) * self.running_var + factor * var * (
            count / (count - 1))

    def backward(self, dy):
        """Return dx; accumulate dweight = Σ dy·x̂ and dbias = Σ dy per channel.

        With m = N*H*W: ``dx = weight * inv_std * (dy - Σdy / m - x̂ Σ(dy·x̂) / m)``.
        """
        if self._caches and self._caches[-1].get("residual"):
            raise RuntimeError(f"{self._describe()}: the pending forward added a residual; "
                               "call backward_fused to get both gradients")
        return self.backward_fused(dy)[0]

    def backward_fused(self, dy):
        """Backward of :meth:`forward_fused`: returns (dx, d_residual).

        ``d_residual`` is the gradient of the residual (``dy`` masked by the
        ReLU), or None when the forward added none. Accumulates the parameter
        gradients as :meth:`backward` does.
        """
        cache = self._saved_for_backward()
        x, y, mean, inv_std = cache["x"], cache.get("y"), cache["mean"], cache["inv_std"]
        self._check_grad(dy, x.shape)
        dy = dy.astype(self.dtype, copy=False)
        residual = cache.get("residual", False)
        if residual and y is not None:
            sum_dy, sum_centered, d_residual = bn_ops.batch_norm_grad_sums(
                dy, x, mean, y, masked_out=True)
            dy, y = d_residual, None  # the mask is applied: dx needs no more of it
        else:
            sum_dy, sum_centered = bn_ops.batch_norm_grad_sums(dy, x, mean, y)
            d_residual = dy if residual else None
        sums = np.concatenate([sum_dy, sum_centered * inv_std])  # Σ g, Σ g·x̂
        c = self.num_features
        if self.affine:
            self.weight.accumulate_grad(sums[c:].astype(self.dtype))
            self.bias.accumulate_grad(sums[:c].astype(self.dtype))
        self._reduce_gradient_sums(sums)
        gamma, _ = self._affine()
        dx = bn_ops.batch_norm_input_grad(dy, x, mean, inv_std, gamma, sums[:c], sums[c:],
                                          cache["count"], y)
        return dx, d_residual

    def _reduce_gradient_sums(self, sums) -> None:
        """Hook on the local ``[Σ g, Σ g·x̂]`` (float64, 2C) before dx is formed, after
        the parameter gradients took them; the synchronised subclass sums them
        over the ranks in place."""


__all__ = ["BatchNorm2d"]
