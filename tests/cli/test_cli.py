"""The ``cnnblas`` command itself: ``bench`` (source checkout or not) and the model choices."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cnnblas.cli import bench, build_parser, main
from cnnblas.nn import MODEL_BUILDERS
from tests.conftest import REPO


def test_bench_runs_the_report_of_the_checkout_in_a_subprocess(monkeypatch):
    calls = []

    def fake_run(command, env, check):
        calls.append((command, env["PYTHONPATH"].split(os.pathsep)[0]))
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    assert bench.checkout_root() == REPO
    assert main(["bench", "--quick", "--threads", "1"]) == 3  # the report's exit code
    # The report is found through PYTHONPATH; the working directory stays the user's.
    assert calls == [([sys.executable, "-m", "benchmarks.report", "--quick", "--threads", "1"],
                      str(REPO))]


def test_bench_finds_the_report_from_another_directory(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--help"]) == 0
    assert "usage: python -m benchmarks.report" in capfd.readouterr().out


def test_bench_help_is_the_report_s_help_run_from_the_checkout(capfd):
    assert main(["bench", "--help"]) == 0
    assert "usage: python -m benchmarks.report" in capfd.readouterr().out


def test_bench_outside_a_source_checkout_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "_ROOT", tmp_path)  # no benchmarks/report.py there
    assert bench.checkout_root() is None
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a source checkout" in err


def test_model_help_lists_the_registry():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    model = next(action for action in train._actions if action.dest == "model")
    assert all(name in model.help for name in MODEL_BUILDERS)
    assert "cnnblas.nn.register_model" in model.help and "--import" in model.help


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"]])
def test_help_of_the_commands(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and "usage: cnnblas" in capsys.readouterr().out
