"""``cnnblas train``: train a CNN from the command line and report the test accuracy.

With no argument it trains a LeNet-5 on the 8x8 digits shipped with
scikit-learn (1,438 training and 359 test images) and prints one line per
epoch, then the test accuracy::

    epoch 1 | loss 1.9385 | accuracy 0.3310 | test 0.7326 | 0.6 s | 2416 img/s
    ...

``mpiexec -n P cnnblas train ...`` trains data-parallel on P MPI ranks (see
:mod:`cnnblas.distributed`): ``--batch-size`` is the global batch, split across
the ranks; rank 0 alone prints and writes the checkpoint, history and plot;
each rank gets ``cores // ranks-on-its-node`` threads unless ``--threads`` says
otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cnnblas import distributed
from cnnblas.cli.common import ERRORS, preprocess, set_threads
from cnnblas.data import shifted_copies
from cnnblas.nn import MODEL_BUILDERS

__all__ = ["add_command", "run_train", "DEFAULTS"]

#: Defaults of ``cnnblas train``, tuned so that the plain command reaches
#: >= 98% test accuracy on the digits in seconds: LeNet-5 on the 8x8 digits
#: upsampled to 16x16 and standardised, SGD with Nesterov momentum, cosine
#: schedule. (On the raw 8x8 images LeNet-5 plateaus near 97%.)
DEFAULTS = {
    "model": "lenet5",
    "data": "digits",
    "epochs": 8,
    "batch_size": 16,
    "optimizer": "sgd",
    "lr": {"adam": 3e-3, "sgd": 0.02},
    "momentum": 0.9,
    "nesterov": True,
    "schedule": "cosine",
    "seed": 0,
    "upsample": {"digits": 2},  # other data sets: 1
    "shift_augment": {"digits": 1},  # other data sets: 0
}


def add_command(commands) -> None:
    """Add ``train`` to an argparse sub-parsers object."""
    train = commands.add_parser(
        "train", help="train a CNN (default: LeNet-5 on the embedded 8x8 digits)",
        description="Train a CNN and report the test accuracy after every epoch.",
    )
    train.add_argument("--model", choices=tuple(MODEL_BUILDERS), default=DEFAULTS["model"],
                       help="lenet5 (default), or the tutorial's MNIST network (32 3x3 and "
                            "64 4x4 filters, 100 sigmoid units)")
    train.add_argument("--data", default=DEFAULTS["data"], metavar="digits|mnist:DIR|cifar10:DIR",
                       help="the 8x8 digits shipped with scikit-learn (default), MNIST-format "
                            "IDX files in DIR, or the CIFAR-10 binary batches in DIR")
    train.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                       help="total number of epochs; a resumed run continues up to it "
                            "(default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                       help="training batch size; under mpiexec the global batch, split "
                            "across the ranks (default: %(default)s)")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default=DEFAULTS["optimizer"],
                       help="default: %(default)s")
    train.add_argument("--lr", type=float, default=None,
                       help=f"learning rate (default: {DEFAULTS['lr']['sgd']:g} for sgd, "
                            f"{DEFAULTS['lr']['adam']:g} for adam)")
    train.add_argument("--momentum", type=float, default=DEFAULTS["momentum"],
                       help="SGD momentum (default: %(default)s)")
    train.add_argument("--nesterov", action=argparse.BooleanOptionalAction,
                       default=DEFAULTS["nesterov"],
                       help="SGD with Nesterov momentum (default: %(default)s)")
    train.add_argument("--schedule", choices=("cosine", "none"), default=DEFAULTS["schedule"],
                       help="learning-rate schedule over the epochs (default: %(default)s)")
    train.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                       help="seed of the initial weights and of the shuffling "
                            "(default: %(default)s)")
    train.add_argument("--upsample", type=int, default=None, metavar="K",
                       help="enlarge the images K times (nearest neighbour) before the model "
                            "(default: 2 for digits, 1 otherwise)")
    train.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                       help="subtract the training mean and divide by the training standard "
                            "deviation, both stored in the checkpoint for predict "
                            "(default: %(default)s)")
    train.add_argument("--threads", type=int, default=None,
                       help="threads for kernels and BLAS per process (default: all cores, "
                            "or under mpiexec the cores of the node divided among its ranks)")
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
    train.set_defaults(func=run_train)


# --------------------------------------------------------------------------- data


class TrainingData(NamedTuple):
    """The arrays the model trains and is tested on, and how they were made."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    pixel_max: int
    shape: tuple[int, int, int]  # (channels, height, width) of the raw images
    originals: int  # training images before the shifted copies
    shift: int
    upsample: int
    mean: float
    std: float


def _load_data(spec: str):
    """``digits`` | ``mnist:DIR`` | ``cifar10:DIR`` -> (Dataset, maximum raw pixel value)."""
    from cnnblas import data

    name, _, directory = spec.partition(":")
    if name == "digits" and not directory:
        return data.load_digits(), 16
    if name == "mnist" and directory:
        return data.load_mnist(directory), 255
    if name == "cifar10" and directory:
        return data.load_cifar10(directory), 255
    raise ValueError(f"--data must be digits, mnist:DIR or cifar10:DIR, got {spec!r}")


def _at_least(value: int, option: str, minimum: int) -> int:
    if value < minimum:
        raise ValueError(f"--{option} must be >= {minimum}, got {value}")
    return value


def _training_data(args) -> TrainingData:
    """Load ``--data``, cut to ``--limit``, add the shifted copies, standardise, upsample."""
    dataset, pixel_max = _load_data(args.data)
    x_train, y_train, x_test, y_test = dataset
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    upsample = DEFAULTS["upsample"].get(args.data, 1) if args.upsample is None \
        else args.upsample
    upsample = _at_least(upsample, "upsample", 1)
    shift = DEFAULTS["shift_augment"].get(args.data, 0) if args.shift_augment is None \
        else args.shift_augment
    shift = _at_least(shift, "shift-augment", 0)
    originals = len(x_train)
    if shift:
        x_train, y_train = shifted_copies(x_train, y_train, shift)
    mean, std = 0.0, 1.0
    if args.standardize:
        mean, std = float(x_train.mean()), float(x_train.std())
        std = std if std > 0 else 1.0
    shape = tuple(int(size) for size in x_train.shape[1:])
    return TrainingData(preprocess(x_train, upsample, mean, std), y_train,
                        preprocess(x_test, upsample, mean, std), y_test, dataset.num_classes,
                        pixel_max, shape, originals, shift, upsample, mean, std)


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


def _learning_rate(args) -> float:
    return DEFAULTS["lr"][args.optimizer] if args.lr is None else args.lr


def _build_trainer(args, world, data: TrainingData):
    """The model, optimizer, schedule and :class:`~cnnblas.train.Trainer` of ``args``."""
    from cnnblas import nn, optim
    from cnnblas.train import Trainer

    channels, height, width = data.shape
    size = [height * data.upsample, width * data.upsample]
    model_kwargs = {"num_classes": data.num_classes, "in_channels": channels, "input_size": size}
    # Training from data never needs the gradient of the images themselves.
    model = nn.build_model(args.model, **model_kwargs, rng=args.seed, input_grad=False)
    lr = _learning_rate(args)
    if args.optimizer == "adam":
        optimizer = optim.Adam(model.parameters(), lr=lr)
    else:
        optimizer = optim.SGD(model.parameters(), lr=lr, momentum=args.momentum,
                              nesterov=args.nesterov)
    scheduler = optim.CosineAnnealingLR(optimizer, args.epochs) \
        if args.schedule == "cosine" else None
    metadata = {
        "model": {"name": args.model, "kwargs": model_kwargs},
        "input": {"shape": list(data.shape), "pixel_max": data.pixel_max,
                  "upsample": data.upsample, "mean": data.mean, "std": data.std},
        "data": args.data,
        "train": {"batch_size": args.batch_size, "optimizer": args.optimizer, "lr": lr,
                  "momentum": args.momentum, "nesterov": args.nesterov,
                  "schedule": args.schedule, "seed": args.seed, "epochs": args.epochs,
                  "limit": args.limit},
    }
    return Trainer(model, nn.SoftmaxCrossEntropy(), optimizer, scheduler, metadata=metadata,
                   comm=world)


def _header(args, world, data: TrainingData, trainer) -> str:
    """The first line of the run: model, data, optimizer, schedule, batch, parallelism."""
    import cnnblas

    channels, height, width = data.shape
    optimizer_text = args.optimizer if args.optimizer == "adam" else (
        f"sgd (momentum {args.momentum:g}{', nesterov' if args.nesterov else ''})")
    threads = cnnblas.get_num_threads()
    parallel = (f"{threads} thread(s)" if world.size == 1 else
                f"{world.size} MPI ranks x {threads} thread(s), "
                f"{-(-args.batch_size // world.size)} images per rank and step")
    upsample = data.upsample
    return (f"{args.model} on {args.data}: {data.originals} training and {len(data.x_test)} "
            f"test images {channels}x{height}x{width}"
            + (f" (+4 copies shifted by {data.shift} px)" if data.shift else "")
            + (f" upsampled to {height * upsample}x{width * upsample}" if upsample > 1 else "")
            + f", {data.num_classes} classes; {optimizer_text}, lr {_learning_rate(args):g}"
            + (", cosine schedule" if trainer.scheduler else "")
            + f", batch {args.batch_size}, {args.epochs} epochs, {parallel}")


def _setup(args, world):
    """Everything before training: checks, data, threads, trainer (no collective)."""
    _check_args(args, world)
    data = _training_data(args)
    threads = args.threads
    if threads is None and world.size > 1:
        threads = distributed.threads_per_rank(world)  # this node's cores shared by its ranks
    set_threads(threads)
    trainer = _build_trainer(args, world, data)
    return trainer, (data.x_train, data.y_train, data.x_test, data.y_test), \
        _header(args, world, data, trainer)


# --------------------------------------------------------------------------- run


def run_train(args) -> int:
    """Run ``cnnblas train``; an error of :data:`~cnnblas.cli.common.ERRORS` exits 1."""
    try:
        world = distributed.init()  # MPI only under mpiexec with several ranks
        return _train(args, world)
    except distributed.CollectiveError as error:  # raised alike on every rank
        if world.is_main:
            print(f"cnnblas train: error: {error}", file=sys.stderr)
        return 1
    except ERRORS as error:
        print(f"cnnblas train: error: {error}", file=sys.stderr)
        return 1


def _setup_everywhere(args, world):
    """:func:`_setup` on every rank; None on every rank when it failed on any.

    A setup error (a bad argument, missing data) is reported once, by rank 0
    when it failed too, and every rank stops without entering a collective.
    """
    failure, prepared = None, None
    try:
        prepared = _setup(args, world)
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


def _train(args, world) -> int:
    started = time.perf_counter()
    prepared = _setup_everywhere(args, world)
    if prepared is None:
        return 1
    trainer, (x_train, y_train, x_test, y_test), header = prepared
    say = print if trainer.is_main else (lambda *args, **kwargs: None)
    say(header, flush=True)
    trainer.fit((x_train, y_train), args.epochs, batch_size=args.batch_size, seed=args.seed,
                val=(x_test, y_test), val_name="test", checkpoint=args.checkpoint,
                resume=args.resume, progress=not args.no_progress,
                log=lambda line: print(line, flush=True))
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
