"""The study harness: simulated arithmetic, the reproduction, the resumable sweep, the CLI."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from experiments.harness import store
from experiments.measure import bhh, lowprec, sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- lowprec


def test_fp16_rounding_matches_numpy_float16(rng):
    x = np.concatenate(
        [
            rng.standard_normal(20000) * 10.0 ** rng.integers(-9, 6, 20000),
            [65504.0, 65519.99, 65520.0, 1e6, -1e6, 2.0**-24, 2.0**-25, 2.0**-26, 0.0, -0.0],
        ]
    )
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).astype(np.float64)
    np.testing.assert_array_equal(lowprec.FP16.round(x), expected)


def test_bf16_rounding_matches_ml_dtypes(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = (rng.standard_normal(20000) * 10.0 ** rng.integers(-40, 38, 20000)).astype(np.float32)
    expected = x.astype(ml_dtypes.bfloat16).astype(np.float64)
    np.testing.assert_array_equal(lowprec.BF16.round(x.astype(np.float64)), expected)


def test_formats_know_their_limits():
    assert lowprec.FP16.xmax == 65504.0
    assert lowprec.FP16.exp_overflow == pytest.approx(11.09, abs=0.01)
    assert lowprec.BF16.exp_overflow == pytest.approx(88.72, abs=0.01)
    assert lowprec.ulp(1.0, lowprec.FP16) == 2.0**-10


def test_simulated_sum_rounds_after_every_addition():
    ar = lowprec.Arithmetic(lowprec.FP16)
    # 2048 + 1 rounds back to 2048 in fp16, so adding ones one at a time stalls.
    assert ar.sum(np.array([[2048.0, 1.0, 1.0, 1.0, 1.0]]))[0] == 2048.0


# ----------------------------------------------------------------------------- bhh


def test_reproduction_summary():
    _per_vector, summary = bhh.reproduce()
    assert set(summary.columns) >= {
        "format",
        "algorithm",
        "vectors",
        "overflows",
        "max_error_over_u",
        "bound_violations",
    }
    assert len(summary) == 12 and (summary.vectors == 2500).all()
    shifted = summary[summary.algorithm.str.contains("shifted")]
    assert (shifted.overflows == 0).all() and (shifted.bound_violations == 0).all()
    fp16_basic = summary[(summary.format == "fp16") & (summary.algorithm == "lse_basic")]
    # Logits above log(65504) = 11.09 overflow the basic algorithm in fp16.
    x = bhh.load_logits()
    with np.errstate(over="ignore"):
        overflowing = ~np.isfinite(np.exp(lowprec.FP16.round(x)).astype(np.float16).sum(1))
    assert int(fp16_basic.overflows.iloc[0]) >= 1 and overflowing.any()


# ----------------------------------------------------------------------------- store


def test_table_drops_a_torn_last_line_and_skips_done_keys(tmp_path):
    path = tmp_path / "t.csv"
    table = store.Table(path, ["a", "b", "v"], ["a", "b"])
    table.append([{"a": 1, "b": "x", "v": 0.5}, {"a": 2, "b": "y", "v": 1.5}])
    with open(path, "a") as f:
        f.write("3,z")  # killed in the middle of a write
    table = store.Table(path, ["a", "b", "v"], ["a", "b"])
    assert table.done_keys() == {("1", "x"), ("2", "y")}
    assert path.read_text().endswith("1.5\n")


def test_table_refuses_a_file_with_other_columns(tmp_path):
    store.Table(tmp_path / "t.csv", ["a", "v"], ["a"])
    with pytest.raises(ValueError, match="expected"):
        store.Table(tmp_path / "t.csv", ["a", "w"], ["a"])


def test_table_gains_columns_added_at_the_end_of_its_schema(tmp_path):
    path = tmp_path / "t.csv"
    store.Table(path, ["a", "v"], ["a"]).append([{"a": 1, "v": 0.5}])
    table = store.Table(path, ["a", "v", "worker"], ["a"])
    table.append([{"a": 2, "v": 1.5, "worker": "tcp://w:1"}])
    assert path.read_text() == "a,v,worker\n1,0.5,\n2,1.5,tcp://w:1\n"
    assert table.done_keys() == {("1",), ("2",)}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtypes": ["float8"]}, "dtype"),
        ({"entries": ["softmin"]}, "entry"),
        ({"scales": [0.0]}, "positive"),
        ({"distributions": ["cauchy"]}, "distribution"),
    ],
)
def test_bad_grid_is_an_error_before_anything_runs(kwargs, match):
    grid = {
        "entries": ["softmax[shifted]"],
        "dtypes": ["float32"],
        "presets": ["mnist"],
        "scales": [1.0],
        "distributions": ["normal"],
    }
    grid.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sweep.accuracy_cells(**grid)


# ----------------------------------------------------------------------------- resume

SLOW_SWEEP = textwrap.dedent(
    """
    import sys, time
    from experiments.measure import sweep
    from experiments.harness import store
    cells = sweep.accuracy_cells(["softmax[shifted]", "log_softmax"], ["float32", "float16"],
                                 ["mnist", "imagenet"], [1e-3, 1.0, 1e2], ["normal"],
                                 elements=256)
    table = store.Table(sys.argv[1], sweep.ACCURACY_COLUMNS, sweep.ACCURACY_KEY)
    def slow(cell):
        time.sleep(float(sys.argv[2]))
        return sweep.measure_accuracy(cell)
    sweep.run(cells, slow, table, progress=False)
    """
)


def _sweep(path, delay):
    return subprocess.Popen([sys.executable, "-c", SLOW_SWEEP, str(path), str(delay)], cwd=ROOT)


def _comparable(path):
    table = pd.read_csv(path).drop(columns="seconds")
    return table.sort_values(sweep.ACCURACY_KEY).reset_index(drop=True)


@pytest.mark.slow  # three sweeps in subprocesses
def test_killed_and_resumed_sweep_equals_an_uninterrupted_one(tmp_path):
    whole, resumed = tmp_path / "whole.csv", tmp_path / "resumed.csv"
    assert _sweep(whole, 0).wait(timeout=300) == 0
    proc = _sweep(resumed, 0.2)
    deadline = time.time() + 240
    while time.time() < deadline:
        if resumed.exists() and len(resumed.read_text().splitlines()) > 5:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(pd.read_csv(resumed))
    assert 0 < partial < len(pd.read_csv(whole))
    assert _sweep(resumed, 0).wait(timeout=300) == 0
    done = _comparable(resumed)
    assert not done.duplicated(sweep.ACCURACY_KEY).any()
    pd.testing.assert_frame_equal(done, _comparable(whole))


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow  # the whole quick study, in a subprocess: minutes
@pytest.mark.long
def test_quick_study_writes_every_table_figure_and_verdict(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "study",
            "--quick",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    for name in (
        "accuracy.csv",
        "speed.csv",
        "overflow.csv",
        "claims.csv",
        "CLAIMS.md",
        "speed_gbps.png",
        "error_vs_scale.png",
        "overflow_map.png",
        "blanchard_higham_higham/summary.csv",
        "accuracy.meta.json",
        "collapse.csv",
        "collapse.png",
    ):
        assert (tmp_path / name).exists(), name
    claims = (tmp_path / "CLAIMS.md").read_text()
    assert claims.count("**Verdict:") == 16
    # Figures and verdicts come back from the tables alone.
    for png in tmp_path.glob("*.png"):
        png.unlink()
    again = subprocess.run(
        [sys.executable, "-m", "experiments", "plots", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "speed_gbps.png").exists()
    assert (tmp_path / "CLAIMS.md").read_text() == claims


def test_missing_data_set_is_a_clear_error(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "bhh",
            "--out",
            str(tmp_path),
            "--bhh-data",
            str(tmp_path / "none.mat"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "not found" in done.stderr


@pytest.mark.slow  # times every engine and peer
def test_roofline_measures_ours_the_copy_and_peers_in_one_table(tmp_path):
    from experiments.measure import roofline
    from experiments.report import plots

    rows = roofline.measure("softmax[shifted]", 8, 100, "float32", rounds=2)
    engines = {r["engine"] for r in rows}
    assert {"ours", "ours_out"} <= engines
    for r in rows:
        assert set(r) == set(roofline.COLUMNS)
        assert r["gbps"] > 0 and r["parallel_copy_gbps"] > 0 and r["ours_speedup"] > 0
    ours = next(r for r in rows if r["engine"] == "ours")
    assert ours["ours_speedup"] == 1.0
    table = pd.DataFrame(rows)
    assert plots.roofline(table, tmp_path / "roofline.png").stat().st_size > 0


def test_roofline_small_size_checks_report_their_figures():
    from experiments.measure import roofline

    overhead = roofline.call_overhead(rounds=2)
    assert overhead["public_us"] > overhead["kernel_us"] > 0
    auto = roofline.auto_choice(rounds=1, n=64)
    assert [a["rows"] for a in auto] == [1, 4, 16, 64, 256, 1024, 4096]
    assert all(a["auto_over_best"] > 0 for a in auto)
    row = roofline.single_row(rounds=2, n=10_000)
    assert row["softmax_gbps"] > 0 and row["copyto_gbps"] > 0


# ----------------------------------------------------------------------------- report


def _peer_tables(folder: pathlib.Path, peers=("scipy", "torch", "jax")) -> None:
    """accuracy.csv (offset sweep) and speed.csv with rows of our engines and ``peers``."""
    backends = ("numpy", "cpu", "parallel", *peers)
    cell = dict(dtype="float32", preset="imagenet", n=1000, rows=64, scale=1.0)
    cell |= dict(distribution="normal", algorithm="-", bound_ratio=0.1)
    pd.DataFrame(
        [
            dict(entry=e, backend=b, offset=c, max_rel_error_u=1.0, **cell)
            for e in ("log_softmax", "logsumexp")
            for b in backends
            for c in (0.0, 1e4)
        ]
    ).to_csv(folder / "accuracy.csv", index=False)
    pd.DataFrame(
        [
            dict(entry=e, engine=b, dtype="float32", bytes=128 << 20)
            | dict(gbps=10.0, parallel_copy_gbps=30.0)
            for e in ("softmax[shifted]", "log_softmax")
            for b in backends
        ]
    ).to_csv(folder / "speed.csv", index=False)


def test_results_readme_names_only_the_peers_in_its_tables(tmp_path):
    """A peer that was not installed has no rows (no column) in the tables, and the
    generated text does not name it (issue 26: 'beside scipy, PyTorch and JAX' in a
    study run without JAX)."""
    from experiments.report import readme

    _peer_tables(tmp_path)
    text = readme.write(tmp_path).read_text()
    assert "beside scipy, PyTorch and JAX in the same cells" in text
    assert "of our engines and of scipy, PyTorch and JAX" in text
    assert "| jax |" in text
    _peer_tables(tmp_path, peers=("scipy", "torch"))
    text = readme.write(tmp_path).read_text()
    assert "jax" not in text.lower()
    assert "beside scipy and PyTorch in the same cells" in text
    assert "of our engines and of scipy and PyTorch," in text
    _peer_tables(tmp_path, peers=())
    text = readme.write(tmp_path).read_text()
    assert "no peer was installed to score beside it" in text
    assert "jax" not in text.lower() and "pytorch" not in text.lower()
    assert "| scipy |" not in text and "| torch |" not in text
