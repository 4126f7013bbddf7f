"""The history plot's epoch axis."""

from __future__ import annotations

import numpy as np
import pytest

from cnnblas.train.history import plot_history


def test_epoch_ticks_are_integers(tmp_path, monkeypatch):
    figure_module = pytest.importorskip("matplotlib.figure")
    saved = []
    original = figure_module.Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(figure_module.Figure, "savefig", savefig)
    history = [{"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.5, "val_loss": 1.0,
                "val_accuracy": 0.4} for epoch in (1, 2)]
    plot_history(history, tmp_path / "history.png")
    (figure,) = saved
    for axes in figure.axes:
        ticks = axes.get_xticks()
        visible = ticks[(ticks >= 1) & (ticks <= 2)]
        assert len(visible) and np.array_equal(visible, np.round(visible)), ticks


def test_the_history_file_is_replaced_whole_never_rewritten_in_place(tmp_path):
    """Rank 0 writes it last, while Ctrl-C can stop it: a reader (or an interruption)
    never sees a truncated file, only the old one or the new one."""
    import json

    from cnnblas.train.history import save_history

    path = tmp_path / "history.json"
    save_history([{"epoch": 1}], path)
    with open(path, encoding="utf-8") as old:
        save_history([{"epoch": 1}, {"epoch": 2}], path)
        assert json.loads(old.read()) == [{"epoch": 1}]  # the old file, whole
    assert json.loads(path.read_text(encoding="utf-8")) == [{"epoch": 1}, {"epoch": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]  # no temporary
