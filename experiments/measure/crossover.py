"""Where the parallel engine starts to pay, per op: ``config.PARALLEL_MIN_ELEMENTS_BY_OP``.

``backend="auto"`` runs the serial engine below a size and the parallel one from it
on.  Waking the threads of Numba's pool costs microseconds, which an array that one
core finishes sooner must not pay; past the crossover, the threads share the work.
The crossover differs by op (a sigmoid is cheaper per entry than a sparsemax), so it
is measured, not guessed: for each op and size, the serial and the parallel engine
are timed interleaved (:func:`experiments.harness.timing.interleaved`: one engine at a
time in blocks, the order reversed every other round, so that a pool left spinning
by one does not slow the other), each writing into a preallocated ``out=``.  Per
size, the ratio parallel / serial over rounds gives a median and a 95% interval
(:func:`~experiments.harness.timing.median_interval`); the crossover is the smallest
size from which the whole interval lies below 1 at that size and every larger one
(where it never does, ``config`` holds twice the largest size measured: the threads
start where they were not seen to lose).

``python -m experiments.measure.crossover`` writes ``crossover.csv`` (one row per op
and size) with its metadata and ``CROSSOVER.md`` (the crossover of each op, and the
value ``config`` holds); ``tests/test_config.py`` checks that the two agree.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numba
import numpy as np
import pandas as pd

from experiments.harness import metadata
from experiments.harness.store import write_whole
from experiments.harness.timing import interleaved, median_interval

#: Row length of the measurement: a classifier head's (rows vary with the size).
ROW_LENGTH = 1024
#: Sizes in elements, powers of two (the tunable is one), up to 32 MiB of float32.
SIZES = tuple(1 << k for k in range(12, 24))
QUICK_SIZES = (1 << 12, 1 << 16)
ROUNDS, QUICK_ROUNDS = 9, 3
#: Seconds per timed block.
BLOCK_S, QUICK_BLOCK_S = 0.02, 0.002


def _ops():
    """op -> ``call(x, out, backend)``, the public function as a user calls it."""
    import softmax_numba as sn

    def cross_entropy(x, out, backend):
        return sn.cross_entropy(x, _targets(x), backend=backend)

    def cross_entropy_grad(x, out, backend):
        return sn.cross_entropy(x, _targets(x), return_grad=True, grad_out=out, backend=backend)

    return {
        "softmax": lambda x, out, b: sn.softmax(x, out=out, backend=b),
        "log_softmax": lambda x, out, b: sn.log_softmax(x, out=out, backend=b),
        "logsumexp": lambda x, out, b: sn.logsumexp(x, backend=b),
        "softmax_backward": lambda x, out, b: sn.softmax_backward(x, x, out=out, backend=b),
        "log_softmax_backward": lambda x, out, b: sn.log_softmax_backward(x, x, out=out, backend=b),
        "cross_entropy": cross_entropy,
        "cross_entropy[grad]": cross_entropy_grad,
        "sigmoid": lambda x, out, b: sn.sigmoid(x, out=out, backend=b),
        "softplus": lambda x, out, b: sn.softplus(x, out=out, backend=b),
        "arctan": lambda x, out, b: sn.arctan(x, out=out, backend=b),
        "gaussian": lambda x, out, b: sn.gaussian(x, out=out, backend=b),
        "sparsemax": lambda x, out, b: sn.sparsemax(x, out=out, backend=b),
        "entmax15": lambda x, out, b: sn.entmax15(x, out=out, backend=b),
        "entmax_bisect": lambda x, out, b: sn.entmax_bisect(x, out=out, backend=b),
        "maxout": lambda x, out, b: sn.maxout(x, pool_size=2, out=_pooled(out), backend=b),
    }


_POOLED: dict[tuple, np.ndarray] = {}


def _pooled(out: np.ndarray) -> np.ndarray:
    """A buffer of half ``out``'s row length (maxout's ``out=``), made once per shape."""
    key = (out.shape, out.dtype)
    if key not in _POOLED:
        _POOLED[key] = np.empty((out.shape[0], out.shape[1] // 2), out.dtype)
    return _POOLED[key]


_TARGETS: dict[tuple[int, int], np.ndarray] = {}


def _targets(x: np.ndarray) -> np.ndarray:
    """Class indices for ``x``'s rows, made once per shape (not timed again)."""
    key = x.shape
    if key not in _TARGETS:
        _TARGETS[key] = np.random.default_rng(0).integers(0, x.shape[1], x.shape[0])
    return _TARGETS[key]


def measure(op: str, size: int, rounds: int, block_s: float) -> dict:
    """The serial and parallel engines on one op and size, float32."""
    call = _ops()[op]
    x = np.random.default_rng(1).standard_normal((size // ROW_LENGTH, ROW_LENGTH), np.float32)
    out = np.empty_like(x)
    seconds = interleaved(
        {
            "cpu": lambda: call(x, out, "cpu"),
            "parallel": lambda: call(x, out, "parallel"),
        },
        rounds,
        min_sample_s=block_s,
    )
    median, low, high = median_interval(seconds["parallel"] / seconds["cpu"])
    return {
        "op": op,
        "size": size,
        "rows": x.shape[0],
        "n": ROW_LENGTH,
        "serial_s": float(np.median(seconds["cpu"])),
        "parallel_s": float(np.median(seconds["parallel"])),
        "ratio": median,
        "ratio_low": low,
        "ratio_high": high,
        "rounds": rounds,
    }


def function_of(op: str) -> str:
    """The public function a measured op runs (``cross_entropy[grad]``: ``cross_entropy``)."""
    return op.split("[")[0]


def thresholds(table: pd.DataFrame) -> dict[str, int | None]:
    """Per public function, the size from which ``backend="auto"`` should run the
    parallel engine: the largest crossover of its measured variants (the threads must
    pay for each), ``None`` where one never pays."""
    found: dict[str, int | None] = {}
    for op, size in crossovers(table).items():
        name = function_of(op)
        if name in found and (found[name] is None or size is None):
            found[name] = None
        else:
            found[name] = max(size, found.get(name) or 0) if size is not None else None
    return found


def config_values(table: pd.DataFrame) -> dict[str, int]:
    """What ``config.PARALLEL_MIN_ELEMENTS_BY_OP`` should hold after this measurement:
    :func:`thresholds`, with twice the largest size measured where the threads never
    paid."""
    beyond = 2 * int(table["size"].max())
    return {op: beyond if size is None else size for op, size in thresholds(table).items()}


def crossovers(table: pd.DataFrame) -> dict[str, int | None]:
    """Per op, the smallest size from which the parallel engine is faster at that
    size and every larger one measured (the interval's upper end below 1); ``None``
    where it never is."""
    found = {}
    for op, g in table.groupby("op", sort=False):
        g = g.sort_values("size")
        faster = (g.ratio_high < 1).to_numpy()
        sizes = g["size"].to_numpy()
        found[op] = None
        for i in range(len(sizes) - 1, -1, -1):
            if not faster[i]:
                break
            found[op] = int(sizes[i])
    return found


def run(out: pathlib.Path, quick: bool = False, progress: bool = True) -> pd.DataFrame:
    """Measure every op and size into ``out/crossover.csv``; write ``CROSSOVER.md``."""
    from tqdm import tqdm

    if numba.get_num_threads() < 2:
        raise SystemExit("crossover: Numba has one thread; there is no parallel engine to time")
    sizes, rounds, block = (
        (QUICK_SIZES, QUICK_ROUNDS, QUICK_BLOCK_S) if quick else (SIZES, ROUNDS, BLOCK_S)
    )
    cells = [(op, size) for op in _ops() for size in sizes]
    rows = [
        measure(op, size, rounds, block)
        for op, size in tqdm(cells, desc="crossover", disable=not progress or None)
    ]
    table = pd.DataFrame(rows)
    run_record = metadata.new_run({"quick": quick, "row_length": ROW_LENGTH})
    write_whole(out / "crossover.csv", table, run_record)
    write_report(out)
    return table


def write_report(out: pathlib.Path) -> pathlib.Path:
    """``CROSSOVER.md`` from ``crossover.csv``: each op's crossover beside the value
    that ``config.PARALLEL_MIN_ELEMENTS_BY_OP`` holds."""
    from softmax_numba import config

    table = pd.read_csv(out / "crossover.csv")
    lines = [
        "# Where the parallel engine starts to pay",
        "",
        "Written by `python -m experiments.measure.crossover` from `crossover.csv`",
        "(machine, versions and threads in `crossover.meta.json`).  float32 rows of",
        f"{ROW_LENGTH} entries, the serial and the parallel engine timed interleaved, each",
        "writing into `out=`.  `parallel/serial`: the median ratio of their times over",
        "rounds, with its 95% interval; the crossover is the smallest size from which",
        "the interval lies below 1 there and at every larger size.  `config` is what",
        '`softmax_numba.config.PARALLEL_MIN_ELEMENTS_BY_OP` holds (`backend="auto"`).',
        "",
        "| op | crossover (elements) | config | parallel/serial at 2^16 | at 2^20 |",
        "| --- | --- | --- | --- | --- |",
    ]
    found = crossovers(table)
    for op, size in found.items():
        g = table[table.op == op].set_index("size")

        def at(size_, g=g):
            if size_ not in g.index:
                return "n/a"
            r = g.loc[size_]
            return f"{r.ratio:.2f} [{r.ratio_low:.2f}, {r.ratio_high:.2f}]"

        held = config.PARALLEL_MIN_ELEMENTS_BY_OP.get(function_of(op))
        lines.append(
            f"| {op} | {size if size is not None else 'never'} | {held} | "
            f"{at(1 << 16)} | {at(1 << 20)} |"
        )
    # one entry a line, as ruff formats the block (``ruff format`` reads Markdown too)
    values = [f'    "{op}": {size},' for op, size in config_values(table).items()]
    lines += ["", "What this measurement sets, in `softmax_numba/config.py`:", ""]
    block = (
        ["PARALLEL_MIN_ELEMENTS_BY_OP = {", *values, "}"]
        if values
        else ["PARALLEL_MIN_ELEMENTS_BY_OP = {}"]
    )
    lines += ["```python", *block, "```"]
    path = out / "CROSSOVER.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.measure.crossover")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"))
    parser.add_argument("--quick", action="store_true", help="two sizes, 3 rounds")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    table = run(args.out, args.quick, progress=not args.no_progress)
    sys.stderr.write(f"crossover: {len(table)} rows in {args.out / 'crossover.csv'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
