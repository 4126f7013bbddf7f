"""``cnnblas train`` checks its output paths and matplotlib before the first step."""

from __future__ import annotations

import re
import sys

import pytest

from cnnblas.train import Trainer
from tests.cli.conftest import run_cli

#: A tiny run: 64 digits, one thread, no progress bar.
TINY = ["train", "--limit", "64", "--no-progress", "--threads", "1"]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test when training starts."""
    def fit(*args, **kwargs):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(Trainer, "fit", fit)


@pytest.mark.parametrize("extra, message", [
    (["--plot", "/nonexistent/dir/p.png"], r"--plot: the directory /nonexistent/dir does not "
                                            r"exist"),
    (["--history", "/tmp"], r"--history: /tmp is a directory; give a file name"),
    (["--plot", "plot.jpg2"], r"--plot: matplotlib cannot write '\.jpg2' files; use one of "
                              r".*\.png, .*\.svg.*"),
    (["--checkpoint", "/nonexistent/dir/ck.npz"], r"--checkpoint: the directory "
                                                  r"/nonexistent/dir does not exist"),
    (["--history", "/nonexistent/h.json"], r"--history: the directory /nonexistent does "
                                           r"not exist"),
])
def test_output_paths_are_checked_before_training(extra, message, capsys, no_training):
    code, out, err = run_cli([*TINY, "--epochs", "1", *extra], capsys)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and re.fullmatch(f"cnnblas train: error: {message}\n",
                                                       err), err


def test_plot_without_matplotlib_fails_before_training(capsys, monkeypatch, no_training,
                                                        tmp_path):
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises
    code, out, err = run_cli([*TINY, "--plot", str(tmp_path / "p.png")], capsys)
    assert code == 1 and out == ""
    assert re.fullmatch(r"cnnblas train: error: --plot needs matplotlib, which is not "
                        r"installed; .*pip install matplotlib\)\n", err), err
