"""What the command-line tests share: the thread count restored, the in-process runner."""

from __future__ import annotations

import re

import pytest

import cnnblas
from cnnblas.cli import main

#: One epoch's log line of ``cnnblas train``.
EPOCH_LINE = re.compile(
    r"epoch (\d+) \| loss \d+\.\d{4} \| accuracy [01]\.\d{4} \| test [01]\.\d{4} "
    r"\| \d+\.\d s \| \d+ img/s"
)


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    """The commands set the thread count (``--threads``): put it back after each module."""
    before = cnnblas.get_num_threads()
    yield
    cnnblas.set_num_threads(before)


def run_cli(argv, capsys):
    """``cnnblas *argv`` in this process: (exit code, stdout, stderr)."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
