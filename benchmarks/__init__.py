"""Benchmarks: `python -m benchmarks.run [name ...]` prints a table and writes JSON to benchmarks/results/."""
