"""How ``cnnblas train`` uses the cores: ``--processes``, and the launch of the ranks.

By default (``--processes auto``) a machine with P >= 2 usable cores trains
with P processes of one thread each (data-parallel over shared memory, see
:mod:`cnnblas.distributed.launch`): every process runs its part of each batch
and its own Python (the layers' bookkeeping, the loss, the optimizer), which
the threads of one process cannot share. ``auto`` keeps one process when

- the process was started by an MPI launcher (MPI already decides the ranks);
- ``--threads`` is given without ``--processes`` (``--threads 1`` is the
  one-core run);
- fewer than 2 cores are usable, or the system is not POSIX (the launcher
  passes sockets to the processes it starts);
- the global batch gives fewer than :data:`MIN_IMAGES_PER_PROCESS` images to
  each of 2 processes (then the run's first line says so);
- fewer than 2 of the cores are idle when the run starts (sampled for
  :data:`IDLE_SAMPLE_SECONDS` from ``/proc/stat`` on Linux; the first line
  says so). Ranks wait for each other at every step: on cores another
  program keeps busy, each step waits for the rank that is not running, and
  on the 2-core benchmark machine with one core taken, 2 processes trained
  LeNet-5 2-3x slower than one thread (see benchmarks/LOG.md). With some
  cores busy, ``auto`` starts one process per idle core.

It starts at most :data:`MAX_AUTO_PROCESSES` processes and at most
``batch // MIN_IMAGES_PER_PROCESS`` (each process holds a copy of the data
set, and BatchNorm normalises each process's part of the batch); the cores
left over become threads (``cores // processes`` per process).
``--processes N`` asks for N processes whatever the cores. The Python API
(:class:`cnnblas.train.Trainer`) never starts processes by itself.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

from cnnblas import distributed
from cnnblas.cli.defaults import resolve_defaults
from cnnblas.distributed import launch

__all__ = ["MIN_IMAGES_PER_PROCESS", "MAX_AUTO_PROCESSES", "MAX_PROCESSES", "processes_value",
           "plan", "auto_processes", "run_processes", "connect_world", "describe"]

#: ``auto`` gives every process at least this many images of each global batch.
MIN_IMAGES_PER_PROCESS = 8
#: ``auto`` starts at most this many processes (each holds a copy of the data set).
MAX_AUTO_PROCESSES = 8
#: The most ``--processes`` accepts.
MAX_PROCESSES = 256
#: How long ``auto`` watches the cores to count the idle ones (seconds).
IDLE_SAMPLE_SECONDS = 0.1


def processes_value(text: str) -> str | int:
    """The ``--processes`` argument: ``"auto"`` or a whole number in [1, MAX_PROCESSES]."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be auto or a whole number of processes >= 1, got {text!r}") from None
    if not 1 <= value <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(
            f"must be auto or between 1 and {MAX_PROCESSES}, got {value}")
    return value


def add_option(parser) -> None:
    """Add ``--processes`` to the ``train`` parser."""
    parser.add_argument(
        "--processes", type=processes_value, default="auto", metavar="auto|N",
        help="train with N processes on this machine, each on its part of every batch, "
             "summing their gradients through shared memory (no MPI needed; rank 0 alone "
             "prints and writes files; BatchNorm normalises each process's part unless "
             "--sync-batchnorm). auto (the default): one process of one thread per usable "
             f"core (at most {MAX_AUTO_PROCESSES}, and at least {MIN_IMAGES_PER_PROCESS} "
             "images of each batch per process, one per idle core when others are "
             "busy); one process when --threads is given, under mpiexec, or on one core. "
             "1: one process with --threads threads (all "
             "cores by default). Only the command line does this: the Python Trainer runs "
             "in one process unless started by mpiexec")


def _usable_cores() -> int:
    from cnnblas.threads import default_threads, max_threads

    return max(1, min(default_threads(), max_threads()))


def _cpu_ticks(path: str = "/proc/stat") -> dict[int, tuple[int, int]] | None:
    """``{cpu: (idle ticks, all ticks)}`` since boot from Linux's ``/proc/stat``
    (idle counts iowait too); None where the file cannot be read."""
    ticks = {}
    try:
        with open(path) as stat:
            for line in stat:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    values = [int(field) for field in fields[:8]]
                    ticks[int(name[3:])] = (values[3] + values[4], sum(values))
    except (OSError, ValueError, IndexError):
        return None
    return ticks or None


def _idle_cores(seconds: float = IDLE_SAMPLE_SECONDS, read=_cpu_ticks) -> float | None:
    """How many of this process's CPUs were idle over the next ``seconds``, e.g. 1.9 of
    2 on a quiet machine, 1.0 with one core busy; None where it cannot be measured."""
    before = read()
    if before is None:
        return None
    time.sleep(seconds)
    after = read()
    if after is None:
        return None
    try:
        mine = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        mine = set(after)
    idle, counted = 0.0, False
    for cpu in mine & set(before) & set(after):
        elapsed = after[cpu][1] - before[cpu][1]
        if elapsed > 0:
            idle += (after[cpu][0] - before[cpu][0]) / elapsed
            counted = True
    return idle if counted else None


def plan(args) -> tuple[int, str]:
    """``(processes, note)``: how many processes ``args`` trains with, and why one when
    ``auto`` falls back to one for a reason the user may not expect ('' otherwise).

    Raises
    ------
    ValueError
        ``--processes N`` under an MPI launcher, or with a global batch smaller than N.
    """
    requested = args.processes
    if distributed.launched_size() is not None:
        if requested not in ("auto", 1):
            raise ValueError(f"--processes {requested}: this process was started by an MPI "
                             "launcher, which decides the ranks; leave --processes out")
        return 1, ""
    if requested == "auto" and args.threads is not None:
        return 1, ""
    batch = _global_batch(args)
    if requested != "auto":
        if requested > 1 and not launch.SUPPORTED:
            raise ValueError(f"--processes {requested} needs a POSIX system (Linux, macOS); "
                             "use --processes 1, or mpiexec")
        if requested > batch:
            raise ValueError(f"--processes {requested} splits the global batch across the "
                             f"processes: --batch-size must be at least {requested}, "
                             f"got {batch}")
        return requested, ""
    if not launch.SUPPORTED:
        return 1, ""  # the launcher needs POSIX
    cores = _usable_cores()
    count, note = auto_processes(cores, batch)
    if count < 2:
        return count, note
    idle = _idle_cores()
    if idle is None or int(idle + 0.5) >= count:
        return count, note
    count = max(1, int(idle + 0.5))
    return count, (f"{'one process' if count == 1 else f'{count} processes'}: "
                   f"only {idle:.1f} of {cores} cores idle at the start, other programs use "
                   f"the rest; --processes {cores} starts one per core anyway")


def auto_processes(cores: int, batch: int) -> tuple[int, str]:
    """``(processes, note)`` of ``--processes auto`` with ``cores`` usable cores and a
    global batch of ``batch`` (see the module docstring; the note says why one process
    when the batch is too small, else it is '')."""
    if cores < 2:
        return 1, ""
    count = min(cores, batch // MIN_IMAGES_PER_PROCESS, MAX_AUTO_PROCESSES)
    if count < 2:
        return 1, (f"one process: batch {batch} is less than {MIN_IMAGES_PER_PROCESS} images "
                   f"for each of 2 processes")
    return count, ""


def _global_batch(args) -> int:
    """``--batch-size``, or the model family's default, without touching ``args``."""
    resolved = copy.copy(args)
    resolve_defaults(resolved)
    if resolved.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {resolved.batch_size}")
    return resolved.batch_size


def run_processes(args, count: int, on_interrupt) -> int:
    """Run this ``cnnblas`` command line as ``count`` ranks; the exit code."""
    command = [sys.executable, "-m", "cnnblas", *args.argv]
    return launch.run_ranks(command, count, program="cnnblas train",
                            on_interrupt=on_interrupt)


def connect_world():
    """The world of this process: a rank of :func:`run_processes`, else :func:`distributed.init`
    (MPI under mpiexec, one process otherwise)."""
    if launch.child_settings() is None:
        return distributed.init()
    return distributed.init(launch.connect())


def describe(world, threads: int, batch: int, sync_batchnorm: bool) -> str:
    """E.g. ``2 processes x 1 thread, 32 images per process and step (--processes 1:
    one process)``: how the run trains and, for processes this command started, how
    to train in one process instead."""
    per_rank = -(-batch // world.size)
    sync = ", synchronised BatchNorm" if sync_batchnorm else ""
    if launch.child_settings() is None:
        return (f"{world.size} MPI ranks x {threads} thread(s), "
                f"{per_rank} images per rank and step{sync}")
    return (f"{world.size} processes x {threads} thread{'s' if threads > 1 else ''}, "
            f"{per_rank} images per process and step{sync} (--processes 1: one process)")
