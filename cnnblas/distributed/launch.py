"""Start P ranks of a command on this machine, watch them, and clean up: no MPI needed.

:func:`run_ranks` is the launcher. It creates the shared segment and the
sockets of a :class:`~cnnblas.distributed.shared.SharedMemoryComm`, starts the
command P times as fresh processes (``subprocess``, never ``fork``: the
thread pools of Numba and OpenBLAS do not survive a fork), each with the
environment variable :data:`ENVIRONMENT` saying its rank, and waits. The
command (in the child) calls :func:`connect` to get its communicator.

Faults never hang
    When a rank ends with an error, or is killed, the launcher gives the others
    :data:`SETTLE_SECONDS` to end by themselves (an error every rank meets is
    reported by rank 0 alone, while the others return at once; the ranks
    waiting for the failed one end as soon as its sockets close), then ends the
    rest (SIGTERM, then SIGKILL after :data:`GRACE_SECONDS`), prints which
    rank was killed by which signal (a rank that raised has printed its own
    error; an error every rank meets at once is printed by one of them, see
    :meth:`SharedMemoryComm.claim_report`), and returns 1. A rank waiting for
    a rank that ended sees its socket close and exits quietly
    (:data:`~cnnblas.distributed.shared.PEER_LOST_EXIT`).
    The children die with the launcher (Linux's parent-death signal; elsewhere
    their waits notice the launcher's end). Ctrl-C reaches the launcher alone
    (the children ignore SIGINT): it stops the ranks and returns
    :data:`INTERRUPTED`. The shared segment is unlinked on every path (if the
    launcher itself is killed with SIGKILL, by Python's resource tracker).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import shared_memory
from pathlib import Path

from cnnblas.distributed.shared import (
    DEFAULT_SLOT_BYTES,
    PEER_LOST_EXIT,
    SharedMemoryComm,
    attach_segment,
    segment_bytes,
)

__all__ = ["SUPPORTED", "ENVIRONMENT", "INTERRUPTED", "GRACE_SECONDS", "SETTLE_SECONDS",
           "SEGMENT_PREFIX",
           "run_ranks", "child_settings", "connect", "exit_rank"]

#: The environment variable that makes a process a rank of :func:`run_ranks` (JSON).
ENVIRONMENT = "CNNBLAS_LOCAL_RANK"
#: Whether this system can run the ranks: POSIX (the sockets are passed as inherited
#: file descriptors, and the waits poll them without blocking).
SUPPORTED = os.name == "posix"
#: Exit code after Ctrl-C (128 + SIGINT).
INTERRUPTED = 130
#: Seconds the ranks get to end after SIGTERM before SIGKILL.
GRACE_SECONDS = 5.0
#: Seconds the other ranks get to end by themselves after one failed, before SIGTERM.
SETTLE_SECONDS = 1.0
#: Name prefix of the shared segments (``/dev/shm/cnnblas-...`` on Linux).
SEGMENT_PREFIX = "cnnblas-"
_POLL_SECONDS = 0.02
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _Terminated(Exception):
    """The launcher received SIGTERM."""


def _raise_terminated(signum, frame):
    raise _Terminated


def run_ranks(command: Sequence[str], size: int, *, program: str = "cnnblas",
              slot_bytes: int = DEFAULT_SLOT_BYTES, env: dict | None = None,
              on_interrupt: Callable[[], None] | None = None) -> int:
    """Run ``command`` as ``size`` ranks of one :class:`SharedMemoryComm`; the exit code.

    Parameters
    ----------
    command : sequence of str
        The program and its arguments, e.g. ``[sys.executable, "-m", "cnnblas",
        "train"]``; each rank's environment has :data:`ENVIRONMENT` set, and
        this checkout of cnnblas first on ``PYTHONPATH``.
    size : int
        Number of ranks, >= 1.
    program : str
        Prefix of the messages about ranks that were killed.
    slot_bytes : int
        See :class:`SharedMemoryComm`.
    env : dict, optional
        The ranks' environment (default: this process's).
    on_interrupt : callable, optional
        Called after Ctrl-C (or SIGTERM) has stopped the ranks, e.g. to say
        what was kept.

    Returns
    -------
    int
        0 when every rank returned 0; :data:`INTERRUPTED` after Ctrl-C (143
        after SIGTERM); 1 when a rank failed.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    segment = shared_memory.SharedMemory(SEGMENT_PREFIX + secrets.token_hex(6), create=True,
                                         size=segment_bytes(size, slot_bytes))
    processes: list[subprocess.Popen] = []
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        processes = _start(command, size, segment.name, slot_bytes, env)
        failed = _watch(processes)
        if failed:
            _settle(processes)
        stopped = _stop(processes)
        if not failed:
            return 0
        _report(processes, stopped, program)
        return 1
    except (KeyboardInterrupt, _Terminated) as interruption:
        if main_thread:  # a second Ctrl-C (or SIGTERM) must not cut the stop short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(processes)
        if on_interrupt is not None:
            on_interrupt()
        return INTERRUPTED if isinstance(interruption, KeyboardInterrupt) else 128 + 15
    finally:
        _stop(processes)
        if main_thread:  # only the main thread handles signals
            signal.signal(signal.SIGTERM, previous)
            if previous_sigint is not None:  # None: a handler set outside Python
                signal.signal(signal.SIGINT, previous_sigint)
        segment.close()
        segment.unlink()


def _start(command, size: int, name: str, slot_bytes: int, env) -> list[subprocess.Popen]:
    """The ``size`` ranks, rank 0 first, each holding its ends of the star of sockets."""
    pairs = {rank: socket.socketpair() for rank in range(1, size)}
    import fcntl  # POSIX only, as the launcher

    report_lock = tempfile.TemporaryFile()  # no name: nothing to clean up
    flags = fcntl.fcntl(report_lock.fileno(), fcntl.F_GETFL)
    fcntl.fcntl(report_lock.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
    environment = dict(os.environ if env is None else env)
    package_root = str(Path(__file__).resolve().parents[2])  # this copy of cnnblas first
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [package_root, environment.get("PYTHONPATH")]))
    processes = []
    # A terminal's Ctrl-C reaches the ranks too, also while they import (before
    # connect()): they inherit SIGINT ignored, which Python keeps at startup.
    ignoring = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignoring else None
    try:
        for rank in range(size):
            ends = ({peer: pair[0] for peer, pair in pairs.items()} if rank == 0
                    else {0: pairs[rank][1]})
            settings = dict(rank=rank, size=size, segment=name, slot_bytes=slot_bytes,
                            parent=os.getpid(), report_lock=report_lock.fileno(),
                            sockets={str(peer): end.fileno() for peer, end in ends.items()})
            processes.append(subprocess.Popen(
                list(command), env={**environment, ENVIRONMENT: json.dumps(settings)},
                pass_fds=[report_lock.fileno(), *(end.fileno() for end in ends.values())],
                stdin=subprocess.DEVNULL))
    except BaseException:
        _stop(processes)
        raise
    finally:
        if ignoring:
            signal.signal(signal.SIGINT, previous)
        report_lock.close()
        for pair in pairs.values():  # the children hold their own copies
            for end in pair:
                end.close()
    return processes


def _watch(processes: list[subprocess.Popen]) -> bool:
    """Wait until every rank has ended with 0 (False) or one has failed (True)."""
    while True:
        codes = [process.poll() for process in processes]
        if any(code not in (None, 0) for code in codes):
            return True
        if all(code == 0 for code in codes):
            return False
        time.sleep(_POLL_SECONDS)


def _settle(processes: list[subprocess.Popen]) -> None:
    """Wait up to :data:`SETTLE_SECONDS` for the ranks to end by themselves."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)


def _stop(processes: list[subprocess.Popen]) -> set[int]:
    """End the ranks still running (SIGTERM, then SIGKILL); the ranks it signalled."""
    signalled = set()
    for rank, process in enumerate(processes):
        if process.poll() is None:
            process.terminate()
            signalled.add(rank)
    deadline = time.monotonic() + GRACE_SECONDS
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return signalled


def _report(processes: list[subprocess.Popen], stopped: set[int], program: str) -> None:
    """Say which ranks ended without a message of their own (killed, or an odd exit code)."""
    size = len(processes)
    lines = []
    for rank, process in enumerate(processes):
        code = process.returncode
        if rank in stopped or code in (0, 1, PEER_LOST_EXIT):
            continue  # stopped by the launcher, succeeded, printed its own error, or lost a peer
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            lines.append(f"{program}: rank {rank} of {size} was killed by {name}")
        else:
            lines.append(f"{program}: rank {rank} of {size} ended with exit code {code}")
    printed = any(process.returncode == 1 for rank, process in enumerate(processes)
                  if rank not in stopped)
    if not lines and not printed:
        lines.append(f"{program}: a rank ended while the others were waiting for it")
    for line in lines:
        print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- child side


def child_settings() -> dict | None:
    """This rank's settings from :data:`ENVIRONMENT`, or None outside :func:`run_ranks`."""
    text = os.environ.get(ENVIRONMENT)
    return None if not text else json.loads(text)


def _die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM when the launcher ends (Linux); leave if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass  # the waits still watch the parent
    if os.getppid() != parent:
        raise SystemExit(PEER_LOST_EXIT)


def exit_rank(code: int):
    """End this rank with ``code`` at once, once its output is flushed.

    As :mod:`multiprocessing` ends its workers: the interpreter's teardown
    (about a second for a process that trained, measured) would delay the
    launcher's exit, and the rank has written its files already.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def connect() -> SharedMemoryComm:
    """This rank's communicator, from :data:`ENVIRONMENT` (call once, in the main thread).

    Also: SIGINT is ignored (Ctrl-C is the launcher's to handle), SIGTERM
    raises ``SystemExit`` (so ``finally`` blocks run), and the process ends
    when the launcher does.
    """
    settings = child_settings()
    if settings is None:
        raise RuntimeError(f"not started by cnnblas.distributed.launch ({ENVIRONMENT} is unset)")
    parent = int(settings["parent"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _die_with_parent(parent)
    sockets = {int(peer): socket.socket(fileno=int(fd))
               for peer, fd in settings["sockets"].items()}
    segment = attach_segment(settings["segment"])
    return SharedMemoryComm(int(settings["rank"]), int(settings["size"]), segment, sockets,
                            slot_bytes=int(settings["slot_bytes"]), parent=parent,
                            quiet_exit=True, report_lock=int(settings["report_lock"]))
