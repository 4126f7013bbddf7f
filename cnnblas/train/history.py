"""The training history (one dict per epoch): a log line per record, JSON, a plot."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["format_record", "save_history", "plot_history"]


def format_record(record: Mapping, val_name: str | None = None) -> str:
    """One history record as a log line.

    ``epoch 3 | loss 0.3288 | accuracy 0.9636 | test 0.9611 | 2.1 s | 1234 img/s``
    (the validation accuracy appears under ``val_name`` when the record has it).
    """
    parts = [f"epoch {record['epoch']}", f"loss {record['loss']:.4f}",
             f"accuracy {record['accuracy']:.4f}"]
    if val_name and f"{val_name}_accuracy" in record:
        parts.append(f"{val_name} {record[f'{val_name}_accuracy']:.4f}")
    parts.append(f"{record['seconds']:.1f} s")
    parts.append(f"{record['images_per_second']:.0f} img/s")
    return " | ".join(parts)


def save_history(history: list[Mapping], path: str | os.PathLike) -> Path:
    """Write the history (a list of per-epoch dicts) as JSON to ``path``, atomically
    (a new file renamed over the old one: an interruption leaves either whole)."""
    from cnnblas.checkpoint import write_atomic

    text = json.dumps(list(history), indent=1) + "\n"
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def plot_history(history: list[Mapping], path: str | os.PathLike) -> Path:
    """Plot loss and accuracy per epoch (training and validation) to an image file.

    Needs matplotlib (``pip install 'cnnblas[data]'``); uses no GUI backend.

    Raises
    ------
    ImportError
        When matplotlib is not installed.
    ValueError
        When the history is empty.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as error:
        raise ImportError(
            "plotting the training history needs matplotlib, which is not installed; "
            "install it with: pip install 'cnnblas[data]' (or pip install matplotlib)"
        ) from error
    history = list(history)
    if not history:
        raise ValueError("the history is empty: nothing to plot")
    epochs = [record["epoch"] for record in history]
    splits = sorted({key[: -len("_accuracy")] for record in history for key in record
                     if key.endswith("_accuracy")})
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(epochs, [record[metric] for record in history], marker="o", label="train")
        for split in splits:
            key = f"{split}_{metric}"
            points = [(record["epoch"], record[key]) for record in history if key in record]
            axes.plot(*zip(*points, strict=True), marker="o", label=split)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    loss_axes.set_title("loss")
    accuracy_axes.set_title("accuracy")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
