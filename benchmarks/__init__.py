"""Measurement scripts: each runs as `python -m benchmarks.NAME --help`; their figures live in docs/research/."""
