"""The world a training run lives in: the interface, its errors, and the one-process world.

A *world* is what the trainer asks about the other processes: its rank, the
size, the sums over the ranks, the broadcasts, the weights check.
:class:`LocalWorld` answers for a single process (every collective returns its
input or does nothing); :class:`cnnblas.distributed.DataParallel` answers over
MPI. Both derive from :class:`World`.
"""

from __future__ import annotations

import abc
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


class World(abc.ABC):
    """What the trainer asks of the processes it runs in; one subclass per kind of world.

    :class:`LocalWorld` is one process; :class:`cnnblas.distributed.DataParallel`
    is the MPI ranks. Collectives must be called on every rank, in the same
    order.

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks.
    local_size : int
        Ranks on this node (they share its cores).
    allreduce_seconds : float
        Time spent in the gradient reductions since :meth:`reset_timer`.
    """

    rank: int
    size: int
    local_size: int
    allreduce_seconds: float

    @property
    def is_main(self) -> bool:
        """True on rank 0: the rank that logs and writes files."""
        return self.rank == 0

    # -- sharding ----------------------------------------------------------------------

    @abc.abstractmethod
    def part(self, count: int) -> tuple[int, int]:
        """This rank's contiguous part ``(start, stop)`` of ``count`` items."""

    @abc.abstractmethod
    def data_loader(self, x, y, batch_size: int, shuffle: bool, seed) -> DataLoader:
        """A loader whose batches are this rank's parts of the global batches."""

    @abc.abstractmethod
    def shard(self, loader: DataLoader) -> DataLoader:
        """A loader over ``loader``'s data that yields this rank's parts of its batches."""

    @abc.abstractmethod
    def weight_gradient(self, grad: np.ndarray, count: int, loader: DataLoader) -> np.ndarray:
        """The loss gradient of this rank's ``count`` samples, weighted by its share of the
        global batch, so that the sum over the ranks is the global mean's gradient."""

    # -- gradients -------------------------------------------------------------------

    @abc.abstractmethod
    def attach(self, params) -> None:
        """Prepare to reduce the gradients of ``params`` every step."""

    @abc.abstractmethod
    def allreduce_gradients(self) -> None:
        """Sum the attached gradients over the ranks, in place."""

    @abc.abstractmethod
    def reset_timer(self) -> None:
        """Zero :attr:`allreduce_seconds` (at the start of an epoch)."""

    @abc.abstractmethod
    def epoch_stats(self) -> dict:
        """Entries this world adds to an epoch's history record."""

    # -- collectives -----------------------------------------------------------------

    @abc.abstractmethod
    def allreduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        """Reduce ``array`` element-wise over the ranks, in place, and return it.

        Parameters
        ----------
        array : ndarray, C-contiguous, the same shape and dtype on every rank
        op : {"sum", "max"}
        """

    @abc.abstractmethod
    def broadcast(self, array: np.ndarray) -> np.ndarray:
        """Overwrite ``array`` (C-contiguous, same shape and dtype on every rank) with
        rank 0's, in place, and return it."""

    @abc.abstractmethod
    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's ``data`` on every rank (ValueError when rank 0 has none)."""

    @abc.abstractmethod
    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""

    @abc.abstractmethod
    def read_file(self, path: str | os.PathLike) -> bytes | None:
        """The bytes of rank 0's file ``path`` on every rank, or None when this process
        is to read the file itself."""

    def sum(self, values) -> np.ndarray:
        """Element-wise float64 sum of ``values`` over the ranks, shape (len(values),)."""
        return self.allreduce(np.array(values, dtype=np.float64).ravel(), "sum")

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks."""
        return float(self.allreduce(np.array([value], dtype=np.float64), "max")[0])

    # -- model state -----------------------------------------------------------------

    @abc.abstractmethod
    def broadcast_model(self, model) -> None:
        """Overwrite every rank's weights and buffers with rank 0's."""

    @abc.abstractmethod
    def average_buffers(self, model) -> None:
        """Replace the floating-point buffers (running statistics) by their mean over the
        ranks."""

    @abc.abstractmethod
    def check_consistent(self, model, when: str) -> None:
        """Raise :class:`WeightsDivergedError` on every rank unless the weights agree."""

    # -- faults ----------------------------------------------------------------------

    @abc.abstractmethod
    def guard(self) -> contextlib.AbstractContextManager[None]:
        """A context for collective sections: an error on one rank must not leave the
        others waiting forever."""


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
        """``array`` itself (the reduction over one rank)."""
        check_reduction(op)
        return array

    def broadcast(self, array: np.ndarray) -> np.ndarray:
        """``array`` itself."""
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


def threads_per_rank(world: World | None, cores: int | None = None) -> int:
    """Threads for one rank: the cores of this node divided among its ranks (>= 1).

    When the launcher bound this process to fewer cores than the machine has,
    those cores are this rank's own and all of them are used. ``world=None``
    means one process.
    """
    world = LocalWorld() if world is None else world
    from cnnblas.threads import default_threads, max_threads

    available = default_threads() if cores is None else int(cores)
    if available >= (os.cpu_count() or available):
        available //= world.local_size
    return max(1, min(available, max_threads()))
