"""Which Numba threading layer runs the kernels' ``prange`` loops.

Numba's default on Linux is OpenMP (libgomp), whose idle workers keep spinning
for a while after every parallel loop. cnnblas alternates Numba loops (im2col,
col2im, transforms) with OpenBLAS GEMMs whose threads spin too, so on a
machine without spare cores the two pools fight over the same cores at every
hand-over. Measured on 2 cores (res56 forward, 2 threads): 32 ms with OpenMP,
7.8 ms with the ``workqueue`` layer, whose workers sleep when idle (1 thread:
16 ms); see benchmarks/LOG.md.

The workqueue layer's one restriction, no two parallel launches at once,
cannot be hit by cnnblas: its kernels hold the GIL. A layer the user chose
with ``NUMBA_THREADING_LAYER`` is always respected.
"""

from __future__ import annotations

import os

import numba.core.config

PREFERRED_LAYER = "workqueue"


def _choose_layer() -> None:
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return
    numba.core.config.THREADING_LAYER = PREFERRED_LAYER


_choose_layer()
