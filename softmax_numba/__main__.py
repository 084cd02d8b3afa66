"""``python -m softmax_numba warmup``: compile and cache the kernels, with a progress bar.

The CPU kernels are cached by Numba on disk (see :mod:`softmax_numba.warmup` and the
README's "Compilation and the cache"): run this once after installing or upgrading,
or on a new machine, so that the first real call does not wait for the compiler.
"""

from __future__ import annotations

import argparse
import sys

from softmax_numba import warmup


def _progress(total: int):
    """Callbacks ``(before each step, after each step, close)``: a tqdm bar on stderr
    whose description names the step that is compiling, or, where tqdm is not
    installed, one line per step as it starts."""
    try:
        from tqdm import tqdm
    except ImportError:
        started = iter(range(1, total + 1))

        def start(s):
            sys.stderr.write(f"[{next(started)}/{total}] {s.name}\n")
            sys.stderr.flush()

        return start, lambda s: None, lambda: None
    bar = tqdm(total=total, unit="call", file=sys.stderr)

    def start(s):
        bar.set_description_str(s.name)  # refreshes: shown while it compiles

    def done(s):
        bar.update()

    return start, done, bar.close


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m softmax_numba")
    commands = parser.add_subparsers(dest="command", required=True)
    warm = commands.add_parser("warmup", help="compile and cache the CPU kernels")
    warm.add_argument("--dtypes", default=",".join(warmup.DTYPES), help="default: %(default)s")
    warm.add_argument("--engines", default=",".join(warmup.ENGINES), help="default: %(default)s")
    args = parser.parse_args(argv)
    dtypes, engines = args.dtypes.split(","), args.engines.split(",")
    try:
        total = len(warmup.steps(dtypes, engines))
    except ValueError as error:
        parser.error(str(error))
    start, done, close = _progress(total)
    try:
        warmup.warm_up(dtypes, engines, on_step=done, on_start=start)
    finally:
        close()
    where = ", ".join(warmup.cache_locations())
    print(f"{total} calls compiled or loaded; the kernels are cached in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
