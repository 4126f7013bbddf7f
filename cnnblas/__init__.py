"""cnnblas."""
