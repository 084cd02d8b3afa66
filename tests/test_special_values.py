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


def near_certain_rows(dtype) -> np.ndarray:
    """Rows of 64 whose every entry but the max lies so far below it (88 in float32,
    709.5 in float64) that its ``exp`` is subnormal: the shifted kernels' fast ``exp``
    flushes such terms, yet here they add up to a normal ``s``, which the log-domain
    results of the max keep relative to itself (log-softmax of the max is ``-log1p(s)``,
    log-sum-exp of a row with max 0 is ``log1p(s)``, so is the loss of that class).
    The kernels must sum them again with the careful ``exp``."""
    far = -88.0 if dtype == np.float32 else -709.5
    rows = [
        [0.0] + [far] * 63,
        [0.0, 0.0] + [far] * 62,  # tied maxima: s >= 1, nothing to recompute
        [0.0] + [far] * 31 + [-np.inf] * 32,  # masked entries skip exp
        [-3.0] + [far - 3.0] * 63,
        [5.0] + [far + 5.0] * 32 + [far - 30.0] * 31,  # some terms underflow to 0 anyway
    ]
    return np.array(rows, dtype=dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_near_certain_rows_keep_the_terms_the_fast_exp_flushes(entry, dtype):
    x = near_certain_rows(dtype)
    if x.shape[1] % entry.divisor:
        pytest.skip("rows of 64 do not fit this op")
    args = special_args(entry, x)
    with np.errstate(all="ignore"):
        ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    for backend in registry.BACKENDS:
        with np.errstate(all="ignore"):
            got = registry.outputs(entry.run(args, backend=backend))
        for index, ((err, allowed), g) in enumerate(
            zip(entry.errors(args, got, ref), got, strict=True)
        ):
            bad = ~(err <= allowed)
            assert not bad.any(), (
                f"{entry.name} on {backend}, output {index}, rows {np.flatnonzero(bad)}: "
                f"got {g[bad]}, oracle {np.asarray(ref[index])[bad]}"
            )


@pytest.mark.parametrize("backend", registry.BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_near_certain_loss_without_the_gradient(dtype, backend):
    """The loss alone (its own kernel path, with no gradient to store) of the class of
    the max in :func:`near_certain_rows`: ``log1p(s)``, relative to itself, within
    the rounding of a sum of 64 terms and of ``log1p``."""
    import softmax_numba as sn
    from softmax_numba.bounds import summation_bound

    x = near_certain_rows(dtype)
    target = np.zeros(x.shape[0], dtype=np.int64)
    got = sn.cross_entropy(x, target, reduction="none", backend=backend)
    exact = np.log1p(np.sum(np.exp(x[:, 1:].astype(np.longdouble) - x[:, :1]), axis=-1))
    exact[1] = np.log(2.0)  # the tied row: the max's own term is a second 1
    u = np.finfo(dtype).eps / 2
    assert np.all(exact[[0, 2, 3, 4]] > np.finfo(dtype).tiny)
    np.testing.assert_array_less(np.abs(got - exact) / exact, (summation_bound(64) + 4) * u)
