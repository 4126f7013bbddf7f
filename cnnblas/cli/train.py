"""``cnnblas train``: train a CNN from the command line and report the test accuracy.

With no argument it trains a LeNet-5 on the 8x8 digits shipped with
scikit-learn (1,438 training and 359 test images) and prints one line per
epoch, then the test accuracy::

    epoch 1 | loss 1.9385 | accuracy 0.3310 | test 0.7326 | 0.6 s | 2416 img/s
    ...

On a machine with several cores it trains data-parallel by default, with
one process of one thread per core (``--processes auto``, see
:mod:`cnnblas.cli.processes`): ``--batch-size`` is the global batch, split
across the processes, which sum their gradients through shared memory; rank 0
alone prints and writes the checkpoint, history and plot. ``--threads T``
alone (``--threads 1`` is the one-core run) or ``--processes 1`` trains in one
process. ``mpiexec -n P cnnblas train ...`` trains on P MPI ranks the same
way (see :mod:`cnnblas.distributed`), each rank with ``cores //
ranks-on-its-node`` threads unless ``--threads`` says otherwise.

Options left out take the defaults of the model's family
(:mod:`cnnblas.cli.defaults`): ``cnnblas train --model resnet20 --data
cifar10:DIR`` trains with SGD (lr 0.1, momentum 0.9, weight decay 5e-4), a
cosine schedule, batch 128, random crops and flips redrawn every epoch and
per-channel standardisation (:mod:`cnnblas.cli.pipeline`); the first line of
the run says what was chosen.

A model of your own trains the same way once a module registers its builder
(:func:`cnnblas.nn.register_model`): ``cnnblas train --import my_models
--model my_net``; ``cnnblas predict --import my_models`` then reads its
checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from cnnblas import distributed
from cnnblas.cli import processes
from cnnblas.cli.common import ERRORS, add_import_option, import_user_modules, set_threads
from cnnblas.cli.defaults import DEFAULTS, FAMILY_DEFAULTS, model_kwargs, resolve_defaults
from cnnblas.cli.pipeline import (
    AUGMENTATIONS,
    EpochAugmentation,
    TrainingData,
    describe_augmentation,
    training_data,
)
from cnnblas.distributed import launch
from cnnblas.nn import MODEL_BUILDERS, get_model_builder

__all__ = ["add_command", "prepare_run", "run_train", "DEFAULTS", "INTERRUPTED"]

#: Exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


def add_command(commands) -> None:
    """Add ``train`` to an argparse sub-parsers object."""
    resnet = FAMILY_DEFAULTS["resnet"]
    train = commands.add_parser(
        "train", help="train a CNN (default: LeNet-5 on the embedded 8x8 digits)",
        description="Train a CNN and report the test accuracy after every epoch. Options "
                    "left out take the defaults of the model's family: the resnet* models "
                    "train with SGD, lr 0.1, momentum 0.9, weight decay 5e-4, a cosine "
                    "schedule and batch 128; the others as the defaults below say.",
    )
    train.add_argument("--model", default=DEFAULTS["model"], metavar="NAME",
                       help="lenet5 (default), tutorial (the tutorial's MNIST network: 32 3x3 "
                            "and 64 4x4 filters, 100 sigmoid units), another registered "
                            f"network ({', '.join(MODEL_BUILDERS)}), or a model of your own "
                            "registered with cnnblas.nn.register_model in a module given to "
                            "--import")
    train.add_argument("--data", default=DEFAULTS["data"], metavar="digits|mnist:DIR|cifar10:DIR",
                       help="the 8x8 digits shipped with scikit-learn (default), MNIST-format "
                            "IDX files in DIR, or the CIFAR-10 binary batches in DIR")
    train.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                       help="total number of epochs; a resumed run continues up to it "
                            "(default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=None,
                       help="training batch size: with several processes (or under "
                            "mpiexec) the global batch, split across them "
                            f"(default: {DEFAULTS['batch_size']}, "
                            f"resnet*: {resnet['batch_size']})")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default=DEFAULTS["optimizer"],
                       help="default: %(default)s")
    train.add_argument("--lr", type=float, default=None,
                       help=f"learning rate (default: {DEFAULTS['lr']['sgd']:g} for sgd, "
                            f"{DEFAULTS['lr']['adam']:g} for adam; resnet*: "
                            f"{resnet['lr']['sgd']:g} and {resnet['lr']['adam']:g})")
    train.add_argument("--momentum", type=float, default=None,
                       help=f"SGD momentum (default: {DEFAULTS['momentum']})")
    train.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                       help="SGD with Nesterov momentum (default: on, resnet*: off)")
    train.add_argument("--weight-decay", type=float, default=None,
                       help=f"L2 penalty added to the gradients (default: "
                            f"{DEFAULTS['weight_decay']:g}, resnet*: {resnet['weight_decay']:g})")
    train.add_argument("--schedule", choices=("cosine", "none"), default=None,
                       help=f"learning-rate schedule over the epochs (default: "
                            f"{DEFAULTS['schedule']})")
    train.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                       help="seed of the initial weights, the shuffling and the augmentation "
                            "(default: %(default)s)")
    train.add_argument("--upsample", type=int, default=None, metavar="K",
                       help="enlarge the images K times (nearest neighbour) before the model "
                            "(default: 2 for digits, 1 otherwise)")
    train.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                       help="subtract the training images' mean and divide by their standard "
                            "deviation, per channel, both stored in the checkpoint for predict "
                            "(default: %(default)s)")
    train.add_argument("--augment", choices=tuple(AUGMENTATIONS), default=None,
                       help="redraw the training images every epoch: random crops of the "
                            "images zero-padded by --crop-pad pixels and/or horizontal flips; "
                            "never the test images (default: crop+flip for cifar10, none "
                            "otherwise)")
    train.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                       help="the same as --augment none")
    train.add_argument("--crop-pad", type=int, default=4, metavar="P",
                       help="zero padding of the random crops, the largest shift "
                            "(default: %(default)s)")
    train.add_argument("--threads", type=int, default=None,
                       help="threads for kernels and BLAS per process; given without "
                            "--processes, one process (default: with several processes or "
                            "under mpiexec the cores divided among them, else all cores)")
    processes.add_option(train)
    train.add_argument("--sync-batchnorm", action="store_true",
                       help="with several processes or under mpiexec, normalise BatchNorm "
                            "layers with the statistics of the global batch (default: each "
                            "process's own part, the running statistics averaged after every "
                            "epoch)")
    train.add_argument("--shift-augment", type=int, default=None, metavar="P",
                       help="add copies of the training images shifted by P pixels up, down, "
                            "left and right (5x the data; default: 1 for digits, 0 otherwise)")
    train.add_argument("--limit", type=int, default=None, metavar="N",
                       help="use only the first N training and N test images")
    train.add_argument("--checkpoint", type=Path, default=None, metavar="PATH.npz",
                       help="write the training state here after every epoch")
    train.add_argument("--resume", action="store_true",
                       help="continue from --checkpoint when it exists")
    train.add_argument("--history", type=Path, default=None, metavar="PATH.json",
                       help="write the per-epoch history as JSON")
    train.add_argument("--plot", type=Path, default=None, metavar="PATH.png",
                       help="plot loss and accuracy per epoch (needs matplotlib)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_import_option(train)
    train.set_defaults(func=run_train)


# --------------------------------------------------------------------------- setup


def _check_args(args, world) -> None:
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.resume and args.checkpoint is None:
        raise ValueError("--resume needs --checkpoint PATH")
    if args.batch_size < world.size:
        raise ValueError(
            f"--batch-size ({args.batch_size}) is the global batch, split across the "
            f"{world.size} ranks: it must be at least the number of ranks"
        )
    if world.is_main:  # rank 0 alone writes the files
        for option in ("checkpoint", "history", "plot"):
            _check_output(getattr(args, option), f"--{option}")
        if args.plot is not None:
            _check_plot_format(args.plot)


def _check_output(path: Path | None, option: str) -> None:
    """Fail now, not after training, when ``path`` cannot be written."""
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"{option}: {path} is a directory; give a file name")
    parent = path.parent
    if not parent.exists():
        raise FileNotFoundError(f"{option}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise ValueError(f"{option}: {parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{option}: the directory {parent} is not writable")


def _check_plot_format(path: Path) -> None:
    """matplotlib is installed and writes the format of ``path``'s extension."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as error:
        raise ImportError(
            "--plot needs matplotlib, which is not installed; install it with: "
            "pip install 'cnnblas[data]' (or pip install matplotlib)"
        ) from error
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if suffix and suffix not in formats:
        raise ValueError(f"--plot: matplotlib cannot write '.{suffix}' files; use one of "
                         + ", ".join(f".{name}" for name in sorted(formats)))


def _build_trainer(args, world, data: TrainingData):
    """The model, optimizer, schedule and :class:`~cnnblas.train.Trainer` of ``args``."""
    from cnnblas import nn, optim
    from cnnblas.train import Trainer

    channels, height, width = data.shape
    size = [height * data.upsample, width * data.upsample]
    # Training from data never needs the gradient of the images themselves.
    kwargs = model_kwargs(args.model, {"num_classes": data.num_classes, "in_channels": channels,
                                       "input_size": size, "rng": args.seed,
                                       "input_grad": False})
    model = nn.build_model(args.model, **kwargs)
    if args.optimizer == "adam":
        optimizer = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                              nesterov=args.nesterov, weight_decay=args.weight_decay)
    scheduler = optim.CosineAnnealingLR(optimizer, args.epochs) \
        if args.schedule == "cosine" else None
    metadata = {
        "model": {"name": args.model, "kwargs": kwargs},
        "data": args.data,
        "train": {"batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
                  "momentum": args.momentum, "nesterov": args.nesterov,
                  "weight_decay": args.weight_decay, "schedule": args.schedule,
                  "seed": args.seed, "epochs": args.epochs, "limit": args.limit,
                  "augment": data.augment, "crop_pad": data.pad, "shift": data.shift,
                  "sync_batchnorm": args.sync_batchnorm},
    }
    return Trainer(model, nn.SoftmaxCrossEntropy(), optimizer, scheduler, metadata=metadata,
                   preprocessing=data.preprocessing, comm=world,
                   sync_batchnorm=args.sync_batchnorm)


def _header(args, world, data: TrainingData, trainer, given: list[str]) -> str:
    """The first line of the run: model, data, optimizer, schedule, batch, parallelism."""
    import cnnblas

    channels, height, width = data.shape
    details = [f"momentum {args.momentum:g}"] if args.optimizer == "sgd" else []
    if args.optimizer == "sgd" and args.nesterov:
        details.append("nesterov")
    if args.weight_decay:
        details.append(f"weight decay {args.weight_decay:g}")
    optimizer_text = args.optimizer + (f" ({', '.join(details)})" if details else "")
    threads = cnnblas.get_num_threads()
    note = getattr(args, "processes_note", "")
    parallel = (f"{threads} thread(s)" + (f" ({note})" if note else "") if world.size == 1
                else processes.describe(world, threads, args.batch_size, args.sync_batchnorm))
    upsample = data.upsample
    augmentation = describe_augmentation(data)
    family = "" if args.family is None else (
        f" ({args.family} defaults" + (f"; {', '.join(given)} given)" if given else ")"))
    return (f"{args.model} on {args.data}: {data.originals} training and {len(data.x_test)} "
            f"test images {channels}x{height}x{width}"
            + (f" (+4 copies shifted by {data.shift} px)" if data.shift else "")
            + (f" upsampled to {height * upsample}x{width * upsample}" if upsample > 1 else "")
            + f", {data.num_classes} classes"
            + (f", {augmentation}" if augmentation else "")
            + f"; {optimizer_text}, lr {args.lr:g}"
            + (", cosine schedule" if trainer.scheduler else "")
            + f", batch {args.batch_size}{family}, {args.epochs} epoch"
            + ("s" if args.epochs != 1 else "") + f", {parallel}")


def prepare_run(args, world):
    """Everything before training: checks, data, threads, trainer (no collective).

    Returns ``(trainer, data, header)``: the :class:`~cnnblas.train.Trainer`, the
    :class:`~cnnblas.cli.pipeline.TrainingData` and the run's first log line.
    """
    import_user_modules(args.imports)
    try:
        get_model_builder(args.model)
    except ValueError as error:
        raise ValueError(f"--model: {error}") from None
    given = resolve_defaults(args)
    _check_args(args, world)
    data = training_data(args)
    threads = args.threads
    if threads is None and world.size > 1:
        threads = distributed.threads_per_rank(world)  # this node's cores shared by its ranks
    set_threads(threads)
    trainer = _build_trainer(args, world, data)
    return trainer, data, _header(args, world, data, trainer, given)


# --------------------------------------------------------------------------- run


def run_train(args) -> int:
    """Run ``cnnblas train``; an error of :data:`~cnnblas.cli.common.ERRORS` exits 1.

    With several processes (:mod:`cnnblas.cli.processes`) this process starts
    and watches them, and each of them runs this function as a rank (and ends
    when it returns, see :func:`cnnblas.distributed.launch.exit_rank`).
    """
    if launch.child_settings() is not None:
        launch.exit_rank(_run_train(args))
    return _run_train(args)


def _run_train(args) -> int:
    world = None
    try:
        if launch.child_settings() is None:
            count, args.processes_note = processes.plan(args)
            if count > 1:
                started = time.time()
                return processes.run_processes(args, count,
                                               lambda: _say_interrupted(args, started))
        world = processes.connect_world()  # MPI only under mpiexec with several ranks
        return _train(args, world)
    except distributed.CollectiveError as error:  # raised alike on every rank
        if world is None or world.is_main:
            print(f"cnnblas train: error: {error}", file=sys.stderr)
        return 1
    except ERRORS as error:
        print(f"cnnblas train: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before training started (Ctrl-C while loading data)
        print("cnnblas train: interrupted before training", file=sys.stderr)
        return INTERRUPTED


def _setup_everywhere(args, world):
    """:func:`prepare_run` on every rank; None on every rank when it failed on any.

    A setup error (a bad argument, missing data) is reported once, by rank 0
    when it failed too, and every rank stops without entering a collective.
    """
    failure, prepared = None, None
    try:
        prepared = prepare_run(args, world)
    except ERRORS as error:
        failure = error
    failed = np.zeros(world.size)
    failed[world.rank] = failure is not None
    failed = world.sum(failed)
    if not failed.any():
        return prepared
    if failure is not None and (world.is_main or not failed[0]):
        where = "" if world.is_main else f" (rank {world.rank} of {world.size})"
        print(f"cnnblas train: error{where}: {failure}", file=sys.stderr, flush=True)
    return None


def _interrupted(args, epoch: int | None) -> str:
    """What Ctrl-C after ``epoch`` complete epochs (None: unknown) left behind, and how
    to continue."""
    where = ("" if epoch is None else
             f" during epoch {epoch + 1}" if epoch < args.epochs else f" after epoch {epoch}")
    if args.checkpoint is None:
        return (f"interrupted{where}; no checkpoint was written "
                f"(--checkpoint PATH.npz writes one after every epoch)")
    if not epoch or not args.checkpoint.exists():
        return f"interrupted{where}; no checkpoint was written to {args.checkpoint} yet"
    again = "again" if args.resume else "with --resume"
    return (f"interrupted{where}; {args.checkpoint} holds epoch {epoch}: "
            f"run the same command {again} to continue")


def _say_interrupted(args, started: float) -> None:
    """After Ctrl-C stopped the processes (started at ``time.time()`` ``started``):
    what the checkpoint holds."""
    from cnnblas.checkpoint import load_checkpoint

    epoch = None  # the epoch in progress is known from the checkpoint only
    path = args.checkpoint
    # A file older than the processes is another run's, unless this run resumed it.
    if path is not None and path.exists() and (args.resume or path.stat().st_mtime >= started):
        try:
            epoch = load_checkpoint(args.checkpoint).epoch
        except (ValueError, OSError):
            epoch = None
    print(f"cnnblas train: {_interrupted(args, epoch)}", file=sys.stderr, flush=True)


def _stretch_schedule(trainer, epochs: int, log) -> None:
    """Make a resumed cosine schedule span this run's ``epochs``, saying so.

    The checkpoint restores the schedule of the run that wrote it; extending a
    finished run (more ``--epochs``) would otherwise wrap around its cosine.
    """
    scheduler = trainer.scheduler
    if scheduler is None or scheduler.t_max == epochs or trainer.epoch >= epochs:
        return
    saved = scheduler.t_max
    scheduler.load_state_dict({**scheduler.state_dict(), "t_max": epochs})  # sets the lr
    if trainer.is_main:
        log(f"the cosine schedule now spans {epochs} epochs instead of {saved}: "
            f"lr {scheduler.lr:g} at epoch {trainer.epoch + 1}")


def _train(args, world) -> int:
    started = time.perf_counter()
    prepared = _setup_everywhere(args, world)
    if prepared is None:
        return 1
    trainer, data, header = prepared
    say = print if trainer.is_main else (lambda *args, **kwargs: None)
    say(header, flush=True)
    callbacks = [EpochAugmentation(data, args.seed)] if data.raw_train is not None else []
    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        if args.resume:
            trainer.resume(args.checkpoint, log)
            _stretch_schedule(trainer, args.epochs, log)
        trainer.fit((data.x_train, data.y_train), args.epochs, batch_size=args.batch_size,
                    seed=args.seed, val=(data.x_test, data.y_test), val_name="test",
                    checkpoint=args.checkpoint, progress=not args.no_progress, log=log,
                    callbacks=callbacks)
    except KeyboardInterrupt:
        if trainer.is_main:
            print(f"cnnblas train: {_interrupted(args, trainer.epoch)}", file=sys.stderr,
                  flush=True)
        return INTERRUPTED
    x_test, y_test = data.x_test, data.y_test
    result = trainer.evaluate(x_test, y_test)  # collective under MPI
    if not trainer.is_main:
        return 0
    correct = round(result["accuracy"] * len(y_test))
    say(f"test accuracy {result['accuracy']:.4f} ({correct}/{len(y_test)}), "
        f"loss {result['loss']:.4f}, {time.perf_counter() - started:.1f} s in all")
    if args.checkpoint is not None:
        say(f"checkpoint: {args.checkpoint}")
    if args.history is not None:
        trainer.save_history(args.history)
        say(f"history: {args.history}")
    if args.plot is not None:
        trainer.plot_history(args.plot)
        say(f"plot: {args.plot}")
    return 0
