"""The version of cnnblas (read by the package root, checkpoints and the environment report)."""

__version__ = "0.1.0"
