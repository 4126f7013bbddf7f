"""cnnblas benchmarks: pytest-benchmark suites and the report script.

``python -m benchmarks.report`` writes ``benchmarks/results/report.md``; see
``benchmarks/NOTES.md`` for how to run everything and what the columns mean.
Every benchmark reads its convolution shapes from ``benchmarks/shapes.csv``.
"""
