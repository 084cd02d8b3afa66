"""``python -m experiments``: command-line entry of the study harness."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from softmax_numba import registry


def smoke(seed: int = 0) -> int:
    """Run every registered entry once per engine on a small float32 array and print
    the worst error in units of u against the float64 reference."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 1000)).astype(np.float32)
    u = 2.0**-24
    print(f"{'entry':32} {'backend':9} max error / u")
    for entry in registry.ENTRIES:
        args = entry.arguments(x, rng)
        ref = registry.outputs(
            entry.reference(
                tuple(
                    np.asarray(a, np.float64) if np.asarray(a).dtype.kind == "f" else a
                    for a in args
                )
            )
        )
        for backend in registry.BACKENDS:
            got = registry.outputs(entry.run(args, backend=backend))
            worst = max(
                float(np.max(registry.scaled_error(k, g, r, args))) / u
                for k, g, r in zip(entry.kinds, got, ref, strict=True)
            )
            print(f"{entry.name:32} {backend:9} {worst:10.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("smoke", help="one small sweep of every entry and engine")
    args = parser.parse_args(argv)
    if args.command == "smoke":
        return smoke()
    return 2


if __name__ == "__main__":
    sys.exit(main())
