"""The ``cnnblas`` command line: ``info``, ``warmup``, ``train``, ``predict``, ``bench``."""

from __future__ import annotations

import argparse
import sys


def _info(args) -> int:
    from cnnblas.info import environment, format_environment

    print(format_environment(environment()))
    return 0


def _warmup(args) -> int:
    from cnnblas.info import warm_up

    seconds = warm_up()
    print(f"kernels ready in {seconds:.2f} s")
    return 0


def _bench(args) -> int:
    try:
        from benchmarks.report import main as report_main
    except ImportError:
        print("cnnblas bench runs from a source checkout: cd to the repository root and run "
              "'python -m benchmarks.report' (or 'make report')", file=sys.stderr)
        return 2
    return report_main(args.report_args) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnblas", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, BLAS libraries, threads, kernel cache"
                        ).set_defaults(func=_info)
    commands.add_parser("warmup", help="compile every kernel into the cache"
                        ).set_defaults(func=_warmup)
    bench = commands.add_parser("bench", help="run the benchmark report (source checkout)")
    bench.add_argument("report_args", nargs=argparse.REMAINDER,
                       help="arguments passed to benchmarks.report")
    bench.set_defaults(func=_bench)
    _add_training_commands(commands)
    return parser


def _add_training_commands(commands) -> None:
    """`train` and `predict` live with the trainer (cnnblas.train_cli)."""
    try:
        from cnnblas import train_cli
    except ImportError:
        return
    train_cli.add_commands(commands)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
