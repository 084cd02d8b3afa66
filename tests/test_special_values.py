"""Special values, table-driven: every registered op on every engine, on rows of NaN,
+-inf, all -inf, sums and products that overflow, subnormals, gives the oracle's
answer (same NaN and infinity pattern, finite entries within the op's bound), so the
engines agree with each other on every input."""

from __future__ import annotations

import numpy as np
import pytest

from softmax_numba import declaration, registry


def special_rows(dtype) -> np.ndarray:
    """Rows of 6 that exercise every rule (each row a case)."""
    big = np.finfo(dtype).max
    tiny = np.finfo(dtype).smallest_subnormal
    inf, nan = np.inf, np.nan
    rows = [
        [nan, 1, 2, 3, 4, 5],  # a NaN poisons its row
        [inf, 1, 2, 3, 4, 5],  # +inf: softmax NaN, logsumexp inf
        [inf, inf, 0, 1, 2, 3],
        [-inf, inf, 1, 2, 3, 4],
        [-inf] * 6,  # all -inf
        [-inf, -inf, 1, 2, -inf, 3],  # -inf entries give 0 / -inf
        [big, big, -big, 0, big / 2, -big / 2],  # sums and differences that overflow
        [big / 2, big / 3, big / 4, big / 5, big / 6, big / 7],  # a sum of logits overflows
        [0, -40, -40, -80, -200, -700],  # near-certain: s far below u
        [tiny, 2 * tiny, -tiny, 0, 3 * tiny, -0.0],  # subnormals and zeros
        [1e6, 1e6 + 1, 1e6 - 1, 1e6, 1e6 + 2, 1e6],  # a large offset, ties
        [-3, -3, -3, -3, -3, -3],  # all equal
    ]
    return np.array(rows, dtype=dtype)


def special_args(entry, x):
    """The entry's arguments from ``x`` with fixed targets ``i mod n`` (so that the
    +inf and the -inf entries are targets of some rows and not of others)."""
    if entry.arguments is declaration.with_targets:
        return (x, np.arange(x.shape[0]) % x.shape[1])
    return entry.arguments(x, np.random.default_rng(0))


ENTRIES = [e for e in registry.ENTRIES if e.algorithm != "naive"]


def documented_limits(entry, x) -> np.ndarray:
    """Rows where an op documents that it overflows although the exact result is
    finite: the normalized Gaussian forms ``(x - mu)^2`` in the dtype (beyond
    ``sqrt(max)`` it is inf, the row NaN).  Engines must still agree there."""
    if entry.name == "gaussian[normalized]":
        finite = np.where(np.isfinite(x), np.abs(x), 0)
        return np.all(finite > np.sqrt(np.finfo(x.dtype).max), axis=-1) | np.all(
            ~np.isfinite(x) | (finite > np.sqrt(np.finfo(x.dtype).max)), axis=-1
        )
    return np.zeros(x.shape[0], bool)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_engine_gives_the_oracles_special_values(entry, dtype):
    x = special_rows(dtype)
    if entry.divisor > 1:
        x = np.concatenate([x, x[:, :2]], axis=1)[:, : x.shape[1] // entry.divisor * entry.divisor]
    args = special_args(entry, x)
    with np.errstate(all="ignore"):
        ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    results = {}
    for backend in registry.BACKENDS:
        with np.errstate(all="ignore"):
            got = registry.outputs(entry.run(args, backend=backend))
        results[backend] = got
        for index, ((err, allowed), g) in enumerate(
            zip(entry.errors(args, got, ref), got, strict=True)
        ):
            bad = ~(err <= allowed) & ~documented_limits(entry, x)
            assert not bad.any(), (
                f"{entry.name} on {backend}, output {index}, rows {np.flatnonzero(bad)}: "
                f"got {g[bad]}, oracle {np.asarray(ref[index])[bad]}"
            )
    # Engines agree on the non-finite pattern exactly, whatever the oracle.
    first = results[registry.BACKENDS[0]]
    for backend, got in results.items():
        for a, b in zip(first, got, strict=True):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=backend)
            np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg=backend)
            np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg=backend)
