"""Data-parallel scaling on one machine: 1 rank x T threads against P ranks x T/P threads.

Trains LeNet-5 on the embedded digits exactly as ``cnnblas train`` builds it
(8x8 digits upsampled to 16x16, standardised, SGD with Nesterov momentum,
cosine schedule, global batch B) and reports, per configuration, the training
images per second (epochs after the first, which includes warm-up) and, on
rank 0, the share of the training time spent in the gradient ``Allreduce``
(including the wait for the slower rank)::

    python -m benchmarks.mpi_scaling                   # B = 16 and 64, 6 epochs, best of 3
    python -m benchmarks.mpi_scaling --batch-sizes 16 --epochs 4 --repeats 1 --ranks 2

Each run is a fresh process (``mpiexec -n P`` for P > 1), so thread pools and
MPI start clean; the runs of the configurations are interleaved and the best
of ``--repeats`` is kept (an epoch of the digits lasts a fraction of a second,
so other load on the machine shows up as noise). Prints a Markdown table.
Needs mpi4py and mpiexec for the multi-rank rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_mpiexec() -> str | None:
    """The ``mpiexec`` beside this Python, else on PATH, else None."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def launch(command: list[str], ranks: int) -> tuple[list[str], dict[str, str]]:
    """``command`` (a Python module run from this checkout) as ``ranks`` MPI ranks, and
    its environment: this one without an enclosing MPI job's variables, with the
    checkout on PYTHONPATH. One rank runs the command as it is."""
    if ranks > 1:
        mpiexec = find_mpiexec()
        if mpiexec is None:
            raise RuntimeError("mpiexec not found: pip install 'cnnblas[mpi]'")
        command = [mpiexec, "-n", str(ranks), *command]
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "PMIX_", "OMPI_", "MV2_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return command, env


# --------------------------------------------------------------------------- worker


def worker(batch_size: int, threads: int, epochs: int) -> None:
    """Train as ``cnnblas train`` would; rank 0 prints one JSON line of measurements."""
    from cnnblas import distributed
    from cnnblas.cli.train import add_command, prepare_run

    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    args = parser.parse_args(["train", "--epochs", str(epochs), "--batch-size", str(batch_size),
                              "--threads", str(threads), "--no-progress"])
    world = distributed.init()
    trainer, data, _ = prepare_run(args, world)
    history = trainer.fit((data.x_train, data.y_train), epochs, batch_size=batch_size,
                          seed=args.seed, progress=False, log=None)
    if not trainer.is_main:
        return
    timed = history[1:] or history
    seconds = sum(record["seconds"] for record in timed)
    images = sum(record["images_per_second"] * record["seconds"] for record in timed)
    allreduce = sum(record.get("allreduce_seconds", 0.0) for record in timed)
    print(json.dumps({
        "ranks": trainer.world_size, "threads": threads, "batch_size": batch_size,
        "images_per_second": images / seconds, "allreduce_share": allreduce / seconds,
        "steps_per_epoch": -(-len(data.x_train) // batch_size),
        "accuracy": history[-1]["accuracy"],
    }), flush=True)


# --------------------------------------------------------------------------- driver


def measure(ranks: int, threads: int, batch_size: int, epochs: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.mpi_scaling", "--worker",
               "--threads", str(threads), "--batch-sizes", str(batch_size),
               "--epochs", str(epochs)]
    command, env = launch(command, ranks)
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| global batch | ranks x threads | images/s | speed-up | Allreduce share of "
             "step time |", "| ---: | --- | ---: | ---: | ---: |"]
    baseline: dict[int, float] = {}
    for row in rows:
        base = baseline.setdefault(row["batch_size"], row["images_per_second"])
        share = f"{100 * row['allreduce_share']:.1f} %" if row["ranks"] > 1 else "–"
        lines.append(f"| {row['batch_size']} | {row['ranks']} x {row['threads']} | "
                     f"{row['images_per_second']:.0f} | {row['images_per_second'] / base:.2f} | "
                     f"{share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--epochs", type=int, default=6,
                        help="epochs per run; the first is not timed (default: %(default)s)")
    parser.add_argument("--ranks", type=int, default=2, help="P (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per configuration, the fastest kept (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the one-rank run, divided among the P ranks "
                             "(default: the number of ranks)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.batch_sizes[0], args.threads, args.epochs)
        return 0
    threads = args.threads or args.ranks
    configurations = [(1, 1), (1, threads), (args.ranks, max(1, threads // args.ranks))]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for batch_size in args.batch_sizes:
        best: dict[tuple[int, int], dict] = {}
        for _ in range(max(1, args.repeats)):
            for ranks, per_rank in configurations:
                row = measure(ranks, per_rank, batch_size, args.epochs)
                print(f"batch {batch_size}, {ranks} x {per_rank}: "
                      f"{row['images_per_second']:.0f} img/s, Allreduce "
                      f"{100 * row['allreduce_share']:.1f} %", file=sys.stderr, flush=True)
                key = (ranks, per_rank)
                if key not in best or row["images_per_second"] > best[key]["images_per_second"]:
                    best[key] = row
        rows.extend(best[key] for key in configurations)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"LeNet-5 on the digits (16x16) as `cnnblas train` builds it, {args.epochs} epochs "
          f"per run (the first not timed), best of {max(1, args.repeats)} runs, "
          f"{os.cpu_count()} cores, load average {load:.2f} at start and {load_end:.2f} at "
          "end; speed-up against 1 x 1 at the same global batch.\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
