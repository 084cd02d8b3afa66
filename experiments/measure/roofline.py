"""The roofline benchmark: our kernels against a parallel copy and the peers, in one run.

For every op, shape and dtype the candidates (our ``backend="auto"``, once returning
a new array as the peers do and once writing into ``out=`` as the copy does, a
parallel copy of the same array, and each installed peer's nearest op) are timed
*interleaved*:
round after round, each candidate once, so that a slow spell of this shared machine
hits all of them alike.  The figures reported are medians over rounds of per-round
ratios (ours over the copy, a peer's time over ours), which survive the noise far
better than absolute GB/s do.  A new output array costs its page faults (the kernel
zeroes every page on first touch): on arrays of tens of MB that alone can take as
long as the kernel, which is why both of our variants are reported.

Besides the big shapes, three small-size checks: the Python overhead of one call on
a ``(1, 10)`` array above the bare kernel, ``backend="auto"`` against the better of
the serial and parallel engines, and one long row on the serial engine against a
single-thread ``np.copyto``.
"""

from __future__ import annotations

import inspect
import json
import pathlib
import time
from collections.abc import Callable

import numba
import numpy as np
from tqdm import tqdm

from experiments.harness import inputs, metadata, settings, timing
from experiments.harness.store import Table
from experiments.measure import peers
from experiments.measure.sweep import entry as registered
from softmax_numba import registry

#: The shapes of the speed targets (rows, row length).
SHAPES = ((4096, 1024), (1024, 32768), (65536, 128), (256, 262144), (16384, 4096))
SOFTMAX_FAMILY = registry.tagged("core")
ELEMENTWISE = tuple(
    f"{name}{suffix}"
    for name in ("sigmoid", "softplus", "arctan", "gaussian")
    for suffix in ("", "[normalized]")
)
OTHERS = ("maxout[pool=4]", "sparsemax[pivot]", "entmax15")
#: SciPy is left to the study's speed table: at these sizes one call takes a second.
#: onnxruntime has no gradient of its loss (onnxruntime-training has): it is no peer of
#: the cross_entropy entry (loss and gradient); SIZES.md times its loss alone.
PEERS = ("torch", "onnxruntime", "jax", "entmax")
#: Peers that write into an array allocated once (onnxruntime's ``io_binding``): their
#: time is divided by ours into ``out=`` where we have it.
INTO_OUT = ("onnxruntime",)
COLUMNS = (
    "entry",
    "dtype",
    "rows",
    "n",
    "engine",
    "gbps",
    "parallel_copy_gbps",
    "ratio_to_parallel_copy",
    "ours_speedup",
    "rounds",
)
KEY = ("entry", "dtype", "rows", "n", "engine")


def interleaved(candidates: dict[str, Callable], rounds: int) -> dict[str, np.ndarray]:
    """Seconds per call of each candidate, per round, the candidates taking turns.

    Each candidate is called twice first (compilation, page faults), then timed on
    enough calls in a row to last ``settings.ROOFLINE_MIN_SAMPLE_S``.
    """
    inner = {}
    for name, fn in candidates.items():
        fn()
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-9)
        inner[name] = max(1, int(settings.ROOFLINE_MIN_SAMPLE_S / once))
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / inner[name])
    return {name: np.asarray(s) for name, s in samples.items()}


def _copy(x: np.ndarray) -> Callable:
    src = x.reshape(-1).view(np.uint8)
    dst = np.empty_like(src)
    threads = numba.get_num_threads()
    return lambda: timing._parallel_copy(src, dst, threads)


def measure(name: str, rows: int, n: int, dtype: str, rounds: int) -> list[dict]:
    """One row per candidate (ours, each peer) for one entry, shape and dtype."""
    entry = registered(name)
    x = inputs.logits("normal", rows, n, 1.0, dtype)
    args = entry.arguments(x, np.random.default_rng(1))
    candidates = {"copy": _copy(x), "ours": lambda: entry.run(args, backend="auto")}
    parameters = inspect.signature(entry.function).parameters
    if "out" in parameters:
        # Into a buffer written before, as the copy's: no page faults of a new array.
        out = entry.run(args, backend="auto")
        candidates["ours_out"] = lambda: entry.function(
            *args, axis=-1, backend="auto", out=out, **entry.kwargs
        )
    elif "grad_out" in parameters and entry.kwargs.get("return_grad"):
        # cross_entropy: the gradient into a buffer written before.
        grad_out = entry.run(args, backend="auto")[1]
        candidates["ours_out"] = lambda: entry.function(
            *args, axis=-1, backend="auto", grad_out=grad_out, **entry.kwargs
        )
    for peer in PEERS:
        make = peers.peer_ops(peer).get(entry.op)
        one_algorithm = peer in ("scipy", "onnxruntime")  # beside our default only
        if make is not None and (not one_algorithm or entry.algorithm in ("-", "shifted")):
            candidates[peer] = make(args)
    seconds = interleaved(candidates, rounds)
    nbytes = entry.bytes_factor * x.nbytes
    copy_gbps = 2 * x.nbytes / seconds["copy"]
    result = []
    for engine, t in seconds.items():
        if engine == "copy":
            continue
        versus = "ours_out" if engine in INTO_OUT and "ours_out" in seconds else "ours"
        result.append(
            {
                "entry": name,
                "dtype": dtype,
                "rows": rows,
                "n": n,
                "engine": engine,
                "gbps": float(np.median(nbytes / t)) / 1e9,
                "parallel_copy_gbps": float(np.median(copy_gbps)) / 1e9,
                "ratio_to_parallel_copy": float(np.median(nbytes / t / copy_gbps)),
                "ours_speedup": float(np.median(t / seconds[versus])),
                "rounds": rounds,
            }
        )
    return result


def cells(quick: bool) -> list[tuple[str, int, int, str]]:
    """``(entry, rows, n, dtype)`` of the benchmark (a few small ones if ``quick``)."""
    if quick:
        return [(name, 64, 1000, "float32") for name in (*SOFTMAX_FAMILY, "sigmoid", "entmax15")]
    grid = [(e, r, n, "float32") for e in SOFTMAX_FAMILY for r, n in SHAPES]
    # The elementwise maps and float64 on two of the shapes (one in cache, one not).
    two = (SHAPES[0], SHAPES[-1])
    grid += [(e, r, n, "float32") for e in (*ELEMENTWISE, "maxout[pool=4]") for r, n in two]
    grid += [(e, r, n, "float64") for e in SOFTMAX_FAMILY for r, n in two]
    # The sparse maps do not stream: rows of 1000 and more, fewer of them.
    grid += [(e, r, n, "float32") for e in OTHERS[1:] for r, n in ((1024, 1000), (64, 32768))]
    return grid


# ----------------------------------------------------------------------------- small sizes


def call_overhead(rounds: int) -> dict:
    """Microseconds of one ``softmax`` call on a ``(1, 10)`` float32 array: the public
    function, the bare serial kernel, and the difference."""
    from softmax_numba.cpu import softmax as kernels

    x = np.random.default_rng(0).standard_normal((1, 10)).astype(np.float32)
    out = np.empty_like(x)
    import softmax_numba as sn

    t = interleaved(
        {
            "public": lambda: sn.softmax(x),
            "kernel": lambda: kernels.SOFTMAX["shifted"].cpu(x, out),
        },
        rounds,
    )
    public, kernel = float(np.median(t["public"])), float(np.median(t["kernel"]))
    return {
        "public_us": public * 1e6,
        "kernel_us": kernel * 1e6,
        "overhead_us": (public - kernel) * 1e6,
    }


def auto_choice(rounds: int, n: int = 1000) -> list[dict]:
    """``backend="auto"`` against the serial and parallel engines, rows of ``n``."""
    import softmax_numba as sn

    result = []
    for rows in (1, 4, 16, 64, 256, 1024, 4096):
        x = np.random.default_rng(0).standard_normal((rows, n)).astype(np.float32)
        t = interleaved(
            {b: (lambda b=b, x=x: sn.softmax(x, backend=b)) for b in ("auto", "cpu", "parallel")},
            rounds,
        )
        best = np.minimum(t["cpu"], t["parallel"])
        result.append(
            {
                "rows": rows,
                "n": n,
                "auto_us": float(np.median(t["auto"])) * 1e6,
                "cpu_us": float(np.median(t["cpu"])) * 1e6,
                "parallel_us": float(np.median(t["parallel"])) * 1e6,
                "auto_over_best": float(np.median(t["auto"] / best)),
            }
        )
    return result


def single_row(rounds: int, n: int = 1_000_000) -> dict:
    """Serial softmax of one row of ``n`` float32 against a single-thread copy."""
    import softmax_numba as sn

    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    out, dst = np.empty_like(x), np.empty_like(x)
    t = interleaved(
        {
            "softmax": lambda: sn.softmax(x, backend="cpu", out=out),
            "copyto": lambda: np.copyto(dst, x),
        },
        rounds,
    )
    return {
        "n": n,
        "softmax_gbps": float(np.median(2 * x.nbytes / t["softmax"])) / 1e9,
        "copyto_gbps": float(np.median(2 * x.nbytes / t["copyto"])) / 1e9,
        "ratio": float(np.median(t["copyto"] / t["softmax"])),
    }


# ----------------------------------------------------------------------------- runner


def run(out: pathlib.Path, quick: bool = False, progress: bool = True) -> Table:
    """Measure the cells missing from ``out/roofline.csv`` (resumable: a cell's rows are
    appended together once all its candidates are timed), then the small-size checks
    into ``out/roofline_small.json``."""
    rounds = settings.ROOFLINE_QUICK_ROUNDS if quick else settings.ROOFLINE_ROUNDS
    metadata.start_or_resume(out / "roofline.csv")
    table = Table(out / "roofline.csv", COLUMNS, KEY)
    done = table.done_keys()
    todo = [c for c in cells(quick) if (c[0], c[3], str(c[1]), str(c[2]), "ours") not in done]
    for name, rows, n, dtype in tqdm(todo, desc="roofline", disable=not progress or None):
        table.append(measure(name, rows, n, dtype, rounds))
    metadata.write_next_to(table.path)
    small = {
        "call_overhead": call_overhead(rounds),
        "auto_choice": auto_choice(rounds),
        "single_row": single_row(rounds, n=10_000 if quick else 1_000_000),
    }
    (out / "roofline_small.json").write_text(json.dumps(small, indent=2) + "\n")
    write_report(out)
    return table


# ----------------------------------------------------------------------------- report


def _markdown(frame) -> list[str]:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + " --- |" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return [header, rule, *body, ""]


def _summary(table, entries, dtype: str, peers: tuple[str, ...]) -> list[str]:
    """One line per entry and shape: our ratio to the copy (into ``out=`` and
    allocating) and our speed-up over each of ``peers`` (nan where it has no such op
    or is not installed)."""
    import pandas as pd

    d = table[(table.dtype == dtype) & table.entry.isin(entries)]
    lines = []
    for (name, rows, n), g in d.groupby(["entry", "rows", "n"], sort=False):
        by = g.set_index("engine")
        get = by.ratio_to_parallel_copy.get
        line = {
            "entry": name,
            "shape": f"{rows}x{n}",
            "copy GB/s": f"{by.parallel_copy_gbps.iloc[0]:.1f}",
            "ours/copy (out=)": f"{get('ours_out', float('nan')):.2f}",
            "ours/copy": f"{get('ours'):.2f}",
        }
        for peer in peers:
            line[f"x {peer}"] = f"{by.ours_speedup.get(peer, float('nan')):.2f}"
        lines.append(line)
    return _markdown(pd.DataFrame(lines)) if lines else []


def write_report(out: pathlib.Path) -> pathlib.Path:
    """``ROOFLINE.md`` from ``roofline.csv`` and ``roofline_small.json``."""
    import pandas as pd

    table = pd.read_csv(out / "roofline.csv")
    lines = [
        "# Roofline benchmark",
        "",
        "Written by `python -m experiments roofline` (part of `make bench`) from",
        "`roofline.csv`; machine and versions in `roofline.meta.json`.  Each figure is",
        "a median over rounds of per-round ratios, the candidates timed interleaved.",
        "`ours/copy`: our GB/s (bytes read + written) over a parallel copy of the same",
        "array, both threads; `(out=)` writes into an existing array as the copy does,",
        "the other allocates its result as the peers do.  `x torch`, `x onnxruntime`,",
        "`x jax`: the peer's time (PyTorch CPU, onnxruntime, JAX on the CPU; both threads)",
        "over ours, above 1 when we are faster; nan where the peer has no such op.  torch",
        "and JAX allocate and are divided by ours allocating; onnxruntime (a one-op model,",
        "`io_binding` into an array allocated once, its pool not spinning) by ours into",
        "`out=` where we have it.  onnxruntime has the loss of cross-entropy but not its",
        "gradient (that is in onnxruntime-training), so it is no peer of `cross_entropy`",
        "(loss and gradient) here; `SIZES.md` times its loss alone.",
        "",
        "![roofline](roofline.png)",
        "",
        "## Softmax family, float32",
        "",
        *_summary(table, SOFTMAX_FAMILY, "float32", ("torch", "onnxruntime", "jax")),
        "## Softmax family, float64",
        "",
        *_summary(table, SOFTMAX_FAMILY, "float64", ("torch", "onnxruntime", "jax")),
        "## Elementwise alternatives and maxout, float32",
        "",
        *_summary(
            table, (*ELEMENTWISE, "maxout[pool=4]"), "float32", ("torch", "onnxruntime", "jax")
        ),
        "## Sparse maps against the `entmax` package (PyTorch CPU), float32",
        "",
        *_summary(table, OTHERS[1:], "float32", ("entmax",)),
    ]
    small = out / "roofline_small.json"
    if small.exists():
        facts = json.loads(small.read_text())
        o, r = facts["call_overhead"], facts["single_row"]
        lines += [
            "## Small inputs and single rows",
            "",
            f"- One `softmax` call on a `(1, 10)` float32 array: {o['public_us']:.2f} us, "
            f"of which the serial kernel {o['kernel_us']:.2f} us: "
            f"{o['overhead_us']:.2f} us of Python overhead.",
            f"- One row of {r['n']} float32 on the serial engine: {r['softmax_gbps']:.1f} GB/s, "
            f"{r['ratio']:.2f} of a single-thread `np.copyto` ({r['copyto_gbps']:.1f} GB/s).",
            '- `backend="auto"` against the better of `"cpu"` and `"parallel"`, rows of '
            f"{facts['auto_choice'][0]['n']}:",
            "",
            *_markdown(pd.DataFrame(facts["auto_choice"]).round(2)),
        ]
    path = out / "ROOFLINE.md"
    path.write_text("\n".join(lines))
    return path
