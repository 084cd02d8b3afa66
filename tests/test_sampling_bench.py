"""The sampling benchmark (``python -m experiments sampling``): its grid, the checks
made before timing, its verdicts, and a ``--quick`` run end to end.  No timing is
asserted."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from experiments.harness import store
from experiments.measure import sampling
from experiments.report import sampling as report


def test_the_grid_has_the_issues_shapes_and_settings():
    grid = pd.DataFrame(sampling.cells(quick=False, threads=2))
    shapes = set(zip(grid.rows, grid.n, strict=True))
    assert shapes == {(1, 32000), (1, 128256), (8, 128256), (64, 128256), (256, 32000)}
    assert sampling.SETTINGS == {
        "temperature": {},
        "top_k": {"top_k": 50},
        "top_p": {"top_p": 0.9},
        "top_k_top_p_min_p": {"top_k": 50, "top_p": 0.9, "min_p": 0.05},
    }
    for setting in sampling.SETTINGS:  # every setting at every shape
        g = grid[grid.setting == setting]
        assert set(zip(g.rows, g.n, strict=True)) == shapes
    assert set(grid.dtype) == {"float32"} and set(grid.temperature) == {sampling.TEMPERATURE}
    assert not grid.duplicated([k for k in sampling.KEY if k != "impl"]).any()
    quick = pd.DataFrame(sampling.cells(quick=True, threads=2))
    assert report.SORT_GOAL_N in set(quick.n)  # the quick run computes the verdicts too


@pytest.mark.parametrize("setting", list(sampling.SETTINGS))
def test_the_torch_and_numpy_filters_keep_the_issues_set(setting):
    x = sampling.logits(6, 1000)
    want = np.array([sampling.numpy_filter(row, sampling.SETTINGS[setting])[1] for row in x])
    _draw, kept = sampling.torch_sort(x, setting)
    diff, tolerance = sampling.kept_difference(kept().numpy(), want)
    assert diff <= tolerance, (setting, diff)
    if setting == "top_k":
        _draw, kept = sampling.torch_topk(x, setting)
        assert np.array_equal(kept().numpy(), want)  # no ties: exactly the top 50
        assert (want.sum(axis=1) == 50).all()
    if setting == "temperature":
        assert want.all()


def test_the_numpy_filter_keeps_ties_and_applies_min_p_relative_to_the_max():
    row = np.array([3.0, 2.0, 2.0, 2.0, 1.0, 0.0], dtype=np.float32)
    keep = sampling.numpy_filter(row, {"top_k": 2})[1]
    assert keep.tolist() == [True, True, True, True, False, False]  # the k-th is tied
    keep = sampling.numpy_filter(row, {"min_p": float(np.exp(-1.5 / sampling.TEMPERATURE))})[1]
    # (x - max) / T >= log(min_p) = -1.5 / T: x >= 1.5
    assert keep.tolist() == [True, True, True, True, False, False]
    weights, keep = sampling.numpy_filter(row, {"top_p": 0.5})
    assert weights[0] == 1.0 and np.allclose(weights, np.exp((row - 3.0) / sampling.TEMPERATURE))
    # exp(0) = 1 reaches half of the total, 1.97: the max alone
    assert keep.tolist() == [True, False, False, False, False, False]
    keep = sampling.numpy_filter(row, {"top_p": 0.6})[1]  # the three tied at 2 all kept
    assert keep.tolist() == [True, True, True, True, False, False]


def test_the_check_refuses_a_wrong_filter_and_a_draw_outside_the_kept_set():
    x = sampling.logits(sampling.CHECK_ROWS, 1000)
    top_p = sampling.SETTINGS["top_p"]
    want = np.array([sampling.numpy_filter(row, top_p)[1] for row in x])
    # The smallest entries instead of the largest: a wrong filter.
    flipped = np.array([sampling.numpy_filter(-row, top_p)[1] for row in x])
    diff, tolerance = sampling.kept_difference(flipped, want)
    assert diff > tolerance
    inside = np.argmax(x, axis=1)  # the largest entry is always kept
    assert sampling.outside(inside, want) == 0
    below = np.argmin(x, axis=1)
    assert sampling.outside(below, want) == sampling.CHECK_ROWS
    # ... unless the candidate's own kept set has it (a boundary entry within the slack)
    assert sampling.outside(below, want, own=~want) == 0
    bad = sampling.CHECK_ROWS + 1
    assert sampling.outside(inside[:2], want) == bad  # too few rows
    assert sampling.outside(inside.astype(np.float64), want) == bad  # not indices
    assert sampling.outside(inside + 1000, want) == bad  # out of range


def _table(sort_ratio, multinomial_ratio, outside=0, sort_small=10.0):
    base = {"dtype": "float32", "threads": 2, "temperature": 0.8, "median_s": 1e-3}
    base |= {"ratio_low": np.nan, "ratio_high": np.nan, "note": "", "kept_mean": 50.0}

    def row(setting, rows, n, impl, ratio=np.nan, **more):
        return {**base, "setting": setting, "rows": rows, "n": n, "impl": impl}, {
            "ratio": ratio,
            **more,
        }

    rows = []
    for setting in sampling.SETTINGS:
        for r, n in ((1, 32000), (8, 128256)):
            rows.append(row(setting, r, n, "ours", outside=outside))
    for setting in sampling.FILTER_SETTINGS:
        rows.append(row(setting, 8, 128256, "torch_sort", sort_ratio))
        rows.append(row(setting, 1, 32000, "torch_sort", sort_small))  # not in the goal
    for r, n in ((1, 32000), (8, 128256)):
        rows.append(row("temperature", r, n, "torch_multinomial", multinomial_ratio))
    return pd.DataFrame([a | b for a, b in rows])


def test_verdicts_follow_the_table():
    good = "\n".join(report.verdicts(_table(6.0, 1.2)))
    assert good.count("does not hold") == 0 and good.count("holds") == 3
    assert "3 of 3 cells at least 5" in good and "2 of 2 cells at least 1" in good
    bad = "\n".join(report.verdicts(_table(4.0, 0.9, outside=1)))
    assert bad.count("does not hold") == 3
    assert "top-p 0.9 8 x 128256: 4.00" in bad and "temperature only 1 x 32000: 0.90" in bad
    # The goal is at V = 128256 only: a shorter row below 5x does not change it.
    short = "\n".join(report.verdicts(_table(6.0, 1.2, sort_small=2.0)))
    assert short.count("does not hold") == 0
    # One cell short of the goal is enough.
    table = _table(6.0, 1.2)
    table.loc[(table.impl == "torch_sort") & (table.n == 128256), "ratio"] = [6.0, 4.99, 6.0]
    one = report.verdicts(table)[2]
    assert "does not hold; 2 of 3 cells" in one
    empty = "\n".join(report.verdicts(_table(6.0, 1.2).query("impl == 'ours'")))
    assert empty.count("not measured") == 2


@pytest.mark.slow  # the --quick run: a few seconds of timing, plus sample's compilation
def test_quick_run_writes_the_table_and_the_report_whose_verdicts_follow_it(tmp_path):
    from experiments.__main__ import main

    assert main(["sampling", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    table = pd.read_csv(tmp_path / "sampling.csv")
    assert list(table.columns) == [*sampling.COLUMNS, store.RUN_ID]
    for setting in sampling.SETTINGS:
        g = table[table.setting == setting]
        want = {"ours", "ours_cpu"} | {
            p for p in sampling.PEERS if setting in sampling.PEER_SETTINGS[p]
        }
        assert set(g.impl) == want, setting
        assert g.median_s.notna().all(), g[["impl", "note"]]  # nothing left out
    assert (table.median_s > 0).all() and (table.outside == 0).all()
    ours = table[table.impl.isin(sampling.OURS)]
    assert ours.note.isna().all(), ours.note  # in the kept set, the same draws on both engines
    peers = table[table.impl.isin(sampling.PEERS)]
    assert (peers.ratio > 0).all() and set(peers.versus) == {"ours"}
    checked = peers[peers.kept_diff.notna()]
    assert set(checked.impl) == {"torch_sort", "torch_topk", "numpy_choice"}
    assert (checked.kept_diff <= checked.kept_tolerance).all()
    meta = json.loads((tmp_path / "sampling.meta.json").read_text())
    assert meta["complete"] and meta["settings"]["quick"]
    assert meta["settings"]["temperature"] == sampling.TEMPERATURE

    def verdict_lines():
        text = (tmp_path / "SAMPLING.md").read_text()
        lines = [line for line in text.splitlines() if line.startswith("- **At least")]
        assert len(lines) == 2, text
        return lines

    sort = peers[
        (peers.impl == "torch_sort")
        & peers.setting.isin(sampling.FILTER_SETTINGS)
        & (peers.n == report.SORT_GOAL_N)
    ]
    multinomial = peers[peers.impl == "torch_multinomial"]
    assert len(sort) == 3 and len(multinomial) == len(sampling.QUICK_SHAPES)
    measured = verdict_lines()
    for line, ratios, goal in ((measured[0], sort, 5), (measured[1], multinomial, 1)):
        said = "does not hold" if (ratios.ratio < goal).any() else "holds;"
        assert said in line, line
    # The same report from a doctored table: the verdicts follow the numbers.
    for ratio, said in ((0.5, "does not hold"), (50.0, "holds;")):
        doctored = table.copy()
        doctored.loc[doctored.impl.isin(["torch_sort", "torch_multinomial"]), "ratio"] = ratio
        doctored.to_csv(tmp_path / "sampling.csv", index=False)
        report.write(tmp_path)
        for line in verdict_lines():
            assert said in line and f"{ratio:.2f}" in line, line
    text = (tmp_path / "SAMPLING.md").read_text()
    assert "## Median time per call" in text and "## Ratios" in text
    for setting in sampling.SETTINGS:
        assert sampling.LABELS[setting] in text
