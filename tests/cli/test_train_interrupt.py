"""Ctrl-C during ``cnnblas train``: one line saying how to resume, exit status 130."""

from __future__ import annotations

from cnnblas.train import Trainer
from tests.cli.conftest import run_cli

#: A tiny run: 64 digits, one thread, no progress bar.
TINY = ["train", "--limit", "64", "--no-progress", "--threads", "1"]


def interrupt_at_epoch(monkeypatch, epoch: int) -> None:
    """Make ``Trainer`` raise KeyboardInterrupt (Ctrl-C) at the start of ``epoch``."""
    original = Trainer._train_epoch

    def train_epoch(self, loader, number, hooks):
        if number == epoch:
            raise KeyboardInterrupt
        return original(self, loader, number, hooks)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


def test_ctrl_c_says_where_the_checkpoint_is(capsys, monkeypatch, tmp_path):
    interrupt_at_epoch(monkeypatch, 2)
    run = tmp_path / "run.npz"
    code, out, err = run_cli([*TINY, "--epochs", "3", "--checkpoint", str(run)], capsys)
    assert code == 130
    assert err == (f"cnnblas train: interrupted during epoch 2; {run} holds epoch 1: "
                   f"run the same command with --resume to continue\n")


def test_ctrl_c_without_a_checkpoint(capsys, monkeypatch):
    interrupt_at_epoch(monkeypatch, 1)
    code, out, err = run_cli([*TINY, "--epochs", "2"], capsys)
    assert code == 130
    assert err == ("cnnblas train: interrupted during epoch 1; no checkpoint was written "
                   "(--checkpoint PATH.npz writes one after every epoch)\n")


def test_resuming_an_interrupted_run_keeps_its_schedule(capsys, monkeypatch, tmp_path):
    run = tmp_path / "run.npz"
    argv = [*TINY, "--schedule", "cosine", "--epochs", "2", "--checkpoint", str(run)]
    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 2)
        assert run_cli(argv, capsys)[0] == 130
    code, out, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0, err
    assert "resumed from" in out and "schedule" not in out.splitlines()[2]


def test_ctrl_c_before_the_first_checkpoint(capsys, monkeypatch, tmp_path):
    interrupt_at_epoch(monkeypatch, 1)
    run = tmp_path / "run.npz"
    code, _, err = run_cli([*TINY, "--epochs", "2", "--checkpoint", str(run)], capsys)
    assert code == 130
    assert err == (f"cnnblas train: interrupted during epoch 1; no checkpoint was written "
                   f"to {run} yet\n")
