"""Inverted dropout.

In training mode :class:`Dropout` caches its ``mask`` (already scaled by
``1 / (1 - p)``, in the input's dtype) so that backward drops the same units.
"""

from __future__ import annotations

import numpy as np

from cnnblas.checks import check_real
from cnnblas.nn import init
from cnnblas.nn.layers import _Layer


class Dropout(_Layer):
    """Inverted dropout: zero each element with probability ``p`` in training
    and scale the survivors by ``1 / (1 - p)``; the identity in eval mode.

    Parameters
    ----------
    p : float in [0, 1], default 0.5
    rng : None, int or numpy.random.Generator
        An int seed makes the sequence of masks reproducible.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = check_real(p, "Dropout probability p")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"Dropout probability p must be in [0, 1], got {p!r}")
        self.rng = init.as_rng(rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x):
        """Parameters: x, any shape. Returns x * mask (train) or x itself (eval)."""
        self._check_input(x)
        if not self.training:
            return x
        if self.p == 1.0:
            mask = np.zeros_like(x)  # everything dropped; avoid dividing by 0
        else:
            keep = self.rng.random(x.shape, dtype=x.dtype) >= x.dtype.type(self.p)
            mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        self._save_for_backward(mask=mask)
        return x * mask

    def backward(self, dy):
        mask = self._saved_for_backward()["mask"]
        self._check_grad(dy, mask.shape, mask.dtype)
        return dy * mask


__all__ = ["Dropout"]
