"""Data-parallel training on MPI (cnnblas.distributed), run through ``mpiexec -n 2``.

The MPI tests start subprocesses (``mpiexec -n 2 python tests/distributed/train_digits.py``
and ``mpiexec -n 2 cnnblas train``) with a timeout, so a hang fails instead of
blocking; they are skipped only when mpi4py or mpiexec is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnblas import nn, optim
from cnnblas.checkpoint import load_checkpoint
from cnnblas.distributed import LocalWorld
from cnnblas.train import Trainer
from tests.conftest import REPO

HELPER = Path(__file__).resolve().parent / "train_digits.py"
BIN = Path(sys.executable).parent
TIMEOUT = 120  # seconds per subprocess: a hang fails the test instead of blocking it


def _find_mpiexec() -> str | None:
    local = BIN / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="needs mpi4py and mpiexec (pip install 'cnnblas[mpi]')",
)


def _environment() -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "PMIX_", "OMPI_", "MV2_", "CNNBLAS_MPI"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run(argv, ranks: int | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``argv`` (under ``mpiexec -n ranks`` when given); kill the whole group on timeout."""
    command = [MPIEXEC, "-n", str(ranks), *argv] if ranks else list(argv)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=_environment(), cwd=cwd or REPO,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in {TIMEOUT} s (hang?)\n"
                    f"stdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def train(out: Path, ranks: int | None = None, *options) -> dict:
    result = run([sys.executable, str(HELPER), "--out", str(out), *options], ranks)
    assert result.returncode == 0, result.stderr
    saved = np.load(out)
    return {
        "weights": {key: saved[key] for key in saved.files if key.startswith("model.")},
        "history": json.loads(saved["history"].item()),
        "evaluate": json.loads(saved["evaluate"].item()),
        "ranks": int(saved["ranks"]),
        "stdout": result.stdout,
    }


def assert_same_run(one: dict, other: dict, rtol=1e-9) -> None:
    assert one["weights"].keys() == other["weights"].keys()
    for key, value in one["weights"].items():
        np.testing.assert_allclose(other["weights"][key], value, rtol=rtol, atol=1e-12,
                                   err_msg=key)
    for mine, theirs in zip(one["history"], other["history"], strict=True):
        assert theirs["epoch"] == mine["epoch"] and theirs["lr"] == mine["lr"]
        assert theirs["accuracy"] == mine["accuracy"]
        assert theirs["val_accuracy"] == mine["val_accuracy"]
        assert theirs["loss"] == pytest.approx(mine["loss"], rel=rtol)
    assert other["evaluate"]["accuracy"] == one["evaluate"]["accuracy"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process and two ranks, float64, same seed: LeNet-5 and a BatchNorm model."""
    if importlib.util.find_spec("mpi4py") is None or MPIEXEC is None:
        pytest.skip("needs mpi4py and mpiexec")
    directory = tmp_path_factory.mktemp("runs")
    return {
        "single": train(directory / "single.npz"),
        "double": train(directory / "double.npz", 2),
        "single_bn": train(directory / "single_bn.npz", None, "--model", "bn"),
        "double_bn": train(directory / "double_bn.npz", 2, "--model", "bn", "--sync-batchnorm"),
    }


# --------------------------------------------------------------------------- MPI


@needs_mpi
def test_two_ranks_with_half_batches_match_one_process(runs):
    """Global batch 15 (7 + 8 per rank; the last batch 13 = 6 + 7) over 2 epochs, float64."""
    single, double = runs["single"], runs["double"]
    assert single["ranks"] == 1 and double["ranks"] == 2
    assert double["history"][-1]["val_accuracy"] > 0.3  # it learns: the check is not vacuous
    assert_same_run(single, double)
    # rank 0 alone logs
    assert double["stdout"].count("epoch 1 |") == 1


@needs_mpi
def test_synchronised_batchnorm_matches_one_process(runs):
    assert runs["double_bn"]["history"][-1]["val_accuracy"] > 0.8
    assert_same_run(runs["single_bn"], runs["double_bn"])


@needs_mpi
def test_resume_with_another_number_of_ranks(runs, tmp_path):
    """A checkpoint written by 2 ranks resumes on 1 process, and one of 1 process on 2 ranks."""
    for first, second, name in ((2, None, "two_then_one"), (None, 2, "one_then_two")):
        checkpoint = tmp_path / f"{name}.npz"
        train(tmp_path / f"{name}_half.npz", first, "--epochs", "1",
              "--checkpoint", str(checkpoint))
        assert load_checkpoint(checkpoint).epoch == 1
        resumed = train(tmp_path / f"{name}_out.npz", second, "--epochs", "2",
                        "--checkpoint", str(checkpoint), "--resume")
        assert "resumed from" in resumed["stdout"]
        assert_same_run(runs["single"], resumed)
        assert load_checkpoint(checkpoint).epoch == 2


@needs_mpi
def test_the_weights_check_catches_a_perturbed_rank(tmp_path):
    result = run([sys.executable, str(HELPER), "--out", str(tmp_path / "x.npz"), "--epochs", "1",
                  "--perturb-rank", "1"], 2)
    assert result.returncode != 0
    assert "WeightsDivergedError" in result.stderr
    assert "weights differ between ranks after epoch 1: rank 1 disagrees with rank 0" \
        in result.stderr
    assert not (tmp_path / "x.npz").exists()


@needs_mpi
def test_an_error_on_one_rank_ends_the_job_and_keeps_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "run.npz"
    # 27 steps per epoch: step 30 is the 3rd step of epoch 2, after checkpoint 1.
    result = run([sys.executable, str(HELPER), "--out", str(tmp_path / "x.npz"),
                  "--checkpoint", str(checkpoint), "--fail-rank", "1", "--fail-step", "30"], 2)
    assert result.returncode != 0
    assert "cnnblas: rank 1 of 2: ValueError: injected failure at step 30" in result.stderr
    saved = load_checkpoint(checkpoint)
    assert saved.epoch == 1 and len(saved.history) == 1
    assert not (tmp_path / "x.npz").exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


@needs_mpi
def test_cnnblas_train_on_two_ranks_prints_once_and_matches_one_process(tmp_path):
    # Without augmentation: fewer steps, so rounding differences between one and
    # two processes stay within one test image.
    argv = [str(BIN / "cnnblas"), "train", "--epochs", "2", "--shift-augment", "0",
            "--no-progress"]
    single = run([*argv, "--processes", "1"], cwd=tmp_path)
    double = run([*argv, "--checkpoint", "run.npz", "--history", "history.json"], 2,
                 cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    assert double.returncode == 0, double.stderr
    assert double.stdout.count("lenet5 on digits") == 1
    assert "2 MPI ranks x 1 thread(s), 8 images per rank and step" in double.stdout
    assert len(re.findall(r"^epoch \d+ \|", double.stdout, re.MULTILINE)) == 2
    assert double.stdout.count("test accuracy") == 1

    def accuracy(text):
        return float(re.search(r"test accuracy (\d\.\d+)", text).group(1))

    # float32 sums in another order: allow one test image of difference (measured: none)
    assert abs(accuracy(double.stdout) - accuracy(single.stdout)) <= 1 / 359 + 1e-9
    assert accuracy(double.stdout) > 0.85
    assert load_checkpoint(tmp_path / "run.npz").epoch == 2
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2


@needs_mpi
def test_cnnblas_train_reports_a_bad_argument_once(tmp_path):
    result = run([str(BIN / "cnnblas"), "train", "--epochs", "0"], 2, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.count("cnnblas train: error: --epochs must be >= 1, got 0") == 1


# --------------------------------------------------------------------------- one process


def _tiny_trainer(**kwargs):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model, nn.SoftmaxCrossEntropy(), optimizer, **kwargs)


def test_a_single_process_never_imports_mpi4py(monkeypatch):
    for name in ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                 "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "CNNBLAS_MPI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # any import of mpi4py would fail
    trainer = _tiny_trainer(sync_batchnorm=True)
    assert isinstance(trainer.world, LocalWorld) and trainer.world_size == 1 and trainer.is_main
    x = np.random.default_rng(0).standard_normal((20, 1, 2, 2)).astype(np.float32)
    y = np.arange(20) % 3
    history = trainer.fit((x, y), 1, batch_size=8, log=None, progress=False)
    assert "ranks" not in history[0]


def test_mpiexec_without_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"one of 2 processes.*pip install 'cnnblas\[mpi\]'"):
        _tiny_trainer()
    trainer = _tiny_trainer(comm=False)  # opting out works without mpi4py
    assert isinstance(trainer.world, LocalWorld)
    monkeypatch.setenv("PMI_SIZE", "1")  # mpiexec -n 1 is one process
    assert isinstance(_tiny_trainer().world, LocalWorld)


def test_comm_must_be_a_communicator():
    with pytest.raises(TypeError, match="comm must be None, False or an mpi4py communicator"):
        _tiny_trainer(comm="world")


def test_none_means_one_process():
    """``world=None`` (one process) is accepted where a world is expected."""
    from cnnblas import nn
    from cnnblas.distributed import LocalWorld, convert_sync_batchnorm, threads_per_rank

    assert threads_per_rank(None, cores=2) == threads_per_rank(LocalWorld(), cores=2)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert convert_sync_batchnorm(model, None) == 0
    assert type(model[1]) is nn.BatchNorm2d
