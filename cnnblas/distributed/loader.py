"""The sharded data loader: every rank's contiguous part of each global batch."""

from __future__ import annotations

import numpy as np

from cnnblas.data import DataLoader

__all__ = ["ShardedLoader"]


class ShardedLoader(DataLoader):
    """A :class:`~cnnblas.data.DataLoader` over the global batches, yielding this rank's part.

    Batch ``i`` of an epoch is batch ``i`` of the same loader on one process
    (``batch_size`` is the global batch), cut into ``world.size`` contiguous
    parts; this rank gets part ``world.rank``. :attr:`global_count` is the
    size of the global batch last yielded. A global batch with fewer samples
    than ranks is skipped. :meth:`state_dict` is the global position, the
    same as a one-process loader's, so checkpoints move between rank counts.
    The shuffling seed is rank 0's (broadcast on construction).

    Parameters
    ----------
    x, y, batch_size, shuffle, seed, drop_last
        As for :class:`~cnnblas.data.DataLoader`.
    world : cnnblas.distributed.DataParallel
    """

    def __init__(self, x, y, batch_size: int, world, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False):
        super().__init__(x, y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.world = world
        self.global_count = 0
        self.sync_seed()

    @classmethod
    def from_loader(cls, loader: DataLoader, world) -> ShardedLoader:
        """A sharded copy of ``loader`` (same data, configuration, seed and position)."""
        sharded = cls(loader.x, loader.y, loader.batch_size, world, shuffle=loader.shuffle,
                      drop_last=loader.drop_last)
        sharded.load_state_dict(loader.state_dict())
        sharded.sync_seed()
        return sharded

    def sync_seed(self) -> None:
        """Use rank 0's shuffling seed (``seed=None`` draws a different one per process)."""
        self._seed = self.world.broadcast(np.array(self._seed, dtype=np.uint32))

    def _batches(self, epoch: int, start: int):
        order = self.permutation(epoch)
        size = self.world.size
        for index in range(start, len(self)):
            low = index * self.batch_size
            high = min(low + self.batch_size, self.num_samples)
            if epoch == self._epoch - 1:  # a stale iterator does not move the position
                self._batch = index + 1
            count = high - low
            if count < size:
                continue
            part_low, part_high = self.world.part(count)
            part_low, part_high = low + part_low, low + part_high
            if order is None:
                xb, yb = self.x[part_low:part_high], self.y[part_low:part_high]
            else:
                rows = order[part_low:part_high]
                xb, yb = self.x[rows], self.y[rows]
            self.global_count = count
            yield xb, yb
