"""What the ONNX tests share (no optional import here, so every test module can use it)."""

from __future__ import annotations

import numpy as np

from cnnblas import nn


def randomize_batchnorm(model, seed=1):
    """Non-trivial running statistics and affine parameters (fresh ones are 0/1)."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean[...] = rng.normal(size=c)
            module.running_var[...] = rng.uniform(0.5, 2.0, c)
            module.weight.data[...] = rng.normal(size=c)
            module.bias.data[...] = rng.normal(size=c)
    return model


def relative_error(got, expected):
    """``max|got - expected| / max|expected|``."""
    return float(np.abs(got - expected).max() / np.abs(expected).max())
