"""What a checkpoint holds of a training run: gather it, and restore it all or nothing.

Sections (see :mod:`cnnblas.checkpoint`): ``model``, ``optim``, ``sched`` (with
a schedule), ``loader`` (once ``fit`` has run) and ``rng``: the state of every
numpy Generator held by a layer (e.g. :class:`~cnnblas.nn.Dropout`), as JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from cnnblas import checkpoint as ckpt

__all__ = ["layer_generators", "training_sections", "restore_training_state"]


def layer_generators(model) -> Iterator[tuple[str, np.random.Generator]]:
    """Every numpy Generator held by a module of ``model``, with a stable name."""
    for module_name, module in model.named_modules():
        for attribute, value in sorted(vars(module).items()):
            if isinstance(value, np.random.Generator):
                yield (f"{module_name}.{attribute}" if module_name else attribute), value


def training_sections(model, optimizer, scheduler=None, loader=None) -> dict[str, Mapping]:
    """The checkpoint sections of a run (schedule, loader and ``rng`` only when present)."""
    sections: dict[str, Mapping] = {
        "model": model.state_dict(),
        "optim": optimizer.state_dict(),
    }
    if scheduler is not None:
        sections["sched"] = scheduler.state_dict()
    if loader is not None:
        sections["loader"] = loader.state_dict()
    generators = {name: ckpt.json_to_array(generator.bit_generator.state)
                  for name, generator in layer_generators(model)}
    if generators:
        sections["rng"] = generators
    return sections


def _check_sections(saved: ckpt.Checkpoint, scheduler, generators: dict) -> None:
    sections = saved.sections
    if not sections["model"]:
        raise ValueError(f"{saved.path}: the checkpoint holds no model state")
    if not sections["optim"]:
        raise ValueError(f"{saved.path}: the checkpoint holds no optimizer state")
    if (scheduler is None) != (not sections["sched"]):
        have = "has no" if scheduler is None else "has a"
        raise ValueError(
            f"{saved.path}: the checkpoint was saved with schedule "
            f"{saved.metadata.get('scheduler')!r}, but this trainer {have} schedule"
        )
    if set(generators) != set(sections["rng"]):
        raise ValueError(
            f"{saved.path}: the checkpoint holds random generators "
            f"{sorted(sections['rng'])}, the model has {sorted(generators)}"
        )


def restore_training_state(saved: ckpt.Checkpoint, model, optimizer, scheduler=None) -> None:
    """Load the model, optimizer, schedule and layer generators of ``saved``, all or nothing.

    Raises
    ------
    ValueError
        A section is missing or does not fit (other architecture, optimizer or
        schedule); the message names the file, and nothing has changed.
    """
    generators = dict(layer_generators(model))
    _check_sections(saved, scheduler, generators)
    sections = saved.sections
    rng_states = {name: ckpt.array_to_json(value, f"{saved.path}: entry 'rng.{name}'")
                  for name, value in sections["rng"].items()}
    backup_model = model.state_dict()
    backup_optim = optimizer.state_dict()
    backup_sched = None if scheduler is None else scheduler.state_dict()
    backup_rngs = {name: g.bit_generator.state for name, g in generators.items()}
    try:
        model.load_state_dict(sections["model"])
        optimizer.load_state_dict(sections["optim"])
        if scheduler is not None:
            scheduler.load_state_dict(sections["sched"])
        for name, state in rng_states.items():
            generators[name].bit_generator.state = state
    except (TypeError, ValueError, KeyError) as error:
        model.load_state_dict(backup_model)
        optimizer.load_state_dict(backup_optim)
        if backup_sched is not None:
            scheduler.load_state_dict(backup_sched)
        for name, state in backup_rngs.items():
            generators[name].bit_generator.state = state
        raise ValueError(f"{saved.path}: cannot restore the checkpoint: {error}") from error
