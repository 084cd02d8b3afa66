"""The per-op crossover of the serial and parallel engines (issue 27, item 3):
measured by ``experiments.measure.crossover``, held by
``config.PARALLEL_MIN_ELEMENTS_BY_OP``, used by ``backend="auto"``."""

from __future__ import annotations

import pathlib

import numba
import numpy as np
import pandas as pd
import pytest

from experiments.measure import crossover
from softmax_numba import _api, config

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def _table(op, highs):
    sizes = [1 << k for k in range(12, 12 + len(highs))]
    return pd.DataFrame({"op": op, "size": sizes, "ratio_high": highs})


def test_the_crossover_is_where_the_parallel_engine_wins_from_then_on():
    table = pd.concat(
        [
            _table("softmax", [3.0, 1.2, 0.9, 1.01, 0.8, 0.5]),  # noise at 2^15: from 2^16
            _table("sigmoid", [2.0, 1.5, 1.1, 1.05, 1.02, 1.01]),  # never pays
            _table("logsumexp", [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]),  # always pays
        ]
    )
    assert crossover.crossovers(table) == {
        "softmax": 1 << 16,
        "sigmoid": None,
        "logsumexp": 1 << 12,
    }


def test_a_function_takes_the_largest_crossover_of_its_variants():
    table = pd.concat(
        [
            _table("cross_entropy", [2.0, 0.9, 0.8]),
            _table("cross_entropy[grad]", [2.0, 1.5, 0.8]),
            _table("maxout", [2.0, 1.5, 0.8]),
            _table("maxout[other]", [2.0, 1.5, 1.2]),
        ]
    )
    assert crossover.thresholds(table) == {"cross_entropy": 1 << 14, "maxout": None}


@pytest.mark.skipif(not (RESULTS / "crossover.csv").exists(), reason="no committed table")
def test_config_holds_the_committed_crossovers():
    expected = crossover.config_values(pd.read_csv(RESULTS / "crossover.csv"))
    assert config.PARALLEL_MIN_ELEMENTS_BY_OP == expected


def test_auto_follows_the_per_op_threshold(monkeypatch):
    monkeypatch.setattr(config, "PARALLEL_MIN_ELEMENTS", 100)
    monkeypatch.setattr(config, "PARALLEL_MIN_ELEMENTS_BY_OP", {"softmax": 1000})
    parallel = "parallel" if numba.get_num_threads() > 1 else "cpu"
    assert _api.resolve_backend("auto", 999, op="softmax") == "cpu"
    assert _api.resolve_backend("auto", 1000, op="softmax") == parallel
    assert _api.resolve_backend("auto", 100, op="sigmoid") == parallel
    x = np.zeros((99, 10))
    assert _api.lean_rows(x, -1, "auto", "softmax")[1] == "cpu"
    assert _api.lean_rows(x, -1, "auto", "sigmoid")[1] == parallel


@pytest.mark.slow
def test_the_quick_measurement_runs_end_to_end(tmp_path):
    if numba.get_num_threads() < 2:
        pytest.skip("one thread: no parallel engine")
    table = crossover.run(tmp_path, quick=True, progress=False)
    assert set(table.op) == set(crossover._ops())
    assert (table.serial_s > 0).all() and (table.parallel_s > 0).all()
    report = (tmp_path / "CROSSOVER.md").read_text()
    assert "| softmax |" in report
    assert (tmp_path / "crossover.meta.json").exists()
