"""What one gradient Allreduce costs on the shared-memory communicator of ``cnnblas train``.

Starts P ranks with :func:`cnnblas.distributed.launch.run_ranks` (as the
command line does) and times, on rank 0, the in-place Allreduce of a float32
buffer of LeNet-5's size (61,706 parameters) and of ResNet-20's (272,474),
the ranks entering together (a barrier before each timed call, not timed) and
the ranks entering ``--skew`` microseconds apart (rank 1 late)::

    python -m benchmarks.allreduce               # 2 ranks, 2000 calls per size
    python -m benchmarks.allreduce --ranks 2 --calls 500

Prints one line per size: the median and the 90th percentile per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

SIZES = {"LeNet-5": 61_706, "ResNet-20": 272_474}


def worker(calls: int, skew: float) -> None:
    from cnnblas.distributed import launch

    comm = launch.connect()
    constants = comm.MPI
    lines = []
    for label, size in SIZES.items():
        gradient = np.ones(size, dtype=np.float32)
        token = np.zeros(1)
        for late in (0.0, skew):
            times = []
            for _ in range(calls):
                comm.Allreduce(constants.IN_PLACE, token)  # line up
                if late and comm.rank == 1:
                    end = time.perf_counter() + late
                    while time.perf_counter() < end:
                        pass
                start = time.perf_counter()
                comm.Allreduce(constants.IN_PLACE, gradient)
                times.append(time.perf_counter() - start)
                gradient.fill(1.0)
            times.sort()
            extra = f", rank 1 {late * 1e6:.0f} us late" if late else ""
            lines.append(f"{label} ({size} float32){extra}: median "
                         f"{statistics.median(times) * 1e6:.1f} us, 90% "
                         f"{times[int(0.9 * len(times))] * 1e6:.1f} us")
    if comm.rank == 0:
        print(f"{comm.size} ranks, {calls} calls each:\n" + "\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--skew", type=float, default=500.0,
                        help="microseconds by which rank 1 is late in the second series")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.calls, args.skew * 1e-6)
        return 0
    from cnnblas.distributed.launch import run_ranks

    return run_ranks([sys.executable, "-m", "benchmarks.allreduce", "--worker", "--calls",
                      str(args.calls), "--skew", str(args.skew)], args.ranks,
                     program="benchmarks.allreduce")


if __name__ == "__main__":
    sys.exit(main())
