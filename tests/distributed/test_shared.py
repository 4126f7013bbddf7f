"""The shared-memory communicator and its launcher (cnnblas.distributed.shared, .launch).

The collectives run with one thread per rank in this process (the
communicator keeps no global state, so threads are ranks as good as
processes) and are checked against numpy sums over the ranks' inputs; the
launcher's fault handling runs real processes, each with a timeout.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from multiprocessing import shared_memory

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnblas import nn
from cnnblas.distributed import DataParallel, PeerLostError, SharedMemoryComm, launch
from cnnblas.distributed.shared import segment_bytes
from tests.conftest import REPO, shm_segments

TIMEOUT = 60  # seconds per launched run: a hang fails instead of blocking


def run_in_threads(size: int, body, slot_bytes: int = 256) -> list:
    """``body(comm)`` on ``size`` ranks, one thread each; the results in rank order."""
    segment = shared_memory.SharedMemory(create=True, size=segment_bytes(size, slot_bytes))
    pairs = {rank: socket.socketpair() for rank in range(1, size)}
    sockets = [{peer: pair[0] for peer, pair in pairs.items()}] + [
        {0: pairs[rank][1]} for rank in range(1, size)]
    results, errors = [None] * size, []

    def rank_main(rank):
        try:
            comm = SharedMemoryComm(rank, size, segment, sockets[rank], slot_bytes=slot_bytes)
            results[rank] = body(comm)
        except BaseException as error:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(error)
            for end in sockets[rank].values():
                end.close()  # the others must not wait for this rank

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(size)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "a rank hangs"
    finally:
        for pair in pairs.values():
            for end in pair:
                end.close()
        segment.close()
        segment.unlink()
    if errors:
        raise errors[0]
    return results


def inputs(size: int, shape, dtype, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return [rng.standard_normal(shape).astype(dtype) for _ in range(size)]
    return [rng.integers(-1000, 1000, shape).astype(dtype) for _ in range(size)]


# --------------------------------------------------------------------------- collectives


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 4), shape=st.lists(st.integers(0, 9), min_size=0, max_size=3),
       dtype=st.sampled_from([np.float32, np.float64, np.int64]),
       op=st.sampled_from(["sum", "max"]), slot_bytes=st.sampled_from([64, 192, 4096]))
def test_allreduce_is_the_numpy_reduction_on_every_rank(size, shape, dtype, op, slot_bytes):
    """Chunked through slots of 64 bytes too; every rank gets the same bits."""
    data = inputs(size, tuple(shape), dtype)

    def body(comm):
        array = data[comm.rank].copy()
        comm.Allreduce(comm.MPI.IN_PLACE, array, op=comm.MPI.SUM if op == "sum" else comm.MPI.MAX)
        return array

    results = run_in_threads(size, body, slot_bytes)
    if op == "sum":
        expected = data[0].copy()
        for other in data[1:]:
            expected = expected + other  # rank order: the communicator's promise
    else:
        expected = np.max(np.stack(data), axis=0)
    for result in results:
        assert result.dtype == np.dtype(dtype) and result.shape == tuple(shape)
        np.testing.assert_array_equal(result, expected)


@settings(max_examples=20, deadline=None)
@given(size=st.integers(2, 4), count=st.integers(0, 300), root=st.integers(0, 3),
       dtype=st.sampled_from([np.float32, np.uint8, np.int64]))
def test_bcast_copies_the_roots_array(size, count, root, dtype):
    root = root % size
    data = inputs(size, (count,), dtype, seed=1)

    def body(comm):
        array = data[comm.rank].copy()
        comm.Bcast(array, root=root)
        return array

    for result in run_in_threads(size, body, slot_bytes=128):
        np.testing.assert_array_equal(result, data[root])


@settings(max_examples=20, deadline=None)
@given(size=st.integers(1, 4), count=st.integers(1, 100))
def test_allgather_collects_every_rank_in_order(size, count):
    data = inputs(size, (count,), np.int64, seed=2)

    def body(comm):
        everyone = np.empty((size, count), dtype=np.int64)
        comm.Allgather(data[comm.rank], everyone)
        return everyone

    for result in run_in_threads(size, body, slot_bytes=64):
        np.testing.assert_array_equal(result, np.stack(data))


def test_a_zero_dimensional_array_is_broadcast_in_place():
    def body(comm):
        seed = np.array(7 if comm.rank == 0 else 3, dtype=np.uint32)
        comm.Bcast(seed, root=0)
        return int(seed)

    assert run_in_threads(3, body) == [7, 7, 7]


def test_data_parallel_runs_on_the_shared_communicator_without_mpi4py(monkeypatch):
    """The world the trainer uses: gradients, model broadcast, bytes, weights check."""
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # any import of mpi4py would fail

    def body(comm):
        world = DataParallel(comm)
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=comm.rank))
        world.broadcast_model(model)  # everyone on rank 0's weights
        params = list(model.parameters())
        for param in params:
            param.grad = np.full_like(param.data, comm.rank + 1)
        world.attach(params)
        world.allreduce_gradients()
        data = world.broadcast_bytes(b"rank 0's file" if comm.rank == 0 else None)
        world.check_consistent(model, "in the test")
        return world.local_size, [p.grad.copy() for p in params], model.state_dict(), data

    results = run_in_threads(2, body, slot_bytes=64)
    reference = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0)).state_dict()
    for local_size, grads, state, data in results:
        assert local_size == 2 and data == b"rank 0's file"
        assert all(np.all(grad == 3) for grad in grads)  # 1 + 2
        for key, value in reference.items():
            np.testing.assert_array_equal(state[key], value)


def test_a_rank_that_leaves_ends_the_wait_of_the_others():
    def body(comm):
        if comm.rank == 1:
            raise RuntimeError("rank 1 fails before the collective")
        comm.Allreduce(comm.MPI.IN_PLACE, np.zeros(3))

    with pytest.raises((PeerLostError, RuntimeError), match="rank 1"):
        run_in_threads(2, body)


def test_bad_buffers_are_named():
    def body(comm):
        with pytest.raises(ValueError, match="recvbuf must be C-contiguous"):
            comm.Allreduce(comm.MPI.IN_PLACE, np.zeros((4, 4))[:, ::2])
        with pytest.raises(ValueError, match="only the in-place Allreduce"):
            comm.Allreduce(np.zeros(2), np.zeros(2))
        with pytest.raises(ValueError, match="op must be MPI.SUM or MPI.MAX"):
            comm.Allreduce(comm.MPI.IN_PLACE, np.zeros(2), op="min")
        with pytest.raises(ValueError, match=r"recvbuf must have 2 x 8 bytes, got 8"):
            comm.Allgather(np.zeros(1), np.zeros(1))
        with pytest.raises(ValueError, match=r"root must be in \[0, 2\), got 5"):
            comm.Bcast(np.zeros(1), root=5)
        with pytest.raises(TypeError, match="buf must be a numpy array, got list"):
            comm.Bcast([1.0])

    run_in_threads(2, body)


# --------------------------------------------------------------------------- launcher


RANK_SCRIPT = """
import sys
import numpy as np
from cnnblas.distributed import launch

comm = launch.connect()
mode = sys.argv[1]
value = np.array([comm.rank + 1.0])
comm.Allreduce(comm.MPI.IN_PLACE, value)
if comm.rank == 1 and mode == "raise":
    print("rank 1 of 2: ValueError: injected", file=sys.stderr, flush=True)
    comm.Abort(1)
if comm.rank == 1 and mode == "kill":
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
comm.Allreduce(comm.MPI.IN_PLACE, value)
if comm.rank == 0:
    print(f"sum {value[0]:g}", flush=True)
"""


def launch_script(tmp_path, mode: str) -> subprocess.CompletedProcess:
    """Run :data:`RANK_SCRIPT` on 2 ranks through :func:`launch.run_ranks`, in a process
    of its own (with a timeout)."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    driver = textwrap.dedent(f"""
        import sys
        from cnnblas.distributed.launch import run_ranks
        sys.exit(run_ranks([sys.executable, {str(script)!r}, {mode!r}], 2, program="test"))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                     os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env, cwd=tmp_path, check=False)


def test_the_launcher_runs_the_ranks_and_leaves_no_segment(tmp_path):
    before = shm_segments()
    result = launch_script(tmp_path, "ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sum 6\n"  # (1 + 2) summed again over the 2 ranks
    assert shm_segments() <= before


@pytest.mark.parametrize("mode, message", [
    ("raise", "rank 1 of 2: ValueError: injected\n"),
    ("kill", "test: rank 1 of 2 was killed by SIGKILL\n"),
])
def test_a_failing_rank_ends_the_run_with_one_message(tmp_path, mode, message):
    before = shm_segments()
    result = launch_script(tmp_path, mode)
    assert result.returncode == 1
    assert result.stderr == message  # once: rank 0 leaves quietly
    assert result.stdout == ""
    assert shm_segments() <= before


def run_driver(driver: str) -> subprocess.CompletedProcess:
    """Run the Python code ``driver`` (which calls :func:`launch.run_ranks`) in a process
    of its own, with a timeout."""
    return subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
                          check=False)


def test_an_error_every_rank_meets_is_printed_once(tmp_path):
    """A corrupt checkpoint or diverged weights fail on all ranks at once: one report."""
    script = tmp_path / "both.py"
    script.write_text("from cnnblas.distributed import DataParallel, launch\n"
                      "world = DataParallel(launch.connect())\n"
                      "with world.guard():\n"
                      "    raise ValueError('the same on every rank')\n")
    driver = ("import sys\nfrom cnnblas.distributed.launch import run_ranks\n"
              f"sys.exit(run_ranks([sys.executable, {str(script)!r}], 3))\n")
    result = run_driver(driver)
    assert result.returncode == 1
    assert re.fullmatch(r"cnnblas: rank [012] of 3: ValueError: the same on every rank\n",
                        result.stderr), result.stderr


def test_ctrl_c_stops_the_ranks(tmp_path):
    script = tmp_path / "wait.py"
    script.write_text("from cnnblas.distributed import launch\nimport numpy as np\n"
                      "comm = launch.connect()\nprint('ready', flush=True)\n"
                      "comm.Allreduce(comm.MPI.IN_PLACE, np.zeros(1))\n"
                      "import time\ntime.sleep(600)\n")
    driver = ("import sys\nfrom cnnblas.distributed.launch import run_ranks\n"
              f"sys.exit(run_ranks([sys.executable, {str(script)!r}], 2, "
              "on_interrupt=lambda: print('stopped', flush=True)))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = shm_segments()
    process = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert lines == ["ready\n", "ready\n"]
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == launch.INTERRUPTED and out == "stopped\n"
    assert shm_segments() <= before


def test_the_ranks_start_with_ctrl_c_ignored(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group, the ranks too, also before
    :func:`launch.connect` (while they import cnnblas): they must not print a
    KeyboardInterrupt traceback then, so they start with SIGINT ignored (the launcher
    alone handles it)."""
    script = tmp_path / "disposition.py"
    script.write_text("import signal\nprint(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n")
    driver = ("import signal, sys\nfrom cnnblas.distributed.launch import run_ranks\n"
              f"code = run_ranks([sys.executable, {str(script)!r}], 2)\n"
              "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
              "sys.exit(code)\n")
    result = run_driver(driver)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True\nTrue\nTrue\n"  # both ranks; the launcher's handler is back


def test_rank_0_reports_an_error_the_other_ranks_left_to_it(tmp_path):
    """An error every rank meets (a setup error, a CollectiveError) is printed by rank 0
    alone while the others return at once: the launcher must let rank 0 finish its
    report rather than end it as soon as another rank has failed."""
    script = tmp_path / "report.py"
    script.write_text("import sys, time\nimport numpy as np\n"
                      "from cnnblas.distributed import launch\n"
                      "comm = launch.connect()\n"
                      "comm.Allreduce(comm.MPI.IN_PLACE, np.ones(1))  # both know the error\n"
                      "if comm.rank == 0:\n"
                      "    time.sleep(0.2)  # formatting the message\n"
                      "    print('error: the same on every rank', file=sys.stderr, flush=True)\n"
                      "launch.exit_rank(1)\n")
    driver = ("import sys\nfrom cnnblas.distributed.launch import run_ranks\n"
              f"sys.exit(run_ranks([sys.executable, {str(script)!r}], 2))\n")
    result = run_driver(driver)
    assert result.returncode == 1
    assert result.stderr == "error: the same on every rank\n"


def test_a_second_ctrl_c_while_the_ranks_stop_changes_nothing(tmp_path):
    """Ranks can take a while to end after SIGTERM (up to GRACE_SECONDS): pressing
    Ctrl-C again meanwhile must not cut the clean-up short with a traceback."""
    script = tmp_path / "stubborn.py"
    script.write_text("import signal, time\nfrom cnnblas.distributed import launch\n"
                      "launch.connect()\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                      "print('ready', flush=True)\ntime.sleep(600)\n")
    driver = ("import sys\nfrom cnnblas.distributed.launch import run_ranks\n"
              f"sys.exit(run_ranks([sys.executable, {str(script)!r}], 2, "
              "on_interrupt=lambda: print('stopped', flush=True)))\n")
    process = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert [process.stdout.readline(), process.stdout.readline()] == ["ready\n"] * 2
        process.send_signal(signal.SIGINT)
        time.sleep(1.0)  # the launcher waits for the ranks to end
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert (process.returncode, out) == (launch.INTERRUPTED, "stopped\n"), err
    assert "Traceback" not in err, err
