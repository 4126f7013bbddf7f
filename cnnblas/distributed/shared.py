"""A communicator for ranks on one machine: shared memory for the data, sockets for the signals.

:class:`SharedMemoryComm` implements the part of the mpi4py communicator
interface that :class:`~cnnblas.distributed.DataParallel` calls (``Get_rank``,
``Get_size``, ``Split_type``, ``Allreduce`` in place with sum or max,
``Bcast``, ``Allgather``, ``Abort``), so the data-parallel world, the
sharded loader, synchronised BatchNorm, the weights check and the checkpoints
work on it unchanged and without MPI.

Data
    One :class:`multiprocessing.shared_memory.SharedMemory` segment holds, for
    each rank, two *slots* of ``slot_bytes`` bytes (one per parity of the
    collective's sequence number). A collective copies this rank's data into
    its slot, waits until every rank has done the same (the barrier below),
    then reads the slots it needs: an Allreduce sums (or takes the maximum of)
    the P slots in rank order, ``((s0 + s1) + s2) + ...``, the same operations
    on every rank, so all ranks get bit-identical results. Arrays larger than
    a slot go through in chunks. A rank overwrites a slot of parity k only
    after the barrier of the next collective, which every rank reaches only
    once it has finished reading the slots of this one: one barrier per
    collective suffices.

Signals
    Rank 0 holds a connected stream socket to every other rank. At a barrier
    each other rank sends rank 0 one byte and waits for one byte back; rank 0
    waits for a byte from each, then answers all. A socket's send and the
    receive that sees its byte order the memory writes before them (the
    kernel's locks), on every architecture. The receive first polls without
    blocking for :data:`SPIN_SECONDS` (a few microseconds per poll, yielding
    the core between polls: the other rank is usually close behind), then
    blocks in ``select`` with a timeout.
    Waits watch the other processes: a rank that ends closes its sockets, so
    the ranks waiting for it see the end of the stream at once; a rank whose
    parent (the launcher) has gone stops waiting too.

Faults
    :meth:`SharedMemoryComm.Abort` ends this process with the given code (the
    launcher of :mod:`cnnblas.distributed.launch` then ends the others). A
    rank that sees another one end inside a collective raises
    :class:`PeerLostError`, or, when ``quiet_exit`` is set (under the launcher,
    which reports the rank that failed), exits at once with
    :data:`PEER_LOST_EXIT` without printing.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

__all__ = ["SharedMemoryComm", "PeerLostError", "PEER_LOST_EXIT", "SPIN_SECONDS",
           "DEFAULT_SLOT_BYTES", "segment_bytes", "attach_segment"]

#: How long a wait polls its socket before it blocks (seconds). The ranks of a
#: training step arrive within a millisecond or so of each other, and a process
#: blocked in ``select`` can take hundreds of microseconds to wake up (on a
#: virtual machine): polling for 0.2 ms instead of 5 ms made 2 ranks of LeNet-5
#: at batch 32 each clearly slower (see benchmarks/LOG.md). A longer wait (a
#: rank writing a checkpoint) blocks and leaves the core to others.
SPIN_SECONDS = 5e-3
#: Bytes of one slot (one rank, one parity): a larger array goes in chunks.
DEFAULT_SLOT_BYTES = 4 << 20
#: Exit code of a rank that ended because another rank ended during a collective.
PEER_LOST_EXIT = 3
#: A blocked wait wakes this often (seconds) to check that the launcher is alive.
_WATCH_SECONDS = 1.0


class PeerLostError(ConnectionError):
    """Another rank ended (or closed its connection) while this one waited for it."""


class _Constants:
    """The MPI constants :class:`~cnnblas.distributed.DataParallel` passes to the
    communicator (mpi4py's ``MPI`` module for an MPI communicator)."""

    SUM = "sum"
    MAX = "max"
    IN_PLACE = object()  # compared by identity, as mpi4py's
    COMM_TYPE_SHARED = "shared"


_REDUCTIONS = {_Constants.SUM: np.add, _Constants.MAX: np.maximum}


def segment_bytes(size: int, slot_bytes: int = DEFAULT_SLOT_BYTES) -> int:
    """Bytes of the shared segment of ``size`` ranks (two slots per rank)."""
    return 2 * size * slot_bytes


def attach_segment(name: str):
    """Map the existing segment ``name`` without taking ownership of it.

    The process that created the segment unlinks it; an attaching process
    must not. On Linux the segment is the file ``/dev/shm/<name>``, mapped
    directly (an ``mmap.mmap``); elsewhere a
    :class:`~multiprocessing.shared_memory.SharedMemory` that its resource
    tracker forgets (before Python 3.13 that tracker, a process of its own
    started for the purpose, registers every segment opened and unlinks it
    when the process ends).
    """
    path = Path("/dev/shm") / name.lstrip("/")
    if sys.platform.startswith("linux") and path.is_file():
        descriptor = os.open(path, os.O_RDWR)
        try:
            return mmap.mmap(descriptor, 0)
        finally:
            os.close(descriptor)
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    from multiprocessing import resource_tracker

    segment = shared_memory.SharedMemory(name)
    resource_tracker.unregister(segment._name, "shared_memory")  # noqa: SLF001
    return segment


class _LocalGroup:
    """What ``Split_type(COMM_TYPE_SHARED)`` returns: every rank is on this machine."""

    def __init__(self, size: int):
        self._size = size

    def Get_size(self) -> int:  # noqa: N802  (mpi4py's name)
        return self._size

    def Free(self) -> None:  # noqa: N802
        """Nothing to free."""


class SharedMemoryComm:
    """An mpi4py-like communicator of ``size`` processes on one machine.

    Parameters
    ----------
    rank, size : int
        This process's rank, ``0 <= rank < size``, and the number of ranks.
    segment : multiprocessing.shared_memory.SharedMemory or mmap.mmap
        The shared segment (see :func:`attach_segment`), at least
        :func:`segment_bytes` ``(size, slot_bytes)`` bytes, the same on every
        rank (the caller owns it: this class neither closes nor unlinks it).
    sockets : dict of int to socket.socket
        On rank 0, a connected stream socket to every other rank (keyed by
        rank); on the others, ``{0: socket to rank 0}``.
    slot_bytes : int
        Bytes of one slot, a multiple of 64.
    parent : int or None
        The launcher's process id: a wait ends (as if a rank were lost) when
        this process's parent is no longer it. None: not watched.
    quiet_exit : bool
        On a lost rank, exit with :data:`PEER_LOST_EXIT` instead of raising.
    report_lock : int or None
        A file descriptor of one file opened for appending, shared by the
        ranks: a rank that aborts appends its rank, and the rank whose entry
        comes first alone reports its error, so an error every rank meets at
        once is printed once. None: every rank reports.

    Attributes
    ----------
    MPI
        The constants DataParallel passes (``SUM``, ``MAX``, ``IN_PLACE``,
        ``COMM_TYPE_SHARED``), in place of mpi4py's ``MPI`` module.
    """

    MPI = _Constants

    def __init__(self, rank: int, size: int, segment,
                 sockets: dict[int, socket.socket], slot_bytes: int = DEFAULT_SLOT_BYTES,
                 parent: int | None = None, quiet_exit: bool = False,
                 report_lock: int | None = None):
        if not 0 <= rank < size:
            raise ValueError(f"rank must be in [0, {size}), got {rank}")
        if slot_bytes < 64 or slot_bytes % 64:
            raise ValueError(f"slot_bytes must be a positive multiple of 64, got {slot_bytes}")
        # The segment's own buffer (no view of it held here, so its owner can close it).
        buffer = segment.buf if hasattr(segment, "buf") else segment
        if len(buffer) < segment_bytes(size, slot_bytes):
            raise ValueError(f"the shared segment has {len(buffer)} bytes, "
                             f"{segment_bytes(size, slot_bytes)} needed for {size} ranks")
        expected = set(range(1, size)) if rank == 0 else {0}
        if set(sockets) != expected:
            raise ValueError(f"rank {rank} needs sockets to ranks {sorted(expected)}, "
                             f"got {sorted(sockets)}")
        self.rank, self.size = rank, size
        self.slot_bytes = slot_bytes
        self._segment = segment  # keeps the mapping alive
        self._buffer = buffer
        self._sockets = sockets
        for peer in sockets.values():
            peer.setblocking(True)
        self._parent = parent
        self._quiet_exit = quiet_exit
        self._report_lock = report_lock
        self._sequence = 0  # barriers passed: the same on every rank
        self.wait_seconds = 0.0  # time spent in barriers (waiting for the others included)

    def __repr__(self) -> str:
        return f"SharedMemoryComm(rank={self.rank}, size={self.size})"

    # -- mpi4py's interface -------------------------------------------------------

    def Get_rank(self) -> int:  # noqa: N802
        return self.rank

    def Get_size(self) -> int:  # noqa: N802
        return self.size

    def Split_type(self, split_type, key: int = 0) -> _LocalGroup:  # noqa: N802
        """The ranks sharing memory with this one: all of them."""
        if split_type != _Constants.COMM_TYPE_SHARED:
            raise ValueError(f"only COMM_TYPE_SHARED is supported, got {split_type!r}")
        return _LocalGroup(self.size)

    def Allreduce(self, sendbuf, recvbuf: np.ndarray, op=_Constants.SUM) -> None:  # noqa: N802
        """Reduce ``recvbuf`` over the ranks in place (``sendbuf`` must be ``MPI.IN_PLACE``).

        The result is the same, bit for bit, on every rank: the slots are
        combined in rank order.
        """
        if sendbuf is not _Constants.IN_PLACE:
            raise ValueError("only the in-place Allreduce (sendbuf=MPI.IN_PLACE) is supported")
        if op not in _REDUCTIONS:
            raise ValueError(f"op must be MPI.SUM or MPI.MAX, got {op!r}")
        reduce = _REDUCTIONS[op]
        flat = _flat(recvbuf, "recvbuf")
        step = max(1, self.slot_bytes // flat.itemsize)
        for low in range(0, flat.size, step):
            chunk = flat[low:low + step]
            slots = self._slots(chunk.dtype, chunk.size)
            slots[self.rank][...] = chunk
            self._barrier()
            if self.size == 1:
                chunk[...] = slots[0]
                continue
            reduce(slots[0], slots[1], out=chunk)
            for slot in slots[2:]:
                reduce(chunk, slot, out=chunk)

    def Bcast(self, buf: np.ndarray, root: int = 0) -> None:  # noqa: N802
        """Overwrite ``buf`` with ``root``'s, in place."""
        self._check_root(root)
        flat = _flat(buf, "buf").view(np.uint8)
        for low in range(0, max(flat.size, 1), self.slot_bytes):
            chunk = flat[low:low + self.slot_bytes]
            slots = self._slots(np.uint8, chunk.size)
            if self.rank == root:
                slots[root][...] = chunk
            self._barrier()
            if self.rank != root:
                chunk[...] = slots[root]

    def Allgather(self, sendbuf: np.ndarray, recvbuf: np.ndarray) -> None:  # noqa: N802
        """``recvbuf`` (``size`` times the bytes of ``sendbuf``) gets every rank's
        ``sendbuf``, in rank order."""
        send = _flat(sendbuf, "sendbuf", writeable=False).view(np.uint8)
        receive = _flat(recvbuf, "recvbuf").view(np.uint8)
        if receive.size != self.size * send.size:
            raise ValueError(f"recvbuf must have {self.size} x {send.size} bytes, "
                             f"got {receive.size}")
        parts = receive.reshape(self.size, send.size)
        for low in range(0, max(send.size, 1), self.slot_bytes):
            chunk = send[low:low + self.slot_bytes]
            slots = self._slots(np.uint8, chunk.size)
            slots[self.rank][...] = chunk
            self._barrier()
            for rank, slot in enumerate(slots):
                parts[rank, low:low + chunk.size] = slot

    def claim_report(self) -> bool:
        """True for the first rank that asks (it reports the error that ends the run),
        False for the others; always True without a ``report_lock``."""
        if self._report_lock is None:
            return True
        mine = self.rank.to_bytes(4, "little")
        try:
            os.write(self._report_lock, mine)  # appended atomically (O_APPEND)
            return os.pread(self._report_lock, 4, 0) == mine
        except OSError:
            return True

    def Abort(self, errorcode: int = 1) -> None:  # noqa: N802
        """End this process with ``errorcode`` (its sockets close: the ranks waiting for
        it stop; under the launcher, the launcher ends the others)."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(errorcode))

    # -- slots and barrier ------------------------------------------------------------

    def _check_root(self, root: int) -> None:
        if not 0 <= root < self.size:
            raise ValueError(f"root must be in [0, {self.size}), got {root}")

    def _slots(self, dtype, count: int) -> list[np.ndarray]:
        """Every rank's slot of the next barrier's parity, as ``count`` items of ``dtype``."""
        base = (self._sequence % 2) * self.size * self.slot_bytes
        dtype = np.dtype(dtype)
        return [np.ndarray(count, dtype, self._buffer, base + rank * self.slot_bytes)
                for rank in range(self.size)]

    def _barrier(self) -> None:
        """Return once every rank has entered this barrier (the slots are written)."""
        start = time.perf_counter()
        token = bytes([self._sequence % 256])
        self._sequence += 1
        if self.rank == 0:
            for rank, peer in self._sockets.items():
                self._receive(peer, rank, token)
            for rank, peer in self._sockets.items():
                self._send(peer, rank, token)
        else:
            self._send(self._sockets[0], 0, token)
            self._receive(self._sockets[0], 0, token)
        self.wait_seconds += time.perf_counter() - start

    def _send(self, peer: socket.socket, rank: int, token: bytes) -> None:
        try:
            peer.sendall(token)
        except OSError:
            self._lost(rank)

    def _receive(self, peer: socket.socket, rank: int, token: bytes) -> None:
        """Wait for ``token`` from ``rank``: poll for :data:`SPIN_SECONDS`, then block."""
        deadline = time.perf_counter() + SPIN_SECONDS
        while True:
            try:
                data = peer.recv(1, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                if time.perf_counter() > deadline:
                    data = self._blocking_receive(peer, rank)
                    break
                _yield()
            except OSError:
                data = b""
                break
        if not data:
            self._lost(rank)
        if data != token:
            raise RuntimeError(f"rank {self.rank}: collective {token[0]} (mod 256) met "
                               f"collective {data[0]} of rank {rank}: the ranks called "
                               "collectives in different orders")

    def _blocking_receive(self, peer: socket.socket, rank: int) -> bytes:
        while True:
            ready, _, _ = select.select([peer], [], [], _WATCH_SECONDS)
            if ready:
                try:
                    return peer.recv(1)
                except OSError:
                    return b""
            if self._parent is not None and os.getppid() != self._parent:
                self._lost(rank, "the launcher ended")

    def _lost(self, rank: int, why: str = "") -> None:
        if self._quiet_exit:
            self.Abort(PEER_LOST_EXIT)
        raise PeerLostError(f"rank {self.rank} of {self.size}: "
                            + (why or f"rank {rank} ended during a collective"))


#: Between two polls a waiting rank offers its core to any other process ready to
#: run on it (as MPICH's polling does): on a loaded machine the rank being
#: waited for, or someone else's work, runs sooner (measured in benchmarks/LOG.md).
_yield = getattr(os, "sched_yield", lambda: None)


def _flat(array: np.ndarray, name: str, writeable: bool = True) -> np.ndarray:
    """A 1-d view of the C-contiguous (and ``writeable``) ``array`` (0-d arrays too)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not array.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return array.reshape(-1)
