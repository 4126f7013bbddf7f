"""cnnblas benchmarks: pytest-benchmark suites and the report script.

``python -m benchmarks.report`` writes ``benchmarks/results/report.md``; see
``benchmarks/README.md`` for how to run everything and what the columns mean, and
``benchmarks/LOG.md`` for the experiments behind the engine's choices.
Every benchmark reads its convolution shapes from ``benchmarks/shapes.csv``.
"""
