"""Benchmarks of garo_optax: training quality (`benchmarks.suite`)."""
