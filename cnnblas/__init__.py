"""cnnblas: convolutional networks on the CPU as BLAS GEMMs over Numba im2col.

>>> import numpy as np, cnnblas as cb
>>> x = np.ones((1, 1, 4, 4), np.float32); w = np.ones((2, 1, 3, 3), np.float32)
>>> cb.conv2d(x, w, padding=1).shape
(1, 2, 4, 4)
"""

import os as _os

# Idle OpenBLAS pool threads spin for 2**28 cycles before they sleep, taking a
# core from cnnblas's worker threads between BLAS calls and nearly doubling the
# CPU time of a two-thread training step (see benchmarks/LOG.md). Set before
# NumPy loads OpenBLAS when cnnblas comes first; shorten_openblas_spin() below
# applies it to an OpenBLAS already loaded. A value the user set is kept.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from cnnblas import data, functional, nn, optim  # noqa: E402
from cnnblas._version import __version__  # noqa: E402
from cnnblas.allocator import keep_freed_memory as _keep_freed_memory  # noqa: E402
from cnnblas.inference import Predictor, load_model  # noqa: E402
from cnnblas.ops.algorithms import choose_algorithm  # noqa: E402
from cnnblas.ops.conv import col2im, conv2d, conv2d_backward, im2col  # noqa: E402
from cnnblas.ops.conv_transpose import conv_transpose2d, conv_transpose2d_backward  # noqa: E402
from cnnblas.ops.workspace import get_workspace_limit, set_workspace_limit  # noqa: E402
from cnnblas.threads import get_num_threads, set_num_threads  # noqa: E402
from cnnblas.threads import shorten_openblas_spin as _shorten_openblas_spin  # noqa: E402
from cnnblas.weights import load_weights, save_weights  # noqa: E402

__all__ = [
    "im2col", "col2im", "conv2d", "conv2d_backward", "choose_algorithm",
    "conv_transpose2d", "conv_transpose2d_backward",
    "set_num_threads", "get_num_threads", "set_workspace_limit", "get_workspace_limit",
    "save_weights", "load_weights", "load_model", "Predictor",
    "nn", "optim", "data", "functional", "__version__",
]

# NumPy (or SciPy) imported before cnnblas has read the variable already.
_shorten_openblas_spin()
# Activations freed by one step's backward are reused by the next forward
# rather than faulted in afresh (cnnblas.allocator).
_keep_freed_memory()
