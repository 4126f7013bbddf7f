"""``cnnblas train --resume`` with more epochs: the cosine schedule spans the new total."""

from __future__ import annotations

import json
import math

import pytest

from tests.cli.conftest import run_cli

#: A tiny run: 64 digits, one thread, no progress bar.
TINY = ["train", "--limit", "64", "--no-progress", "--threads", "1"]


def test_extending_a_finished_run_stretches_the_cosine_schedule(capsys, tmp_path):
    run, history = tmp_path / "run.npz", tmp_path / "history.json"
    argv = [*TINY, "--schedule", "cosine", "--optimizer", "sgd", "--lr", "0.02",
            "--checkpoint", str(run)]
    code, out, err = run_cli([*argv, "--epochs", "1"], capsys)
    assert code == 0, err
    code, out, err = run_cli([*argv, "--epochs", "2", "--resume", "--history", str(history)],
                             capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1] == f"resumed from {run} at epoch 1"
    # Cosine over 2 epochs at epoch 1: 0.02 * (1 + cos(pi / 2)) / 2, not the 1-epoch
    # schedule's 0.0 at its end.
    lr = 0.02 * (1 + math.cos(math.pi / 2)) / 2
    # The learning rate printed short (:g), as every rate the command prints.
    assert lines[2] == "the cosine schedule now spans 2 epochs instead of 1: lr 0.01 at epoch 2"
    records = json.loads(history.read_text())
    assert [record["epoch"] for record in records] == [1, 2]
    assert records[1]["lr"] == pytest.approx(lr)
