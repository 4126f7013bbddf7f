"""What the commands share: the thread setting, the errors reported as one line."""

from __future__ import annotations

__all__ = ["ERRORS", "set_threads"]

#: Errors a command reports as one line (``cnnblas <command>: error: ...``, exit code 1).
ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError, ImportError, OSError)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` threads for kernels and BLAS; None keeps the current setting.

    Raises
    ------
    ValueError
        ``threads`` is out of range; the message names ``--threads``.
    """
    if threads is not None:
        import cnnblas
        from cnnblas.threads import max_threads

        if not 1 <= threads <= max_threads():
            raise ValueError(f"--threads must be between 1 and {max_threads()} (the cores "
                             f"numba may use, NUMBA_NUM_THREADS), got {threads}")
        cnnblas.set_num_threads(threads)


def add_import_option(parser) -> None:
    """Add ``--import MODULE`` (repeatable) to a command that loads a checkpoint."""
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import MODULE first (a module name, found in the current directory or on "
             "PYTHONPATH, or a path to a .py file), e.g. the module that registers a model "
             "of your own with cnnblas.nn.register_model; may be repeated")


def import_user_modules(modules: list[str]) -> None:
    """Import every ``--import`` value: a module name or a ``.py`` file, in order.

    The current directory is searched first, as ``python -m`` does, so
    ``--import my_models`` finds ``./my_models.py`` from the installed
    ``cnnblas`` command too.

    Raises
    ------
    ImportError
        A module that cannot be found or fails while importing; the message
        names ``--import`` and the module.
    """
    import importlib
    import importlib.util
    import os
    import sys
    from pathlib import Path

    for module in modules:
        try:
            if module.endswith(".py"):
                path = Path(module)
                if not path.is_file():
                    raise ImportError(f"the file {path} does not exist")
                # A name of its own, so that a file called json.py or numpy.py
                # does not replace that module for the rest of the process.
                name = f"_cnnblas_import_{path.resolve()}"
                spec = importlib.util.spec_from_file_location(name, path)
                loaded = importlib.util.module_from_spec(spec)
                sys.modules[name] = loaded
                try:
                    spec.loader.exec_module(loaded)
                except BaseException:
                    del sys.modules[name]
                    raise
            else:
                if os.getcwd() not in sys.path and "" not in sys.path:
                    sys.path.insert(0, os.getcwd())
                importlib.import_module(module)
        except Exception as error:  # the user's code may raise anything while importing
            raise ImportError(f"--import {module}: {type(error).__name__}: {error}") from error
