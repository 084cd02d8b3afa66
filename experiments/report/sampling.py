"""``SAMPLING.md`` from ``sampling.csv`` (``python -m experiments sampling``).

Drawn from the table alone, so ``python -m experiments plots`` writes it again; the
goals' verdicts are computed from the table beside their criteria.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from experiments.harness import metadata
from experiments.measure.sampling import (
    CHECK_ROWS,
    FILTER_SETTINGS,
    KEPT_FLOOR,
    KEPT_SLACK,
    LABELS,
    OURS,
    PEERS,
    SETTINGS,
)

NAMES = {
    "ours": "ours",
    "ours_cpu": 'ours, backend="cpu"',
    "torch_sort": "torch sort (vLLM)",
    "torch_topk": "torch.topk + multinomial",
    "torch_multinomial": "torch multinomial(softmax)",
    "numpy_choice": "NumPy choice per row",
}
#: The goal against torch's sort-based path: at least this ratio, at this row length,
#: in every filter setting.
SORT_GOAL = 5.0
SORT_GOAL_N = 128256
#: The goal against ``torch.multinomial(torch.softmax(x / T))``, temperature only,
#: every shape.
MULTINOMIAL_GOAL = 1.0


def _markdown(frame: pd.DataFrame) -> list[str]:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + " --- |" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return [header, rule, *body, ""]


def _us(value) -> str:
    if pd.isna(value):
        return "n/a"
    us = value * 1e6
    return f"{us:.3g}" if us < 100 else f"{us:.0f}"


def _ratio(value) -> str:
    """A ratio, in bold below 1 (a peer faster than ours)."""
    if pd.isna(value):
        return "n/a"
    text = f"{value:.2f}"
    return f"**{text}**" if value < 1 else text


def _interval(r) -> str:
    low, high = r.ratio_low, r.ratio_high
    if pd.notna(low) and pd.notna(high) and np.isfinite(low) and np.isfinite(high):
        return f" [{low:.2f}, {high:.2f}]"
    return ""


def _cells(frame: pd.DataFrame):
    """(setting, rows, n) groups in the order of :data:`SETTINGS`, then by size."""
    order = {s: i for i, s in enumerate(SETTINGS)}
    keys = frame[["setting", "rows", "n"]].drop_duplicates()
    keys = keys.assign(_o=keys.setting.map(order).fillna(len(order)))
    keys = keys.sort_values(["_o", "n", "rows"])
    for r in keys.itertuples():
        yield (
            r.setting,
            r.rows,
            r.n,
            frame[(frame.setting == r.setting) & (frame.rows == r.rows) & (frame.n == r.n)],
        )


def times_table(table: pd.DataFrame) -> list[str]:
    """Median microseconds per call, every implementation, per setting and shape;
    ``kept``: the mean number of entries the setting keeps per row (reference)."""
    impls = [i for i in (*OURS, *PEERS) if i in set(table.impl)]
    lines = []
    for setting, rows, n, g in _cells(table):
        by = g.set_index("impl")
        kept = by.kept_mean.dropna()
        line = {
            "setting": LABELS.get(setting, setting),
            "shape": f"{rows} x {n}",
            "kept": f"{kept.iloc[0]:.4g}" if len(kept) else "n/a",
        }
        for impl in impls:
            line[NAMES[impl]] = _us(by.median_s.get(impl, np.nan))
        lines.append(line)
    return _markdown(pd.DataFrame(lines)) if lines else []


def ratios_table(table: pd.DataFrame) -> list[str]:
    """Each peer's time over ours (``backend="auto"``), per setting and shape."""
    peers = [p for p in PEERS if p in set(table.impl)]
    lines = []
    for setting, rows, n, g in _cells(table):
        by = g.set_index("impl")
        line = {"setting": LABELS.get(setting, setting), "shape": f"{rows} x {n}"}
        for peer in peers:
            line[f"x {NAMES[peer]}"] = _ratio(by.ratio.get(peer, np.nan))
        lines.append(line)
    return _markdown(pd.DataFrame(lines)) if lines else []


def _goal(title: str, criterion: str, ratios: pd.DataFrame, at_least: float) -> str:
    """One goal's line: its verdict from ``ratios`` (rows of one peer), each cell's
    ratio listed."""
    if ratios.empty:
        return f"- **{title}** ({criterion}): not measured (no such cell in the table)."
    ratios = ratios.sort_values(["n", "rows"])
    held = ratios.ratio >= at_least
    verdict = "holds" if held.all() else "does not hold"
    cells = "; ".join(
        f"{LABELS.get(r.setting, r.setting)} {r.rows} x {r.n}: {r.ratio:.2f}{_interval(r)}"
        for r in ratios.itertuples()
    )
    return (
        f"- **{title}** ({criterion}): {verdict}; {int(held.sum())} of {len(ratios)} cells "
        f"at least {at_least:g}.  Ratios (median [95% interval where the rounds give "
        f"one]): {cells}."
    )


def verdicts(table: pd.DataFrame) -> list[str]:
    """The issue's goals, each computed from the table beside its criterion, and the
    checks made before the timing."""
    timed = table[table.ratio.notna()] if "ratio" in table else table.iloc[:0]
    sort = timed[
        (timed.impl == "torch_sort")
        & timed.setting.isin(FILTER_SETTINGS)
        & (timed.n == SORT_GOAL_N)
    ]
    multinomial = timed[(timed.impl == "torch_multinomial") & (timed.setting == "temperature")]
    lines = [
        "## Against the goals",
        "",
        _goal(
            f"At least {SORT_GOAL:g}x faster than torch's sort-based path at V = {SORT_GOAL_N}",
            "torch sort (vLLM)'s time over ours at least "
            f"{SORT_GOAL:g}, every filter setting ("
            + ", ".join(LABELS[s] for s in FILTER_SETTINGS)
            + f") and every shape with n = {SORT_GOAL_N}",
            sort,
            SORT_GOAL,
        ),
        _goal(
            "At least as fast as torch.multinomial(softmax(x)) for plain sampling",
            f"torch multinomial(softmax)'s time over ours at least {MULTINOMIAL_GOAL:g}, "
            "temperature only, every shape",
            multinomial,
            MULTINOMIAL_GOAL,
        ),
    ]
    ours = table[table.impl.isin(OURS)]
    if len(ours) and "outside" in ours:
        bad = ours[ours.outside.fillna(0) > 0]
        lines.append(
            f"- **Our draws in the kept set** (every draw of the first {CHECK_ROWS} rows of "
            "each cell inside the sort-based reference's kept set, checked before timing): "
            + ("holds" if bad.empty else "does not hold")
            + f"; {len(ours) - len(bad)} of {len(ours)} cells"
            + (
                ""
                if bad.empty
                else " (failing: "
                + "; ".join(
                    f"{NAMES[r.impl]} {LABELS.get(r.setting, r.setting)} {r.rows} x {r.n}"
                    for r in bad.itertuples()
                )
                + ")"
            )
            + "."
        )
    return [*lines, ""]


def notes(table: pd.DataFrame, meta: dict | None) -> list[str]:
    left = table[table.median_s.isna() & table.note.notna()]
    flagged = table[table.median_s.notna() & table.note.notna() & (table.note != "")]
    packages = (meta or {}).get("packages", {})
    lines = [
        "## Implementations",
        "",
        "- **ours**: `softmax_numba.sample(x, temperature=T, top_k=..., top_p=..., min_p=..., "
        'seed=s)` with `backend="auto"` (and `"cpu"`, the serial engine), on the NumPy array; '
        "a fixed seed, so that no call draws fresh entropy.",
        "- **torch sort (vLLM)**: torch's sort-based path as vLLM's sampler writes it "
        "(`vllm/v1/sample/ops/topk_topp_sampler.py`, `apply_top_k_top_p_pytorch`, the "
        "branch that sorts; read at vllm-project/vllm 01fa3fe7): the logits divided by the "
        "temperature, `sort` ascending, the k-th largest gathered from the sorted row and "
        "everything below it masked, `softmax` and `cumsum` of the sorted row with entries "
        "masked while the sum is at most 1 - p, the row scattered back; min-p as vLLM's "
        "`MinPLogitsProcessor.apply` (`vllm/v1/sample/logits_processor/builtin.py`, read at "
        "0272a72c: softmax, "
        "`amax`, entries below min_p times the largest set to -inf); then vLLM's "
        "`random_sample`: the softmax, `q.exponential_()` and `probs.div_(q).argmax()`.  "
        "Differences from vLLM: min-p after top-k and top-p (the issue's order; vLLM runs "
        "it first, with the same operations and cost); top-k alone sorts too (vLLM's CPU "
        "path then calls `apply_top_k_only`, a `topk` without a sort, close to the "
        "`torch.topk` column); temperature only does not sort (nor does vLLM).",
        "- **torch.topk + multinomial** (top-k only): `torch.topk(x, k)`, the softmax of "
        "the k values over T, `torch.multinomial(probs, 1)`, the index gathered.",
        "- **torch multinomial(softmax)** (temperature only): "
        "`torch.multinomial(torch.softmax(x / T, -1), 1)`.",
        "- **NumPy choice per row** (the naive baseline): each row in float64, its "
        "thresholds found on the row sorted by `np.sort` (top-k, top-p, min-p, ties at "
        "each threshold kept), then `Generator.choice(n, p=w / w.sum())`.",
        f"- torch at as many intra-op threads as Numba.  Before timing, the draws of each "
        f"implementation on the first {CHECK_ROWS} rows of each cell were checked to lie in "
        'the kept set of the sort-based reference (`filter_logits(backend="numpy")`), and '
        "the kept sets of torch sort, torch.topk and NumPy to equal the reference's within "
        f"{KEPT_SLACK:.0%} of the kept entries (at least {KEPT_FLOOR}) in every row.",
        "- Packages: "
        + ", ".join(f"{p} {packages[p]}" for p in ("numpy", "numba", "torch") if p in packages)
        + ".",
    ]
    for (impl, note), g in left.groupby(["impl", "note"]):
        cells = ", ".join(
            f"{LABELS.get(r.setting, r.setting)} {r.rows} x {r.n}" for r in g.itertuples()
        )
        lines.append(f"- {NAMES.get(impl, impl)} left out ({note}): {cells}.")
    for r in flagged.itertuples():
        lines.append(
            f"- {NAMES.get(r.impl, r.impl)}, {LABELS.get(r.setting, r.setting)} "
            f"{r.rows} x {r.n}: {r.note}."
        )
    return [*lines, ""]


def write(out) -> pathlib.Path:
    """``SAMPLING.md`` in ``out`` from ``out/sampling.csv``."""
    out = pathlib.Path(out)
    table = pd.read_csv(out / "sampling.csv")
    meta = metadata.read(out / "sampling.csv") or {}
    settings = meta.get("settings", {})
    commit = str(settings.get("library_commit", "unknown"))[:12]
    if settings.get("library_dirty"):
        commit += " with local changes"
    temperature = settings.get("temperature", table.temperature.iloc[0] if len(table) else "?")
    lines = [
        "# Sampling from logits: ours against torch and NumPy",
        "",
        "Written by `python -m experiments sampling` (part of `make bench`) from `sampling.csv`;",
        "machine, versions and settings in `sampling.meta.json`.  Library timed: commit "
        f"{commit}; {meta.get('cpu', 'unknown cpu')}, {settings.get('threads', '?')} threads, "
        f"{meta.get('date', '')}" + (" (--quick)" if settings.get("quick") else "") + ".",
        "",
        f"Logits: {settings.get('logits', 'unknown')}; every setting at temperature "
        f"T = {temperature} (the filters act on x / T, as a serving stack's sampler "
        "divides before filtering).  One token per row.",
        "",
        "In each cell every implementation is timed in blocks of calls, one at a time, the",
        "order reversed every other round.  `x peer` is the peer's time over ours",
        '(`backend="auto"`) in the same round (median over rounds; above 1: we are faster;',
        "**bold** below 1).  `n/a`: the peer does not do that setting, or was left out",
        "(see the notes).",
        "",
        *verdicts(table),
        "## Median time per call, us",
        "",
        "`kept`: entries kept per row by the setting (the reference's, mean over the checked "
        "rows).",
        "",
        *times_table(table),
        "## Ratios: the peer's time over ours",
        "",
        *ratios_table(table),
        *notes(table, meta),
    ]
    path = out / "SAMPLING.md"
    path.write_text("\n".join(lines))
    return path
