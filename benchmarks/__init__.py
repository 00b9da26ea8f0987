"""Benchmarks behind `make bench`: figures printed, never asserted (machines are noisy)."""
