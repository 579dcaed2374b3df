"""Benchmark scripts over the vitc library; each runs as ``python -m benchmarks.NAME``."""
