"""The ``cnnblas`` command line: ``info``, ``warmup``, ``train``, ``predict``, ``bench``."""

from __future__ import annotations

import argparse
import sys

from cnnblas.cli import bench, export, predict, train

__all__ = ["main", "build_parser"]


def _info(args) -> int:
    from cnnblas.info import environment, format_environment

    print(format_environment(environment()))
    return 0


def _warmup(args) -> int:
    from cnnblas.info import warm_up

    # One line per group of kernels on stderr: a cold cache takes minutes.
    seconds = warm_up(progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"kernels ready in {seconds:.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of every sub-command; each sets ``func``, which runs it and returns its code."""
    # The docstring's reST literals (``info``) read as plain words in --help.
    parser = argparse.ArgumentParser(prog="cnnblas", description=__doc__.replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, BLAS libraries, threads, kernel cache"
                        ).set_defaults(func=_info)
    commands.add_parser("warmup", help="compile every kernel into the cache"
                        ).set_defaults(func=_warmup)
    bench.add_command(commands)
    train.add_command(commands)
    predict.add_command(commands)
    export.add_command(commands)
    for command in commands.choices.values():
        command.set_defaults(command_parser=command)  # reports its own unknown options
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``cnnblas`` with ``argv`` (default: the process's arguments); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # with the usage of the command they were given to, not the top level's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv  # the processes of ``cnnblas train`` run the same command line
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
