"""Figures drawn from the saved tables alone (``python -m experiments plots``)."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from softmax_numba import registry

CORE = registry.tagged("core")


def at_offset_zero(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the scale sweep (no common offset; tables without the column are
    all of it); the offset sweep has its own figure."""
    return table[table.offset == 0] if "offset" in table else table


OFFSET_OPS = ("log_softmax", "logsumexp", "cross_entropy", "softmax[shifted]")


def error_vs_offset(table: pd.DataFrame, path) -> pathlib.Path:
    """Componentwise error (units of u) against the common offset ``c`` of the logits
    ``c + scale z``, ours and the peers, one row of panels per dtype: the largest over
    row lengths and scales of each cell's worst entry; our bound dashed."""
    d = table[table.entry.isin(OFFSET_OPS) & (table.distribution == "normal")]
    # The cells the peers were measured in (the offset sweep), so every line is over
    # the same inputs.
    cell = ["entry", "dtype", "preset", "scale"]
    peer_cells = d[~d.backend.isin(("numpy", "cpu", "parallel"))][cell].drop_duplicates()
    d = d.merge(peer_cells, on=cell) if len(peer_cells) else d
    dtypes = [t for t in ("float32", "float64") if t in set(d.dtype)]
    ops = [o for o in OFFSET_OPS if o in set(d.entry)]
    fig, axes = plt.subplots(
        max(len(dtypes), 1),
        max(len(ops), 1),
        figsize=(3.6 * max(len(ops), 1), 3.2 * max(len(dtypes), 1)),
        squeeze=False,
        sharey="row",
    )
    for r, dtype in enumerate(dtypes):
        for c, op in enumerate(ops):
            ax = axes[r][c]
            e = d[(d.dtype == dtype) & (d.entry == op)]
            for backend, g in e.groupby("backend"):
                g = g.groupby("offset", as_index=False).max_rel_error_u.max()
                x = np.sign(g.offset) * np.log10(1 + np.abs(g.offset))
                ax.plot(x, g.max_rel_error_u.clip(lower=1e-2), "o-", ms=3, label=backend)
            ours = e[e.backend == "cpu"].groupby("offset", as_index=False).bound_u.max()
            x = np.sign(ours.offset) * np.log10(1 + np.abs(ours.offset))
            ax.plot(x, ours.bound_u, "k--", lw=1, label="our bound")
            ax.set(yscale="log", title=f"{op}, {dtype}")
            if r == len(dtypes) - 1:
                ax.set_xlabel("offset c: sign(c) log10(1 + |c|)")
        axes[r][0].set_ylabel("max componentwise error (u)")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def speed(table: pd.DataFrame, path) -> pathlib.Path:
    """GB/s against array size per engine, with the copy rooflines, one panel per op."""
    d = table[(table.dtype == "float32") & table.entry.isin(CORE)]
    entries = [e for e in CORE if e in set(d.entry)]
    fig, axes = plt.subplots(
        1,
        max(len(entries), 1),
        figsize=(4.2 * max(len(entries), 1), 3.8),
        squeeze=False,
        sharey=True,
    )
    # Arrays of the same nominal size (different row lengths) share a bucket: the line
    # is the median over row lengths, the band their range.
    d = d.assign(size=2.0 ** np.round(np.log2(d.bytes)) / 1e6)
    for ax, name in zip(axes[0], entries, strict=False):
        e = d[d.entry == name]
        for engine, g in e.groupby("engine"):
            g = g.groupby("size").gbps.agg(["median", "min", "max"]).reset_index()
            (line,) = ax.plot(g["size"], g["median"], "o-", label=engine, ms=3)
            ax.fill_between(g["size"], g["min"], g["max"], color=line.get_color(), alpha=0.15)
        roof = e.groupby("size")[["copy_gbps", "parallel_copy_gbps"]].median().reset_index()
        ax.plot(roof["size"], roof.parallel_copy_gbps, "k--", label="parallel copy")
        ax.plot(roof["size"], roof.copy_gbps, "k:", label="np.copyto")
        ax.set(xscale="log", yscale="log", title=name, xlabel="array size, read + written (MB)")
    axes[0][0].set_ylabel("GB/s (float32)")
    axes[0][0].legend(fontsize=7)  # the softmax panel has every engine and peer
    return _save(fig, path)


def error_vs_scale(table: pd.DataFrame, path) -> pathlib.Path:
    """Max error in units of u against input scale, per softmax algorithm and dtype."""
    table = at_offset_zero(table)
    if "backend" in table:
        table = table[table.backend == "cpu"]
    d = table[(table.op == "softmax") & (table.distribution == "normal")]
    dtypes = [t for t in ("float16", "bfloat16", "float32", "float64") if t in set(d.dtype)]
    fig, axes = plt.subplots(
        1, max(len(dtypes), 1), figsize=(4 * max(len(dtypes), 1), 3.6), squeeze=False, sharey=True
    )
    for ax, dtype in zip(axes[0], dtypes, strict=False):
        for alg, g in d[d.dtype == dtype].groupby("algorithm"):
            g = g.groupby("scale", as_index=False).max_error_u.max()
            ax.plot(g.scale, g.max_error_u.clip(lower=1e-2), "o-", label=alg, ms=3)
        ax.set(xscale="log", yscale="log", title=dtype, xlabel="input scale (std of logits)")
    axes[0][0].set_ylabel("max normwise error (units of u)")
    axes[0][-1].legend(fontsize=7, title="missing points: NaN/inf")
    return _save(fig, path)


def sum_error_vs_n(table: pd.DataFrame, path) -> pathlib.Path:
    """|sum(p) - 1| in units of u against the row length, per dtype and algorithm."""
    table = at_offset_zero(table)
    d = table[(table.op == "softmax") & (table.distribution == "normal") & (table.scale == 1.0)]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (dtype, alg), g in d.groupby(["dtype", "algorithm"]):
        g = g.groupby("n", as_index=False).sum_error_u.max()
        ax.plot(g.n, g.sum_error_u.clip(lower=1e-2), "o-", ms=3, label=f"{dtype} {alg}")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="row length n",
        ylabel="max |sum(p) - 1| (units of u)",
        title="Normalization error, N(0,1) logits",
    )
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def overflow_map(table: pd.DataFrame, path) -> pathlib.Path:
    """Fraction of non-finite rows per (dtype, arithmetic, algorithm) and offset."""
    piv = table.pivot_table(
        index=["dtype", "arithmetic", "algorithm"], columns="offset", values="nonfinite_fraction"
    )
    fig, ax = plt.subplots(figsize=(11, 0.28 * len(piv) + 1.8))
    im = ax.imshow(piv.values, aspect="auto", cmap="Reds", vmin=0, vmax=1)
    ax.set_xticks(range(len(piv.columns)), [f"{c:g}" for c in piv.columns], rotation=90, fontsize=7)
    ax.set_yticks(range(len(piv)), [" ".join(i) for i in piv.index], fontsize=7)
    ax.set_xlabel("offset c of the logits c + N(0, 1)")
    ax.set_title("Rows that overflow or underflow to NaN/inf (fraction)")
    fig.colorbar(im, ax=ax, fraction=0.02)
    return _save(fig, path)


def sparsity(table: pd.DataFrame, path) -> pathlib.Path:
    """Mean support size against input scale for the sparse maps and softmax."""
    table = at_offset_zero(table)
    d = table[
        (table.preset == "imagenet")
        & (table.distribution == "normal")
        & (table.dtype == "float64")
        & table.support.notna()
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, g in d.groupby("entry"):
        g = g.groupby("scale", as_index=False).support.mean()
        ax.plot(g.scale, g.support, "o-", ms=3, label=name)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="input scale (std of logits)",
        ylabel="nonzero outputs per row (of 1000)",
        title="Sparsity against scale",
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def bhh(per_vector: pd.DataFrame, path, fmt: str) -> pathlib.Path:
    """The paper's style: per vector, error and bound (units of u), sorted by bound."""
    d = per_vector[per_vector.format == fmt]
    algorithms = list(dict.fromkeys(d.algorithm))
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), squeeze=False)
    for ax, alg in zip(axes.ravel(), algorithms, strict=False):
        g = d[d.algorithm == alg].sort_values("bound_over_u").reset_index(drop=True)
        ok = g.finite
        ax.semilogy(
            np.flatnonzero(ok), g.error_over_u[ok].clip(lower=1e-3), ".", ms=2, label="error"
        )
        ax.semilogy(g.index, g.bound_over_u, "-", color="k", lw=1, label="bound")
        if (~ok).any():
            ax.plot(
                np.flatnonzero(~ok),
                np.full((~ok).sum(), g.bound_over_u.max() * 2),
                "rx",
                ms=3,
                label="overflow",
            )
        ax.set(title=alg, xlabel="vector (sorted by bound)", ylabel="units of u")
        ax.legend(fontsize=7)
    fig.suptitle(f"Blanchard, Higham & Higham (2021) MNIST experiment, {fmt}")
    return _save(fig, path)


def roofline(table: pd.DataFrame, path) -> pathlib.Path:
    """Per entry and shape: our GB/s over a parallel copy's (into ``out=`` and
    allocating), and our speed-up over PyTorch CPU, from ``roofline.csv``."""
    d = table[table.dtype == "float32"].assign(
        shape=lambda t: t.rows.astype(str) + "x" + t.n.astype(str)
    )
    entries = list(dict.fromkeys(d.entry))
    shapes = list(dict.fromkeys(d["shape"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.32 * len(entries) * len(shapes) / 2 + 2))
    width = 0.8 / max(len(shapes), 1)
    for k, shape in enumerate(shapes):
        ours = d[(d["shape"] == shape) & (d.engine == "ours_out")].set_index("entry")
        ours = ours.combine_first(
            d[(d["shape"] == shape) & (d.engine == "ours")].set_index("entry")
        )
        torch = d[(d["shape"] == shape) & (d.engine == "torch")].set_index("entry")
        y = np.arange(len(entries)) + k * width
        left.barh(y, ours.reindex(entries).ratio_to_parallel_copy, height=width, label=shape)
        right.barh(y, torch.reindex(entries).ours_speedup, height=width, label=shape)
    left.axvline(0.7, color="k", ls="--", lw=1)
    right.axvline(1.0, color="k", ls="--", lw=1)
    for ax in (left, right):
        ax.set_yticks(np.arange(len(entries)) + 0.4 - width / 2, entries)
        ax.invert_yaxis()
    left.set_xlabel("our GB/s / parallel copy GB/s (out= where the op has it)")
    right.set_xlabel("our speed / PyTorch CPU's (same threads)")
    right.set_xscale("log")
    left.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def collapse(table: pd.DataFrame, path) -> pathlib.Path:
    """Claim 16: the fraction of rows whose gradient at the target is exactly 0
    against the logit scale, softmax and StableMax, one panel per dataset."""
    datasets = list(dict.fromkeys(table.dataset))
    fig, axes = plt.subplots(
        1, max(len(datasets), 1), figsize=(5 * max(len(datasets), 1), 3.6), squeeze=False
    )
    styles = {"float32": "-", "float64": "--"}
    colors = {"softmax": "C0", "stablemax": "C3"}
    for ax, dataset in zip(axes[0], datasets, strict=False):
        d = table[table.dataset == dataset]
        for (name, dtype), g in d.groupby(["map", "dtype"]):
            g = g.sort_values("scale")
            style = {"ls": styles.get(dtype, ":"), "color": colors.get(name)}
            ax.plot(g.scale, g.target_grad_zero, label=f"{name} {dtype}", **style)
        n = int(d.n.iloc[0]) if len(d) else 0
        ax.set(xscale="log", title=f"{dataset} ({n} classes)", xlabel="logit scale")
    axes[0][0].set_ylabel("rows with d loss / d x_target == 0")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def draw_all(out) -> list[pathlib.Path]:
    """Every figure whose table exists under ``out``."""
    out = pathlib.Path(out)
    made = []
    jobs = [
        ("speed.csv", lambda t: speed(t, out / "speed_gbps.png")),
        ("accuracy.csv", lambda t: error_vs_scale(t, out / "error_vs_scale.png")),
        ("accuracy.csv", lambda t: error_vs_offset(t, out / "error_vs_offset.png")),
        ("accuracy.csv", lambda t: sum_error_vs_n(t, out / "sum_error_vs_n.png")),
        ("accuracy.csv", lambda t: sparsity(t, out / "sparsity.png")),
        ("overflow.csv", lambda t: overflow_map(t, out / "overflow_map.png")),
        ("roofline.csv", lambda t: roofline(t, out / "roofline.png")),
        ("collapse.csv", lambda t: collapse(t, out / "collapse.png")),
    ]
    for name, draw in jobs:
        if (out / name).exists():
            made.append(draw(pd.read_csv(out / name)))
    pv = out / "blanchard_higham_higham" / "per_vector.csv"
    if pv.exists():
        table = pd.read_csv(pv)
        for fmt in dict.fromkeys(table.format):
            made.append(bhh(table, pv.parent / f"error_vs_bound_{fmt}.png", fmt))
    return made
