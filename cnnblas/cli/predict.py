"""``cnnblas predict CHECKPOINT INPUT``: one predicted class per image.

Loads the checkpoint with :func:`cnnblas.load_model` (the model rebuilt by its
registered builder, ``--import`` bringing in a user's own, and the
preprocessing of its training images), predicts with the returned
:class:`~cnnblas.inference.Predictor`, which refuses images the model was not
trained on, and prints one class per line (or saves them with ``--output``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cnnblas.cli.common import ERRORS, add_import_option, import_user_modules, set_threads

__all__ = ["add_command", "run_predict"]


#: What ``predict --help`` says about the accepted images.
INPUT_HELP = (
    "images: an IDX file (raw or .gz) or a .npy array of shape (N, H, W) or (N, C, H, W), "
    "the size the model was trained on. Integer pixels must lie in the training data's range "
    "(0..255 for MNIST and CIFAR-10, 0..16 for the digits) and are scaled as in training; "
    "float pixels must already be scaled to the training range (0..1, i.e. pixels / 255). "
    "NaN or inf, integers above the training range (e.g. 16-bit images for a 0..255 model) "
    "and floats outside 0..1 are errors, never silently converted"
)


def add_command(commands) -> None:
    """Add ``predict`` to an argparse sub-parsers object."""
    predict = commands.add_parser(
        "predict", help="classify images with a checkpoint written by 'cnnblas train' or a "
                        "Trainer",
        description="Print the predicted class of every image, one per line. The images are "
                    "prepared as the training images were (scaled, upsampled, standardised "
                    "with the checkpoint's statistics; see cnnblas.load_model). A model of "
                    "your own is rebuilt by the builder registered with "
                    "cnnblas.nn.register_model in the module given to --import.",
    )
    predict.add_argument("checkpoint", type=Path, help="a .npz written by cnnblas train")
    predict.add_argument("input", type=Path, help=INPUT_HELP)
    predict.add_argument("--labels", type=Path, default=None,
                         help="true labels (IDX or .npy): also print the accuracy")
    predict.add_argument("--output", type=Path, default=None, metavar="PATH.npy",
                         help="save the predictions as .npy instead of printing them")
    predict.add_argument("--batch-size", type=int, default=256,
                         help="images per forward pass (default: %(default)s)")
    predict.add_argument("--threads", type=int, default=None,
                         help="threads for kernels and BLAS (default: all cores)")
    add_import_option(predict)
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
    from cnnblas.inference import load_model

    set_threads(args.threads)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    import_user_modules(args.imports)
    predictor = load_model(args.checkpoint)
    # Checked (and integers scaled) first, so that bad images are named before the labels.
    images = predictor.preprocessing.scale(_read_array(args.input, "images"),
                                           f"the images of {args.input}")
    labels = None
    if args.labels is not None:
        labels = _read_labels(args.labels, len(images), args.input)
    predictions = predictor.predict(images, batch_size=args.batch_size)
    if args.output is not None:
        np.save(args.output, predictions)
        print(f"{len(predictions)} predictions saved to {args.output}")
    else:
        sys.stdout.write("".join(f"{label}\n" for label in predictions.tolist()))
    if labels is not None:
        correct = int(np.count_nonzero(predictions == labels))
        print(f"accuracy {correct / len(labels):.4f} ({correct}/{len(labels)})")
    return 0
