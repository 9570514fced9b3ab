"""Throughput benchmarks (not tests): `python -m benchmarks.run --help`; see docs/performance.md."""
