"""``cnnblas predict CHECKPOINT INPUT``: one predicted class per image.

Rebuilds the model saved by ``cnnblas train --checkpoint`` (see
:func:`cnnblas.nn.load_model`), brings the images to its input as training
did, and prints one class per line (or saves them with ``--output``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cnnblas.cli.common import ERRORS, preprocess, set_threads

__all__ = ["add_command", "run_predict"]


def add_command(commands) -> None:
    """Add ``predict`` to an argparse sub-parsers object."""
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

    The same upsampling and standardisation (per channel) as the training
    images, never their random augmentation. Integer pixels are divided by
    the training data's maximum pixel value (16 for digits, 255 for MNIST and
    CIFAR-10); float pixels are taken to be in [0, 1] already.
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
    # mean and std: one float, or one per channel (what cnnblas train stores)
    return preprocess(images, int(spec.get("upsample", 1)), spec.get("mean", 0.0),
                      spec.get("std", 1.0))


def _read_labels(path: Path, num_images: int, images_path: Path) -> np.ndarray:
    labels = _read_array(path, "labels")
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise ValueError(
            f"{path}: labels must be a 1-D integer array, got dtype {labels.dtype} "
            f"and shape {labels.shape}"
        )
    if len(labels) != num_images:
        raise ValueError(
            f"{path} holds {len(labels)} labels but {images_path} holds {num_images} images"
        )
    return labels


def run_predict(args) -> int:
    """Run ``cnnblas predict``; an error of :data:`~cnnblas.cli.common.ERRORS` exits 1."""
    try:
        return _predict(args)
    except ERRORS as error:
        print(f"cnnblas predict: error: {error}", file=sys.stderr)
        return 1


def _predict(args) -> int:
    from cnnblas.nn import load_model

    set_threads(args.threads)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, saved = load_model(args.checkpoint)
    images = _prepare_images(_read_array(args.input, "images"), saved.metadata, args.input)
    labels = None
    if args.labels is not None:
        labels = _read_labels(args.labels, len(images), args.input)
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
