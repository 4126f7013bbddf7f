"""``cnnblas train`` on several processes (``--processes``, the default on several cores).

The runs are real ``python -m cnnblas train`` processes, each with a timeout,
on a few dozen digits.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cnnblas.checkpoint import load_checkpoint
from cnnblas.cli import build_parser, processes
from tests.cli.conftest import run_cli
from tests.conftest import REPO, shm_segments

TIMEOUT = 120
#: 96 digits, batch 16: 6 steps of one epoch.
TINY = ["train", "--limit", "96", "--epochs", "1", "--batch-size", "16", "--shift-augment", "0",
        "--no-progress"]


def cnnblas(argv, cwd) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "PMIX_", "OMPI_", "MV2_", "CNNBLAS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "cnnblas", *argv], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=TIMEOUT, check=False)


def test_two_processes_train_the_weights_of_one_thread(tmp_path):
    """Same seed and global batch: the same final weights up to float32 rounding."""
    before = shm_segments()
    single = cnnblas([*TINY, "--threads", "1", "--checkpoint", "one.npz"], tmp_path)
    double = cnnblas([*TINY, "--processes", "2", "--checkpoint", "two.npz"], tmp_path)
    assert single.returncode == 0, single.stderr
    assert double.returncode == 0, double.stderr
    assert ", 1 thread(s)" in single.stdout.splitlines()[0]
    assert double.stdout.splitlines()[0].endswith(
        "2 processes x 1 thread, 8 images per process and step "
        "(--processes 1: one process)")  # how it runs, and how to run it in one
    assert double.stdout.count("epoch 1 |") == 1 and double.stdout.count("test accuracy") == 1
    one = load_checkpoint(tmp_path / "one.npz").sections["model"]
    two = load_checkpoint(tmp_path / "two.npz").sections["model"]
    assert one.keys() == two.keys()
    for key, value in one.items():
        assert not np.array_equal(value, load_initial(key)), key  # it trained
        np.testing.assert_allclose(two[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert shm_segments() <= before


def load_initial(key: str) -> np.ndarray:
    """The initial weights of the LeNet-5 the runs above train (seed 0)."""
    from cnnblas import nn

    model = nn.build_model("lenet5", num_classes=10, in_channels=1, input_size=[16, 16],
                           rng=0, input_grad=False)
    return model.state_dict()[key]


FAILING_MODULE = '''
"""LeNet-5 whose rank 1 raises at its third training step."""
from cnnblas import nn
from cnnblas.distributed import launch


class Failing(nn.Sequential):
    steps = 0

    def forward(self, x):
        settings = launch.child_settings()
        if self.training and settings and settings["rank"] == 1:
            self.steps += 1
            if self.steps == 3:
                raise ValueError("injected failure")
        return super().forward(x)


@nn.register_model("failing")
def failing(**kwargs):
    model = nn.build_model("lenet5", **kwargs)
    model.__class__ = Failing
    return model
'''


def test_a_rank_that_raises_ends_the_run_once(tmp_path):
    (tmp_path / "failing.py").write_text(textwrap.dedent(FAILING_MODULE))
    before = shm_segments()
    result = cnnblas([*TINY, "--processes", "2", "--import", "failing", "--model", "failing"],
                     tmp_path)
    assert result.returncode == 1
    assert result.stderr == "cnnblas: rank 1 of 2: ValueError: injected failure\n"
    assert "test accuracy" not in result.stdout
    assert shm_segments() <= before


def test_ctrl_c_stops_every_process_and_says_what_is_kept(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = shm_segments()
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnblas", "train", "--epochs", "50", "--processes", "2",
         "--no-progress", "--checkpoint", "run.npz"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert "2 processes" in process.stdout.readline()
        assert process.stdout.readline().startswith("epoch 1 |")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 130
    assert re.fullmatch(r"cnnblas train: interrupted during epoch \d+; run\.npz holds epoch "
                        r"\d+: run the same command with --resume to continue\n", err), err
    assert load_checkpoint(tmp_path / "run.npz").epoch >= 1
    assert shm_segments() <= before


# --------------------------------------------------------------------------- the choice


def args_of(*argv) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


@pytest.fixture(autouse=True)
def cores_idle(monkeypatch):
    """Every core idle, whatever else runs on the machine while the tests do (the
    idle count is tested on its own below)."""
    monkeypatch.setattr(processes, "_idle_cores", lambda: None)


#: The function itself, for its own tests (``cores_idle`` replaces it in every test).
IDLE_CORES = processes._idle_cores


@pytest.mark.parametrize("cores, argv, expected", [
    (2, [], (2, "")),
    (4, ["--batch-size", "64"], (4, "")),
    (16, ["--batch-size", "32"], (4, "")),  # at least 8 images per process
    (64, ["--batch-size", "512"], (processes.MAX_AUTO_PROCESSES, "")),
    (1, [], (1, "")),
    (2, ["--threads", "1"], (1, "")),  # --threads alone: today's one process
    (2, ["--threads", "2", "--processes", "2"], (2, "")),
    (4, ["--processes", "3"], (3, "")),
    (4, ["--processes", "1"], (1, "")),
    (2, ["--batch-size", "8"],
     (1, "one process: batch 8 is less than 8 images for each of 2 processes")),
    (2, ["--model", "resnet20"], (2, "")),  # its family's batch 128
])
def test_auto_uses_a_process_per_core(monkeypatch, cores, argv, expected):
    monkeypatch.setattr(processes, "_usable_cores", lambda: cores)
    for name in ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "CNNBLAS_MPI"):
        monkeypatch.delenv(name, raising=False)
    args = args_of(*argv)
    assert processes.plan(args) == expected
    assert args.batch_size is None or "--batch-size" in argv  # defaults left to the run


def test_under_mpiexec_the_launcher_decides(monkeypatch):
    monkeypatch.setattr(processes, "_usable_cores", lambda: 8)
    monkeypatch.setenv("PMI_SIZE", "2")
    assert processes.plan(args_of()) == (1, "")
    with pytest.raises(ValueError, match="--processes 2: this process was started by an MPI "
                                         "launcher, which decides the ranks"):
        processes.plan(args_of("--processes", "2"))


@pytest.mark.parametrize("value, message", [
    ("x", "argument --processes: must be auto or a whole number of processes >= 1, got 'x'"),
    ("0", "argument --processes: must be auto or between 1 and 256, got 0"),
    ("2.5", "must be auto or a whole number of processes >= 1, got '2.5'"),
])
def test_bad_processes_are_named(capsys, value, message):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["train", "--processes", value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_more_processes_than_the_batch_is_an_error(capsys):
    code, out, err = run_cli(["train", "--processes", "4", "--batch-size", "2"], capsys)
    assert (code, out) == (1, "")
    assert err == ("cnnblas train: error: --processes 4 splits the global batch across the "
                   "processes: --batch-size must be at least 4, got 2\n")


def test_auto_falling_back_says_why(capsys, monkeypatch):
    monkeypatch.setattr(processes, "_usable_cores", lambda: 2)
    code, out, err = run_cli(["train", "--limit", "32", "--epochs", "1", "--batch-size", "8",
                              "--no-progress"], capsys)
    assert code == 0, err
    assert out.splitlines()[0].endswith(
        "thread(s) (one process: batch 8 is less than 8 images for each of 2 processes)")


def test_without_posix_auto_keeps_one_process(monkeypatch):
    monkeypatch.setattr(processes, "_usable_cores", lambda: 4)
    monkeypatch.setattr(processes.launch, "SUPPORTED", False)
    for name in ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "CNNBLAS_MPI"):
        monkeypatch.delenv(name, raising=False)
    assert processes.plan(args_of()) == (1, "")
    with pytest.raises(ValueError, match=r"--processes 2 needs a POSIX system \(Linux, macOS\)"):
        processes.plan(args_of("--processes", "2"))


STAT = """cpu  {total} 0 0 0 0 0 0 0 0 0
cpu0 {u0} 0 {s0} {i0} {w0} 0 0 0 0 0
cpu1 {u1} 0 0 {i1} 0 0 0 0 0 0
intr 12345
"""


def test_cpu_ticks_reads_idle_and_all_ticks_per_cpu(tmp_path):
    path = tmp_path / "stat"
    path.write_text(STAT.format(total=1, u0=10, s0=5, i0=80, w0=5, u1=50, i1=50))
    assert processes._cpu_ticks(str(path)) == {0: (85, 100), 1: (50, 100)}
    assert processes._cpu_ticks(str(tmp_path / "missing")) is None
    path.write_text("cpu0 x y\n")
    assert processes._cpu_ticks(str(path)) is None


def test_idle_cores_counts_the_idle_share_of_each_cpu(monkeypatch):
    samples = iter([{0: (0, 0), 1: (0, 0), 7: (0, 0)}, {0: (90, 100), 1: (20, 100), 7: (100, 100)}])
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    idle = IDLE_CORES(0.0, read=lambda: next(samples))
    assert idle == pytest.approx(1.1)  # cpu 7 is not this process's
    assert IDLE_CORES(0.0, read=lambda: None) is None
    frozen = {0: (5, 10), 1: (5, 10)}
    assert IDLE_CORES(0.0, read=lambda: frozen) is None  # no tick in between


@pytest.mark.parametrize("cores, idle, expected", [
    (2, 1.9, (2, "")),
    (2, 1.6, (2, "")),
    (2, 1.2, (1, "one process: only 1.2 of 2 cores idle at the start, other programs use the rest; "
                 "--processes 2 starts one per core anyway")),
    (2, 0.1, (1, "one process: only 0.1 of 2 cores idle at the start, other programs use the rest; "
                 "--processes 2 starts one per core anyway")),
    (4, 2.8, (3, "3 processes: only 2.8 of 4 cores idle at the start, other programs use the rest; "
                 "--processes 4 starts one per core anyway")),
])
def test_auto_starts_one_process_per_idle_core(monkeypatch, cores, idle, expected):
    monkeypatch.setattr(processes, "_usable_cores", lambda: cores)
    monkeypatch.setattr(processes, "_idle_cores", lambda: idle)
    for name in ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "CNNBLAS_MPI"):
        monkeypatch.delenv(name, raising=False)
    assert processes.plan(args_of("--batch-size", "64")) == expected
    assert processes.plan(args_of("--batch-size", "64", "--processes", str(cores))) == (cores, "")


@pytest.mark.parametrize("size, sync, expected", [
    (2, False, "2 processes x 1 thread, 8 images per process and step "
               "(--processes 1: one process)"),
    (3, True, "3 processes x 1 thread, 6 images per process and step, synchronised "
              "BatchNorm (--processes 1: one process)"),
])
def test_the_first_line_says_how_to_train_in_one_process(monkeypatch, size, sync, expected):
    monkeypatch.setattr(processes.launch, "child_settings", lambda: {"rank": 0})
    world = argparse.Namespace(size=size)
    assert processes.describe(world, 1, 16, sync) == expected


@pytest.mark.parametrize("resume, expected", [
    (False, "interrupted; no checkpoint was written to {path} yet"),
    (True, "interrupted during epoch 3; {path} holds epoch 2: run the same command again "
           "to continue"),
])
def test_ctrl_c_does_not_take_an_older_checkpoint_for_this_runs(tmp_path, capsys, resume,
                                                                 expected):
    """A checkpoint written before the processes started is another run's, unless
    this one resumed from it."""
    import time

    from cnnblas.checkpoint import save_checkpoint
    from cnnblas.cli import train

    path = save_checkpoint(tmp_path / "old.npz", {"model": {"w": np.zeros(1)}}, epoch=2)
    os.utime(path, (time.time() - 60, time.time() - 60))
    args = argparse.Namespace(checkpoint=path, resume=resume, epochs=10)
    train._say_interrupted(args, started=time.time() - 1)
    assert capsys.readouterr().err == f"cnnblas train: {expected.format(path=path)}\n"
