"""The study's harness: settings, inputs and grids, timing, and the tables on
disk with their provenance."""
