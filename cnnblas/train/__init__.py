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
initialisation and thread count. What happens around the steps (the log line,
the checkpoint, the progress bar, the stop on a non-finite loss) is done by
callbacks (:mod:`cnnblas.train.callbacks`).

Checkpoints (:mod:`cnnblas.checkpoint`) are written at the end of every epoch
and hold everything needed to continue bit for bit (:mod:`cnnblas.train.state`):
the model, optimizer, schedule and data-loader states, the state of every
random generator held by a layer (e.g. :class:`~cnnblas.nn.Dropout`), the epoch
and the history. A run interrupted after epoch ``k`` and resumed from its
checkpoint ends with the same weights, to the bit, as an uninterrupted run
(same thread count). A non-finite loss stops training with
:class:`FloatingPointError` before the next checkpoint is written, so the last
good checkpoint survives. The history is formatted, saved and plotted by
:mod:`cnnblas.train.history`. A model made by :func:`cnnblas.nn.build_model`
records its builder, and ``Trainer(..., preprocessing=...)`` (a
:class:`cnnblas.data.Preprocessing`) how the raw images were prepared: with
both in the checkpoint, :func:`cnnblas.load_model` predicts from raw images.

Under MPI (``mpiexec -n P python script.py``) the same code trains data-parallel
(:mod:`cnnblas.distributed`): ``batch_size`` is the global batch, each rank
trains on its contiguous part of every global batch, one ``Allreduce`` per step
averages the gradients (weighted by each rank's share of the batch), the
weights are checked to be identical on all ranks after every epoch,
evaluation is sharded, and only rank 0 logs, shows the progress bar and
writes checkpoints. ``Trainer(..., comm=False)`` opts out.
"""

from cnnblas.train.trainer import Trainer

__all__ = ["Trainer"]
