"""The README's MPI commands name `mpiexec` and `cnnblas` inside the virtual
environment, so they work without activating it."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def readme_mpi_commands() -> list[str]:
    """The command lines of the README's MPI block (comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Several processes or machines (MPI)", 1)[1]
    block = re.search(r"```\n(.*?)```", section, flags=re.S).group(1)
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def test_readme_mpi_commands_call_the_environment_by_path():
    commands = readme_mpi_commands()
    assert len(commands) >= 2
    for command in commands:
        words = command.split()
        launcher, program = words[0], next(word for word in words if "cnnblas" in word)
        if launcher.endswith("mpiexec"):
            assert launcher == ".venv/bin/mpiexec", command
        assert program.endswith(".venv/bin/cnnblas"), command


@pytest.mark.skipif(not (BIN / "mpiexec").exists() or not (BIN / "cnnblas").exists(),
                    reason="needs the mpi extra's mpiexec next to this Python")
def test_the_readme_two_rank_command_runs_without_activation(tmp_path):
    command = readme_mpi_commands()[0].replace(".venv/bin/", f"{BIN}/")
    argv = [*shlex.split(command), "--epochs", "1", "--no-progress",
            "--checkpoint", str(tmp_path / "run.npz")]
    # No virtual environment on PATH: what a shell that never ran activate sees.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "PMIX_", "OMPI_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(part for part in os.defpath.split(os.pathsep)
                                  if part and Path(part).resolve() != BIN.resolve())
    env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=tmp_path, start_new_session=True)
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{command} did not finish in 300 s\n{out}\n{err}")
    assert process.returncode == 0, err
    assert "2 MPI ranks" in out and "test accuracy" in out, out
    assert (tmp_path / "run.npz").exists()


def test_mpi_scaling_prefers_the_mpiexec_next_to_python(tmp_path, monkeypatch):
    from benchmarks import mpi_scaling

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "mpiexec"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    assert mpi_scaling.find_mpiexec() == str(launcher)
