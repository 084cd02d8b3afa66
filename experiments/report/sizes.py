"""``SIZES.md`` and ``sizes.png`` from ``sizes.csv`` (``python -m experiments sizes``).

Drawn from the table alone, so ``python -m experiments plots`` redraws them: a table
per op of the every-size grid, then one line per op of the softmax family of issue 29
(:func:`family`: its shapes, our time and GB/s, the best peer's ratio with its
interval, the peers named), the fixed cost of a call, the single-thread table and
the notes.  The figure draws the every-size grid only.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.harness import metadata
from experiments.measure.sizes import (
    ENTMAX_MAX_BYTES,
    FAMILY_OPS,
    LABELS,
    OPS,
    PEER_CALLS,
    SCIPY_MAX_BYTES,
)

PEERS = ("torch", "onnxruntime", "scipy", "jax", "entmax", "numpy", "torch_geometric")
#: Peers of the family's ops only.
FAMILY_ONLY_PEERS = ("numpy", "torch_geometric")
STYLE = {
    "ours": {"color": "black", "marker": "o", "linewidth": 2.0, "label": "ours"},
    "ours_out": {
        "color": "black",
        "marker": "o",
        "linestyle": "--",
        "markerfacecolor": "white",
        "label": "ours, out=",
    },
    "torch": {"color": "tab:orange", "marker": "s", "label": "torch"},
    "onnxruntime": {"color": "tab:green", "marker": "^", "label": "onnxruntime"},
    "scipy": {"color": "tab:purple", "marker": "v", "label": "scipy"},
    "jax": {"color": "tab:red", "marker": "D", "label": "JAX"},
    "entmax": {"color": "tab:brown", "marker": "P", "label": "entmax"},
    "copy": {"color": "gray", "linestyle": ":", "marker": ".", "label": "parallel copy"},
}
#: Arrays at least this big are out of cache for the copy criterion.
OUT_OF_CACHE_BYTES = 64 << 20
#: Below this the fixed cost of a call decides, and a ratio to a copy says nothing.
COPY_MIN_BYTES = 1 << 20


def _label(op: str) -> str:
    return LABELS.get(op, op)


def _markdown(frame: pd.DataFrame) -> list[str]:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + " --- |" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return [header, rule, *body, ""]


def _ratio(value) -> str:
    """A ratio, in bold below 1 (a peer faster than ours)."""
    if pd.isna(value):
        return "n/a"
    text = f"{value:.2f}"
    return f"**{text}**" if value < 1 else text


def _us(value) -> str:
    if pd.isna(value):
        return "n/a"
    us = value * 1e6
    return f"{us:.3g}" if us < 100 else f"{us:.0f}"


def _itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def _timed(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.median_s.notna()]


def op_table(sizes: pd.DataFrame, op: str) -> list[str]:
    """One line per shape and dtype of ``op``: our times, our GB/s over the copy's and
    each peer's ratio."""
    d = sizes[sizes.op == op]
    peers = [p for p in PEERS if p in set(d.impl)]
    lines = []
    for (dtype, rows, n), g in d.groupby(["dtype", "rows", "n"], sort=False):
        by = g.set_index("impl")
        get = by.median_s.get
        ours = "ours_out" if "ours_out" in by.index else "ours"
        copy = by.ratio_to_copy.get(ours, np.nan)
        line = {
            "shape": f"{rows} x {n}",
            "dtype": dtype,
            "ours us": _us(get("ours")),
            "ours out= us": _us(get("ours_out", np.nan)),
            "ours/copy": "n/a"
            if rows * n * _itemsize(dtype) < COPY_MIN_BYTES or pd.isna(copy)
            else f"{copy:.2f}",
        }
        for peer in peers:
            line[f"x {peer}"] = _ratio(by.ratio.get(peer, np.nan))
        lines.append(line)
    return _markdown(pd.DataFrame(lines)) if lines else []


def _interval(low, high) -> str:
    """`` [low, high]`` where the rounds give a 95% interval, else nothing."""
    if pd.isna(low) or pd.isna(high) or not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return f" [{low:.2f}, {high:.2f}]"


def _family_cell(by: pd.DataFrame) -> str:
    """One shape of one family op: our time and GB/s, the best peer's ratio.

    The best peer is the one with the lowest ratio (its time over ours in the same
    rounds); our time and GB/s are those of the mode it was divided by (``out=``
    where it writes into an array given to it).  Without a peer timed: ours with
    ``out=``."""
    timed = by[by.median_s.notna()]
    if not {"ours", "ours_out"} & set(timed.index):
        note = by.note.get("ours", "")
        return f"not timed ({note})" if isinstance(note, str) and note else "n/a"
    peers = timed[timed.index.isin(PEERS) & timed.ratio.notna()]
    if len(peers):
        best = peers.ratio.idxmin()
        row = peers.loc[best]
        versus = row.versus if row.versus in timed.index else "ours"
    else:
        versus = "ours_out" if "ours_out" in timed.index else "ours"
    mode = " (out=)" if versus == "ours_out" else ""
    ours = f"{_us(timed.median_s[versus])} us{mode}, {timed.gbps[versus]:.1f} GB/s"
    if not len(peers):
        return f"{ours}; no peer timed"
    interval = _interval(row.ratio_low, row.ratio_high)
    return f"{ours}; x {_ratio(row.ratio)}{interval} {best}"


def _family_peers(op: str, d: pd.DataFrame) -> str:
    """The peers of ``op`` (:data:`experiments.measure.sizes.PEER_CALLS`), each with
    what it runs, or why it is missing."""
    if not (d.impl.isin(["ours", "ours_out"]) & d.median_s.notna()).any():
        return "not tried: ours not timed (notes)"
    found = []
    for peer, call in PEER_CALLS.get(op, {}).items():
        rows = d[d.impl == peer]
        if rows.median_s.notna().any():
            found.append(f"{peer}: `{call}`")
        elif len(rows):
            found.append(f"{peer}: left out (notes)")
        else:
            found.append(f"{peer}: not installed")
    return "; ".join(found) or "none"


def family(table: pd.DataFrame) -> list[str]:
    """The family of issue 29 (part ``"family"``): one line per op, a column per shape
    (:func:`_family_cell`), the peers named (:func:`_family_peers`), then how many of
    its best-peer ratios are at least 1."""
    d = table[table.part == "family"]
    if d.empty:
        return []
    shapes = list(dict.fromkeys(zip(d.rows, d.n, strict=True)))
    lines, best = [], []
    for op in [o for o in FAMILY_OPS if o in set(d.op)] + sorted(set(d.op) - set(FAMILY_OPS)):
        g = d[d.op == op]
        line = {"op": f"`{_label(op)}`"}
        for rows, n in shapes:
            by = g[(g.rows == rows) & (g.n == n)].set_index("impl")
            line[f"{rows} x {n}"] = _family_cell(by) if len(by) else "n/a"
            ratios = by.ratio[by.index.isin(PEERS)].dropna()
            if len(ratios):
                best.append((ratios.min(), f"{_label(op)} {rows} x {n} against {ratios.idxmin()}"))
        line["peers"] = _family_peers(op, g)
        lines.append(line)
    dtypes = ", ".join(sorted(set(d.dtype)))
    held = sum(ratio >= 1 for ratio, _ in best)
    below = sorted(b for b in best if b[0] < 1)
    verdict = f"Ours at least as fast as the best peer in {held} of {len(best)} cells" + (
        "; below 1: " + "; ".join(f"{where}: {ratio:.2f}" for ratio, where in below) + "."
        if below
        else "."
    )
    if not best:
        verdict = "No peer was timed."
    return [
        f"## The softmax family of issue 29 ({dtypes})",
        "",
        "One line per op, a column per shape `rows x n` (for the segments: `rows` segments",
        "of seeded random lengths averaging `n`, the array flattened).  In each cell: our",
        "time per call and GB/s (bytes read + written), in the mode the best peer is",
        "divided by (`out=` where that peer writes into an array given to it), then `x`",
        "the best peer's time over ours in the same rounds (the lowest ratio of the",
        "peers timed; median [95% interval where the rounds give one]; **bold** below 1)",
        "and its name.  Each peer's output was checked against ours within the op's",
        "bound before it was timed; what each runs is named in the last column.",
        "",
        *_markdown(pd.DataFrame(lines)),
        verdict,
        "",
    ]


def call_cost(sizes: pd.DataFrame) -> list[str]:
    """Microseconds of one call at the smallest shape, every op and implementation."""
    d = _timed(sizes[sizes.dtype == "float32"])
    if d.empty:
        return []
    smallest = d.loc[(d.rows * d.n).idxmin(), ["rows", "n"]]
    d = d[(d.rows == smallest.rows) & (d.n == smallest.n)]
    impls = [i for i in ("ours", "ours_out", *PEERS, "copy") if i in set(d.impl)]
    lines = []
    for op in OPS:
        by = d[d.op == op].set_index("impl").median_s
        if len(by):
            lines.append({"op": _label(op), **{i: _us(by.get(i, np.nan)) for i in impls}})
    return [
        f"## Fixed cost of a call: {smallest.rows} x {smallest.n} float32, us per call",
        "",
        "The whole call as a user makes it (checks, dispatch, threads woken or not), "
        "median over rounds.",
        "",
        *_markdown(pd.DataFrame(lines).rename(columns={"ours_out": "ours out="})),
    ]


def single_thread(table: pd.DataFrame) -> list[str]:
    """ns per entry at one thread, and onnxruntime's (MLAS's) time over ours."""
    d = table[(table.part == "single_thread") & table.median_s.notna()]
    if d.empty:
        return []
    names = {
        "ours": 'ours (backend="cpu", out=)',
        "onnxruntime": "onnxruntime (MLAS)",
        "torch": "torch",
        "copy": "np.copyto",
        "numpy_exp": "np.exp(out=)",
    }
    lines = []
    for (op, dtype, rows, n), g in d.groupby(["op", "dtype", "rows", "n"], sort=False):
        by = g.set_index("impl")
        line = {"op": op, "shape": f"{rows} x {n}", "dtype": dtype}
        for impl, name in names.items():
            value = by.ns_per_entry.get(impl, np.nan)
            line[name] = "n/a" if pd.isna(value) else f"{value:.2f}"
        line["x onnxruntime"] = _ratio(by.ratio.get("onnxruntime", np.nan))
        line["x torch"] = _ratio(by.ratio.get("torch", np.nan))
        lines.append(line)
    return [
        "## One thread, rows in cache: ns per entry",
        "",
        "Numba at one thread and our serial engine, onnxruntime and torch at one intra-op",
        "thread, each writing into an array allocated once; `np.copyto` (the memory",
        "traffic) and `np.exp` alone for scale.  `x onnxruntime`: MLAS's time over ours.",
        "",
        *_markdown(pd.DataFrame(lines)),
    ]


def verdicts(table: pd.DataFrame) -> list[str]:
    """The issue's goals, each computed from the table beside its criterion."""
    sizes = table[table.part == "sizes"]
    peers = sizes[sizes.impl.isin(PEERS) & sizes.ratio.notna()]
    lines = ["## Against the goals", ""]
    if len(peers):
        below = peers[peers.ratio < 1].sort_values("ratio")
        held = len(peers) - len(below)
        lines.append(
            f"- **Every ratio at least 1** (ours at least as fast as every peer, every op, shape "
            f"and dtype): {'holds' if below.empty else 'does not hold'}; "
            f"{held} of {len(peers)} ratios are at least 1."
        )
        worst = [
            f"{_label(r.op)} {r.rows} x {r.n} {r.dtype} against {r.impl}: {r.ratio:.2f}"
            + (
                f" [{r.ratio_low:.2f}, {r.ratio_high:.2f}]"
                if np.isfinite(r.ratio_low) and np.isfinite(r.ratio_high)
                else ""
            )
            for r in below.head(8).itertuples()
        ]
        if worst:
            lines.append(
                "  The lowest (median [95% interval where the rounds give one]): "
                + "; ".join(worst)
                + "."
            )
    single = table[(table.part == "single_thread") & (table.impl == "onnxruntime")]
    single = single[single.ratio.notna()]
    if len(single):
        ok = (single.ratio >= 1).sum()
        lines.append(
            f"- **Per core at least as fast as MLAS** (onnxruntime's time over ours at least 1 "
            f"at one thread): {'holds' if ok == len(single) else 'does not hold'}; "
            f"{ok} of {len(single)} cells, ratios "
            f"{single.ratio.min():.2f} to {single.ratio.max():.2f}."
        )
    ours = sizes[sizes.impl.isin(("ours", "ours_out")) & sizes.ratio_to_copy.notna()]
    big = ours[ours.rows * ours.n * ours.dtype.map(_itemsize) >= OUT_OF_CACHE_BYTES]
    big = big.sort_values("impl").groupby(["op", "dtype", "rows", "n"]).last()  # out= if any
    if len(big):
        ok = (big.ratio_to_copy >= 0.85).sum()
        lines.append(
            f"- **Out of cache, at least 0.85 of a parallel copy** (arrays of "
            f"{OUT_OF_CACHE_BYTES >> 20} MB and more, ours with out= where we have it): "
            f"{'holds' if ok == len(big) else 'does not hold'}; {ok} of {len(big)} cells, "
            f"{big.ratio_to_copy.min():.2f} to {big.ratio_to_copy.max():.2f}."
        )
    return [*lines, ""]


def notes(table: pd.DataFrame, meta: dict | None) -> list[str]:
    left = table[table.median_s.isna() & table.note.notna()]
    packages = (meta or {}).get("packages", {})
    settings = (meta or {}).get("settings", {})
    with_family = "family" in set(table.part)
    # the family's own peers are named only where the table has the family
    peers = PEERS if with_family else tuple(p for p in PEERS if p not in FAMILY_ONLY_PEERS)
    installed = [p for p in peers if p in set(table.impl)]
    missing = [p for p in peers if p not in installed]
    torch_out = "softmax, log_softmax, logsumexp" + (
        ", sigmoid and logcumsumexp" if with_family else " and sigmoid"
    )
    family_onnx = "  The temperature's model is `Div` by a constant, then `Softmax`."
    family_torch = (
        "  The family's temperature, sink and stablemax are written as a torch user "
        "writes them (they allocate)."
    )
    family_peers = [
        "- numpy: `np.logaddexp.accumulate` (logcumsumexp), one thread, allocating.  "
        "torch_geometric: `torch_geometric.utils.softmax(src, ptr=offsets)` "
        "(segment_softmax), allocating, at torch's threads."
    ]
    lines = [
        "## Notes",
        "",
        "- onnxruntime: one-op models (`Softmax`, `LogSoftmax`, `ReduceLogSumExp`, "
        "`SoftmaxCrossEntropyLoss` with mean reduction, `Sigmoid`), input and output bound "
        "with `io_binding` to arrays allocated once, the intra-op pool at the run's threads "
        "and not spinning.  The gradient of the loss is in onnxruntime-training only: "
        "onnxruntime is timed on the loss alone (not in the loss + gradient rows).  ONNX "
        "has no sparsemax." + family_onnx * with_family,
        "- torch writes into `out=` for "
        + torch_out
        + "; its loss is `F.cross_entropy` (mean), the gradient by `backward()` into a new "
        "`.grad`." + family_torch * with_family,
        "- scipy (`scipy.special.softmax`, `log_softmax`, `logsumexp`, `expit`) runs on one "
        "thread and allocates; it has no cross-entropy or sparsemax.  It is not timed on "
        f"arrays above {SCIPY_MAX_BYTES >> 20} MB, where a call takes seconds.",
        "- JAX (jitted, CPU) is timed in a process of its own: it has crashed in one process "
        "with Numba and torch.  XLA sizes its own thread pool (all cores).  torch, "
        "onnxruntime, scipy and entmax run in the benchmark's process, beside Numba.",
        "- entmax: the `entmax` package's `sparsemax` (torch), on arrays up to "
        f"{ENTMAX_MAX_BYTES >> 20} MB (it sorts every row: seconds a call above).",
        *family_peers * with_family,
        "- Peers installed: "
        + (
            ", ".join(f"{p} {packages.get(p) or settings.get(p) or ''}".strip() for p in installed)
            or "none"
        )
        + (f"; not installed: {', '.join(missing)}." if missing else "."),
    ]
    for (impl, note), g in left.groupby(["impl", "note"]):
        cells = ", ".join(f"{_label(r.op)} {r.rows} x {r.n} {r.dtype}" for r in g.itertuples())
        lines.append(f"- {impl} left out ({note}): {cells}.")
    return [*lines, ""]


def draw(table: pd.DataFrame, path) -> pathlib.Path:
    """Time per call against entries per call (log-log), one panel per op, float32,
    ours, the peers and the copy."""
    d = _timed(table[(table.part == "sizes") & (table.dtype == "float32")])
    ops = [op for op in OPS if op in set(d.op)]
    columns = 4
    rows = -(-(len(ops) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.4 * rows), squeeze=False)
    for ax, op in zip(axes.flat, ops, strict=False):
        g = d[d.op == op].assign(entries=lambda f: f.rows * f.n).sort_values("entries")
        for impl, style in STYLE.items():
            line = g[g.impl == impl]
            if len(line):
                ax.plot(line.entries, line.median_s * 1e6, markersize=4, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(_label(op), fontsize=10)
        ax.set_xlabel("entries per call (rows x n)")
        ax.set_ylabel("us per call")
        ax.grid(True, which="major", alpha=0.3)
    handles = {}
    for ax in axes.flat[: len(ops)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    order = [style["label"] for style in STYLE.values()]
    handles = {label: handles[label] for label in order if label in handles}
    for ax in axes.flat[len(ops) :]:
        ax.axis("off")
    axes.flat[len(ops)].legend(handles.values(), handles.keys(), loc="center", frameon=False)
    threads = sorted(set(d.threads))
    fig.suptitle(
        f"Time per call against size, float32, {', '.join(map(str, threads))} threads "
        "(median over interleaved rounds)"
    )
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(out) -> pathlib.Path:
    """``SIZES.md`` and ``sizes.png`` in ``out`` from ``out/sizes.csv``."""
    out = pathlib.Path(out)
    table = pd.read_csv(out / "sizes.csv")
    meta = metadata.read(out / "sizes.csv")
    draw(table, out / "sizes.png")
    sizes = table[table.part == "sizes"]
    settings = (meta or {}).get("settings", {})
    commit = str(settings.get("library_commit", "unknown"))[:12]
    if settings.get("library_dirty"):
        commit += " with local changes"
    where = f" (from {settings['library']})" if settings.get("library") else ""
    lines = [
        "# Every size: ours against the peers",
        "",
        "Written by `python -m experiments sizes` (part of `make bench`) from `sizes.csv`;",
        "machine, versions and settings in `sizes.meta.json`.  Library timed: commit "
        f"{commit}{where}; {(meta or {}).get('cpu', 'unknown cpu')}, "
        f"{settings.get('threads', '?')} threads, {(meta or {}).get('date', '')}"
        + (" (--quick)" if settings.get("quick") else "")
        + ".",
        "",
        "In each cell every implementation is timed in blocks of calls, one at a time, the",
        "order reversed every other round.  `x peer` is the peer's time over ours in the",
        "same round (median over rounds; above 1: we are faster; **bold** below 1).  A peer",
        "that writes into an array given to it (onnxruntime, torch with `out=`) is divided",
        "by ours with `out=` where we have it; one that allocates (scipy, JAX, entmax), by",
        "ours allocating.  `ours/copy`: our GB/s (bytes read + written) over a parallel copy",
        "of the same array in the same rounds, with `out=` where we have it.  `n/a`: the peer",
        "has no such op, or was left out (see the notes).  Each peer's output was checked",
        "against ours before it was timed.",
        "",
        *verdicts(table),
        "![time per call against size](sizes.png)",
        "",
    ]
    for op in OPS:
        if op in set(sizes.op):
            lines += [f"## {_label(op)}", "", *op_table(sizes, op)]
    lines += [*family(table), *call_cost(sizes), *single_thread(table), *notes(table, meta)]
    path = out / "SIZES.md"
    path.write_text("\n".join(lines))
    return path
