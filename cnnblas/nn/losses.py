"""Losses as modules: ``loss = criterion(logits, labels)``, then ``criterion.backward()``.

A loss ends the backward chain, so its ``backward`` takes no upstream
gradient (an optional scale instead) and returns the gradient with respect to
the predictions, ready for ``model.backward``::

    loss = criterion(model(x), labels)
    model.backward(criterion.backward())

Like every layer, a loss keeps its gradient only in training mode.
"""

from __future__ import annotations

from cnnblas.checks import check_real
from cnnblas.nn.module import Module
from cnnblas.ops.losses import mse_loss, softmax_cross_entropy


class _Loss(Module):
    def backward(self, scale=1.0):
        """Gradient of the last loss with respect to the predictions.

        Parameters
        ----------
        scale : float, default 1.0
            Multiplies the gradient (e.g. a loss weight).

        Returns
        -------
        ndarray, shape and dtype of the predictions given to forward.
        """
        grad = self._saved_for_backward()["grad"]
        scale = check_real(scale, "scale")
        return grad if scale == 1.0 else grad * grad.dtype.type(scale)


class SoftmaxCrossEntropy(_Loss):
    """Softmax followed by the mean negative log-likelihood of the true class.

    ``forward(logits (N, K) float, labels (N,) int) -> float``; ``backward()``
    returns ``(softmax(logits) - onehot(labels)) / N`` with shape (N, K). See
    :func:`cnnblas.ops.losses.softmax_cross_entropy` for the errors raised.
    Equivalent to ``torch.nn.CrossEntropyLoss()``.
    """

    def forward(self, logits, labels) -> float:
        loss, dlogits = softmax_cross_entropy(logits, labels)
        self._save_for_backward(grad=dlogits)
        return loss


class MSELoss(_Loss):
    """Mean squared error, ``torch.nn.MSELoss()`` with mean reduction.

    ``forward(pred, target) -> float`` with ``pred`` and ``target`` of the same
    shape and dtype; ``backward()`` returns ``2 (pred - target) / pred.size``.
    """

    def forward(self, pred, target) -> float:
        loss, dpred = mse_loss(pred, target)
        self._save_for_backward(grad=dpred)
        return loss


__all__ = ["SoftmaxCrossEntropy", "MSELoss"]
