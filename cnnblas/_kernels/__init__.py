"""Numba kernels: the only compiled code in cnnblas.

Kernels assume validated, C-contiguous arrays and in-range geometry; all
checking happens in :mod:`cnnblas.ops`. Every kernel is compiled with
``cache=True``; see :mod:`cnnblas._kernels.cache` for where the cache lives.
"""

from cnnblas._kernels import cache as _cache  # noqa: F401  (choose the cache dir before any compile)
from cnnblas._kernels import threading_layer as _threading_layer  # noqa: F401, E402
