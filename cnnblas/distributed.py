"""Data-parallel training on MPI (mpi4py): the same command on one machine or a cluster.

``mpiexec -n P cnnblas train ...`` (or ``mpiexec -n P python script.py`` with a
:class:`cnnblas.train.Trainer`) runs P copies of the program, the *ranks*. Each
holds the whole model and the whole data set, trains on its share of every
batch and averages the gradients with the other ranks, so all ranks take the
same optimizer steps and keep bit-identical weights.

Launch and detection
    ``Trainer(..., comm=None)`` (the default) looks at the environment: only
    when an MPI launcher started this process as one of several (``PMI_SIZE``,
    ``OMPI_COMM_WORLD_SIZE``, ``MV2_COMM_WORLD_SIZE``, ``PMI_RANK`` /
    ``PMIX_RANK``, or ``CNNBLAS_MPI=1``) does it import :mod:`mpi4py` and use
    ``MPI.COMM_WORLD``. A plain ``python``/``cnnblas`` process never imports
    mpi4py, so cnnblas works unchanged without it. ``comm=False`` (or
    ``CNNBLAS_MPI=0``) keeps every process on its own; an mpi4py communicator
    can also be given explicitly. A world of one rank is a single process.

Batch semantics
    ``batch_size`` is the *global* batch B: each rank trains on about B/P
    samples per step. Every epoch's order is the single-process order (the
    same seeded permutation on all ranks); global batch i holds exactly the
    samples of batch i of a one-process run, split into P contiguous parts
    (sizes differ by at most one when P does not divide the batch). Rank r
    scales the gradient of its loss by ``n_r / n`` (its share of the batch's
    n samples), the ranks sum their gradients with one ``Allreduce``, and the
    result is the mean gradient over the n samples: P ranks with global batch
    B follow a one-process run with batch B, up to floating-point summation
    order. The last, partial batch is handled the same way (weighted, not
    dropped); only a batch with fewer samples than ranks (the last one, when
    ``N mod B`` is between 1 and P - 1) is skipped by every rank.

Gradient averaging
    The gradients of every optimized parameter live in one preallocated
    contiguous buffer (each ``Parameter.grad`` becomes a view into it), so a
    step costs exactly one in-place ``Allreduce`` and no packing copy.
    (Parameters of mixed dtypes fall back to packing into a float64 buffer.)

Consistency
    At the start of ``fit`` rank 0's weights and buffers are broadcast to all
    ranks. After every epoch a CRC-32 of the raw bytes of the weights and
    buffers is gathered from every rank; a mismatch raises
    :class:`WeightsDivergedError` on every rank, naming the ranks that differ
    from rank 0.

BatchNorm
    By default :class:`~cnnblas.nn.BatchNorm2d` normalises with per-rank
    batch statistics (over the rank's B/P samples), and the running
    statistics are averaged over the ranks at the end of every epoch (so
    evaluation and checkpoints see one model). ``Trainer(...,
    sync_batchnorm=True)`` turns every BatchNorm2d into a
    :class:`SyncBatchNorm2d`: statistics of the global batch (one Allreduce of
    per-channel sums in forward, one in backward), which makes P ranks follow a
    one-process run with batch B, BatchNorm included.

Faults
    An exception on any rank during ``fit``/``evaluate`` prints
    ``cnnblas: rank R of P: <error>`` on stderr and calls ``MPI_Abort``, which
    ends every rank (no hang). Errors that every rank detects together (the
    weights check) are raised normally on all ranks. Only rank 0 writes
    checkpoints (atomically), so an abort leaves the last one intact.

Checkpoints
    They hold global state only (weights, optimizer, schedule, the global
    data-loader position), so a run can resume with a different number of
    ranks, or on one process. Rank 0 reads the file and broadcasts its bytes:
    no shared file system is needed.

Threads
    ``cnnblas train`` gives each rank ``cores // ranks-on-this-node`` threads
    (at least 1; when the launcher bound the rank to fewer cores, those);
    ``--threads`` overrides. Python users call :func:`threads_per_rank` and
    :func:`cnnblas.set_num_threads`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
import zlib
from collections.abc import Iterator

import numpy as np

from cnnblas import nn
from cnnblas.data import DataLoader

__all__ = [
    "DataParallel", "ShardedLoader", "SyncBatchNorm2d", "CollectiveError",
    "WeightsDivergedError", "launched_size", "init", "threads_per_rank",
]

#: Environment variables through which MPI launchers announce the world size.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
#: Set by launchers that do not announce the size (Slurm's PMIx, ...).
_RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")
#: Errors reported as one line; anything else also gets its traceback.
_EXPECTED_ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError, OSError,
                    ImportError, KeyboardInterrupt)


class CollectiveError(RuntimeError):
    """An error raised identically on every rank (no abort needed)."""


class WeightsDivergedError(CollectiveError):
    """The ranks' weights are no longer bit-identical."""


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


def init(comm=None) -> DataParallel | None:
    """The data-parallel context for ``comm``, or ``None`` for a single process.

    Parameters
    ----------
    comm : None, False or mpi4py communicator
        None: ``MPI.COMM_WORLD`` when an MPI launcher started several
        processes (see :func:`launched_size`), else a single process (mpi4py
        is not imported). False: a single process. A communicator: that one.
        A communicator of one rank is a single process too.
    """
    if comm is False:
        return None
    if comm is None:
        size = launched_size()
        if size is None or size == 1:
            return None
        MPI = _import_mpi("this process was started by an MPI launcher"
                          + (f" as one of {size} processes" if size else ""))
        comm = MPI.COMM_WORLD
    elif not all(hasattr(comm, name) for name in ("Get_size", "Get_rank", "Allreduce")):
        raise TypeError(f"comm must be None, False or an mpi4py communicator, got {comm!r}")
    if comm.Get_size() == 1:
        return None
    return DataParallel(comm)


def threads_per_rank(world: DataParallel | None, cores: int | None = None) -> int:
    """Threads for one rank: the cores of this node divided among its ranks (>= 1).

    When the launcher bound this process to fewer cores than the machine has,
    those cores are this rank's own and all of them are used.
    """
    from cnnblas.threads import default_threads, max_threads

    available = default_threads() if cores is None else int(cores)
    if world is not None and available >= (os.cpu_count() or available):
        available //= world.local_size
    return max(1, min(available, max_threads()))


# --------------------------------------------------------------------------- context


class DataParallel:
    """Collectives of one data-parallel training run over an mpi4py communicator.

    Attributes
    ----------
    comm : mpi4py.MPI.Comm
    rank, size : int
    allreduce_seconds : float
        Wall time spent in the gradient Allreduce since the last
        :meth:`reset_timer` (this rank's clock).
    allreduce_calls : int
    """

    def __init__(self, comm):
        from mpi4py import MPI

        self._MPI = MPI
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
    def is_main(self) -> bool:
        return self.rank == 0

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
        self.comm.Allreduce(self._MPI.IN_PLACE, flat, op=self._MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - start
        self.allreduce_calls += 1
        for p, view in zip(params, views, strict=True):
            if p.grad is not None and p.grad is not view:
                p.grad[...] = view

    def reset_timer(self) -> None:
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0

    # -- small collectives ------------------------------------------------------------

    def sum(self, values) -> np.ndarray:
        """Element-wise float64 sum of ``values`` over the ranks."""
        buffer = np.array(values, dtype=np.float64).ravel()
        self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
        return buffer

    def max(self, value: float) -> float:
        buffer = np.array([value], dtype=np.float64)
        self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.MAX)
        return float(buffer[0])

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
        flat = np.concatenate([array.ravel().astype(np.float64) for array in buffers])
        self.comm.Allreduce(self._MPI.IN_PLACE, flat, op=self._MPI.SUM)
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


# --------------------------------------------------------------------------- data


class ShardedLoader(DataLoader):
    """A :class:`~cnnblas.data.DataLoader` over the global batches, yielding this rank's part.

    Batch ``i`` of an epoch is batch ``i`` of the same loader on one process
    (``batch_size`` is the global batch), cut into ``world.size`` contiguous
    parts; this rank gets part ``world.rank``. :attr:`global_count` is the
    size of the global batch last yielded. A global batch with fewer samples
    than ranks is skipped. :meth:`state_dict` is the global position, the
    same as a one-process loader's, so checkpoints move between rank counts.
    The shuffling seed is rank 0's (broadcast on construction).
    """

    def __init__(self, x, y, batch_size: int, world: DataParallel, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False):
        super().__init__(x, y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.world = world
        self.global_count = 0
        self.sync_seed()

    @classmethod
    def from_loader(cls, loader: DataLoader, world: DataParallel) -> ShardedLoader:
        """A sharded copy of ``loader`` (same data, configuration, seed and position)."""
        sharded = cls(loader.x, loader.y, loader.batch_size, world, shuffle=loader.shuffle,
                      drop_last=loader.drop_last)
        sharded.load_state_dict(loader.state_dict())
        sharded.sync_seed()
        return sharded

    def sync_seed(self) -> None:
        """Use rank 0's shuffling seed (``seed=None`` draws a different one per process)."""
        seed = np.ascontiguousarray(self._seed, dtype=np.uint32)
        self.world.comm.Bcast(seed, root=0)
        self._seed = seed

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


# --------------------------------------------------------------------------- batchnorm


class SyncBatchNorm2d(nn.BatchNorm2d):
    """:class:`~cnnblas.nn.BatchNorm2d` with the statistics of the global batch.

    Training mode sums, over the ranks, the per-channel sample count, sum and
    sum of squares (one Allreduce of ``2C + 1`` float64 in forward; the local
    sums of squares are taken around the local mean for accuracy) and, in
    backward, ``Σ dy`` and ``Σ dy·x̂`` (one Allreduce of ``2C``). The
    parameter gradients stay local (the trainer's gradient Allreduce sums
    them). Eval mode is BatchNorm2d's (running statistics, no communication).
    Made by :func:`convert_sync_batchnorm`; the state-dict keys do not change.
    """

    world: DataParallel

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        gamma, beta = self._checked_affine(x)
        n, c, h, w = x.shape
        local = n * h * w
        stats = np.zeros(2 * c + 1, dtype=np.float64)
        if local:
            local_mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
            centered = x - self._per_channel(local_mean)
            stats[:c] = local_mean * local
            stats[c:2 * c] = np.square(centered).sum(axis=(0, 2, 3), dtype=np.float64) \
                + local * np.square(local_mean)
        stats[2 * c] = local
        self.world.comm.Allreduce(self.world._MPI.IN_PLACE, stats, op=self.world._MPI.SUM)
        count = stats[2 * c]
        if count < 2:
            raise ValueError(
                f"{self._describe()} needs more than 1 value per channel in training mode, "
                f"got {int(count)} over all ranks"
            )
        mean = stats[:c] / count
        var = np.maximum(stats[c:2 * c] / count - np.square(mean), 0.0)  # biased
        y, x_hat, inv_std = self._normalize_and_track(x - self._per_channel(mean), mean, var,
                                                      count, gamma, beta)
        self._save_for_backward(x_hat=x_hat, inv_std=inv_std, count=count)
        return y

    def backward(self, dy):
        cache = self._saved_for_backward()
        x_hat = cache["x_hat"]
        self._check_grad(dy, x_hat.shape)
        c = x_hat.shape[1]
        sums = np.empty(2 * c, dtype=np.float64)
        sums[:c] = dy.sum(axis=(0, 2, 3), dtype=np.float64)
        sums[c:] = (dy * x_hat).sum(axis=(0, 2, 3), dtype=np.float64)
        if self.affine:
            self.weight.accumulate_grad(sums[c:].astype(self.dtype))
            self.bias.accumulate_grad(sums[:c].astype(self.dtype))
        self.world.comm.Allreduce(self.world._MPI.IN_PLACE, sums, op=self.world._MPI.SUM)
        return self._input_grad(dy, x_hat, cache["inv_std"], cache["count"], sums[:c], sums[c:])


def convert_sync_batchnorm(model: nn.Module, world: DataParallel | None) -> int:
    """Turn every :class:`~cnnblas.nn.BatchNorm2d` of ``model`` into a :class:`SyncBatchNorm2d`.

    In place (the modules keep their parameters and buffers). Returns how many
    layers were converted; with ``world=None`` (one process) nothing changes.
    """
    if world is None:
        return 0
    converted = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = SyncBatchNorm2d
            converted += 1
        if isinstance(module, SyncBatchNorm2d):
            module.world = world
    return converted


__all__ += ["convert_sync_batchnorm"]
