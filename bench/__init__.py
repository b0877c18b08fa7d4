"""Benchmarks: `make bench` (never part of the tests). Each prints figures measured in one run."""
