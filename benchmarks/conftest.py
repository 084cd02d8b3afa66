"""pytest-benchmark suite over the registry: ``make bench``.

Benchmarks are not tests: they measure and assert nothing.  Each benchmark
records the bytes it reads and writes in ``extra_info``, so that
``python -m experiments bench-summary`` can turn the JSON into GB/s and ratios.
"""
