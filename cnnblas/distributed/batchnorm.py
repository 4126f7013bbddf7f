"""Synchronised BatchNorm: the statistics of the global batch, summed over the ranks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cnnblas import nn
from cnnblas.distributed.world import World

if TYPE_CHECKING:
    from cnnblas.distributed.mpi import DataParallel

__all__ = ["SyncBatchNorm2d", "convert_sync_batchnorm"]


class SyncBatchNorm2d(nn.BatchNorm2d):
    """:class:`~cnnblas.nn.BatchNorm2d` with the statistics of the global batch.

    Training mode sums, over the ranks, the per-channel sample count, sum and
    sum of squares (one Allreduce of ``2C + 1`` float64 in forward; the local
    sums of squares are taken around the local mean for accuracy) and, in
    backward, ``Σ dy`` and ``Σ dy·x̂`` (one Allreduce of ``2C``). The
    parameter gradients stay local (the trainer's gradient Allreduce sums
    them). Eval mode is BatchNorm2d's (running statistics, no communication).
    Made by :func:`convert_sync_batchnorm`; the state-dict keys do not change.

    Attributes
    ----------
    world : cnnblas.distributed.DataParallel
        Whose :meth:`~cnnblas.distributed.DataParallel.allreduce` sums the statistics.
    """

    world: DataParallel

    def _batch_statistics(self, x):
        n, c, h, w = x.shape
        local = n * h * w
        stats = np.zeros(2 * c + 1, dtype=np.float64)
        if local:
            local_mean, local_var = self._moments(x)
            stats[:c] = local_mean * local
            stats[c:2 * c] = local * (local_var + np.square(local_mean))
        stats[2 * c] = local
        self.world.allreduce(stats)
        count = stats[2 * c]
        if count < 2:
            raise ValueError(
                f"{self._describe()} needs more than 1 value per channel in training mode, "
                f"got {int(count)} over all ranks"
            )
        mean = stats[:c] / count
        var = np.maximum(stats[c:2 * c] / count - np.square(mean), 0.0)  # biased
        return mean, var, count

    def _reduce_gradient_sums(self, sums) -> None:
        self.world.allreduce(sums)


def convert_sync_batchnorm(model: nn.Module, world: World | None) -> int:
    """Turn every :class:`~cnnblas.nn.BatchNorm2d` of ``model`` into a :class:`SyncBatchNorm2d`.

    In place (the modules keep their parameters and buffers). Returns how many
    layers were converted; in a world of one process (or ``world=None``)
    nothing changes (the plain layer already sees the whole batch).
    """
    if world is None or world.size == 1:
        return 0
    converted = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = SyncBatchNorm2d
            converted += 1
        if isinstance(module, SyncBatchNorm2d):
            module.world = world
    return converted
