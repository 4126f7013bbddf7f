"""Data-parallel training: processes on one machine, or MPI ranks on one machine or a cluster.

``mpiexec -n P cnnblas train ...`` (or ``mpiexec -n P python script.py`` with a
:class:`cnnblas.train.Trainer`) runs P copies of the program, the *ranks*. Each
holds the whole model and the whole data set, trains on its share of every
batch and averages the gradients with the other ranks, so all ranks take the
same optimizer steps and keep bit-identical weights.

Processes on one machine, without MPI
    ``cnnblas train`` does the same by itself on a machine with several
    cores: by default (``--processes auto``, :mod:`cnnblas.cli.processes`) it
    starts one process of one thread per core with :func:`run_ranks`
    (:mod:`cnnblas.distributed.launch`), and each connects a
    :class:`SharedMemoryComm` (:mod:`cnnblas.distributed.shared`): the part
    of the mpi4py communicator that :class:`DataParallel` uses, over shared
    memory, so everything below holds unchanged. A process of one thread runs
    its part of each batch *and* its own Python (the layers' bookkeeping, the
    loss, the optimizer), which the threads of one process cannot share: two
    processes of one thread train LeNet-5 faster than one process of two
    threads. This is the command line's default only: a Python program with a
    :class:`~cnnblas.train.Trainer` runs in one process (unless started by
    ``mpiexec``), and ``Trainer.fit`` never starts processes.

Launch and detection
    ``Trainer(..., comm=None)`` (the default) looks at the environment: only
    when an MPI launcher started this process as one of several (``PMI_SIZE``,
    ``OMPI_COMM_WORLD_SIZE``, ``MV2_COMM_WORLD_SIZE``, ``PMI_RANK`` /
    ``PMIX_RANK``, or ``CNNBLAS_MPI=1``) does it import :mod:`mpi4py` and use
    ``MPI.COMM_WORLD``. A plain ``python``/``cnnblas`` process never imports
    mpi4py, so cnnblas works unchanged without it. ``comm=False`` (or
    ``CNNBLAS_MPI=0``) keeps every process on its own; an mpi4py communicator
    can also be given explicitly. A world of one rank is a single process.

Worlds
    :func:`init` returns a *world*: a :class:`DataParallel` over the
    communicator for several ranks, a :class:`LocalWorld` for one process.
    Both have the same methods (the local ones do nothing or return their
    input), so the trainer is written once for both.

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
    ends every rank (no hang); on :class:`SharedMemoryComm` the rank exits and
    the launcher ends the others (and names a rank that was killed). Errors
    that every rank detects together (the weights check) are raised normally
    on all ranks. Only rank 0 writes checkpoints (atomically), so an abort
    leaves the last one intact.

Checkpoints
    They hold global state only (weights, optimizer, schedule, the global
    data-loader position), so a run can resume with a different number of
    ranks, or on one process. Rank 0 reads the file and broadcasts its bytes:
    no shared file system is needed.

Threads
    ``cnnblas train`` gives each rank (or process) ``cores // ranks-on-this-node`` threads
    (at least 1; when the launcher bound the rank to fewer cores, those);
    ``--threads`` overrides. Python users call :func:`threads_per_rank` and
    :func:`cnnblas.set_num_threads`.
"""

from cnnblas.distributed import launch
from cnnblas.distributed.batchnorm import SyncBatchNorm2d, convert_sync_batchnorm
from cnnblas.distributed.launch import run_ranks
from cnnblas.distributed.loader import ShardedLoader
from cnnblas.distributed.mpi import DataParallel, init, launched_size
from cnnblas.distributed.shared import PeerLostError, SharedMemoryComm
from cnnblas.distributed.world import (
    CollectiveError,
    LocalWorld,
    WeightsDivergedError,
    World,
    threads_per_rank,
)

__all__ = [
    "World", "DataParallel", "LocalWorld", "ShardedLoader", "SyncBatchNorm2d", "CollectiveError",
    "WeightsDivergedError", "launched_size", "init", "threads_per_rank",
    "convert_sync_batchnorm", "SharedMemoryComm", "PeerLostError", "run_ranks", "launch",
]
