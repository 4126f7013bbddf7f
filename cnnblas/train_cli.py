"""``cnnblas train`` and ``cnnblas predict`` (registered by :mod:`cnnblas.cli`).

``cnnblas train`` with no argument trains a LeNet-5 on the 8x8 digits shipped
with scikit-learn (1,438 training and 359 test images) and prints one line per
epoch, then the test accuracy::

    epoch 1 | loss 1.9385 | accuracy 0.3310 | test 0.7326 | 0.6 s | 2416 img/s
    ...

``cnnblas predict CHECKPOINT INPUT`` rebuilds the model saved by ``train
--checkpoint`` and prints one predicted class per image.

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

import numpy as np

from cnnblas.data import shifted_copies

__all__ = ["add_commands", "preprocess", "DEFAULTS"]

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
_ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError, ImportError, OSError)


def add_commands(commands) -> None:
    """Add the ``train`` and ``predict`` sub-commands to an argparse sub-parsers object."""
    train = commands.add_parser(
        "train", help="train a CNN (default: LeNet-5 on the embedded 8x8 digits)",
        description="Train a CNN and report the test accuracy after every epoch.",
    )
    train.add_argument("--model", choices=("lenet5", "tutorial"), default=DEFAULTS["model"],
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

    predict = commands.add_parser(
        "predict", help="classify images with a checkpoint written by 'cnnblas train'",
        description="Print the predicted class of every image, one per line.",
    )
    predict.add_argument("checkpoint", type=Path, help="a .npz written by cnnblas train")
    predict.add_argument("input", type=Path,
                         help="images: an IDX file (raw or .gz) or a .npy array of shape "
                              "(N, H, W) or (N, C, H, W); integer pixels are scaled as in "
                              "training, float pixels are taken as they are")
    predict.add_argument("--labels", type=Path, default=None,
                         help="true labels (IDX or .npy): also print the accuracy")
    predict.add_argument("--output", type=Path, default=None, metavar="PATH.npy",
                         help="save the predictions as .npy instead of printing them")
    predict.add_argument("--batch-size", type=int, default=256,
                         help="images per forward pass (default: %(default)s)")
    predict.add_argument("--threads", type=int, default=None,
                         help="threads for kernels and BLAS (default: all cores)")
    predict.set_defaults(func=run_predict)


# --------------------------------------------------------------------------- train


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


def _set_threads(threads) -> None:
    if threads is not None:
        import cnnblas

        cnnblas.set_num_threads(threads)


def preprocess(images: np.ndarray, upsample: int = 1, mean: float = 0.0,
               std: float = 1.0) -> np.ndarray:
    """Images in [0, 1] (N, C, H, W) -> the model's input: upsampled, standardised, float32.

    ``upsample`` repeats every pixel ``upsample`` times along both axes
    (nearest neighbour); then ``(x - mean) / std``.
    """
    if upsample > 1:
        images = images.repeat(upsample, axis=2).repeat(upsample, axis=3)
    result = np.asarray(images, dtype=np.float32) - np.float32(mean)
    result /= np.float32(std)
    return result


def run_train(args) -> int:
    from cnnblas import distributed

    world = None
    try:
        world = distributed.init()  # MPI only under mpiexec with several ranks
        return _train(args, world)
    except distributed.CollectiveError as error:  # raised alike on every rank
        if world is None or world.is_main:
            print(f"cnnblas train: error: {error}", file=sys.stderr)
        return 1
    except _ERRORS as error:
        print(f"cnnblas train: error: {error}", file=sys.stderr)
        return 1


def _setup(args, world):
    """Everything before training: checks, data, model, optimizer, trainer (no collective)."""
    from cnnblas import nn, optim
    from cnnblas.distributed import threads_per_rank
    from cnnblas.train import Trainer, build_model

    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.resume and args.checkpoint is None:
        raise ValueError("--resume needs --checkpoint PATH")
    ranks = 1 if world is None else world.size
    if args.batch_size < ranks:
        raise ValueError(
            f"--batch-size ({args.batch_size}) is the global batch, split across the {ranks} "
            f"ranks: it must be at least the number of ranks"
        )
    dataset, pixel_max = _load_data(args.data)
    num_classes = dataset.num_classes
    x_train, y_train, x_test, y_test = dataset
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    upsample = args.upsample
    if upsample is None:
        upsample = DEFAULTS["upsample"].get(args.data, 1)
    if upsample < 1:
        raise ValueError(f"--upsample must be >= 1, got {upsample}")
    shift = args.shift_augment
    if shift is None:
        shift = DEFAULTS["shift_augment"].get(args.data, 0)
    if shift < 0:
        raise ValueError(f"--shift-augment must be >= 0, got {shift}")
    originals = len(x_train)  # before the shifted copies
    if shift:
        x_train, y_train = shifted_copies(x_train, y_train, shift)
    mean, std = 0.0, 1.0
    if args.standardize:
        mean, std = float(x_train.mean()), float(x_train.std())
        std = std if std > 0 else 1.0
    channels, height, width = (int(size) for size in x_train.shape[1:])
    x_train = preprocess(x_train, upsample, mean, std)
    x_test = preprocess(x_test, upsample, mean, std)
    size = [height * upsample, width * upsample]
    threads = args.threads
    if threads is None and world is not None:
        threads = threads_per_rank(world)  # this node's cores shared by its ranks
    _set_threads(threads)

    model_kwargs = {"num_classes": num_classes, "in_channels": channels, "input_size": size}
    # Training from data never needs the gradient of the images themselves.
    model = build_model(args.model, **model_kwargs, rng=args.seed, input_grad=False)
    lr = DEFAULTS["lr"][args.optimizer] if args.lr is None else args.lr
    if args.optimizer == "adam":
        optimizer = optim.Adam(model.parameters(), lr=lr)
    else:
        optimizer = optim.SGD(model.parameters(), lr=lr, momentum=args.momentum,
                              nesterov=args.nesterov)
    scheduler = optim.CosineAnnealingLR(optimizer, args.epochs) \
        if args.schedule == "cosine" else None
    metadata = {
        "model": {"name": args.model, "kwargs": model_kwargs},
        "input": {"shape": [channels, height, width], "pixel_max": pixel_max,
                  "upsample": upsample, "mean": mean, "std": std},
        "data": args.data,
        "train": {"batch_size": args.batch_size, "optimizer": args.optimizer, "lr": lr,
                  "momentum": args.momentum, "nesterov": args.nesterov,
                  "schedule": args.schedule, "seed": args.seed, "epochs": args.epochs,
                  "limit": args.limit},
    }
    trainer = Trainer(model, nn.SoftmaxCrossEntropy(), optimizer, scheduler, metadata=metadata,
                      comm=False if world is None else world.comm)
    optimizer_text = args.optimizer if args.optimizer == "adam" else (
        f"sgd (momentum {args.momentum:g}{', nesterov' if args.nesterov else ''})")
    import cnnblas

    parallel = (f"{cnnblas.get_num_threads()} thread(s)" if world is None else
                f"{world.size} MPI ranks x {cnnblas.get_num_threads()} thread(s), "
                f"{-(-args.batch_size // world.size)} images per rank and step")
    header = (f"{args.model} on {args.data}: {originals} training and {len(x_test)} test "
              f"images {channels}x{height}x{width}"
              + (f" (+4 copies shifted by {shift} px)" if shift else "")
              + (f" upsampled to {size[0]}x{size[1]}" if upsample > 1 else "")
              + f", {num_classes} classes; {optimizer_text}, lr {lr:g}"
              + (", cosine schedule" if scheduler else "")
              + f", batch {args.batch_size}, {args.epochs} epochs, {parallel}")
    return trainer, (x_train, y_train, x_test, y_test), header


def _train(args, world=None) -> int:
    started = time.perf_counter()
    if world is None:
        trainer, (x_train, y_train, x_test, y_test), header = _setup(args, world)
    else:
        # Setup errors (bad arguments, missing data) are reported once, by rank 0 when it
        # failed too, and every rank stops without entering a collective.
        failure = None
        try:
            trainer, (x_train, y_train, x_test, y_test), header = _setup(args, world)
        except _ERRORS as error:
            failure = error
        failed = np.zeros(world.size)
        failed[world.rank] = failure is not None
        failed = world.sum(failed)
        if failed.any():
            if failure is not None and (world.is_main or not failed[0]):
                where = "" if world.is_main else f" (rank {world.rank} of {world.size})"
                print(f"cnnblas train: error{where}: {failure}", file=sys.stderr, flush=True)
            return 1
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


# --------------------------------------------------------------------------- predict


def _read_array(path: Path, what: str) -> np.ndarray:
    from cnnblas.data import load_idx

    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(f"{path}: cannot read the {what} as .npy: {error}") from error
    return load_idx(path)


def _prepare_images(images: np.ndarray, metadata: dict, path: Path) -> np.ndarray:
    """Bring raw images to the model's input, as ``cnnblas train`` did (see :func:`preprocess`).

    Integer pixels are divided by the training data's maximum pixel value
    (16 for digits, 255 for MNIST and CIFAR-10); float pixels are taken to be
    in [0, 1] already.
    """
    spec = metadata.get("input", {})
    expected = spec.get("shape")
    if images.ndim == 3:
        images = images[:, None, :, :]
    if images.ndim != 4:
        raise ValueError(
            f"{path}: images must have shape (N, H, W) or (N, C, H, W), got {images.shape}"
        )
    if expected is not None and list(images.shape[1:]) != list(expected):
        raise ValueError(
            f"{path}: images have shape {tuple(images.shape[1:])} per sample, the model was "
            f"trained on {tuple(expected)}"
        )
    if len(images) == 0:
        raise ValueError(f"{path} holds no images")
    if images.dtype.kind in "iu":
        images = images.astype(np.float32) / np.float32(spec.get("pixel_max", 255))
    elif images.dtype.kind != "f":
        raise ValueError(
            f"{path}: images must be integer or float pixels, got dtype {images.dtype}"
        )
    return preprocess(images, int(spec.get("upsample", 1)), float(spec.get("mean", 0.0)),
                      float(spec.get("std", 1.0)))


def run_predict(args) -> int:
    try:
        return _predict(args)
    except _ERRORS as error:
        print(f"cnnblas predict: error: {error}", file=sys.stderr)
        return 1


def _predict(args) -> int:
    from cnnblas.train import load_model

    _set_threads(args.threads)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, saved = load_model(args.checkpoint)
    images = _prepare_images(_read_array(args.input, "images"), saved.metadata, args.input)
    labels = None
    if args.labels is not None:
        labels = _read_array(args.labels, "labels")
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise ValueError(
                f"{args.labels}: labels must be a 1-D integer array, got dtype {labels.dtype} "
                f"and shape {labels.shape}"
            )
        if len(labels) != len(images):
            raise ValueError(
                f"{args.labels} holds {len(labels)} labels but {args.input} holds "
                f"{len(images)} images"
            )
    predictions = np.concatenate([
        model(images[low:low + args.batch_size]).argmax(axis=1)
        for low in range(0, len(images), args.batch_size)
    ]).astype(np.int64)
    if args.output is not None:
        np.save(args.output, predictions)
        print(f"{len(predictions)} predictions saved to {args.output}")
    else:
        sys.stdout.write("".join(f"{label}\n" for label in predictions.tolist()))
    if labels is not None:
        correct = int(np.count_nonzero(predictions == labels))
        print(f"accuracy {correct / len(labels):.4f} ({correct}/{len(labels)})")
    return 0
