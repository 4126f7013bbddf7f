"""``cnnblas bench``: the benchmark report, run from the source checkout this package sits in.

The report (``benchmarks/report.py``) is not part of the installed package:
it runs as ``python -m benchmarks.report`` in a subprocess that finds it on
``PYTHONPATH`` (the checkout's root, located from this file's own path). The
working directory stays the user's, so a relative ``--out`` means what it
says.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["add_command", "checkout_root", "run_bench"]

#: The repository root when cnnblas runs from a source checkout (cnnblas/cli/bench.py -> root).
_ROOT = Path(__file__).resolve().parents[2]


def add_command(commands) -> None:
    """Add ``bench`` to an argparse sub-parsers object."""
    # Every argument, options included (--quick, --help, ...), belongs to the report: with
    # no option prefix of its own, this parser takes them all as report_args.
    bench = commands.add_parser("bench", help="run the benchmark report (source checkout); "
                                "'cnnblas bench --help' shows the report's options",
                                prefix_chars="+", add_help=False)
    bench.add_argument("report_args", nargs=argparse.REMAINDER,
                       help="arguments passed to benchmarks.report")
    bench.set_defaults(func=run_bench)


def checkout_root() -> Path | None:
    """The repository root when it holds ``benchmarks/report.py`` (a source checkout), else None."""
    return _ROOT if (_ROOT / "benchmarks" / "report.py").is_file() else None


def run_bench(args) -> int:
    """Run ``python -m benchmarks.report REPORT_ARGS`` in the checkout; 2 outside of one."""
    root = checkout_root()
    if root is None:
        print("cnnblas bench needs a source checkout (benchmarks/report.py next to the cnnblas "
              "package): clone the repository and run it there", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "benchmarks.report", *args.report_args]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return subprocess.run(command, env={**os.environ, "PYTHONPATH": path},
                          check=False).returncode
