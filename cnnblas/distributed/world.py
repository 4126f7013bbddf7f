"""The world a training run lives in: the interface, its errors, and the one-process world.

A *world* is what the trainer asks about the other processes: its rank, the
size, the sums over the ranks, the broadcasts, the weights check.
:class:`LocalWorld` answers for a single process (every collective returns its
input or does nothing); :class:`cnnblas.distributed.DataParallel` answers over
MPI. Both derive from :class:`World`.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from cnnblas.data import DataLoader

__all__ = ["World", "LocalWorld", "CollectiveError", "WeightsDivergedError", "threads_per_rank"]

#: The reductions of :meth:`World.allreduce`.
REDUCTIONS = ("sum", "max")


class CollectiveError(RuntimeError):
    """An error raised identically on every rank (no abort needed)."""


class WeightsDivergedError(CollectiveError):
    """The ranks' weights are no longer bit-identical."""


def check_reduction(op: str) -> str:
    """``op`` when it names a reduction of :data:`REDUCTIONS`, else ValueError."""
    if op not in REDUCTIONS:
        raise ValueError(f"op must be one of {REDUCTIONS}, got {op!r}")
    return op


class World:
    """What every world provides on top of :meth:`allreduce` (see the subclasses).

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks.
    """

    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        """True on rank 0: the rank that logs and writes files."""
        return self.rank == 0

    def allreduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        """Reduce ``array`` element-wise over the ranks, in place, and return it.

        Parameters
        ----------
        array : ndarray, C-contiguous, the same shape and dtype on every rank
        op : {"sum", "max"}
        """
        raise NotImplementedError

    def sum(self, values) -> np.ndarray:
        """Element-wise float64 sum of ``values`` over the ranks, shape (len(values),)."""
        return self.allreduce(np.array(values, dtype=np.float64).ravel(), "sum")

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks."""
        return float(self.allreduce(np.array([value], dtype=np.float64), "max")[0])


class LocalWorld(World):
    """The world of a single process: rank 0 of 1.

    Every collective of :class:`~cnnblas.distributed.DataParallel` is here
    the identity (reductions and broadcasts return their input) or does
    nothing (gradient averaging, the weights check), and :meth:`guard` lets
    errors through unchanged.
    """

    rank = 0
    size = 1
    local_size = 1
    allreduce_seconds = 0.0
    allreduce_calls = 0

    def __repr__(self) -> str:
        return "LocalWorld()"

    # -- sharding --------------------------------------------------------------------

    def part(self, count: int) -> tuple[int, int]:
        """All ``count`` items: ``(0, count)``."""
        return 0, count

    def data_loader(self, x, y, batch_size: int, shuffle: bool, seed) -> DataLoader:
        """A :class:`~cnnblas.data.DataLoader` over ``(x, y)``."""
        return DataLoader(x, y, batch_size, shuffle=shuffle, seed=seed)

    def shard(self, loader: DataLoader) -> DataLoader:
        """``loader`` itself: one process trains on every batch."""
        return loader

    def weight_gradient(self, grad: np.ndarray, count: int, loader: DataLoader) -> np.ndarray:
        """``grad`` unchanged: this process holds the whole batch."""
        return grad

    # -- gradients -------------------------------------------------------------------

    def attach(self, params) -> None:
        """Nothing to attach: the gradients stay where the layers put them."""

    def allreduce_gradients(self) -> None:
        """Nothing to average over."""

    def reset_timer(self) -> None:
        """No time is spent in collectives."""

    def epoch_stats(self) -> dict:
        """No entries for the history record: ``{}``."""
        return {}

    # -- collectives -----------------------------------------------------------------

    def allreduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        check_reduction(op)
        return array

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """``data`` itself."""
        if data is None:
            raise ValueError("broadcast_bytes: rank 0 has no data")
        return data

    def broadcast_flag(self, flag: bool) -> bool:
        """``flag`` itself."""
        return bool(flag)

    def read_file(self, path: str | os.PathLike) -> bytes | None:
        """None: the one process reads ``path`` itself, when it parses the file."""
        return None

    # -- model state -----------------------------------------------------------------

    def broadcast_model(self, model) -> None:
        """The weights are already everyone's."""

    def average_buffers(self, model) -> None:
        """The buffers are already the mean over the one process."""

    def check_consistent(self, model, when: str) -> None:
        """One copy of the weights cannot disagree with itself."""

    # -- faults ----------------------------------------------------------------------

    def guard(self) -> contextlib.AbstractContextManager[None]:
        """A context that lets every error through (there is no other rank to end)."""
        return contextlib.nullcontext()


def threads_per_rank(world: World, cores: int | None = None) -> int:
    """Threads for one rank: the cores of this node divided among its ranks (>= 1).

    When the launcher bound this process to fewer cores than the machine has,
    those cores are this rank's own and all of them are used.
    """
    from cnnblas.threads import default_threads, max_threads

    available = default_threads() if cores is None else int(cores)
    if available >= (os.cpu_count() or available):
        available //= world.local_size
    return max(1, min(available, max_threads()))
