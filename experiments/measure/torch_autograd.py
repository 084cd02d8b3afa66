"""Forward + backward through ``softmax_numba.torch`` against PyTorch's own ops.

Part of ``make bench`` (``python -m experiments torch-autograd``).  For each op,
shape and dtype, three candidates are timed interleaved in one run
(:func:`experiments.measure.roofline.interleaved`): a parallel copy of the logits
(the roofline), ours (``softmax_numba.torch``) and torch's, each as
``torch.autograd.grad(op(x), x, dy)``: the forward pass, the graph and the backward
pass, allocating their results as a training step does.  Both use every thread
(Numba's and torch's intra-op pool).  ``ratio_to_parallel_copy`` is our GB/s over
the copy's, counting the traffic an ideal implementation needs (:data:`TRAFFIC`);
``ours_speedup`` is torch's time over ours, per round, median over rounds.

Writes ``torch_autograd.csv`` and its ``.meta.json`` (machine, versions, threads)
into ``--out`` (default ``results``) and a section of ``TORCH.md``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from experiments.harness import metadata, settings
from experiments.harness.store import Table
from experiments.measure.roofline import _copy, interleaved

#: (rows, n) of the full run: a cached size, short rows, long rows.
SHAPES = ((4096, 1024), (32768, 128), (256, 32768))
QUICK_SHAPES = ((64, 1000),)
#: Arrays of the logits' size an ideal forward + backward reads and writes: the row
#: maps read x, write y, then read y and dy and write dx; logsumexp reads x twice and
#: writes dx; cross-entropy reads x once and writes the gradient (the loss is a
#: scalar).
TRAFFIC = {
    "softmax": 5,
    "log_softmax": 5,
    "logsumexp": 3,
    "cross_entropy": 2,
    "sparsemax": 5,
    "entmax15": 5,
}
#: The peer of the ops that torch does not have.
PEER = {"sparsemax": "entmax", "entmax15": "entmax"}
COLUMNS = (
    "op",
    "dtype",
    "rows",
    "n",
    "engine",
    "median_s",
    "gbps",
    "parallel_copy_gbps",
    "ratio_to_parallel_copy",
    "ours_speedup",
    "rounds",
)
KEY = ("op", "dtype", "rows", "n", "engine")


def _ops(torch):
    """op -> (ours, theirs), each ``f(x, target) -> output``; theirs is None where
    neither torch nor the ``entmax`` package has the op."""
    from softmax_numba import torch as snt

    F = torch.nn.functional
    ops = {
        "softmax": (lambda x, t: snt.softmax(x, -1), lambda x, t: torch.softmax(x, -1)),
        "log_softmax": (
            lambda x, t: snt.log_softmax(x, -1),
            lambda x, t: torch.log_softmax(x, -1),
        ),
        "logsumexp": (lambda x, t: snt.logsumexp(x, -1), lambda x, t: torch.logsumexp(x, -1)),
        "cross_entropy": (lambda x, t: snt.cross_entropy(x, t), lambda x, t: F.cross_entropy(x, t)),
    }
    try:
        import entmax
    except ImportError:
        entmax = None
    for name in ("sparsemax", "entmax15"):
        theirs = getattr(entmax, name) if entmax is not None else None
        ops[name] = (
            lambda x, t, name=name: getattr(snt, name)(x, -1),
            None if theirs is None else (lambda x, t, f=theirs: f(x, dim=-1)),
        )
    return ops


def _step(torch, op, x, target):
    """One training step of ``op``: forward, then the gradient of the output against
    an upstream gradient of ones (made once)."""
    y = op(x, target)
    dy = torch.ones_like(y)

    def run():
        torch.autograd.grad(op(x, target), x, dy)

    return run


def measure(op: str, rows: int, n: int, dtype: str, rounds: int) -> list[dict]:
    """One row per candidate (ours, torch or entmax) for one op, shape and dtype."""
    import torch

    ours, theirs = _ops(torch)[op]
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((rows, n)).astype(dtype)
    x = torch.from_numpy(logits).requires_grad_()
    target = torch.from_numpy(rng.integers(0, n, size=rows))
    candidates = {"copy": _copy(logits), "ours": _step(torch, ours, x, target)}
    if theirs is not None:
        candidates[PEER.get(op, "torch")] = _step(torch, theirs, x, target)
    seconds = interleaved(candidates, rounds)
    nbytes = TRAFFIC[op] * logits.nbytes
    copy_gbps = 2 * logits.nbytes / seconds["copy"]
    return [
        {
            "op": op,
            "dtype": dtype,
            "rows": rows,
            "n": n,
            "engine": engine,
            "median_s": float(np.median(t)),
            "gbps": float(np.median(nbytes / t)) / 1e9,
            "parallel_copy_gbps": float(np.median(copy_gbps)) / 1e9,
            "ratio_to_parallel_copy": float(np.median(nbytes / t / copy_gbps)),
            "ours_speedup": float(np.median(t / seconds["ours"])),
            "rounds": rounds,
        }
        for engine, t in seconds.items()
        if engine != "copy"
    ]


def cells(quick: bool) -> list[tuple[str, int, int, str]]:
    shapes = QUICK_SHAPES if quick else SHAPES
    return [(op, r, n, "float32") for op in TRAFFIC for r, n in shapes]


def run(out: pathlib.Path, quick: bool = False, progress: bool = True) -> Table:
    """Measure the cells missing from ``out/torch_autograd.csv`` (resumable), then
    write its metadata and ``out/TORCH.md``."""
    from tqdm import tqdm

    rounds = settings.ROOFLINE_QUICK_ROUNDS if quick else settings.ROOFLINE_ROUNDS
    metadata.start_or_resume(out / "torch_autograd.csv")
    table = Table(out / "torch_autograd.csv", COLUMNS, KEY)
    done = table.done_keys()
    todo = [c for c in cells(quick) if (c[0], c[3], str(c[1]), str(c[2]), "ours") not in done]
    for op, rows, n, dtype in tqdm(todo, desc="torch-autograd", disable=not progress or None):
        table.append(measure(op, rows, n, dtype, rounds))
    metadata.write_next_to(table.path)
    write_report(out)
    return table


def write_report(out: pathlib.Path) -> pathlib.Path:
    """``TORCH.md`` from ``torch_autograd.csv``: per op and shape, our ratio to the
    copy and our speed-up over the peer."""
    import pandas as pd

    table = pd.read_csv(out / "torch_autograd.csv")
    lines = [
        "# Forward + backward through softmax_numba.torch",
        "",
        "Written by `python -m experiments torch-autograd` (part of `make bench`) from",
        "`torch_autograd.csv`; machine, versions and threads in `torch_autograd.meta.json`.",
        "Each step is `torch.autograd.grad(op(x), x, dy)` on float32 CPU tensors, ours",
        "(`softmax_numba.torch`) and the peer's (torch's op; the `entmax` package's",
        "sparsemax and entmax15), timed interleaved with a parallel copy of `x` in one",
        "run.  `ours/copy`: our GB/s over the copy's, counting the ideal traffic",
        "(softmax, log_softmax, the sparse maps: 5 arrays; logsumexp 3; cross-entropy",
        "2).  `x peer`: the peer's time over ours (above 1: ours is faster), a median",
        "of per-round ratios.",
        "",
        "| op | shape | copy GB/s | ours/copy | peer | x peer |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (op, rows, n), g in table.groupby(["op", "rows", "n"], sort=False):
        by = g.set_index("engine")
        ours = by.loc["ours"]
        peer = next((e for e in by.index if e != "ours"), None)
        speedup = f"{by.ours_speedup[peer]:.2f}" if peer else "n/a"
        lines.append(
            f"| {op} | {rows}x{n} | {ours.parallel_copy_gbps:.1f} | "
            f"{ours.ratio_to_parallel_copy:.2f} | {peer or 'none installed'} | {speedup} |"
        )
    path = out / "TORCH.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.measure.torch_autograd")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"))
    parser.add_argument("--quick", action="store_true", help="one small shape, 3 rounds")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    table = run(args.out, args.quick, progress=not args.no_progress)
    sys.stderr.write(f"torch-autograd: {len(table.read())} rows in {table.path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
