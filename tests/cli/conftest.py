"""What the command-line tests share: the thread count restored, the in-process runner."""

from __future__ import annotations

import re

import numpy as np
import pytest

import cnnblas
from cnnblas.cli import main, processes

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


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """Keep ``cnnblas train`` in this process: on a machine with several cores its
    default starts processes, whose output capsys does not see and which the tests'
    patches do not reach. The tests of the processes ask for them (``--processes``)
    or undo this."""
    monkeypatch.setattr(processes, "_usable_cores", lambda: 1)


def run_cli(argv, capsys):
    """``cnnblas *argv`` in this process: (exit code, stdout, stderr)."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def training_input(raw, pixel_max, upsample, mean, std):
    """Raw (N, C, H, W) integer pixels -> a model's input, written out in float32 steps
    (an independent twin of :class:`cnnblas.data.Preprocessing`)."""
    x = raw.astype(np.float32) / np.float32(pixel_max)
    x = x.repeat(upsample, axis=2).repeat(upsample, axis=3)
    channels = np.float32(np.broadcast_to(mean, (raw.shape[1],)))[:, None, None]
    scale = np.float32(np.broadcast_to(std, (raw.shape[1],)))[:, None, None]
    return (x - channels) / scale
