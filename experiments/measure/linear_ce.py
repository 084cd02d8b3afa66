"""The fused linear + cross-entropy against the materialized forms, and the matrix
products alone (the floor of this work).

Part of ``make bench`` (``python -m experiments linear-ce [--quick]``).  For each
shape ``(N tokens, d hidden, V vocabulary)``, float32, every thread, four candidates
compute the mean loss and the gradients with respect to ``h`` and ``W``:

- ``products``: the three matrix products of any implementation, ``z = h @ W.T``,
  ``z @ W`` and ``z.T @ h``, into buffers made once (NumPy's BLAS): the floor;
- ``ours``: :func:`softmax_numba.linear_cross_entropy` with ``return_grad=True``;
- ``numpy``: the materialized form, ``z = h @ W.T``, our ``cross_entropy`` with its
  gradient written over ``z``, then the two products;
- ``torch``: ``F.cross_entropy(F.linear(h, W), y)`` and ``torch.autograd.grad`` (if
  torch is installed).

Times: the candidates take turns, one call each per round, after a warm-up on a
small problem (compilation); the median over rounds, and ``x products`` as the
median of the per-round ratios.  Memory: each candidate runs once more in a fresh
process, and its peak resident memory above the resident memory just before the
call (the inputs made and warmed up, the peak reset) is its ``extra_mib``.

Writes ``linear_ce.csv`` (resumable) with its ``.meta.json`` and ``LINEAR.md`` into
``--out`` (default ``results``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

from experiments.harness import metadata
from experiments.harness.store import Table

SHAPES = ((4096, 1024, 32768), (4096, 2048, 32768), (4096, 1024, 131072), (4096, 2048, 131072))
QUICK_SHAPES = ((256, 64, 2048),)
ROUNDS, QUICK_ROUNDS = 2, 2
CANDIDATES = ("products", "ours", "numpy", "torch")
COLUMNS = (
    "candidate",
    "tokens",
    "hidden",
    "vocabulary",
    "dtype",
    "median_s",
    "ratio_to_products",
    "extra_mib",
    "logits_mib",
    "rounds",
)
KEY = ("candidate", "tokens", "hidden", "vocabulary", "dtype")


def inputs(tokens: int, hidden: int, vocabulary: int, dtype: str = "float32"):
    rng = np.random.default_rng(0)
    h = rng.standard_normal((tokens, hidden), dtype=np.float32).astype(dtype)
    W = (rng.standard_normal((vocabulary, hidden), dtype=np.float32) / np.sqrt(hidden)).astype(
        dtype
    )
    y = rng.integers(0, vocabulary, size=tokens)
    return h, W, y


def candidate(name: str, h, W, y):
    """A function of no argument that computes the loss and the two gradients; None
    when the candidate cannot run here (torch missing)."""
    import softmax_numba as sn

    if name == "products":
        z = np.empty((h.shape[0], W.shape[0]), h.dtype)
        dh, dW = np.empty_like(h), np.empty_like(W)

        def products():
            np.matmul(h, W.T, out=z)
            np.matmul(z, W, out=dh)
            np.matmul(z.T, h, out=dW)

        return products
    if name == "ours":
        return lambda: sn.linear_cross_entropy(h, W, y, return_grad=True)
    if name == "numpy":

        def materialized():
            z = h @ W.T
            loss, g = sn.cross_entropy(z, y, return_grad=True, grad_out=z)
            return loss, g @ W, g.T @ h

        return materialized
    try:
        import torch
    except ImportError:
        return None
    F = torch.nn.functional
    th, tW, ty = (
        torch.from_numpy(h).requires_grad_(),
        torch.from_numpy(W).requires_grad_(),
        torch.from_numpy(y),
    )

    def with_torch():
        loss = F.cross_entropy(F.linear(th, tW), ty)
        return torch.autograd.grad(loss, (th, tW))

    return with_torch


def _warm(name: str, dtype: str) -> None:
    """One call on a small problem large enough for the parallel engine (compilation)."""
    fn = candidate(name, *inputs(64, 16, 2048, dtype))
    if fn is not None:
        fn()


def _status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Reset this process's peak resident memory (``VmHWM``; Linux: ``5`` into
    ``/proc/self/clear_refs``) and return the resident memory now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def peak_extra_mib(name: str, shape, dtype: str) -> float | None:
    """Run one call of ``name`` in a fresh process: its peak resident memory above the
    resident memory before the call, in MiB (None when it cannot run)."""
    code = (
        "import json; from experiments.measure import linear_ce as m; "
        f"fn = m.candidate({name!r}, *m.inputs(*{tuple(shape)!r}, {dtype!r})); "
        f"m._warm({name!r}, {dtype!r}); "
        "before = m.reset_peak(); fn and fn(); peak = m._status_bytes('VmHWM'); "
        "print(json.dumps(None if fn is None else (peak - before) / 2**20))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=pathlib.Path(__file__).resolve().parents[2],
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(shape, dtype: str, rounds: int) -> list[dict]:
    """One row per candidate that runs here, for one shape."""
    functions = {n: candidate(n, *inputs(*shape, dtype)) for n in CANDIDATES}
    functions = {n: f for n, f in functions.items() if f is not None}
    for name in functions:
        _warm(name, dtype)
    seconds = {n: [] for n in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    del functions
    floor = np.asarray(seconds["products"])
    tokens, hidden, vocabulary = shape
    logits_mib = tokens * vocabulary * np.dtype(dtype).itemsize / 2**20
    return [
        {
            "candidate": name,
            "tokens": tokens,
            "hidden": hidden,
            "vocabulary": vocabulary,
            "dtype": dtype,
            "median_s": float(np.median(t)),
            "ratio_to_products": float(np.median(np.asarray(t) / floor)),
            "extra_mib": peak_extra_mib(name, shape, dtype),
            "logits_mib": logits_mib,
            "rounds": rounds,
        }
        for name, t in seconds.items()
    ]


def run(out: pathlib.Path, quick: bool = False, progress: bool = True) -> Table:
    """Measure the shapes missing from ``out/linear_ce.csv``, then write its metadata
    and ``out/LINEAR.md``."""
    from tqdm import tqdm

    metadata.start_or_resume(out / "linear_ce.csv")
    table = Table(out / "linear_ce.csv", COLUMNS, KEY)
    done = table.done_keys()
    shapes = QUICK_SHAPES if quick else SHAPES
    todo = [s for s in shapes if ("ours", *map(str, s), "float32") not in done]
    for shape in tqdm(todo, desc="linear-ce", disable=not progress or None):
        table.append(measure(shape, "float32", QUICK_ROUNDS if quick else ROUNDS))
    metadata.write_next_to(table.path)
    write_report(out)
    return table


def write_report(out: pathlib.Path) -> pathlib.Path:
    """``LINEAR.md`` from ``linear_ce.csv``."""
    import pandas as pd

    table = pd.read_csv(out / "linear_ce.csv")
    lines = [
        "# Fused linear + cross-entropy",
        "",
        "Written by `python -m experiments linear-ce` (part of `make bench`) from",
        "`linear_ce.csv`; machine, versions and threads in `linear_ce.meta.json`.  The mean",
        "loss and the gradients with respect to `h` and `W`, float32, every thread:",
        "`products` is the three matrix products alone (the floor), `ours`",
        "`linear_cross_entropy`, `numpy` the materialized form (`h @ W.T`, our",
        "`cross_entropy` with the gradient over the logits, two products), `torch`",
        "`F.cross_entropy(F.linear(h, W), y)` and its backward pass.  `x products`: time",
        "over the products' time in the same round (median).  `extra MiB`: peak resident",
        "memory of one call in a fresh process above that just before it (inputs made, a",
        "small call run, the peak reset through `/proc/self/clear_refs`); `logits MiB` is",
        "the size of the `N x V` logits.",
        "",
        "| N x d x V | candidate | seconds | x products | extra MiB | logits MiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in table.iterrows():
        extra = "n/a" if pd.isna(r.extra_mib) else f"{r.extra_mib:.0f}"
        lines.append(
            f"| {r.tokens}x{r.hidden}x{r.vocabulary} | {r.candidate} | {r.median_s:.2f} | "
            f"{r.ratio_to_products:.3f} | {extra} | {r.logits_mib:.0f} |"
        )
    path = out / "LINEAR.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.measure.linear_ce")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"))
    parser.add_argument("--quick", action="store_true", help="one small shape")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    table = run(args.out, args.quick, progress=not args.no_progress)
    sys.stderr.write(f"linear-ce: {len(table.read())} rows in {table.path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
