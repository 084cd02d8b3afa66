"""``results/README.md``: what was run, on what machine, and the headline findings,
generated from the tables and their metadata (never typed by hand)."""

from __future__ import annotations

import json
import pathlib

import pandas as pd

from experiments.report import claims


def _markdown(table: pd.DataFrame, floatfmt: str = ".3g") -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _machine(out: pathlib.Path) -> list[str]:
    metas = sorted(out.glob("*.meta.json"))
    if not metas:
        return ["(no metadata found)"]
    meta = json.loads(metas[0].read_text())
    packages = ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
    return [
        f"- CPU: {meta['cpu']} ({meta['cpu_count']} cores seen, {meta['numba_threads']} Numba "
        f"threads, threading layer {meta['threading_layer']}); GPU: {meta['gpu']}",
        f"- Python {meta['python']}; {packages}",
        f"- git commit {meta['git_commit'][:12]}"
        + (" (with local changes)" if meta["git_dirty"] else "")
        + f", {meta['date']}; command `{meta['command']}`",
    ]


def _speed_headline(out: pathlib.Path) -> list[str]:
    path = out / "speed.csv"
    if not path.exists():
        return []
    s = pd.read_csv(path)
    s = s[(s.dtype == "float32") & (s.bytes >= 64 * 2**20)]
    core = ["softmax[shifted]", "log_softmax", "logsumexp", "cross_entropy"]
    s = s[s.entry.isin(core)]
    if s.empty:
        return []
    table = s.pivot_table(index="entry", columns="engine", values="gbps", aggfunc="median")
    roof = s.groupby("entry").parallel_copy_gbps.median().rename("parallel copy")
    table = pd.concat([table, roof], axis=1).reset_index()
    return [
        "### Speed (float32, arrays of 64 MB and more, median GB/s read + written)",
        "",
        _markdown(table),
        "",
        "![speed](speed_gbps.png)",
        "",
    ]


OURS = ("numpy", "cpu", "parallel")
#: How the text names each peer (a backend or engine of the tables that is not ours).
PEER_NAMES = {
    "scipy": "scipy",
    "torch": "PyTorch",
    "onnxruntime": "onnxruntime",
    "jax": "JAX",
    "entmax": "entmax",
}


def _read(out: pathlib.Path, name: str) -> pd.DataFrame | None:
    path = out / name
    return pd.read_csv(path) if path.exists() else None


def measured_peers(table: pd.DataFrame | None, column: str) -> list[str]:
    """The names of the peers with rows in ``table`` (their ``column`` is a backend or
    engine other than ours), in the order of :data:`PEER_NAMES`, others after."""
    if table is None or column not in table.columns:
        return []
    found = set(table[column].dropna().astype(str)) - set(OURS)
    known = [PEER_NAMES[p] for p in PEER_NAMES if p in found]
    return known + sorted(found - set(PEER_NAMES))


def _names(peers: list[str]) -> str:
    if len(peers) <= 1:
        return "".join(peers)
    return ", ".join(peers[:-1]) + " and " + peers[-1]


def _what_was_run(out: pathlib.Path) -> list[str]:
    """The tables' descriptions, naming only the peers that have rows in them."""
    accuracy = _read(out, "accuracy.csv")
    offset_peers = measured_peers(
        None if accuracy is None or "offset" not in accuracy else accuracy, "backend"
    )
    beside = (
        f"beside {_names(offset_peers)} in the same cells"
        if offset_peers
        else "(no peer was installed to score beside it)"
    )
    speed_peers = measured_peers(_read(out, "speed.csv"), "engine")
    return [
        "- `accuracy.csv`: every op and algorithm x dtype (float16, bfloat16, float32, float64)"
        " x model preset (row lengths 2 to 50257) x input scale (1e-3 to 1e4) x distribution,"
        " and an offset sweep (logits `c + scale z`, c from -1e6 to 1e6) of every op, the"
        f" log-domain family {beside}; errors in units"
        " of u against a reference from the same rounded input in higher precision, normwise"
        " (`max_error_u`) and componentwise (`max_rel_error_u`), with the op's bound"
        " (`bound_u`, `bound_ratio`: error over bound).",
        "- `speed.csv`: GB/s of our engines"
        + (f" and of {_names(speed_peers)}" if speed_peers else " (no peer was installed)")
        + ", with a plain copy of the same array measured in the same cell (`copy_gbps`, "
        "`parallel_copy_gbps`).",
    ]


def _offset_headline(out: pathlib.Path) -> list[str]:
    """The offset sweep: each engine's and peer's worst componentwise error over the
    cells the peers were measured in, and how often ours exceeds the best peer's."""
    path = out / "accuracy.csv"
    if not path.exists():
        return []
    a = pd.read_csv(path)
    if "offset" not in a or "max_rel_error_u" not in a:
        return []
    cell = ["entry", "dtype", "preset", "n", "rows", "scale", "offset", "distribution"]
    peer_rows = a[~a.backend.isin(OURS)]
    if peer_rows.empty:
        return []
    d = a.merge(peer_rows[cell].drop_duplicates(), on=cell)
    worst = d.pivot_table(
        index=["entry", "dtype"], columns="backend", values="max_rel_error_u", aggfunc="max"
    )
    offsets = sorted(d.offset.unique())
    best_peer = peer_rows.groupby(cell).max_rel_error_u.min().rename("best_peer")
    ours = d[d.backend.isin(OURS)].join(best_peer, on=cell)
    worse = ours[ours.max_rel_error_u > ours.best_peer + 1]
    family = a[a.entry.str.startswith(("log_softmax", "logsumexp", "cross_entropy", "softmax"))]
    within = family[family.backend.isin(OURS) & (family.algorithm != "naive")]
    return [
        "### Accuracy whatever the offset of the logits",
        "",
        f"Logits `c + scale z`, c in {', '.join(f'{c:g}' for c in offsets)}; the largest"
        " componentwise error (units of u, entries below the smallest normal not scored)"
        " over the offset sweep's cells, ours and the peers in the same cells:",
        "",
        _markdown(worst.reset_index(), ".2f"),
        "",
        f"Cells where one of our engines is more than 1 u worse than the best peer: "
        f"{len(worse)} of {len(ours)}. Rows of the softmax family (all offsets and scales,"
        f" naive softmax aside) within the op's stated bound: "
        f"{int((within.bound_ratio <= 1).sum())} of {len(within)}.",
        "",
        "![offsets](error_vs_offset.png)",
        "",
    ]


def write(out) -> pathlib.Path:
    out = pathlib.Path(out)
    lines = [
        "# Results",
        "",
        "Generated by `python -m experiments plots` (run by `make study`) from the tables in "
        "this folder. Every table has a `.meta.json` beside it with the machine, the package "
        "versions, the git commit and the command.",
        "",
        "## Machine",
        "",
        *_machine(out),
        "",
        "## What was run",
        "",
        *_what_was_run(out),
        "- `exp_ulp.csv`: the CPU kernels' exp, log1p and atan on every float32 input (softplus's "
        "log1p on every float32 in [0, 1]), exp on 2e7 float64 ones; `elementary_paths.csv`: "
        "those against the C library's, in the kernels.",
        "- `overflow.csv`: where each softmax formula overflows or underflows, per format, in "
        "simulated fp16/bf16 arithmetic and through the kernels.",
        "- `blanchard_higham_higham/`: the reproduction of Blanchard, Higham & Higham (2021).",
        "- `claims.csv` and `CLAIMS.md`: the article's claims and their verdicts; a timing "
        "ratio has a row per interleaved round, and decides a verdict only if the 95% interval "
        "of its median lies on one side of the threshold.",
        "",
        "## Headline findings",
        "",
    ]
    summary = out / "blanchard_higham_higham" / "summary.csv"
    if summary.exists():
        lines += [
            "### Blanchard, Higham & Higham (2021), 2500 MNIST logit vectors",
            "",
            _markdown(pd.read_csv(summary)),
            "",
            "![fp16](blanchard_higham_higham/error_vs_bound_fp16.png)",
            "",
        ]
    exp_table = out / "exp_ulp.csv"
    if exp_table.exists():
        lines += [
            "### The kernels' vectorizable exp, log1p and atan",
            "",
            "Ulp against a correctly rounded reference:",
            "",
            _markdown(pd.read_csv(exp_table)),
            "",
        ]
    lines += _offset_headline(out)
    lines += _speed_headline(out)
    lines += ["### The article's claims", ""]
    for v in claims.verdicts(out):
        lines.append(f"{v.number}. {v.claim} **{v.verdict}**")
    lines += ["", "Details, numbers and figures: [CLAIMS.md](CLAIMS.md).", ""]
    for fig in ("error_vs_scale.png", "sum_error_vs_n.png", "overflow_map.png", "sparsity.png"):
        if (out / fig).exists():
            lines += [f"![{fig}]({fig})", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
