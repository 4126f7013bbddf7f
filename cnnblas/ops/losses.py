"""Loss functions returning the loss and its gradient in one pass.

Both losses use the mean reduction of their PyTorch counterparts
(``torch.nn.functional.cross_entropy`` and ``mse_loss``), so the gradient of a
batch is ``1/N`` (or ``1/size``) times the per-sample gradient. The loss is a
Python float; the gradient keeps the dtype of the predictions.
"""

from __future__ import annotations

import numpy as np

from cnnblas.checks import check_float_array, check_shape


def _shifted(logits, axis) -> np.ndarray:
    """``logits - max(logits)`` along ``axis``: the largest exponent becomes 0, so
    no ``exp`` overflows and at least one term of every sum is 1."""
    check_float_array(logits, "logits")
    return logits - logits.max(axis=axis, keepdims=True)


def log_softmax(logits, axis=-1):
    """Numerically stable ``log(softmax(logits))`` along ``axis``.

    Computed as ``z - max(z) - log(sum(exp(z - max(z))))``.

    Parameters
    ----------
    logits : ndarray, any shape, float32 or float64
    axis : int, default -1

    Returns
    -------
    ndarray, shape and dtype of ``logits``
    """
    shifted = _shifted(logits, axis)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits, axis=-1):
    """Numerically stable softmax along ``axis``: ``exp(z - max(z))``, normalised;
    ``logits`` and ``axis`` as in :func:`log_softmax`. Returns an array of the
    shape and dtype of ``logits`` that sums to 1 along ``axis``."""
    e = np.exp(_shifted(logits, axis))
    return e / e.sum(axis=axis, keepdims=True)


def _check_labels(labels, num_samples: int, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(
            f"labels must have rank 1 (one class index per sample), got shape {labels.shape}"
        )
    if labels.shape[0] != num_samples:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but logits has {num_samples} rows"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] for {num_classes} classes, "
            f"got values in [{low}, {high}]"
        )
    return labels


def softmax_cross_entropy(logits, labels):
    """Mean negative log-likelihood of softmax probabilities, and its gradient.

    ``loss = -mean_n log softmax(logits[n])[labels[n]]`` and
    ``dlogits = (softmax(logits) - onehot(labels)) / N``, i.e. the tutorial's
    Table 4.6 (output minus 1 at the true class) divided by the batch size.

    Parameters
    ----------
    logits : ndarray, shape (N, K), float32 or float64
        Unnormalised class scores.
    labels : array_like, shape (N,), integer
        True class of each sample, in ``[0, K)``.

    Returns
    -------
    loss : float
    dlogits : ndarray, shape (N, K), dtype of ``logits``

    Raises
    ------
    TypeError
        ``logits`` not float32/float64, or ``labels`` not integers.
    ValueError
        Wrong ranks, ``len(labels) != N``, or a label outside ``[0, K)``.
    """
    check_float_array(logits, "logits", ndim=2)
    n, k = logits.shape
    labels = _check_labels(labels, n, k)
    log_probs = log_softmax(logits, axis=1)
    rows = np.arange(n)
    loss = -float(log_probs[rows, labels].sum(dtype=np.float64)) / n
    dlogits = np.exp(log_probs)
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, dlogits


def mse_loss(pred, target):
    """Mean squared error ``mean((pred - target)**2)`` and its gradient.

    Parameters
    ----------
    pred : ndarray, any shape, float32 or float64
    target : ndarray, shape and dtype of ``pred``

    Returns
    -------
    loss : float
    dpred : ndarray, shape and dtype of ``pred``
        ``2 * (pred - target) / pred.size``.

    Raises
    ------
    TypeError
        Non-float arrays or differing dtypes (nothing is cast silently).
    ValueError
        Differing shapes (no broadcasting, unlike PyTorch's warning).
    """
    check_float_array(pred, "pred")
    check_float_array(target, "target", dtype=pred.dtype)
    check_shape(target, pred.shape, "target (it must match pred)")
    diff = pred - target
    loss = float(np.square(diff).sum(dtype=np.float64)) / diff.size
    dpred = diff * diff.dtype.type(2.0 / diff.size)
    return loss, dpred


__all__ = ["log_softmax", "softmax", "softmax_cross_entropy", "mse_loss"]
