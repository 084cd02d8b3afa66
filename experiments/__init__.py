"""The study harness: sweeps of speed and numerical error over the registry."""
