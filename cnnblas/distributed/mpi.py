"""The MPI world: launch detection, :func:`init`, and :class:`DataParallel` over mpi4py.

mpi4py is imported only when a world of several ranks is built, so a plain
process never needs it (see :mod:`cnnblas.distributed`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cnnblas import nn
from cnnblas.data import DataLoader
from cnnblas.distributed.loader import ShardedLoader
from cnnblas.distributed.world import (
    CollectiveError,
    LocalWorld,
    WeightsDivergedError,
    World,
    check_reduction,
)

__all__ = ["DataParallel", "launched_size", "init"]

#: Environment variables through which MPI launchers announce the world size.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
#: Set by launchers that do not announce the size (Slurm's PMIx, ...).
_RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")
#: Errors reported as one line; anything else also gets its traceback.
_EXPECTED_ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError, OSError,
                    ImportError, KeyboardInterrupt)


# --------------------------------------------------------------------------- detection


def launched_size() -> int | None:
    """Number of processes the MPI launcher started, from the environment.

    Returns ``None`` when this process was not started by an MPI launcher, 0
    when it was but the launcher does not say how many processes it started.
    ``CNNBLAS_MPI=0`` forces ``None``; ``CNNBLAS_MPI=1`` forces 0 (ask MPI).
    """
    forced = os.environ.get("CNNBLAS_MPI", "").strip()
    if forced == "0":
        return None
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    if forced == "1" or any(name in os.environ for name in _RANK_VARIABLES):
        return 0
    return None


def _import_mpi(reason: str):
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"{reason}, but mpi4py is not installed: install it with "
            "pip install 'cnnblas[mpi]' (mpi4py and an MPI library), or pass comm=False "
            "(CNNBLAS_MPI=0) to train every process on its own"
        ) from error
    return MPI


def init(comm=None) -> World:
    """The world of ``comm``: a :class:`DataParallel`, or a :class:`LocalWorld` for one process.

    Parameters
    ----------
    comm : None, False, an mpi4py communicator, or a world
        None: ``MPI.COMM_WORLD`` when an MPI launcher started several
        processes (see :func:`launched_size`), else a single process (mpi4py
        is not imported). False: a single process. A communicator: that one.
        A communicator of one rank is a single process too. A world (from an
        earlier call): that world.
    """
    if isinstance(comm, World):
        return comm
    if comm is False:
        return LocalWorld()
    if comm is None:
        size = launched_size()
        if size is None or size == 1:
            return LocalWorld()
        MPI = _import_mpi("this process was started by an MPI launcher"
                          + (f" as one of {size} processes" if size else ""))
        comm = MPI.COMM_WORLD
    elif not all(hasattr(comm, name) for name in ("Get_size", "Get_rank", "Allreduce")):
        raise TypeError(f"comm must be None, False or an mpi4py communicator, got {comm!r}")
    if comm.Get_size() == 1:
        return LocalWorld()
    return DataParallel(comm)


# --------------------------------------------------------------------------- world


class DataParallel(World):
    """Collectives of one data-parallel training run over an mpi4py communicator.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm or cnnblas.distributed.SharedMemoryComm
        The ranks; a communicator with an ``MPI`` attribute (the constants it
        accepts) is used without importing mpi4py.

    Attributes
    ----------
    comm : mpi4py.MPI.Comm or cnnblas.distributed.SharedMemoryComm
    rank, size : int
    allreduce_seconds : float
        Wall time spent in the gradient Allreduce since the last
        :meth:`reset_timer` (this rank's clock).
    allreduce_calls : int
    """

    def __init__(self, comm):
        # A communicator of cnnblas.distributed.shared brings its own constants;
        # only an MPI communicator needs mpi4py.
        MPI = getattr(comm, "MPI", None)
        if MPI is None:
            from mpi4py import MPI

        self._MPI = MPI
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX}
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())
        self._local_size: int | None = None
        self._params: list | None = None
        self._flat: np.ndarray | None = None
        self._views: list[np.ndarray] | None = None
        self.allreduce_seconds = 0.0
        self.allreduce_calls = 0

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, size={self.size})"

    @property
    def local_size(self) -> int:
        """Ranks of this communicator on this node (shared memory)."""
        if self._local_size is None:
            local = self.comm.Split_type(self._MPI.COMM_TYPE_SHARED, key=self.rank)
            try:
                self._local_size = int(local.Get_size())
            finally:
                local.Free()
        return self._local_size

    # -- sharding -------------------------------------------------------------------

    def part(self, count: int) -> tuple[int, int]:
        """This rank's contiguous part ``[low, high)`` of ``count`` items (sizes differ by <= 1)."""
        return count * self.rank // self.size, count * (self.rank + 1) // self.size

    def data_loader(self, x, y, batch_size: int, shuffle: bool, seed) -> ShardedLoader:
        """A :class:`ShardedLoader` over ``(x, y)``: this rank's part of every global batch."""
        return ShardedLoader(x, y, batch_size, self, shuffle=shuffle, seed=seed)

    def shard(self, loader: DataLoader) -> ShardedLoader:
        """A sharded copy of ``loader`` (see :meth:`ShardedLoader.from_loader`)."""
        return ShardedLoader.from_loader(loader, self)

    def weight_gradient(self, grad: np.ndarray, count: int, loader: ShardedLoader) -> np.ndarray:
        """``grad`` times this rank's share ``count / loader.global_count`` of the batch.

        The sum over the ranks of the weighted gradients is then the mean
        gradient over the whole global batch.
        """
        share = count / loader.global_count
        return grad if share == 1.0 else grad * grad.dtype.type(share)

    # -- gradients ------------------------------------------------------------------

    def attach(self, params) -> None:
        """Put the gradients of ``params`` into one contiguous buffer (once per parameter list)."""
        params = list(params)
        if self._params is not None and len(params) == len(self._params) and all(
                a is b for a, b in zip(params, self._params, strict=True)):
            return
        dtypes = {p.data.dtype for p in params}
        dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float64)
        total = sum(p.data.size for p in params)
        flat = np.zeros(total, dtype=dtype)
        views, offset = [], 0
        for p in params:
            view = flat[offset:offset + p.data.size].reshape(p.data.shape)
            offset += p.data.size
            if p.grad is not None:
                view[...] = p.grad
                if p.grad.dtype == dtype:
                    p.grad = view  # the gradient now lives in the buffer: no packing
            views.append(view)
        self._params, self._flat, self._views = params, flat, views

    def allreduce_gradients(self) -> None:
        """Sum the attached gradients over the ranks with one in-place Allreduce."""
        params, views, flat = self._params, self._views, self._flat
        if params is None:
            raise RuntimeError("DataParallel.attach(params) must be called before "
                               "allreduce_gradients()")
        for p, view in zip(params, views, strict=True):
            if p.grad is None:
                view.fill(0)  # skipped by the optimizer; contributes nothing
            elif p.grad is not view:
                view[...] = p.grad  # mixed dtypes, or a layer replaced the array
        start = time.perf_counter()
        self.allreduce(flat)
        self.allreduce_seconds += time.perf_counter() - start
        self.allreduce_calls += 1
        for p, view in zip(params, views, strict=True):
            if p.grad is not None and p.grad is not view:
                p.grad[...] = view

    def reset_timer(self) -> None:
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0

    def epoch_stats(self) -> dict:
        """``ranks`` and ``allreduce_seconds`` (this rank's, since :meth:`reset_timer`)."""
        return {"ranks": self.size, "allreduce_seconds": self.allreduce_seconds}

    # -- collectives ----------------------------------------------------------------

    def allreduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        self.comm.Allreduce(self._MPI.IN_PLACE, array, op=self._ops[check_reduction(op)])
        return array

    def broadcast(self, array: np.ndarray) -> np.ndarray:
        """Rank 0's ``array`` on every rank, in place."""
        self.comm.Bcast(array, root=0)
        return array

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's ``data`` on every rank (numpy buffers only, no pickle)."""
        header = np.array([-1 if data is None else len(data)], dtype=np.int64)
        self.comm.Bcast(header, root=0)
        size = int(header[0])
        if size < 0:
            raise ValueError("broadcast_bytes: rank 0 has no data")
        buffer = np.frombuffer(data, dtype=np.uint8).copy() if self.is_main \
            else np.empty(size, dtype=np.uint8)
        self.comm.Bcast(buffer, root=0)
        return buffer.tobytes()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        buffer = np.array([1 if flag else 0], dtype=np.int64)
        self.comm.Bcast(buffer, root=0)
        return bool(buffer[0])

    def read_file(self, path: str | os.PathLike) -> bytes:
        """Rank 0 reads ``path`` and broadcasts its bytes: no shared file system is needed."""
        return self.broadcast_bytes(Path(path).read_bytes() if self.is_main else None)

    # -- model state ----------------------------------------------------------------------

    @staticmethod
    def _state_arrays(model: nn.Module) -> Iterator[tuple[str, np.ndarray]]:
        for name, param in model.named_parameters():
            yield name, param.data
        yield from model.named_buffers()

    def broadcast_model(self, model: nn.Module) -> None:
        """Overwrite every rank's weights and buffers with rank 0's (in place)."""
        for _, array in self._state_arrays(model):
            target = array if array.flags.c_contiguous else np.ascontiguousarray(array)
            self.comm.Bcast(target.reshape(-1) if target.ndim else target.reshape(1), root=0)
            if target is not array:
                array[...] = target

    def average_buffers(self, model: nn.Module) -> None:
        """Replace floating-point buffers (running statistics) by their mean over the ranks."""
        buffers = [array for _, array in model.named_buffers() if array.dtype.kind == "f"]
        if not buffers:
            return
        flat = self.allreduce(np.concatenate([array.ravel().astype(np.float64)
                                              for array in buffers]))
        flat /= self.size
        offset = 0
        for array in buffers:
            array[...] = flat[offset:offset + array.size].reshape(array.shape)
            offset += array.size

    @classmethod
    def checksum(cls, model: nn.Module) -> int:
        """CRC-32 of the raw bytes of every weight and buffer, in state-dict order."""
        crc = 0
        for _, array in cls._state_arrays(model):
            crc = zlib.crc32(np.ascontiguousarray(array).view(np.uint8).ravel(), crc)
        return crc

    def check_consistent(self, model: nn.Module, when: str) -> None:
        """Raise :class:`WeightsDivergedError` on every rank unless all weights are identical."""
        mine = np.array([self.checksum(model)], dtype=np.int64)
        everyone = np.empty(self.size, dtype=np.int64)
        self.comm.Allgather(mine, everyone)
        if np.all(everyone == everyone[0]):
            return
        differ = [rank for rank in range(self.size) if everyone[rank] != everyone[0]]
        names = ", ".join(str(rank) for rank in differ)
        values = ", ".join(f"rank {rank} {int(value):08x}" for rank, value in enumerate(everyone))
        raise WeightsDivergedError(
            f"the weights differ between ranks {when}: rank{'s' if len(differ) > 1 else ''} "
            f"{names} disagree{'' if len(differ) > 1 else 's'} with rank 0 (CRC-32 of the "
            f"weights and buffers: {values}); the ranks no longer train the same model"
        )

    # -- faults -----------------------------------------------------------------------------

    def abort(self, error: BaseException, code: int = 1):
        """Print ``error`` with this rank's id on stderr and end every rank (MPI_Abort)."""
        try:
            claim = getattr(self.comm, "claim_report", None)
            if claim is not None and not claim():
                return  # another rank reports (the same error, met at once); end quietly
            if not isinstance(error, _EXPECTED_ERRORS):
                traceback.print_exception(type(error), error, error.__traceback__,
                                          file=sys.stderr)
            message = str(error) or type(error).__name__
            print(f"cnnblas: rank {self.rank} of {self.size}: {type(error).__name__}: {message}",
                  file=sys.stderr, flush=True)
            sys.stdout.flush()
        finally:
            self.comm.Abort(code)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Abort every rank when the body raises (except a :class:`CollectiveError`)."""
        try:
            yield
        except CollectiveError:
            raise
        except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001
            self.abort(error)
