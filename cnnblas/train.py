"""Training: :class:`Trainer` (fit / evaluate / predict), history and checkpoints.

A :class:`Trainer` ties a model (:class:`cnnblas.nn.Module`), a loss
(:class:`cnnblas.nn.SoftmaxCrossEntropy`), an optimizer and an optional
epoch-wise learning-rate schedule together::

    model = nn.lenet5(input_size=8, rng=0)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    trainer = Trainer(model, nn.SoftmaxCrossEntropy(), optimizer,
                      optim.CosineAnnealingLR(optimizer, t_max=20))
    trainer.fit((x_train, y_train), epochs=20, val=(x_test, y_test),
                checkpoint="run.npz")
    trainer.evaluate(x_test, y_test)    # {"loss": ..., "accuracy": ...}
    trainer.predict(x_test)             # class indices, int64

Each optimizer step is ``zero_grad``, ``model.forward``, ``loss.forward``,
``model.backward(loss.backward())``, ``optimizer.step()``; the schedule steps
once per epoch. A run is deterministic for a given data-loader seed, model
initialisation and thread count.

Checkpoints (:mod:`cnnblas.checkpoint`) are written at the end of every epoch
and hold everything needed to continue bit for bit: the model, optimizer,
schedule and data-loader states, the state of every random generator held by
a layer (e.g. :class:`~cnnblas.nn.Dropout`), the epoch and the history. A run
interrupted after epoch ``k`` and resumed from its checkpoint ends with the same
weights, to the bit, as an uninterrupted run (same thread count). A
non-finite loss stops training with :class:`FloatingPointError` before the
next checkpoint is written, so the last good checkpoint survives.

Under MPI (``mpiexec -n P python script.py``) the same code trains data-parallel
(:mod:`cnnblas.distributed`): ``batch_size`` is the global batch, each rank
trains on its contiguous part of every global batch, one ``Allreduce`` per step
averages the gradients (weighted by each rank's share of the batch), the
weights are checked to be identical on all ranks after every epoch,
evaluation is sharded, and only rank 0 logs, shows the progress bar and
writes checkpoints. ``Trainer(..., comm=False)`` opts out.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from cnnblas import checkpoint as ckpt
from cnnblas import distributed, nn, optim
from cnnblas.checks import check_int
from cnnblas.data import DataLoader

__all__ = [
    "Trainer", "MODEL_BUILDERS", "build_model", "tutorial_cnn", "load_model",
    "format_record", "save_history", "plot_history",
]


# --------------------------------------------------------------------------- models

# The builders live in cnnblas.nn.models; tutorial_cnn is re-exported here for
# code written against its first home.
tutorial_cnn = nn.tutorial_cnn

#: Model builders by name, as used by ``cnnblas train --model`` and recorded in
#: checkpoints: each takes ``num_classes``, ``in_channels``, ``input_size``, ``rng`` and
#: ``input_grad``.
MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": nn.lenet5,
    "tutorial": nn.tutorial_cnn,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` in :data:`MODEL_BUILDERS`."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](**kwargs)


def load_model(path: str | os.PathLike) -> tuple[nn.Module, ckpt.Checkpoint]:
    """Rebuild the model saved in a checkpoint and load its weights.

    The checkpoint's metadata must name the builder: ``{"model": {"name":
    "lenet5", "kwargs": {...}}}`` (what ``cnnblas train`` writes).

    Returns
    -------
    model : cnnblas.nn.Module
        In eval mode.
    checkpoint : cnnblas.checkpoint.Checkpoint
        The decoded file (metadata, history, ...).

    Raises
    ------
    ValueError
        Unreadable checkpoint, no or unknown model builder in its metadata, or
        weights that do not fit the rebuilt model; the message names the file.
    """
    saved = ckpt.load_checkpoint(path)
    spec = saved.metadata.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(
            f"{saved.path}: the checkpoint's metadata does not say how to build the model "
            "(expected metadata['model'] = {'name': ..., 'kwargs': {...}})"
        )
    kwargs = dict(spec.get("kwargs") or {})
    try:
        model = build_model(spec["name"], **kwargs)
        model.load_state_dict(saved.sections["model"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{saved.path}: cannot rebuild the model {spec['name']!r}: {error}") \
            from error
    return model.eval(), saved


# --------------------------------------------------------------------------- checks


def _check_images(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(
            f"{name} must be floating-point images (e.g. float32 in [0, 1]), got dtype {x.dtype}"
        )
    if x.ndim < 2:
        raise ValueError(f"{name} must have a leading sample axis, got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} holds no samples (shape {x.shape})")
    return x


def _check_labels(y, num_samples: int, name: str, x_name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class index per sample), got shape {y.shape}")
    if len(y) != num_samples:
        raise ValueError(
            f"{name} has {len(y)} labels but {x_name} has {num_samples} samples"
        )
    if y.min() < 0:
        raise ValueError(f"{name} must be class indices >= 0, got a minimum of {y.min()}")
    return y


def _check_label_range(y: np.ndarray, num_outputs: int, name: str) -> None:
    largest = int(y.max())
    if largest >= num_outputs:
        raise ValueError(
            f"{name} must lie in [0, {num_outputs - 1}] for the model's {num_outputs} outputs, "
            f"got labels up to {largest}"
        )


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


# --------------------------------------------------------------------------- history


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
    """Write the history (a list of per-epoch dicts) as JSON to ``path``."""
    path = Path(path)
    path.write_text(json.dumps(list(history), indent=1) + "\n", encoding="utf-8")
    return path


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
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    loss_axes.set_title("loss")
    accuracy_axes.set_title("accuracy")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Fit, evaluate and checkpoint a classifier.

    Parameters
    ----------
    model : cnnblas.nn.Module
        Maps images (N, C, H, W) to logits (N, num_classes).
    loss : cnnblas.nn.Module
        E.g. :class:`cnnblas.nn.SoftmaxCrossEntropy`: ``loss(logits, labels)``
        returns a float and ``loss.backward()`` the gradient of the logits.
    optimizer : cnnblas.optim.Optimizer
        Over ``model.parameters()``.
    scheduler : cnnblas.optim.LRScheduler, optional
        Stepped once at the end of every epoch.
    metadata : dict, optional
        JSON-serialisable facts stored in every checkpoint; ``cnnblas
        predict`` reads ``metadata["model"] = {"name", "kwargs"}`` (see
        :func:`load_model`) and ``metadata["input"] = {"shape", "pixel_max"}``.
    comm : None, False or mpi4py communicator, default None
        Data-parallel training over MPI ranks (see :mod:`cnnblas.distributed`).
        None: ``MPI.COMM_WORLD`` when the process was started by ``mpiexec``
        with several ranks, else one process (mpi4py is then never imported).
        False: one process, even under ``mpiexec``.
    sync_batchnorm : bool, default False
        With several ranks, normalise every :class:`~cnnblas.nn.BatchNorm2d`
        with the statistics of the global batch (the layers are converted in
        place to :class:`cnnblas.distributed.SyncBatchNorm2d`). By default each
        rank uses the statistics of its own part of the batch, and the running
        statistics are averaged over the ranks after every epoch.

    Attributes
    ----------
    epoch : int
        Epochs completed (restored by :meth:`load_checkpoint`).
    history : list of dict
        One record per completed epoch: ``epoch`` (1-based), ``loss`` and
        ``accuracy`` (means over the epoch's training batches, in training
        mode), ``<val_name>_loss`` and ``<val_name>_accuracy`` when validation
        data is given, ``seconds`` (wall time of the epoch's training steps),
        ``images_per_second`` (training images / ``seconds``) and ``lr`` (the
        learning rate used during the epoch); with several MPI ranks also
        ``ranks`` and ``allreduce_seconds`` (rank 0's time in the gradient
        Allreduce).
    world : cnnblas.distributed.DataParallel or None
        The MPI context, None for one process.

    Notes
    -----
    With several ranks, :meth:`fit`, :meth:`evaluate` and
    :meth:`load_checkpoint` are collective: call them on every rank. An
    exception in them on one rank prints the error with the rank's id and
    aborts every rank (``MPI_Abort``). :meth:`save_checkpoint` writes on rank
    0 only; :meth:`predict` is local.
    """

    def __init__(self, model, loss, optimizer, scheduler=None, *, metadata: Mapping | None = None,
                 comm=None, sync_batchnorm: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a cnnblas.nn.Module, got {type(model).__name__}")
        if not isinstance(loss, nn.Module):
            raise TypeError(f"loss must be a cnnblas.nn.Module, got {type(loss).__name__}")
        if not isinstance(optimizer, optim.Optimizer):
            raise TypeError(
                f"optimizer must be a cnnblas.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if scheduler is not None:
            if not isinstance(scheduler, optim.LRScheduler):
                raise TypeError(
                    "scheduler must be None or a cnnblas.optim.LRScheduler, got "
                    f"{type(scheduler).__name__}"
                )
            if scheduler.optimizer is not optimizer:
                raise ValueError("scheduler must drive the trainer's optimizer")
        self.model, self.loss, self.optimizer, self.scheduler = model, loss, optimizer, scheduler
        self.metadata = dict(metadata or {})
        json.dumps(self.metadata)  # fail now, not at the first checkpoint
        self.epoch = 0
        self.history: list[dict] = []
        self._loader: DataLoader | None = None
        self._loader_key: tuple | None = None
        self._pending_loader_state: tuple[dict, Path] | None = None
        self._user_loader: DataLoader | None = None
        self.world = distributed.init(comm)
        if sync_batchnorm:
            distributed.convert_sync_batchnorm(self.model, self.world)

    @property
    def rank(self) -> int:
        """This process's MPI rank (0 for one process)."""
        return 0 if self.world is None else self.world.rank

    @property
    def world_size(self) -> int:
        """Number of MPI ranks training together (1 for one process)."""
        return 1 if self.world is None else self.world.size

    @property
    def is_main(self) -> bool:
        """True on rank 0 (and for one process): the rank that logs and writes files."""
        return self.rank == 0

    def _guard(self):
        """Abort every rank on an error inside a collective section (no-op for one process)."""
        return contextlib.nullcontext() if self.world is None else self.world.guard()

    # -- inference --------------------------------------------------------------

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Run the model and the loss in eval mode; restore every module's mode after."""
        modes = [(module, module.training)
                 for root in (self.model, self.loss) for module in root.modules()]
        self.model.eval()
        self.loss.eval()
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training

    def _logits(self, x: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        for low in range(0, len(x), batch_size):
            yield low, self.model(x[low:low + batch_size])

    def evaluate(self, x, y, batch_size: int = 256) -> dict:
        """Mean loss and accuracy over ``(x, y)``, in eval mode.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W), float
        y : ndarray, shape (N,), int
        batch_size : int, default 256

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}``.

        Raises
        ------
        TypeError, ValueError
            Non-float images, non-integer labels, a label count different from
            the image count, or labels outside the model's classes.

        Notes
        -----
        With several MPI ranks each rank evaluates a contiguous part of the
        samples and the sums of losses and correct answers are added over the
        ranks (collective: call on every rank; all get the same result).
        """
        x = _check_images(x, "x")
        y = _check_labels(y, len(x), "y", "x")
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if self.world is None:
            total_loss, correct = self._evaluate_sums(x, y, batch_size)
        else:
            with self._guard():
                _check_label_range(y, self._num_outputs(x), "y")
                low, high = self.world.part(len(x))
                sums = self._evaluate_sums(x[low:high], y[low:high], batch_size)
                total_loss, correct = self.world.sum(sums).tolist()
                correct = int(round(correct))
        return {"loss": total_loss / len(x), "accuracy": correct / len(x)}

    def _evaluate_sums(self, x, y, batch_size) -> tuple[float, int]:
        total_loss, correct = 0.0, 0
        with self._eval_mode(), np.errstate(over="ignore", invalid="ignore"):
            for low, logits in self._logits(x, batch_size):
                labels = y[low:low + len(logits)]
                if low == 0:
                    _check_label_range(y, logits.shape[1], "y")
                total_loss += self.loss(logits, labels) * len(labels)
                correct += int(np.count_nonzero(logits.argmax(axis=1) == labels))
        return total_loss, correct

    def predict_proba(self, x, batch_size: int = 256) -> np.ndarray:
        """Softmax probabilities, shape (N, num_classes), in eval mode."""
        x = _check_images(x, "x")
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        with self._eval_mode():
            return np.concatenate([_softmax(logits) for _, logits in self._logits(x, batch_size)])

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Predicted class indices (int64, shape (N,)), in eval mode."""
        x = _check_images(x, "x")
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        with self._eval_mode():
            return np.concatenate([logits.argmax(axis=1).astype(np.int64)
                                   for _, logits in self._logits(x, batch_size)])

    def _num_outputs(self, x: np.ndarray) -> int:
        with self._eval_mode():
            return int(self.model(x[:1]).shape[1])

    # -- training ---------------------------------------------------------------

    def _make_loader(self, train, batch_size, shuffle, seed) -> DataLoader:
        self._user_loader = None
        if isinstance(train, DataLoader):
            _check_images(train.x, "the training images")
            _check_labels(train.y, len(train.x), "the training labels", "the training images")
            loader = train
            if self.world is not None:
                # Train on a sharded copy; fit() copies its position back to ``train``.
                loader = distributed.ShardedLoader.from_loader(train, self.world)
                self._user_loader = train
            self._loader_key = None
        else:
            if not isinstance(train, (tuple, list)) or len(train) != 2:
                raise TypeError(
                    "train must be a cnnblas.data.DataLoader or a pair (x, y) of arrays, got "
                    f"{type(train).__name__}"
                )
            x = _check_images(train[0], "the training images")
            y = _check_labels(train[1], len(x), "the training labels", "the training images")
            key = (id(train[0]), id(train[1]), batch_size, shuffle, seed)
            if self._loader is not None and self._loader_key == key:
                loader = self._loader  # a second fit() on the same data continues its epochs
            elif self.world is not None:
                loader = distributed.ShardedLoader(x, y, batch_size, self.world, shuffle=shuffle,
                                                   seed=seed)
                self._loader_key = key
            else:
                loader = DataLoader(x, y, batch_size, shuffle=shuffle, seed=seed)
                self._loader_key = key
        if self._pending_loader_state is not None:
            state, path = self._pending_loader_state
            try:
                loader.load_state_dict(state)
            except ValueError as error:
                raise ValueError(
                    f"{path}: the data-loader state does not fit this training data: {error}"
                ) from error
            self._pending_loader_state = None
        self._loader = loader
        return loader

    def fit(self, train, epochs: int, *, batch_size: int = 32, shuffle: bool = True,
            seed: int = 0, val=None, val_name: str = "val",
            checkpoint: str | os.PathLike | None = None, resume: bool = False,
            progress: bool = True, log: Callable[[str], object] | None = print) -> list[dict]:
        """Train until ``epochs`` epochs are complete.

        Parameters
        ----------
        train : DataLoader or (x, y)
            Training data; arrays are batched by a shuffling
            :class:`~cnnblas.data.DataLoader` built from ``batch_size``,
            ``shuffle`` and ``seed`` (ignored when a loader is given).
        epochs : int
            Total number of epochs: training continues from :attr:`epoch`
            (0, or the epoch restored from a checkpoint) up to ``epochs``.
        batch_size : int, default 32
        shuffle : bool, default True
        seed : int, default 0
            Seed of the shuffling.
        val : (x, y), optional
            Evaluated (eval mode) after every epoch.
        val_name : str, default "val"
            Name of the validation split in the history keys and the log.
        checkpoint : path, optional
            Written atomically after every epoch (see :meth:`save_checkpoint`).
        resume : bool, default False
            Restore ``checkpoint`` first when it exists (see
            :meth:`load_checkpoint`); when it does not, start from scratch.
        progress : bool, default True
            A tqdm progress bar per epoch (only when stderr is a terminal).
        log : callable or None, default print
            Receives one line per epoch (:func:`format_record`).

        Returns
        -------
        list of dict
            :attr:`history`.

        Raises
        ------
        FloatingPointError
            A non-finite loss (the message names the epoch and the step) or
            non-finite parameters at the end of an epoch. The checkpoint of the
            last good epoch is left untouched.
        TypeError, ValueError
            Bad training or validation data (shapes, dtypes, label range), or
            a checkpoint that cannot be restored.
        cnnblas.distributed.WeightsDivergedError
            With several MPI ranks: the weights differ between ranks at the
            end of an epoch (raised on every rank).

        Notes
        -----
        With several MPI ranks, ``batch_size`` is the global batch: each rank
        trains on its contiguous part (about ``batch_size / ranks`` samples)
        of every global batch, which holds the same samples as on one process;
        see :mod:`cnnblas.distributed`. A :class:`~cnnblas.data.DataLoader`
        given as ``train`` is trained through a sharded copy whose position is
        copied back to it after every epoch.
        """
        epochs = check_int(epochs, "epochs", minimum=0)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if resume and checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path")
        if val is not None:
            if not isinstance(val, (tuple, list)) or len(val) != 2:
                raise TypeError(f"val must be a pair (x, y) of arrays, got {type(val).__name__}")
            val_x = _check_images(val[0], f"the {val_name} images")
            val_y = _check_labels(val[1], len(val_x), f"the {val_name} labels",
                                  f"the {val_name} images")
        if not self.is_main:
            log = None  # rank 0 alone prints
        with self._guard():
            if resume:
                exists = Path(checkpoint).exists()
                if self.world is not None:
                    exists = self.world.broadcast_flag(exists)  # rank 0's file decides
                if exists:
                    self.load_checkpoint(checkpoint)
                    if log is not None:
                        log(f"resumed from {checkpoint} at epoch {self.epoch}")
                elif log is not None:
                    log(f"no checkpoint at {checkpoint}: starting from scratch")
            loader = self._make_loader(train, batch_size, shuffle, seed)
            num_outputs = self._num_outputs(loader.x)
            _check_label_range(loader.y, num_outputs, "the training labels")
            if val is not None:
                _check_label_range(val_y, num_outputs, f"the {val_name} labels")
            if self.world is not None:
                self.world.broadcast_model(self.model)  # every rank starts from rank 0's weights
                self.world.attach(self.optimizer.params)

            show_bar = progress and self.is_main and _isatty(sys.stderr)
            while self.epoch < epochs:
                epoch = self.epoch + 1
                record = self._train_epoch(loader, epoch, show_bar, checkpoint)
                if self.world is not None:
                    self.world.average_buffers(self.model)
                    self.world.check_consistent(self.model, f"after epoch {epoch}")
                if self.scheduler is not None:
                    self.scheduler.step()
                if val is not None:
                    for key, value in self.evaluate(val_x, val_y).items():
                        record[f"{val_name}_{key}"] = value
                self._check_finite_parameters(f"after epoch {epoch}", checkpoint)
                self.epoch = epoch
                self.history.append(record)
                if self._user_loader is not None:
                    self._user_loader.load_state_dict(loader.state_dict())
                if checkpoint is not None:
                    self.save_checkpoint(checkpoint)
                if log is not None:
                    log(format_record(record, val_name if val is not None else None))
        return self.history

    def _train_epoch(self, loader: DataLoader, epoch: int, show_bar: bool, checkpoint) -> dict:
        from tqdm.auto import tqdm

        self.model.train()
        self.loss.train()
        world = self.world
        if world is not None:
            world.reset_timer()
        lr = self.optimizer.lr
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(total=len(loader), desc=f"epoch {epoch}", unit="batch", leave=False,
                   disable=not show_bar, file=sys.stderr, dynamic_ncols=True)
        start = time.perf_counter()
        with bar, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for step, (xb, yb) in enumerate(loader, start=1):
                self.optimizer.zero_grad()
                logits = self.model(xb)
                loss = self.loss(logits, yb)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged: the loss is {loss} at epoch {epoch}, step {step} "
                        f"(learning rate {lr:g}); {self._checkpoint_note(checkpoint)}"
                    )
                grad = self.loss.backward()
                if world is not None:
                    # Weight by this rank's share of the global batch: the sum over the
                    # ranks is then the mean gradient over the whole batch.
                    share = len(yb) / loader.global_count
                    if share != 1.0:
                        grad = grad * grad.dtype.type(share)
                self.model.backward(grad)
                if world is not None:
                    world.allreduce_gradients()
                self.optimizer.step()
                total_loss += loss * len(yb)
                correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
                seen += len(yb)
                if show_bar:
                    bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
                    bar.update(1)
        if world is not None:
            total_loss, correct, seen = world.sum([total_loss, correct, seen]).tolist()
            correct, seen = int(round(correct)), int(round(seen))
        seconds = time.perf_counter() - start
        if seen == 0:
            raise ValueError(f"epoch {epoch} saw no training batch (empty data loader?)")
        record = {
            "epoch": epoch,
            "loss": total_loss / seen,
            "accuracy": correct / seen,
            "seconds": seconds,
            "images_per_second": seen / seconds if seconds > 0 else float("inf"),
            "lr": lr,
        }
        if world is not None:
            record["ranks"] = world.size
            record["allreduce_seconds"] = world.allreduce_seconds
        return record

    def _checkpoint_note(self, checkpoint) -> str:
        if checkpoint is None:
            return "no checkpoint was being written"
        if self.epoch == 0 or not Path(checkpoint).exists():
            return f"no checkpoint was written to {checkpoint}"
        return f"the checkpoint {checkpoint} of epoch {self.epoch} was left untouched"

    def _check_finite_parameters(self, when: str, checkpoint=None) -> None:
        for name, param in self.model.named_parameters():
            if not np.all(np.isfinite(param.data)):
                raise FloatingPointError(
                    f"training diverged: parameter {name!r} holds NaN or Inf {when}"
                    + ("" if checkpoint is None else f"; {self._checkpoint_note(checkpoint)}")
                )

    # -- checkpoints ------------------------------------------------------------

    def _generators(self) -> Iterator[tuple[str, np.random.Generator]]:
        """Every numpy Generator held by a module of the model, with a stable name."""
        for module_name, module in self.model.named_modules():
            for attribute, value in sorted(vars(module).items()):
                if isinstance(value, np.random.Generator):
                    yield (f"{module_name}.{attribute}" if module_name else attribute), value

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the full training state to ``path`` atomically.

        Holds the model (``model.*``), optimizer (``optim.*``), schedule
        (``sched.*``), data loader (``loader.*``, once :meth:`fit` has run)
        and layer random generators (``rng.*``, JSON), with :attr:`epoch`,
        :attr:`history` and the metadata. Refuses to write non-finite weights.
        With several MPI ranks only rank 0 writes (the others return at once):
        the state is global, the same on every rank.
        """
        self._check_finite_parameters(f"at epoch {self.epoch}: not writing {path}", None)
        if not self.is_main:
            return Path(path)
        sections: dict[str, Mapping] = {
            "model": self.model.state_dict(),
            "optim": self.optimizer.state_dict(),
        }
        if self.scheduler is not None:
            sections["sched"] = self.scheduler.state_dict()
        if self._loader is not None:
            sections["loader"] = self._loader.state_dict()
        generators = {name: ckpt.json_to_array(generator.bit_generator.state)
                      for name, generator in self._generators()}
        if generators:
            sections["rng"] = generators
        from cnnblas import __version__

        metadata = {
            **self.metadata,
            "optimizer": type(self.optimizer).__name__,
            "scheduler": None if self.scheduler is None else type(self.scheduler).__name__,
            "cnnblas_version": __version__,
        }
        return ckpt.save_checkpoint(path, sections, epoch=self.epoch, metadata=metadata,
                                    history=self.history)

    def load_checkpoint(self, path: str | os.PathLike) -> ckpt.Checkpoint:
        """Restore a state written by :meth:`save_checkpoint`.

        Restores the model, optimizer, schedule, layer random generators,
        :attr:`epoch` and :attr:`history` at once; the data-loader state is
        applied by the next :meth:`fit`. On any error nothing is changed.

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        ValueError
            An unreadable or incomplete checkpoint, or one that does not fit
            this trainer (other architecture, optimizer or schedule); the
            message names the file and the problem.

        Notes
        -----
        With several MPI ranks rank 0 reads the file and broadcasts its bytes
        (collective: call on every rank; no shared file system is needed).
        """
        if self.world is None:
            saved = ckpt.load_checkpoint(path)
        else:
            with self._guard():
                data = Path(path).read_bytes() if self.is_main else None
                data = self.world.broadcast_bytes(data)
            saved = ckpt.load_checkpoint(path, data)
        sections = saved.sections
        if not sections["model"]:
            raise ValueError(f"{saved.path}: the checkpoint holds no model state")
        if not sections["optim"]:
            raise ValueError(f"{saved.path}: the checkpoint holds no optimizer state")
        if (self.scheduler is None) != (not sections["sched"]):
            have = "has no" if self.scheduler is None else "has a"
            raise ValueError(
                f"{saved.path}: the checkpoint was saved with schedule "
                f"{saved.metadata.get('scheduler')!r}, but this trainer {have} schedule"
            )
        generators = dict(self._generators())
        if set(generators) != set(sections["rng"]):
            raise ValueError(
                f"{saved.path}: the checkpoint holds random generators "
                f"{sorted(sections['rng'])}, the model has {sorted(generators)}"
            )
        rng_states = {name: ckpt.array_to_json(value, f"{saved.path}: entry 'rng.{name}'")
                      for name, value in sections["rng"].items()}
        backup_model = self.model.state_dict()
        backup_optim = self.optimizer.state_dict()
        backup_sched = None if self.scheduler is None else self.scheduler.state_dict()
        backup_rngs = {name: g.bit_generator.state for name, g in generators.items()}
        try:
            self.model.load_state_dict(sections["model"])
            self.optimizer.load_state_dict(sections["optim"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(sections["sched"])
            for name, state in rng_states.items():
                generators[name].bit_generator.state = state
        except (TypeError, ValueError, KeyError) as error:
            self.model.load_state_dict(backup_model)
            self.optimizer.load_state_dict(backup_optim)
            if backup_sched is not None:
                self.scheduler.load_state_dict(backup_sched)
            for name, state in backup_rngs.items():
                generators[name].bit_generator.state = state
            raise ValueError(f"{saved.path}: cannot restore the checkpoint: {error}") from error
        self.epoch = saved.epoch
        self.history = [dict(record) for record in saved.history]
        self._pending_loader_state = (sections["loader"], saved.path) if sections["loader"] \
            else None
        return saved

    # -- history ------------------------------------------------------------------

    def save_history(self, path: str | os.PathLike) -> Path:
        """Write :attr:`history` as JSON (see :func:`save_history`)."""
        return save_history(self.history, path)

    def plot_history(self, path: str | os.PathLike) -> Path:
        """Plot :attr:`history` to an image (see :func:`plot_history`)."""
        return plot_history(self.history, path)
