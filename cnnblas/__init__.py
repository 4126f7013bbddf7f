"""cnnblas: convolutional networks on the CPU as BLAS GEMMs over Numba im2col.

>>> import numpy as np, cnnblas as cb
>>> x = np.ones((1, 1, 4, 4), np.float32); w = np.ones((2, 1, 3, 3), np.float32)
>>> cb.conv2d(x, w, padding=1).shape
(1, 2, 4, 4)
"""

from cnnblas import data, functional, nn, optim
from cnnblas.ops.conv import col2im, conv2d, conv2d_backward, im2col
from cnnblas.ops.workspace import get_workspace_limit, set_workspace_limit
from cnnblas.threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "im2col", "col2im", "conv2d", "conv2d_backward",
    "set_num_threads", "get_num_threads", "set_workspace_limit", "get_workspace_limit",
    "nn", "optim", "data", "functional", "__version__",
]
