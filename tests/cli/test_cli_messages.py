"""Messages of the command line: option names, usage, help text, plurals."""

from __future__ import annotations

import re

import pytest

from cnnblas.cli import main
from tests.cli.conftest import run_cli

#: A tiny run: 64 digits, one thread, no progress bar.
TINY = ["train", "--limit", "64", "--no-progress", "--threads", "1"]


def test_threads_zero_names_the_option(capsys):
    code, _, err = run_cli([*TINY, "--threads", "0"], capsys)
    assert code == 1
    assert re.fullmatch(r"cnnblas train: error: --threads must be between 1 and \d+ \(.*\), "
                        r"got 0\n",
                        err), err


def test_unknown_option_shows_the_command_s_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--foo"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage: cnnblas train ")
    assert err.endswith("cnnblas train: error: unrecognized arguments: --foo\n")


def test_help_shows_no_markup(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "info" in out


def test_one_epoch_is_singular(capsys):
    code, out, err = run_cli([*TINY, "--epochs", "1"], capsys)
    assert code == 0, err
    assert ", 1 epoch, " in out.splitlines()[0]
