"""The toy network of the beginner tutorial's Section 4 ("Put it all together").

The tutorial works one 5x5 image through a small CNN by hand and prints every
intermediate array (its Tables 4.1-4.9). This module holds that network, its
input and its printed weights in cnnblas's layouts, so that the notebooks and
tests can check cnnblas's numbers against the tables:

>>> from cnnblas import nn, tutorial
>>> model = tutorial.toy_cnn()
>>> x, labels = tutorial.toy_input()
>>> round(nn.SoftmaxCrossEntropy()(model(x), labels), 4)
33.9345
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from cnnblas.nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from cnnblas.nn.init import as_float_dtype, as_rng

__all__ = ["toy_cnn", "toy_input", "toy_state_dict", "TOY_LABEL"]

_TOY_INPUT = [
    [4, 1, 3, 5, 3],
    [2, 1, 1, 2, 2],
    [5, 5, 1, 2, 3],
    [2, 2, 4, 3, 2],
    [5, 1, 3, 4, 5],
]
_TOY_CONV_WEIGHT = [  # Table 4.1, W1: two 3x3 filters, applied as cross-correlation
    [[1, 2, 3], [4, 7, 5], [3, -32, 25]],
    [[12, 18, 12], [18, -74, 45], [-92, 45, -18]],
]
_TOY_W2 = [[1, 2], [3, -4]]  # Table 4.4 as printed: (in, out), X3 = X2 @ W2
_TOY_W3_T = [  # Table 4.5 prints W3.T: (out, in) = (10, 2), already Linear's layout
    [0.09, 0.02], [0.08, 0.03], [0.07, 0.03], [0.06, 0.02], [0.05, 0.01],
    [0.04, 0.02], [0.03, 0.07], [0.04, 0.08], [0.05, 0.05], [0.01, 0.01],
]
TOY_LABEL = 9  # Table 4.6: the true class (0-based)


def toy_input(dtype=np.float64):
    """The input image and label of the tutorial's Section 4.

    Returns
    -------
    x : ndarray, shape (1, 1, 5, 5), ``dtype``
        Table 4.1's ``X``.
    labels : ndarray, shape (1,), int64
        ``[9]`` (Table 4.6).
    """
    x = np.array(_TOY_INPUT, dtype=as_float_dtype(dtype)).reshape(1, 1, 5, 5)
    return x, np.array([TOY_LABEL], dtype=np.int64)


def toy_state_dict(dtype=np.float64):
    """The tutorial's Section 4 weights as a state dict for :func:`toy_cnn`.

    Keys follow the layer indices of :func:`toy_cnn`: ``0.weight``
    (2, 1, 3, 3), ``0.bias`` (2,), ``4.weight`` (2, 2) = the tutorial's
    ``W2.T``, ``4.bias`` (2,), ``6.weight`` (10, 2) = the printed ``W3.T``,
    ``6.bias`` (10,). All biases are zero (Tables 4.1, 4.4, 4.5).
    """
    dtype = as_float_dtype(dtype)
    return OrderedDict([
        ("0.weight", np.array(_TOY_CONV_WEIGHT, dtype).reshape(2, 1, 3, 3)),
        ("0.bias", np.zeros(2, dtype)),
        ("4.weight", np.array(_TOY_W2, dtype).T.copy()),
        ("4.bias", np.zeros(2, dtype)),
        ("6.weight", np.array(_TOY_W3_T, dtype)),
        ("6.bias", np.zeros(10, dtype)),
    ])


def toy_cnn(tutorial_weights=True, dtype=np.float64, rng=None):
    """The toy CNN of Section 4 ("Put it all together") of the beginner tutorial.

    Layers, for a (N, 1, 5, 5) input (indices are the state-dict prefixes)::

        0 Conv2d(1, 2, 3)      -> (N, 2, 3, 3)   X1 = X * W1 + B1   (Table 4.1)
        1 ReLU                                   ReLU1              (Table 4.2)
        2 MaxPool2d(3)         -> (N, 2, 1, 1)   X2                 (Table 4.3)
        3 Flatten              -> (N, 2)         X2_flatten
        4 Linear(2, 2)                           X3 = X2_flatten W2 + B2
        5 ReLU                                   ReLU2              (Table 4.4)
        6 Linear(2, 10)        -> (N, 10)        X4 = ReLU2 W3 + B3 (Table 4.5)

    followed by :class:`~cnnblas.nn.SoftmaxCrossEntropy` (Table 4.6). With the
    tutorial's weights and :func:`toy_input`, the forward pass gives
    ``X2 = [118, 102]``, ``X3 = [424, -172]``, ``X4 = 424 * W3[:, 0]`` and the
    loss ``33.9345``; ``model.backward(criterion.backward())`` gives Tables
    4.6-4.9 (``dW3``, ``dW2``, ``dB1 = [0.0799, 0.2396]``, ``dW1`` and ``dX``).

    Parameters
    ----------
    tutorial_weights : bool, default True
        Load :func:`toy_state_dict`; False keeps the random
        PyTorch-style initialisation.
    dtype : float32 or float64, default float64
        float64 reproduces the printed digits exactly.
    rng : None, int or numpy.random.Generator
        Used only for the random initialisation.

    Returns
    -------
    Sequential

    Notes
    -----
    Differences between the printed tables and this model, all of them in the
    tables rather than in the arithmetic:

    - The tutorial writes the affine layers as ``x @ W + b`` with ``W`` of
      shape (in, out); :class:`~cnnblas.nn.Linear` stores ``W.T`` (PyTorch's
      layout). Table 4.5 already prints ``W3.T``.
    - ``X * W1`` in Table 4.1 is a cross-correlation (no kernel rotation),
      e.g. ``X1[0, 0, 0] = -85``.
    - Table 4.5 prints ``X4`` entries 33.91, 25.43, 16.95, 12.71 and 16.95
      where ``424 * W3`` is exactly 33.92, 25.44, 16.96, 12.72 and 16.96: they
      look like single-precision results (33.919998, ...) truncated to two
      decimals. The printed softmax outputs, the loss 33.9345 and every
      gradient agree with this model to about 1e-6 relative, the noise of
      single precision (e.g. ``output[1]`` is printed 1.419998e-02; float64
      gives 1.420001e-02, float32 1.419999e-02).
    - In Table 4.6 the column headed "δB3.T" holds zeros: those are the second
      column of ``δW3.T`` (``ReLU2[1] = 0``). The bias gradient ``δB3`` equals
      ``δoutput``, the first column.
    - The tutorial works on a batch of one, so the mean over the batch used by
      :class:`~cnnblas.nn.SoftmaxCrossEntropy` changes nothing.
    """
    dtype = as_float_dtype(dtype)
    rng = as_rng(rng)
    model = Sequential(
        Conv2d(1, 2, 3, dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2d(3),
        Flatten(),
        Linear(2, 2, dtype=dtype, rng=rng),
        ReLU(),
        Linear(2, 10, dtype=dtype, rng=rng),
    )
    if tutorial_weights:
        model.load_state_dict(toy_state_dict(dtype))
    return model
