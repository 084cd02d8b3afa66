"""The sizes benchmark (``python -m experiments sizes``): its grid (the family of issue
29 in a part of its own), its peers' check, its verdicts, the family's report lines,
and a ``--quick`` run end to end.  No timing is asserted."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from experiments.measure import sizes
from experiments.report import sizes as report

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and (
    importlib.util.find_spec("onnx") is not None
)


def test_the_grid_has_every_op_the_named_shapes_float64_and_the_single_thread_table():
    grid = pd.DataFrame(sizes.cells(quick=False, threads=2))
    main = grid[grid.part == "sizes"]
    assert set(main.op) == set(sizes.OPS)
    shapes = set(zip(main.rows, main.n, strict=True))
    named = {(1, 10), (1, 1000), (64, 1000), (8, 32000), (1, 128256), (32, 128256), (16384, 4096)}
    assert named <= shapes
    assert set(main.dtype) == {"float32", "float64"}
    for op in sizes.OPS:  # every op at every float32 shape
        g = main[(main.op == op) & (main.dtype == "float32")]
        assert set(zip(g.rows, g.n, strict=True)) == shapes
    single = grid[grid.part == "single_thread"]
    assert set(single.op) == {"softmax", "log_softmax"} and set(single.threads) == {1}
    assert set(zip(single.rows, single.n, strict=True)) == {(64, 1000), (8, 32000), (256, 4096)}
    assert not grid.duplicated(list(sizes.KEY[:-1])).any()


def test_the_check_rejects_a_peer_on_the_wrong_axis_and_accepts_rounding():
    x = np.random.default_rng(0).standard_normal((8, 300)).astype(np.float32)
    ours = sizes.ours("softmax", x, None)["ours"]()
    tolerance = sizes.tolerance_u("softmax", x, None)
    z = np.exp(x - x.max(axis=0))  # softmax along the rows' axis: a wrong peer
    wrong = z / z.sum(axis=0)
    assert sizes.disagreement_u((wrong,), (ours,), np.float32) > tolerance
    rounded = (ours.astype(np.float64) * (1 + 2e-7)).astype(np.float32)
    assert sizes.disagreement_u((rounded,), (ours,), np.float32) <= tolerance
    assert sizes.disagreement_u((), (ours,), np.float32) == np.inf  # an output missing
    assert sizes.disagreement_u((ours[:, :-1],), (ours,), np.float32) == np.inf


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime and onnx are in the peers extra")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_onnxruntime_models_compute_our_ops_into_the_bound_array(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 37)).astype(dtype)
    target = rng.integers(0, 37, size=5)
    runtime = sizes.Ort()
    for op in sizes.ORT_NODES:
        call = runtime.make(op, x, target if op == "cross_entropy" else None, threads=1)
        got = call()
        assert got is call()  # the array bound once, written in place
        want = sizes.as_numpy(sizes.ours(op, x, target)["ours"]())
        assert sizes.disagreement_u((got,), want, dtype) <= sizes.tolerance_u(op, x, target), op


def test_verdicts_follow_the_table():
    def table(ratio, mlas, copy):
        base = {"dtype": "float32", "threads": 2, "ratio_low": np.nan, "ratio_high": np.nan}
        return pd.DataFrame(
            [
                {**base, "part": "sizes", "op": "softmax", "rows": 64, "n": 1000}
                | {"impl": "torch", "ratio": ratio},
                {**base, "part": "sizes", "op": "softmax", "rows": 16384, "n": 4096}
                | {"impl": "ours_out", "ratio": np.nan, "ratio_to_copy": copy},
                {**base, "part": "single_thread", "op": "softmax", "rows": 64, "n": 1000}
                | {"impl": "onnxruntime", "ratio": mlas, "threads": 1},
            ]
        )

    good = "\n".join(report.verdicts(table(1.2, 1.1, 0.9)))
    assert good.count("holds") == 3 and "does not hold" not in good
    bad = "\n".join(report.verdicts(table(0.8, 0.9, 0.5)))
    assert bad.count("does not hold") == 3
    assert "softmax 64 x 1000 float32 against torch: 0.80" in bad


def test_a_peer_that_crashes_is_left_out_and_its_row_says_why(monkeypatch):
    crash = "import sys; sys.stderr.write('worker crashed here'); sys.exit(3)"
    monkeypatch.setattr(sizes.JaxProcess, "COMMAND", ("-c", crash))
    peers = sizes.Peers()
    peers.installed["jax"] = True
    cell = {"part": "sizes", "op": "softmax", "dtype": "float32", "rows": 1, "n": 10, "threads": 1}
    try:
        rows = {r["impl"]: r for r in sizes.measure(cell, peers, quick=True)}
    finally:
        peers.close()
    assert "median_s" not in rows["jax"] and "worker crashed here" in rows["jax"]["note"]
    assert rows["ours"]["median_s"] > 0 and rows["copy"]["median_s"] > 0
    assert peers.jax_failed  # not started again for the next cell


def test_the_family_has_a_grid_of_its_own_three_shapes_each_one_in_quick():
    from softmax_numba import registry
    from softmax_numba._softmax import REGISTRY_TEMPERATURE

    for quick, shapes in ((False, sizes.FAMILY_SHAPES), (True, sizes.QUICK_FAMILY_SHAPES)):
        grid = pd.DataFrame(sizes.cells(quick=quick, threads=2))
        family = grid[grid.part == "family"]
        assert set(family.op) == set(sizes.FAMILY_OPS)
        assert set(family.dtype) == {"float32"} and set(family.threads) == {2}
        for op in sizes.FAMILY_OPS:
            g = family[family.op == op]
            assert list(zip(g.rows, g.n, strict=True)) == list(shapes)
        assert not set(family.op) & set(grid[grid.part != "family"].op)
    assert len(sizes.FAMILY_SHAPES) == 3 and len(sizes.QUICK_FAMILY_SHAPES) == 1
    # the check's tolerance is the bound of the entry that runs what we time
    assert sizes.TEMPERATURE == REGISTRY_TEMPERATURE
    names = {e.name for e in registry.ENTRIES}
    assert {sizes.ENTRY[op] for op in sizes.FAMILY_OPS} <= names
    for op in sizes.FAMILY_OPS:  # every peer timed is named in the report
        assert {p for p in sizes.PEERS if op in sizes.PEER_OPS[p]} == set(sizes.PEER_CALLS[op])


def test_segment_offsets_cut_nonempty_segments_averaging_n():
    cell = {"op": "segment_softmax", "rows": 64, "n": 1000, "dtype": "float32"}
    x, offsets = sizes._arrays(cell)
    lengths = np.diff(offsets)
    assert offsets.dtype == np.int64 and offsets.shape == (65,)
    assert offsets[0] == 0 and offsets[-1] == x.size and (lengths > 0).all()
    assert lengths.mean() == 1000 and lengths.max() > 2 * 1000  # ragged, not equal rows
    again = sizes._arrays(cell)[1]
    assert np.array_equal(again, offsets)  # seeded


def test_segment_errors_are_relative_to_each_segments_largest_value():
    want = np.array([0.5, 0.5, 1e-3, 1e-3, 1e-3], dtype=np.float32)
    got = want.copy()
    got[3] *= 1 + 2**-10  # 2**14 u of its segment's largest value, 16 u of 1
    offsets = np.array([0, 2, 5])
    per_segment = sizes.disagreement_u((got,), (want,), np.float32, offsets)
    assert per_segment == pytest.approx(2**14, rel=1e-3)
    assert sizes.disagreement_u((got,), (want,), np.float32) < 17  # one flat array: of 1


def _wrong_forms(torch, op, xt, target):
    """A peer that computes another function: a wrong axis, a missing option."""
    if op == "segment_softmax":  # one segment over all the values
        return torch.softmax(xt.reshape(-1), 0)
    if op == "logcumsumexp":  # the reverse scan
        return torch.logcumsumexp(xt.flip(-1), -1).flip(-1)
    return torch.softmax(xt, -1)  # no temperature, no sink, softmax for stablemax


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is a peer")
@pytest.mark.parametrize("op", sizes.FAMILY_OPS)
def test_the_family_check_accepts_each_peer_and_rejects_another_function(op):
    import torch

    cell = {"op": op, "rows": 6, "n": 300, "dtype": "float32"}
    x, target = sizes._arrays(cell)
    want = sizes.head_of(op, sizes.as_numpy(sizes.ours(op, x, target)["ours"]()), target)
    few_x, few = sizes.checked(op, x, target)
    tolerance = sizes.tolerance_u(op, few_x, few)
    offsets = few if op == "segment_softmax" else None
    peers = sizes.Peers(use_jax=False)
    tried = 0
    for peer in sizes.PEERS:
        if peer == "jax" or not peers.installed[peer] or op not in sizes.PEER_OPS[peer]:
            continue
        with sizes.thread_count(1, peers):  # torch's threads restored after
            _, outputs = peers.make(peer, op, x, target, threads=1)
            got = sizes.head_of(op, outputs(), target)
        assert sizes.disagreement_u(got, want, x.dtype, offsets) <= tolerance, peer
        tried += 1
    assert tried or op == "segment_softmax"  # torch_geometric is optional
    wrong = sizes.head_of(
        op, (_wrong_forms(torch, op, torch.from_numpy(x), target).numpy(),), target
    )
    assert sizes.disagreement_u(wrong, want, x.dtype, offsets) > tolerance


def test_the_family_report_has_a_line_per_op_with_the_best_peer_and_its_interval():
    base = {"part": "family", "dtype": "float32", "threads": 2, "note": np.nan, "gbps": 5.0}

    def row(op, rows, impl, median, ratio=np.nan, versus=np.nan, low=np.nan, high=np.nan):
        cell = {**base, "op": op, "rows": rows, "n": 1000, "impl": impl, "median_s": median}
        return cell | {"ratio": ratio, "versus": versus, "ratio_low": low, "ratio_high": high}

    table = pd.DataFrame(
        [
            row("logcumsumexp", 64, "ours", 2e-4),
            row("logcumsumexp", 64, "ours_out", 1e-4),
            row("logcumsumexp", 64, "torch", 3e-4, 3.0, "ours_out", 2.5, 3.5),
            row("logcumsumexp", 64, "jax", 1e-4, 0.5, "ours", -np.inf, np.inf),
            row("logcumsumexp", 8, "ours", 2e-4),
            row("logcumsumexp", 8, "ours_out", 1e-4),
            row("logcumsumexp", 8, "torch", 3e-4, 1.5, "ours_out", 1.25, 1.75),
            {**row("logcumsumexp", 8, "numpy", np.nan), "note": "disagrees with ours"},
            row("stablemax", 64, "ours", 2e-5),
            row("stablemax", 64, "ours_out", 1e-5),
            row("stablemax", 8, "ours", 2e-5),
            row("stablemax", 8, "ours_out", 1e-5),
        ]
    )
    lines = report.family(table)
    text = "\n".join(lines)
    body = [line for line in lines if line.startswith("| `")]
    assert len(body) == 2  # one line per op, a column per shape
    assert lines[lines.index(body[0]) - 2].startswith("| op | 64 x 1000 | 8 x 1000 | peers |")
    cumulative, stable = body
    assert "200 us, 5.0 GB/s; x **0.50** jax" in cumulative  # the lowest ratio, no interval
    assert "100 us (out=), 5.0 GB/s; x 1.50 [1.25, 1.75] torch" in cumulative
    assert "numpy: left out (notes)" in cumulative and "torch: `torch.logcumsumexp" in cumulative
    assert "no peer timed" in stable and "torch: not installed" in stable
    assert "in 1 of 2 cells" in text and "logcumsumexp(x) 64 x 1000 against jax: 0.50" in text
    assert report.family(table[table.op == "nothing"]) == []
    missing = {**row("stablemax", 64, "ours", np.nan), "note": "the library timed has no"}
    line = report.family(pd.DataFrame([missing]))
    assert "not timed (the library timed has no) | not tried" in "\n".join(line)
    assert "No peer was timed." in line


def test_library_must_hold_softmax_numba(tmp_path):
    with pytest.raises(SystemExit, match="no softmax_numba package"):
        sizes.use_library(tmp_path)


@pytest.mark.slow  # the --quick run: about 25 s on 2 busy cores (imports, JAX's process)
def test_quick_run_writes_the_table_the_report_and_the_figure(tmp_path):
    from experiments.__main__ import main

    assert main(["sizes", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    table = pd.read_csv(tmp_path / "sizes.csv")
    peers = sizes.Peers(use_jax=False).installed
    peers["jax"] = importlib.util.find_spec("jax") is not None
    main_part = table[table.part == "sizes"]
    for op in sizes.OPS:
        impls = set(main_part[(main_part.op == op) & (main_part.dtype == "float32")].impl)
        want = {"ours", "copy"} | {p for p in sizes.PEERS if peers[p] and op in sizes.PEER_OPS[p]}
        if op in ("softmax", "log_softmax", "sigmoid", "sparsemax", "cross_entropy_grad"):
            want.add("ours_out")
        assert impls == want, op
        timed = main_part[(main_part.op == op) & main_part.median_s.notna()]
        assert set(timed.impl) == want, (op, timed[["impl", "note"]])  # no peer left out
    assert (table.median_s.dropna() > 0).all()
    ratios = table[table.impl.isin(sizes.PEERS)]
    assert (ratios.ratio > 0).all() and set(ratios.versus) <= {"ours", "ours_out"}
    assert (ratios.check_u <= ratios.tolerance_u).all()
    single = table[table.part == "single_thread"]
    assert {"ours", "copy", "numpy_exp"} <= set(single.impl)
    assert (single.threads == 1).all()
    meta = json.loads((tmp_path / "sizes.meta.json").read_text())
    assert meta["complete"] and meta["settings"]["quick"]
    assert len(meta["settings"]["library_commit"]) in (40, len("unknown"))
    family = table[table.part == "family"]
    for op in sizes.FAMILY_OPS:  # one shape each, every installed peer checked and timed
        g = family[family.op == op]
        assert set(zip(g.rows, g.n, strict=True)) == set(sizes.QUICK_FAMILY_SHAPES), op
        want = {"ours", "ours_out", "copy"}
        want |= {p for p in sizes.PEERS if peers[p] and op in sizes.PEER_OPS[p]}
        assert set(g[g.median_s.notna()].impl) == want, (op, g[["impl", "note"]])
        assert (g.gbps.dropna() > 0).all() and g.ratio_to_copy.notna().sum() == 2
    text = (tmp_path / "SIZES.md").read_text()
    for op in sizes.OPS:
        assert f"## {report._label(op)}" in text
    assert "## The softmax family of issue 29" in text
    for op in sizes.FAMILY_OPS:
        assert f"| `{report._label(op)}` |" in text
    assert "One thread" in text and "Against the goals" in text
    assert (tmp_path / "sizes.png").stat().st_size > 10_000
