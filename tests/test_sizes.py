"""The sizes benchmark (``python -m experiments sizes``): its grid, its peers' check,
its verdicts, and a ``--quick`` run end to end.  No timing is asserted."""

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
    text = (tmp_path / "SIZES.md").read_text()
    for op in sizes.OPS:
        assert f"## {report._label(op)}" in text
    assert "One thread" in text and "Against the goals" in text
    assert (tmp_path / "sizes.png").stat().st_size > 10_000
