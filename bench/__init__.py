"""Benchmarks: ``python -m bench`` (see bench/README.md and bench/run.py)."""
