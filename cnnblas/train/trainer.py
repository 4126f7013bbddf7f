"""The :class:`Trainer`: fit, evaluate, predict and checkpoint a classifier.

See :mod:`cnnblas.train` for the whole story.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from cnnblas import checkpoint as ckpt
from cnnblas import distributed
from cnnblas._version import __version__
from cnnblas.checks import check_int
from cnnblas.data import DataLoader, Preprocessing
from cnnblas.functional import softmax
from cnnblas.train.callbacks import Callback, checkpoint_note, fit_callbacks
from cnnblas.train.history import plot_history, save_history
from cnnblas.train.inputs import (
    check_finite_images,
    check_images,
    check_label_range,
    check_labels,
    check_trainer_parts,
    check_validation,
    checkpoint_metadata,
)
from cnnblas.train.state import restore_training_state, training_sections

__all__ = ["Trainer"]


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
        JSON-serialisable facts stored in every checkpoint.
        :func:`cnnblas.load_model` and ``cnnblas predict`` read
        ``metadata["model"] = {"name", "kwargs"}`` (the registered builder, see
        :func:`cnnblas.nn.model_from_checkpoint`; filled in from
        ``model.build_spec`` when the model was made by
        :func:`cnnblas.nn.build_model`) and ``metadata["input"]`` (see
        ``preprocessing``).
    preprocessing : cnnblas.data.Preprocessing, optional
        How the raw images were brought to the arrays given to :meth:`fit`;
        saved as ``metadata["input"]`` so that the checkpoint's model, loaded
        by :func:`cnnblas.load_model`, predicts from raw images.
    comm : None, False, mpi4py communicator or world, default None
        Data-parallel training over MPI ranks (see :func:`cnnblas.distributed.init`).
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
    world : cnnblas.distributed.World
        The processes training together: a :class:`~cnnblas.distributed.DataParallel`
        over MPI, or a :class:`~cnnblas.distributed.LocalWorld` for one process.

    Notes
    -----
    With several ranks, :meth:`fit`, :meth:`evaluate` and
    :meth:`load_checkpoint` are collective: call them on every rank. An
    exception in them on one rank prints the error with the rank's id and
    aborts every rank (``MPI_Abort``). :meth:`save_checkpoint` writes on rank
    0 only; :meth:`predict` is local.
    """

    def __init__(self, model, loss, optimizer, scheduler=None, *, metadata: Mapping | None = None,
                 preprocessing: Preprocessing | None = None, comm=None,
                 sync_batchnorm: bool = False):
        check_trainer_parts(model, loss, optimizer, scheduler)
        self.model, self.loss, self.optimizer, self.scheduler = model, loss, optimizer, scheduler
        self.metadata = checkpoint_metadata(model, metadata, preprocessing)
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
        return self.world.rank

    @property
    def world_size(self) -> int:
        """Number of MPI ranks training together (1 for one process)."""
        return self.world.size

    @property
    def is_main(self) -> bool:
        """True on rank 0 (and for one process): the rank that logs and writes files."""
        return self.world.is_main

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
        x = check_images(x, "x")
        y = check_labels(y, len(x), "y", "x")
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        with self.world.guard():
            check_label_range(y, self._num_outputs(x), "y")
            low, high = self.world.part(len(x))
            sums = self._evaluate_sums(x[low:high], y[low:high], batch_size)
            total_loss, correct = self.world.sum(sums).tolist()
        return {"loss": total_loss / len(x), "accuracy": int(round(correct)) / len(x)}

    def _evaluate_sums(self, x, y, batch_size) -> tuple[float, int]:
        total_loss, correct = 0.0, 0
        with self._eval_mode(), np.errstate(over="ignore", invalid="ignore"):
            for low, logits in self._logits(x, batch_size):
                labels = y[low:low + len(logits)]
                total_loss += self.loss(logits, labels) * len(labels)
                correct += int(np.count_nonzero(logits.argmax(axis=1) == labels))
        return total_loss, correct

    def predict_proba(self, x, batch_size: int = 256) -> np.ndarray:
        """Softmax probabilities, shape (N, num_classes), in eval mode."""
        x = check_images(x, "x")
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        with self._eval_mode():
            return np.concatenate([softmax(logits, axis=1)
                                   for _, logits in self._logits(x, batch_size)])

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Predicted class indices (int64, shape (N,)), in eval mode."""
        x = check_images(x, "x")
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
            check_images(train.x, "the training images")
            check_labels(train.y, len(train.x), "the training labels", "the training images")
            # Several ranks train on a sharded copy; fit() copies its position back to ``train``.
            loader = self.world.shard(train)
            self._user_loader = None if loader is train else train
            self._loader_key = None
        else:
            if not isinstance(train, (tuple, list)) or len(train) != 2:
                raise TypeError(
                    "train must be a cnnblas.data.DataLoader or a pair (x, y) of arrays, got "
                    f"{type(train).__name__}"
                )
            x = check_images(train[0], "the training images")
            y = check_labels(train[1], len(x), "the training labels", "the training images")
            key = (id(train[0]), id(train[1]), batch_size, shuffle, seed)
            if self._loader is not None and self._loader_key == key:
                loader = self._loader  # a second fit() on the same data continues its epochs
            else:
                loader = self.world.data_loader(x, y, batch_size, shuffle, seed)
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
            progress: bool = True, log: Callable[[str], object] | None = print,
            callbacks: Sequence[Callback] = ()) -> list[dict]:
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
            Receives one line per epoch (:func:`~cnnblas.train.history.format_record`).
        callbacks : sequence of cnnblas.train.callbacks.Callback, default ()
            Called after the ones ``fit`` makes from the arguments above.

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
            Bad training or validation data (shapes, dtypes, label range,
            NaN or inf images: the message names the split and the first bad
            sample, checked once per call before the first step), or a
            checkpoint that cannot be restored.
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
        val = check_validation(val, val_name)
        log = log if self.is_main else None  # rank 0 alone prints
        hooks = [*fit_callbacks(checkpoint, progress and self.is_main, log,
                                val_name if val is not None else None), *callbacks]
        with self.world.guard():
            if resume:
                self.resume(checkpoint, log)
            loader = self._prepare(train, batch_size, shuffle, seed, val, val_name)
            while self.epoch < epochs:
                record = self._train_epoch(loader, self.epoch + 1, hooks)
                self._complete_epoch(record, loader, val, val_name, checkpoint)
                for hook in hooks:
                    hook.on_epoch_end(self, record)
        return self.history

    def resume(self, checkpoint: str | os.PathLike,
               log: Callable[[str], object] | None = print) -> None:
        """Restore ``checkpoint`` when it exists on rank 0 (see :meth:`load_checkpoint`).

        ``log`` (rank 0 only) receives one line saying which happened. ``fit(...,
        resume=True)`` calls this first; call it yourself to adjust the restored
        state (e.g. the schedule's length) before :meth:`fit`.
        """
        log = log if self.is_main else None
        with self.world.guard():
            if self.world.broadcast_flag(Path(checkpoint).exists()):  # rank 0's file decides
                self.load_checkpoint(checkpoint)
                if log is not None:
                    log(f"resumed from {checkpoint} at epoch {self.epoch}")
            elif log is not None:
                log(f"no checkpoint at {checkpoint}: starting from scratch")

    def _prepare(self, train, batch_size, shuffle, seed, val, val_name) -> DataLoader:
        """The loader, the labels checked against the model, every rank on rank 0's weights."""
        loader = self._make_loader(train, batch_size, shuffle, seed)
        # Before the first step, on the whole set (not a rank's shard): a NaN
        # pixel would otherwise surface as a "diverged" loss.
        full_x = train.x if isinstance(train, DataLoader) else np.asarray(train[0])
        check_finite_images(full_x, "the training images")
        if val is not None:
            check_finite_images(val[0], f"the {val_name} images")
        num_outputs = self._num_outputs(loader.x)
        check_label_range(loader.y, num_outputs, "the training labels")
        if val is not None:
            check_label_range(val[1], num_outputs, f"the {val_name} labels")
        self.world.broadcast_model(self.model)
        self.world.attach(self.optimizer.params)
        return loader

    def _train_epoch(self, loader: DataLoader, epoch: int, hooks: list[Callback]) -> dict:
        self.model.train()
        self.loss.train()
        self.world.reset_timer()
        lr = self.optimizer.lr
        total_loss, correct, seen = 0.0, 0, 0
        for hook in hooks:
            hook.on_epoch_begin(self, epoch, len(loader))
        start = time.perf_counter()
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                for step, (xb, yb) in enumerate(loader, start=1):
                    logits, loss = self._train_step(xb, yb, loader, epoch, step, hooks)
                    total_loss += loss * len(yb)
                    correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
                    seen += len(yb)
                    for hook in hooks:
                        hook.on_train_batch_end(self, step, total_loss / seen)
        finally:
            for hook in hooks:
                hook.on_train_batches_end(self)
        total_loss, correct, seen = self.world.sum([total_loss, correct, seen]).tolist()
        correct, seen = int(round(correct)), int(round(seen))
        seconds = time.perf_counter() - start
        if seen == 0:
            raise ValueError(f"epoch {epoch} saw no training batch (empty data loader?)")
        return {
            "epoch": epoch,
            "loss": total_loss / seen,
            "accuracy": correct / seen,
            "seconds": seconds,
            "images_per_second": seen / seconds if seconds > 0 else float("inf"),
            "lr": lr,
            **self.world.epoch_stats(),
        }

    def _train_step(self, xb, yb, loader, epoch: int, step: int, hooks: list[Callback]):
        """One optimizer step on a batch; returns its logits and mean loss."""
        self.optimizer.zero_grad()
        logits = self.model(xb)
        loss = self.loss(logits, yb)
        for hook in hooks:
            hook.on_train_loss(self, epoch, step, loss)
        self.model.backward(self.world.weight_gradient(self.loss.backward(), len(yb), loader))
        self.world.allreduce_gradients()
        self.optimizer.step()
        return logits, loss

    def _complete_epoch(self, record: dict, loader, val, val_name: str, checkpoint) -> None:
        """Agree on the weights, step the schedule, validate, check, and record the epoch."""
        epoch = record["epoch"]
        self.world.average_buffers(self.model)
        self.world.check_consistent(self.model, f"after epoch {epoch}")
        if self.scheduler is not None:
            self.scheduler.step()
        if val is not None:
            for key, value in self.evaluate(*val).items():
                record[f"{val_name}_{key}"] = value
        self._check_finite_parameters(f"after epoch {epoch}", checkpoint)
        self.epoch = epoch
        self.history.append(record)
        if self._user_loader is not None:
            self._user_loader.load_state_dict(loader.state_dict())

    def _check_finite_parameters(self, when: str, checkpoint=None) -> None:
        for name, param in self.model.named_parameters():
            if not np.all(np.isfinite(param.data)):
                raise FloatingPointError(
                    f"training diverged: parameter {name!r} holds NaN or Inf {when}"
                    + ("" if checkpoint is None
                       else f"; {checkpoint_note(checkpoint, self.epoch)}")
                )

    # -- checkpoints ------------------------------------------------------------

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the full training state to ``path`` atomically.

        Holds the model (``model.*``), optimizer (``optim.*``), schedule
        (``sched.*``), data loader (``loader.*``, once :meth:`fit` has run)
        and layer random generators (``rng.*``, JSON), with :attr:`epoch`,
        :attr:`history` and the metadata (see :mod:`cnnblas.train.state`).
        Refuses to write non-finite weights. With several MPI ranks only rank
        0 writes (the others return at once): the state is global, the same
        on every rank.
        """
        self._check_finite_parameters(f"at epoch {self.epoch}: not writing {path}", None)
        if not self.is_main:
            return Path(path)
        sections = training_sections(self.model, self.optimizer, self.scheduler, self._loader)
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
        with self.world.guard():
            data = self.world.read_file(path)
        saved = ckpt.load_checkpoint(path, data)
        restore_training_state(saved, self.model, self.optimizer, self.scheduler)
        self.epoch = saved.epoch
        self.history = [dict(record) for record in saved.history]
        loader_state = saved.sections["loader"]
        self._pending_loader_state = (loader_state, saved.path) if loader_state else None
        return saved

    # -- history ------------------------------------------------------------------

    def save_history(self, path: str | os.PathLike) -> Path:
        """Write :attr:`history` as JSON (see :func:`~cnnblas.train.history.save_history`)."""
        return save_history(self.history, path)

    def plot_history(self, path: str | os.PathLike) -> Path:
        """Plot :attr:`history` to an image (see :func:`~cnnblas.train.history.plot_history`)."""
        return plot_history(self.history, path)
