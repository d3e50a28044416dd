"""Benchmarks, run by hand: results in docs/benchmarks.md."""
