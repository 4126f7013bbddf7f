"""A saved classifier ready for raw images: :class:`Predictor` and :func:`load_model`.

A checkpoint of the :class:`~cnnblas.train.Trainer` (or of ``cnnblas train``)
records how to build its model (a registered builder and its arguments, see
:func:`cnnblas.nn.register_model`) and how the training images were prepared
(:class:`cnnblas.data.Preprocessing`). :func:`load_model` reads both back::

    predictor = cnnblas.load_model("run.npz")
    predictor.predict(raw_uint8_images)      # class indices, int64 (N,)
    predictor.predict_proba(raw_uint8_images)  # softmax probabilities (N, classes)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np

from cnnblas.checks import check_int
from cnnblas.data import Preprocessing
from cnnblas.functional import softmax
from cnnblas.nn import Module, model_from_checkpoint

__all__ = ["Predictor", "load_model"]


class Predictor:
    """A trained model with the preprocessing of its training images.

    Parameters
    ----------
    model : cnnblas.nn.Module
        Maps the preprocessed images (N, C, H, W) to logits (N, classes); run
        in eval mode.
    preprocessing : cnnblas.data.Preprocessing, optional
        Applied to every batch of raw images first. None: the images are the
        model's input already (floats, checked finite, not range-checked).
    metadata : dict, optional
        The checkpoint's metadata (model builder, data, training options).
    epoch : int, default 0
        Epochs the model was trained for.

    Attributes
    ----------
    model, preprocessing, metadata, epoch
        As given.

    Notes
    -----
    Accepted images, checked before the model runs (see
    :meth:`cnnblas.data.Preprocessing.__call__`): shape (N, C, H, W) as in
    training, or (N, H, W) for one channel; integer pixels in [0,
    ``preprocessing.pixel_max``] (e.g. uint8 0..255 for MNIST), or floats in
    the scaled range the model was trained on (0..1 for the data loaders of
    :mod:`cnnblas.data`). NaN or inf, integers above the training data's
    largest pixel value (uint16 0..65535 for a 0..255 model) and floats out of
    range (0..255 floats for a 0..1 model) raise ValueError rather than give
    a meaningless answer.
    """

    def __init__(self, model: Module, preprocessing: Preprocessing | None = None,
                 metadata: Mapping | None = None, epoch: int = 0):
        if not isinstance(model, Module):
            raise TypeError(f"model must be a cnnblas.nn.Module, got {type(model).__name__}")
        if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
            raise TypeError("preprocessing must be a cnnblas.data.Preprocessing or None, got "
                            f"{type(preprocessing).__name__}")
        self.model = model.eval()
        self.preprocessing = preprocessing or Preprocessing(value_range=None)
        self.metadata = dict(metadata or {})
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def __repr__(self) -> str:
        name = (self.metadata.get("model") or {}).get("name", type(self.model).__name__)
        return f"Predictor({name}, epoch {self.epoch}, {self.preprocessing})"

    def _logits(self, images, batch_size: int) -> Iterator[np.ndarray]:
        """Logits batch by batch; every batch is checked and preprocessed first."""
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        prepare = self.preprocessing
        images = prepare.scale(images)  # checks the whole input before any work
        self.model.eval()
        dtype = next((param.dtype for param in self.model.parameters()), np.float32)
        for low in range(0, len(images), batch_size):
            yield self.model(prepare.resize_and_standardize(images[low:low + batch_size], dtype))

    def predict_proba(self, images, batch_size: int = 256) -> np.ndarray:
        """Softmax probabilities of every class, float32 (N, classes).

        See the class notes for the accepted ``images``.
        """
        return np.concatenate([softmax(logits, axis=1)
                               for logits in self._logits(images, batch_size)])

    def predict(self, images, batch_size: int = 256) -> np.ndarray:
        """The most probable class of every image, int64 (N,).

        Parameters
        ----------
        images : array_like, (N, C, H, W) or (N, H, W)
            Raw images as the training data came (see the class notes).
        batch_size : int, default 256
            Images per forward pass (the :class:`~cnnblas.train.Trainer`'s
            evaluation uses the same default, so the answers match it).

        Raises
        ------
        TypeError, ValueError
            Images the model was not trained on; the message says what was
            expected (and which image holds NaN or inf).
        """
        return np.concatenate([logits.argmax(axis=1)
                               for logits in self._logits(images, batch_size)]).astype(np.int64)


def load_model(path: str | os.PathLike) -> Predictor:
    """The model saved in a checkpoint, with its preprocessing: a :class:`Predictor`.

    The model is rebuilt by its registered builder
    (:func:`cnnblas.nn.model_from_checkpoint`): for a model of your own,
    import the module that calls :func:`cnnblas.nn.register_model` first.
    The preprocessing is the checkpoint's ``metadata["input"]`` (written by
    ``cnnblas train`` and by ``Trainer(..., preprocessing=...)``); without
    it the images are taken as the model's input.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        An unreadable checkpoint, an unregistered builder (the message says
        how to register it), weights that do not fit, or preprocessing
        metadata that cannot be read; the message names the file.
    """
    model, saved = model_from_checkpoint(path)
    spec = saved.metadata.get("input")
    try:
        preprocessing = None if spec is None else Preprocessing.from_metadata(spec)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{saved.path}: cannot read the preprocessing "
                         f"(metadata['input']): {error}") from error
    return Predictor(model, preprocessing, saved.metadata, saved.epoch)
