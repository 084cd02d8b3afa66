"""The fused linear + cross-entropy against the materialized forms and the bare
matrix products, in time and in memory.

Part of ``make bench`` (``python -m experiments linear-ce [--quick]``).  For each
shape ``(N tokens, d hidden, V vocabulary)`` and input dtype, the candidates compute
the mean loss and the gradients with respect to ``h`` and ``W``:

- ``products-numpy``, ``products-torch``: the three matrix products of any
  implementation, ``z = h @ W.T``, ``z @ W`` and ``z.T @ h``, into buffers made
  beforehand, in NumPy (float32 only: NumPy has no bfloat16 BLAS) and in torch (in
  the input's dtype: bfloat16 products run on the CPU's bfloat16 units where it has
  them).  The floor of each library;
- ``ours-numpy``, ``ours-torch``: :func:`softmax_numba.linear_cross_entropy` with
  ``return_grad=True`` on NumPy arrays and on torch tensors (whose products run in
  torch); ``ours-torch-filtered`` with ``grad_threshold=2**-12``;
- ``ours-torch-256mib``: ``ours-torch`` with a workspace of 256 MiB (V >= 131072,
  float32: what the 64 MiB ceiling costs in time);
- ``torch``: ``F.cross_entropy(F.linear(h, W), y)`` and ``torch.autograd.grad``;
- ``cce``: Cut Cross-Entropy's ``linear_cross_entropy(..., impl="torch_compile")``
  (the ``cut-cross-entropy`` package; its fused kernel needs CUDA), when installed.

Each candidate runs in a fresh process per round (the rounds take the candidates
in turn): one call on a small problem first (compilation, BLAS buffers; CCE on the
measured shape, which torch.compile compiles for), the inputs made, the peak
resident memory reset (``/proc/self/clear_refs``), then one timed call.
``extra_mib`` is the peak resident memory of that call above the resident memory
before it, less the gradients it returns; ``ratio_to_products`` the candidate's
time over its library's products in the same round (median over rounds).  The
data (:func:`inputs`): Gaussian logits, and on a few shapes a Zipf prior as well.

Writes ``linear_ce.csv`` (resumable, one row per cell) with its ``.meta.json`` and
``LINEAR.md`` into ``--out`` (default ``results``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np

from experiments.harness import metadata
from experiments.harness.store import Table

SHAPES = ((4096, 1024, 32768), (4096, 1024, 131072), (4096, 1024, 262144))
#: The shapes measured with bfloat16 inputs too.
BFLOAT16_SHAPES = ((4096, 1024, 32768), (4096, 1024, 131072))
#: The shapes measured on the Zipf data too (what gradient filtering can skip).
ZIPF_SHAPES = ((4096, 1024, 131072), (4096, 1024, 262144))
ZIPF_CANDIDATES = ("products-torch", "ours-torch", "ours-torch-filtered")
QUICK_SHAPES = ((256, 64, 2048),)
#: Rounds per cell: fewer where one call takes most of a minute.
ROUNDS = {32768: 2, 131072: 2, 262144: 1}
QUICK_ROUNDS = 1
#: Candidates whose warm-up call is on the measured shape (torch.compile compiles
#: for each shape); the others warm up on a small problem (compilation, BLAS).
WARM_ON_SHAPE = ("cce",)
WARM_SHAPE = (256, 64, 2048)
FILTER_THRESHOLD = 2.0**-12
CANDIDATES = (
    "products-numpy", "products-torch", "ours-numpy", "ours-torch", "ours-torch-filtered",
    "ours-torch-256mib", "torch", "cce",
)  # fmt: skip
#: ``ours-torch-256mib``: ``config.LINEAR_CE_WORKSPACE_BYTES`` four times the default,
#: where that changes the plan (a block of 256 tokens of the whole vocabulary fits
#: only from there on, at V >= 131072: three products instead of four).
WIDE_WORKSPACE_BYTES = 256 << 20
#: The candidates of ``--quick`` (a test of the code path, in seconds).
QUICK_CANDIDATES = ("products-numpy", "products-torch", "ours-numpy", "ours-torch")
#: Whose products each candidate's time is divided by.
FLOOR = {"products-numpy": "products-numpy", "ours-numpy": "products-numpy"}
COLUMNS = (
    "candidate", "data", "tokens", "hidden", "vocabulary", "dtype", "median_s",
    "ratio_to_products", "extra_mib", "logits_mib", "rounds",
)  # fmt: skip
KEY = ("candidate", "data", "tokens", "hidden", "vocabulary", "dtype")
#: The issue's goals, checked in LINEAR.md.
GOAL_PRODUCTS, GOAL_MEMORY = 1.15, 1 / 16


def inputs(tokens: int, hidden: int, vocabulary: int, data: str = "gaussian"):
    """``h``, ``W`` in float32, the targets and the bias (None), seeded.

    ``"gaussian"``: ``h`` standard normal, ``W`` normal of variance ``1 / d`` (logits
    of unit variance), targets uniform.  ``"zipf"``: the same logits plus a bias of
    ``log pi_j``, ``pi`` Zipf's law of exponent 1 over the classes in order of
    frequency (a language model's unigram prior, its vocabulary sorted by
    frequency), and targets drawn from ``pi``: the rare classes' probabilities are
    small, as in a trained model, and gradient filtering can skip their tiles."""
    rng = np.random.default_rng(0)
    h = rng.standard_normal((tokens, hidden), dtype=np.float32)
    W = rng.standard_normal((vocabulary, hidden), dtype=np.float32) / np.float32(np.sqrt(hidden))
    if data == "gaussian":
        return h, W, rng.integers(0, vocabulary, size=tokens), None
    prior = 1.0 / np.arange(1, vocabulary + 1)
    prior /= prior.sum()
    y = rng.choice(vocabulary, size=tokens, p=prior)
    return h, W, y, np.log(prior).astype(np.float32)


def runs_here(name: str, dtype: str) -> bool:
    """Whether ``name`` can run with ``dtype`` inputs on this machine."""

    def has(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    if name == "products-numpy":
        return dtype == "float32"
    if name == "ours-numpy":
        return dtype == "float32" or has("ml_dtypes")
    needs = ("torch", "cut_cross_entropy", "triton") if name == "cce" else ("torch",)
    return all(has(m) for m in needs)


def candidate(name: str, h, W, y, bias=None, dtype: str = "float32"):
    """A function of no argument that computes the loss and the two gradients (the
    products candidates ignore ``bias``: it adds no product)."""
    import softmax_numba as sn

    if name in ("products-numpy", "ours-numpy"):
        if dtype == "bfloat16":
            import ml_dtypes

            h, W = h.astype(ml_dtypes.bfloat16), W.astype(ml_dtypes.bfloat16)
            bias = None if bias is None else bias.astype(ml_dtypes.bfloat16)
        if name == "ours-numpy":
            return lambda: sn.linear_cross_entropy(h, W, y, bias=bias, return_grad=True)
        z = np.empty((h.shape[0], W.shape[0]), h.dtype)
        dh, dW = np.empty_like(h), np.empty_like(W)

        def products():
            np.matmul(h, W.T, out=z)
            np.matmul(z, W, out=dh)
            np.matmul(z.T, h, out=dW)

        return products
    import torch

    tdtype = getattr(torch, dtype)
    th, tW, ty = torch.from_numpy(h).to(tdtype), torch.from_numpy(W).to(tdtype), torch.from_numpy(y)
    tb = None if bias is None else torch.from_numpy(bias).to(tdtype)
    if name == "products-torch":
        z = torch.empty(h.shape[0], W.shape[0], dtype=tdtype)
        dh, dW = torch.empty_like(th), torch.empty_like(tW)

        def products():
            torch.mm(th, tW.T, out=z)
            torch.mm(z, tW, out=dh)
            torch.mm(z.T, th, out=dW)

        return products
    if name.startswith("ours-torch"):
        threshold = FILTER_THRESHOLD if name.endswith("filtered") else 0.0
        if name.endswith("256mib"):
            from softmax_numba import config

            config.LINEAR_CE_WORKSPACE_BYTES = WIDE_WORKSPACE_BYTES
        return lambda: sn.linear_cross_entropy(th, tW, ty, bias=tb, return_grad=True,
                                               grad_threshold=threshold)  # fmt: skip
    th.requires_grad_()
    tW.requires_grad_()
    if name == "cce":
        from cut_cross_entropy import linear_cross_entropy

        def with_cce():
            extra = {} if tb is None else {"bias": tb}  # CCE 25.1 takes no bias
            loss = linear_cross_entropy(th, tW, ty, impl="torch_compile", **extra)
            return torch.autograd.grad(loss, (th, tW))

        return with_cce
    F = torch.nn.functional

    def with_torch():
        loss = F.cross_entropy(F.linear(th, tW, tb), ty)
        return torch.autograd.grad(loss, (th, tW))

    return with_torch


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


def one_call(name: str, shape, dtype: str, data: str) -> tuple[float, float]:
    """In this process: one call of ``name`` after a warm-up call; ``(seconds, extra
    MiB)``, the extra being the call's peak resident memory above that before it,
    less its gradients ``dh`` and ``dW`` (none for the products, whose outputs exist
    beforehand)."""
    import time

    warm_shape = shape if name in WARM_ON_SHAPE else WARM_SHAPE
    candidate(name, *inputs(*warm_shape, data), dtype)()
    fn = candidate(name, *inputs(*shape, data), dtype)
    before = reset_peak()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    tokens, hidden, vocabulary = shape
    gradients = 0 if name.startswith("products") else (tokens + vocabulary) * hidden
    itemsize = 4 if dtype == "float32" else 2
    return seconds, (_status_bytes("VmHWM") - before - gradients * itemsize) / 2**20


def in_fresh_process(name: str, shape, dtype: str, data: str) -> tuple[float, float]:
    """:func:`one_call` in a new Python process; ``(nan, nan)`` when it fails (its
    error written to stderr: one candidate's failure does not stop the run)."""
    code = (
        "import json; from experiments.measure import linear_ce as m; "
        f"print(json.dumps(m.one_call({name!r}, {tuple(shape)!r}, {dtype!r}, {data!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        cwd=pathlib.Path(__file__).resolve().parents[2],
    )  # fmt: skip
    if done.returncode:
        sys.stderr.write(f"linear-ce: {name} {shape} {dtype} {data} failed:\n{done.stderr}\n")
        return float("nan"), float("nan")
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(shape, dtype: str, data: str, rounds: int, quick: bool = False) -> list[dict]:
    """One row per candidate that runs here, for one cell (``quick``: a few)."""
    names = ZIPF_CANDIDATES if data == "zipf" else QUICK_CANDIDATES if quick else CANDIDATES
    wide_differs = shape[2] >= 131072 and dtype == "float32"
    names = [n for n in names if runs_here(n, dtype) and (wide_differs or "256mib" not in n)]
    seconds = {n: [] for n in names}
    memory = {n: [] for n in names}
    for _ in range(rounds):
        for name in names:
            t, extra = in_fresh_process(name, shape, dtype, data)
            seconds[name].append(t)
            memory[name].append(extra)
    tokens, hidden, vocabulary = shape
    rows = []
    for name in names:
        # NumPy has no bfloat16 products: then every ratio is to torch's.
        floor_name = FLOOR.get(name, "products-torch")
        floor = np.asarray(seconds[floor_name if floor_name in seconds else "products-torch"])
        rows.append({
            "candidate": name, "data": data, "tokens": tokens, "hidden": hidden,
            "vocabulary": vocabulary, "dtype": dtype, "median_s": float(np.median(seconds[name])),
            "ratio_to_products": float(np.median(np.asarray(seconds[name]) / floor)),
            "extra_mib": float(np.max(memory[name])),
            "logits_mib": tokens * vocabulary * 4 / 2**20, "rounds": rounds,
        })  # fmt: skip
    return rows


def cells(quick: bool):
    """The ``(shape, dtype, data)`` cells of a run."""
    if quick:
        return [(s, "float32", "gaussian") for s in QUICK_SHAPES]
    return (
        [(s, "float32", "gaussian") for s in SHAPES]
        + [(s, "bfloat16", "gaussian") for s in BFLOAT16_SHAPES]
        + [(s, "float32", "zipf") for s in ZIPF_SHAPES]
    )


def run(out: pathlib.Path, quick: bool = False, progress: bool = True) -> Table:
    """Measure the cells missing from ``out/linear_ce.csv``, then write its metadata
    and ``out/LINEAR.md``."""
    from tqdm import tqdm

    metadata.start_or_resume(out / "linear_ce.csv")
    table = Table(out / "linear_ce.csv", COLUMNS, KEY)
    done = table.done_keys()
    todo = [c for c in cells(quick) if ("ours-torch", c[2], *map(str, c[0]), c[1]) not in done]
    for shape, dtype, data in tqdm(todo, desc="linear-ce", disable=not progress or None):
        rounds = QUICK_ROUNDS if quick else ROUNDS[shape[2]]
        table.append(measure(shape, dtype, data, rounds, quick))
    metadata.write_next_to(table.path)
    write_report(out)
    return table


def _goals(cell) -> list[str]:
    """The issue's goals for one cell, each ``met`` or ``not met`` with its figure."""
    by = cell.set_index("candidate")
    lines = []

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    if {"ours-torch", "torch"} <= set(by.index):
        speed = by.median_s["torch"] / by.median_s["ours-torch"]
        memory = by.extra_mib["ours-torch"] / by.extra_mib["torch"]
        lines.append(f"faster than torch's materialized loss: {speed:.2f}x, {verdict(speed > 1)}")
        lines.append(
            f"at most 1/16 of torch's extra memory: {memory:.3f}, {verdict(memory <= GOAL_MEMORY)}"
        )
    if {"ours-torch-256mib", "torch"} <= set(by.index):
        speed = by.median_s["torch"] / by.median_s["ours-torch-256mib"]
        ratio = by.ratio_to_products["ours-torch-256mib"]
        lines.append(f"(with a 256 MiB workspace: {speed:.2f}x torch, {ratio:.2f}x the products)")
    for name in ("ours-torch", "ours-numpy"):
        if name in by.index:
            ratio = by.ratio_to_products[name]
            lines.append(
                f"{name} within {GOAL_PRODUCTS}x of its library's products: {ratio:.2f}x, "
                f"{verdict(ratio <= GOAL_PRODUCTS)}"
            )
    if "ours-torch-filtered" in by.index and cell.vocabulary.iloc[0] >= 131072:
        ratio = by.ratio_to_products["ours-torch-filtered"]
        lines.append(f"filtered, faster than the products: {ratio:.2f}x, {verdict(ratio < 1)}")
    return lines


def write_report(out: pathlib.Path) -> pathlib.Path:
    """``LINEAR.md`` from ``linear_ce.csv``: the table, then the goals cell by cell."""
    import pandas as pd

    table = pd.read_csv(out / "linear_ce.csv")
    lines = [
        "# Fused linear + cross-entropy",
        "",
        "Written by `python -m experiments linear-ce` (part of `make bench`) from",
        "`linear_ce.csv`; machine, versions and threads in `linear_ce.meta.json`; the method",
        "in `experiments/measure/linear_ce.py`.  The mean loss and the gradients with",
        "respect to `h` and `W`, every thread, each call in a fresh process after a warm-up",
        "call.  `products-*`: the three bare matrix products in NumPy or torch (the floor);",
        "`ours-numpy`/`ours-torch`: `linear_cross_entropy` on NumPy arrays / torch tensors",
        "(products in torch), `-filtered` with `grad_threshold=2**-12`, `-256mib` with",
        "`config.LINEAR_CE_WORKSPACE_BYTES` at 256 MiB instead of 64; `torch`:",
        "`F.cross_entropy(F.linear(h, W), y)` and its backward; `cce`: Cut Cross-Entropy's",
        '`impl="torch_compile"`.  `x products`: time over the same library\'s products in',
        "the same round (median; NumPy has no bfloat16 products, so in bfloat16 every",
        "ratio is to torch's); `extra MiB`: peak resident memory of the call above that",
        "before it, less the gradients `dh` and `dW` (the issue's measure: beyond inputs",
        "and gradients; the products' outputs are made before the call but first written",
        "in it, so theirs counts the logits and gradients); `logits MiB`: the float32",
        "`N x V` logits.  Data `gaussian`: logits",
        "of unit variance, uniform targets; `zipf`: the same plus a bias of the log of",
        "Zipf's law over the classes, targets drawn from it (what filtering can skip).",
        "",
        "| N x d x V | dtype | data | candidate | seconds | x products | extra MiB | logits MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r.tokens}x{r.hidden}x{r.vocabulary} | {r['dtype']} | {r.data} | "
            f"{r.candidate} | {r.median_s:.2f} | {r.ratio_to_products:.3f} | "
            f"{r.extra_mib:.0f} | {r.logits_mib:.0f} |"
        )
    lines += ["", "## Goals (issue 30), cell by cell", ""]
    for (tokens, hidden, vocabulary, dtype, data), cell in table.groupby(
        ["tokens", "hidden", "vocabulary", "dtype", "data"], sort=False
    ):
        lines.append(
            f"- **{tokens}x{hidden}x{vocabulary}, {dtype}, {data}**: " + "; ".join(_goals(cell))
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
