"""Optimizers and learning-rate schedules (NumPy only).

An optimizer holds a list of parameter objects, each with a ``.data`` and a
``.grad`` NumPy array of the same shape and dtype (``cnnblas.nn.Parameter``, or
anything shaped like it). :meth:`Optimizer.step` reads every ``.grad`` and
updates ``.data`` in place; parameters whose ``.grad`` is ``None`` are skipped,
as in PyTorch. Nothing upcasts: a float32 parameter keeps float32 state and is
updated in float32.

The update rules (:func:`sgd_update`, :func:`adam_update`) are those of
``torch.optim.SGD`` and ``torch.optim.Adam`` (without ``maximize``,
``amsgrad`` or parameter groups), and the schedules
(:mod:`cnnblas.optim.lr_scheduler`) give the values of
``torch.optim.lr_scheduler.StepLR`` and ``CosineAnnealingLR``.

State dictionaries are flat ``{str: numpy array or scalar}`` mappings with no
object arrays and no nesting, so ``np.savez(path, **opt.state_dict())`` and
``opt.load_state_dict(np.load(path, allow_pickle=False))`` round-trip exactly.
Per-parameter entries are keyed ``"<name>.<index>"`` with ``index`` the
position of the parameter in the list given to the optimizer, e.g.
``"momentum.3"`` or ``"exp_avg_sq.0"``.
"""

from cnnblas.optim.adam import Adam, adam_update
from cnnblas.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from cnnblas.optim.optimizer import Optimizer
from cnnblas.optim.sgd import SGD, sgd_update

__all__ = [
    "Optimizer", "SGD", "Adam", "sgd_update", "adam_update",
    "LRScheduler", "StepLR", "CosineAnnealingLR",
]
