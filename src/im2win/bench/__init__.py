"""Benchmark harness: the paper's layers, timing, and the `im2win bench` command."""
