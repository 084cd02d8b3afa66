"""Benchmarks that need a device (an NVIDIA GPU)."""
