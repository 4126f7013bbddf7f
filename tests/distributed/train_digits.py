"""Helper of tests/distributed/test_distributed.py: train on the digits with the Python Trainer.

Run as one process (``python train_digits.py ...``) or under ``mpiexec -n P``:
the Trainer picks the MPI world up by itself. Rank 0 saves the final weights
and history to ``--out``. Test hooks: ``--perturb-rank R`` nudges one weight
of rank R after its 5th optimizer step (the weights check must catch it);
``--fail-rank R --fail-step K`` raises in the loss on rank R at its K-th
training step (the job must end with that error, not hang).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import cnnblas
from cnnblas import nn, optim
from cnnblas.data import load_digits
from cnnblas.train import Trainer

TOTAL_EPOCHS = 2  # the schedule's length, whatever --epochs this run stops at


class PerturbingSGD(optim.SGD):
    """SGD that adds 1e-6 to one weight on ``rank`` after its 5th step."""

    rank = -1
    my_rank = 0

    def step(self):
        super().step()
        self.steps = getattr(self, "steps", 0) + 1
        if self.my_rank == self.rank and self.steps == 5:
            self.params[0].data.flat[0] += 1e-6


class FailingLoss(nn.SoftmaxCrossEntropy):
    """Cross-entropy that raises on ``rank`` at its ``step``-th training step."""

    rank, step, my_rank = -1, 0, 0

    def forward(self, logits, labels):
        if self.training:
            self.calls = getattr(self, "calls", 0) + 1
            if self.my_rank == self.rank and self.calls == self.step:
                raise ValueError(f"injected failure at step {self.calls}")
        return super().forward(logits, labels)


def build(name: str, dtype):
    if name == "lenet5":
        return nn.lenet5(num_classes=10, input_size=8, dtype=dtype, rng=0, input_grad=False)
    rng = np.random.default_rng(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, dtype=dtype, rng=rng, input_grad=False),
        nn.BatchNorm2d(8, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10, dtype=dtype, rng=rng),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", choices=("lenet5", "bn"), default="lenet5")
    parser.add_argument("--sync-batchnorm", action="store_true")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--epochs", type=int, default=TOTAL_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=15)
    parser.add_argument("--limit", type=int, default=403)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--perturb-rank", type=int, default=-1)
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--fail-step", type=int, default=0)
    args = parser.parse_args()

    cnnblas.set_num_threads(1)
    dtype = np.dtype(args.dtype)
    data = load_digits()
    mean, std = data.x_train.mean(), data.x_train.std()
    x = ((data.x_train[:args.limit] - mean) / std).astype(dtype)
    y = data.y_train[:args.limit]
    xt = ((data.x_test - mean) / std).astype(dtype)
    yt = data.y_test

    model = build(args.model, dtype)
    optimizer = PerturbingSGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = optim.CosineAnnealingLR(optimizer, t_max=TOTAL_EPOCHS)
    loss = FailingLoss()
    trainer = Trainer(model, loss, optimizer, scheduler, sync_batchnorm=args.sync_batchnorm)
    optimizer.rank, optimizer.my_rank = args.perturb_rank, trainer.rank
    loss.rank, loss.step, loss.my_rank = args.fail_rank, args.fail_step, trainer.rank
    trainer.fit((x, y), args.epochs, batch_size=args.batch_size, seed=3, val=(xt, yt),
                checkpoint=args.checkpoint, resume=args.resume, progress=False)
    result = trainer.evaluate(xt, yt)
    if trainer.is_main:
        arrays = {f"model.{key}": value for key, value in trainer.model.state_dict().items()}
        history = [{k: v for k, v in record.items()
                    if k not in ("seconds", "images_per_second", "allreduce_seconds")}
                   for record in trainer.history]
        arrays["history"] = np.array(json.dumps(history))
        arrays["evaluate"] = np.array(json.dumps(result))
        arrays["ranks"] = np.array(trainer.world_size)
        np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
