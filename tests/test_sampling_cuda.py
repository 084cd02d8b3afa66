"""Sampling on the CUDA engine (``softmax_numba/gpu/sampling.py``), against the CPU
engine, on the simulator when there is no GPU (``NUMBA_ENABLE_CUDASIM=1``, set in
conftest).

The CPU kernels are the specification: for fixed seeds the CUDA engine draws the same
indices, keeps the same sets (``filter_logits``, values included) and picks the same
``top_logprobs``; its log-probabilities are the CPU's up to the float64 rounding of
two summation orders (:data:`LOGPROB_ULPS` units of ``2^-53`` relative to ``max(1,
|value|)``).  Launches are tiny and odd (5 threads a block, 3 blocks: partial warps,
several rows a block, threads with an empty chunk) or span warps (40 threads: the
warps' fold and the prefix across warps).  Rows are short (the simulator runs every
thread as a Python thread)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_sampling import (
    FILTERS,
    ROW_FAMILIES,
    _filter_params,
    _kept,
    _mixed_batch,
    _safe_top_p,
)

from softmax_numba import config, filter_logits, sample, top_logprobs

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
pytestmark = [
    pytest.mark.skipif(not cuda.is_available(), reason="no GPU and no simulator"),
    # The simulator evaluates kernels on NumPy scalars, which warn where a GPU is
    # silent (Philox's products wrap around in uint64 by design).
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

#: The CUDA and CPU log-probabilities differ by at most this many units of 2^-53
#: relative to max(1, |value|): ``d_j`` is the same formula, ``log1p(s)`` takes ``s``
#: summed in another order from exponentials of another ``exp`` (the CPU's own,
#: CUDA's libdevice), each within a few units of ``s``'s rounding.
LOGPROB_ULPS = 8


def _launch(monkeypatch, threads, blocks):
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", threads)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", blocks)


@pytest.fixture(autouse=True)
def tiny_launch(monkeypatch):
    """5 threads a block and 3 blocks: partial warps, several rows a block."""
    _launch(monkeypatch, 5, 3)


def _close_logprobs(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.maximum(1.0, np.abs(want))
    err = np.abs(got - want) / scale / 2.0**-53
    assert np.all(err <= LOGPROB_ULPS), err.max()


def _same_draws(x, draws=5, seed=2026, offset=3, **params):
    """The CUDA engine's indices and log-probabilities against the CPU engine's."""
    kwargs = dict(num_samples=draws, seed=seed, offset=offset, return_logprobs=True, **params)
    want, want_lp = sample(x, backend="cpu", **kwargs)
    got, got_lp = sample(x, backend="cuda", **kwargs)
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert got_lp.dtype == want_lp.dtype
    _close_logprobs(got_lp, want_lp)
    return got


#: The simulator runs each thread in Python: each filter alone on random rows, and all
#: of them together on every family of rows (every pair took 2.9 minutes of the suite;
#: these take about one).
CASES = [
    (family, which)
    for which in ("temperature", *FILTERS)
    for family in ROW_FAMILIES
    if family == "random" or which == "all"
]


# ------------------------------------------------------------------------- draws
@pytest.mark.parametrize(("family", "which"), CASES)
def test_same_draws_as_the_cpu_engine(family, which, rng):
    """Each filter alone and all together, temperatures 1, 1/2, 2 and 0.7, on random
    rows, and all filters on rows of ties, rows with ``-inf`` entries (one with a
    single finite entry) and extreme values: 6 rows of 37, 5 draws each (two Philox
    blocks)."""
    x = ROW_FAMILIES[family](rng, rows=6)
    if which == "temperature":
        params = {"temperature": rng.choice([1.0, 0.5, 2.0, 0.7], x.shape[0])}
    else:
        params = _filter_params(family, which, x, rng)
    drawn = _same_draws(x, **params)
    kept = _kept(x, **params)
    assert np.all(np.take_along_axis(kept, drawn, axis=1))


def test_a_mixed_batch_with_per_row_settings(rng):
    """Per-row temperature (one greedy row), top_k, top_p and min_p; 7 draws."""
    x, params = _mixed_batch(rng)
    _same_draws(x, draws=7, seed=(3 << 100) + 5, offset=(1 << 70) + 9, **params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_dtypes(dtype, rng):
    """float32 rows are read as float32 and computed in float64, as on the CPU."""
    x = (rng.standard_normal((4, 50)) * 3).astype(dtype)
    _same_draws(x, top_k=20, top_p=0.9, min_p=0.02, temperature=0.8)


def test_greedy_is_the_first_maximum(rng):
    """``temperature=0``: the first maximum whatever the filters, log-probability 0;
    per-row temperatures mix greedy and sampled rows."""
    x = rng.integers(-3, 3, size=(6, 30)).astype(np.float64)  # ties of the max
    x[3, :] = -np.inf
    x[3, [4, 9]] = 1.0
    want = np.argmax(x, axis=1)
    indices, logprobs = sample(
        x, temperature=0.0, top_k=2, top_p=0.3, min_p=0.9, num_samples=3, seed=1,
        return_logprobs=True, backend="cuda",
    )  # fmt: skip
    np.testing.assert_array_equal(indices, np.repeat(want[:, None], 3, axis=1))
    np.testing.assert_array_equal(logprobs, 0.0)
    t = np.where(np.arange(6) % 2, 0.0, 1.0)
    mixed = _same_draws(x, temperature=t, top_k=4)
    np.testing.assert_array_equal(mixed[1::2], np.repeat(want[1::2, None], 5, axis=1))


def test_a_near_certain_row_keeps_its_logprob():
    """``d_j - log1p(s)`` with ``s`` about ``e^-30``: the CPU's value to the bit or
    within the bound, not ``d_j - log(S)``."""
    x = np.array([[0.0, -30.0, -35.0, -31.0, -np.inf]])
    _same_draws(x, draws=4)


def test_rows_spanning_warps(monkeypatch, rng):
    """40 threads (a full warp and a partial one) on rows of 300 with ties: the
    warps' fold of every reduction and the prefix of the chunk sums across warps."""
    _launch(monkeypatch, 40, 2)
    x = rng.integers(-40, 1, size=(3, 300)).astype(np.float64) * 0.25
    x[1, ::7] = -np.inf
    top_k = np.array([300, 150, 60])
    params = {
        "top_k": top_k,
        "top_p": _safe_top_p(x, top_k, np.array([1.0, 0.6, 1.5]), rng),
        "min_p": np.array([0.0, 0.001, 0.01]),
        "temperature": np.array([1.0, 0.6, 1.5]),
    }
    _same_draws(x, draws=6, **params)


def test_values_of_every_magnitude(rng):
    """Entries from ``1e-300`` to ``1e300`` of both signs, zeros of both signs and
    subnormals: top-k's search crosses 0 and takes geometric means over hundreds of
    binades (the kept sets and draws are the CPU's)."""
    sign = rng.choice([-1.0, 1.0], size=(4, 40))
    x = sign * 10.0 ** rng.uniform(-300, 300, size=(4, 40))
    x[0, :6] = [0.0, -0.0, 5e-324, -5e-324, 1e-310, 0.0]
    x[1, ::5] = -np.inf
    x[2, :] = -(10.0 ** rng.uniform(-300, -200, 40))  # all negative and tiny
    top_k = np.array([5, 17, 33, 1])
    got = filter_logits(x, top_k=top_k, backend="cuda")
    np.testing.assert_array_equal(got, filter_logits(x, top_k=top_k, backend="cpu"))
    np.testing.assert_array_equal(got != -np.inf, _kept(x, top_k=top_k) & (x != -np.inf))
    _same_draws(x, top_k=top_k, temperature=1e300)


# ---------------------------------------------------------------- filter_logits
@pytest.mark.parametrize(("family", "which"), [c for c in CASES if c[1] != "temperature"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_filter_logits_equals_the_cpu_engine(family, which, dtype, rng):
    """The same kept set as the CPU engine and the sort-based reference, and the same
    values (``x / T`` correctly rounded in the logits' dtype on both)."""
    if family == "extremes" and dtype == np.float32:
        pytest.skip("float64's extremes are +-inf and 0 in float32")
    x = ROW_FAMILIES[family](rng, rows=5).astype(dtype)
    params = _filter_params(family, which, x.astype(np.float64), rng)
    got = filter_logits(x, backend="cuda", **params)
    want = filter_logits(x, backend="cpu", **params)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got, want)
    kept = _kept(x.astype(np.float64), **params)
    np.testing.assert_array_equal(got != -np.inf, kept & (x != -np.inf))


# ---------------------------------------------------------------- top_logprobs
@pytest.mark.parametrize("k", [1, 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_logprobs_equal_the_cpu_engine(k, dtype, rng):
    """Ties everywhere, a row of ``-inf`` entries (fewer finite entries than ``k``),
    a random row: the same indices (largest first, ties by index), log-probabilities
    within :data:`LOGPROB_ULPS` of the CPU's."""
    x = rng.integers(-4, 4, size=(4, 30)).astype(dtype)
    x[1] = rng.standard_normal(30).astype(dtype) * 3
    x[2, ::2] = -np.inf
    x[3, 1:] = -np.inf
    got, got_lp = top_logprobs(x, k, backend="cuda")
    want, want_lp = top_logprobs(x, k, backend="cpu")
    np.testing.assert_array_equal(got, want)
    assert got_lp.dtype == want_lp.dtype == dtype
    if dtype == np.float64:
        finite = np.isfinite(want_lp)
        np.testing.assert_array_equal(np.isfinite(got_lp), finite)
        _close_logprobs(got_lp[finite], want_lp[finite])
    else:  # each the float32 rounding of float64 values a few units of 2^-53 apart
        np.testing.assert_allclose(got_lp, want_lp, rtol=2.0**-23, atol=0)


# --------------------------------------------------------------------- bad rows
GOOD = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 0.0, -1.0], [0.5, 0.25, 0.0, 2.0]])
BAD_ROWS = {"holds a NaN": (1, 2, np.nan), "holds \\+inf": (1, 0, np.inf), "has no entry": None}


@pytest.mark.parametrize("why", BAD_ROWS)
@pytest.mark.parametrize("func", ["sample", "filter_logits", "top_logprobs"])
def test_bad_rows_are_value_errors(func, why):
    """A row with a NaN, a ``+inf`` or nothing above ``-inf`` is the CPU's ValueError,
    naming the row and why."""
    x = GOOD.copy()
    if BAD_ROWS[why] is None:
        x[1, :] = -np.inf
    else:
        r, c, v = BAD_ROWS[why]
        x[r, c] = v
    call = {
        "sample": lambda: sample(x, seed=0, backend="cuda"),
        "filter_logits": lambda: filter_logits(x, top_k=2, backend="cuda"),
        "top_logprobs": lambda: top_logprobs(x, 2, backend="cuda"),
    }[func]
    with pytest.raises(ValueError, match=f"row \\(1,\\) of the logits {why}"):
        call()


# ----------------------------------------------------------------- device arrays
def test_gpu_arrays_run_on_the_cuda_engine(rng):
    """A device array goes to the CUDA kernels (``backend="auto"``): the draws and
    ``top_logprobs`` come back to the host, ``filter_logits`` stays on the device;
    the same results as the CPU engine on the host copy."""
    x = rng.standard_normal((3, 24)) * 2
    device = cuda.to_device(x)
    params = {"top_k": 9, "top_p": 0.8, "num_samples": 3, "seed": 17}
    np.testing.assert_array_equal(sample(device, **params), sample(x, backend="cpu", **params))
    filtered = filter_logits(device, top_k=5, temperature=0.5)
    assert not isinstance(filtered, np.ndarray)
    np.testing.assert_array_equal(
        filtered.copy_to_host(), filter_logits(x, top_k=5, temperature=0.5, backend="cpu")
    )
    np.testing.assert_array_equal(top_logprobs(device, 4)[0], top_logprobs(x, 4)[0])
    with pytest.raises(TypeError, match="lives on a GPU"):
        sample(device, backend="cpu")


def test_logprob_tolerance_can_fail():
    """The comparison of log-probabilities fails on one more unit than allowed."""
    value = -math.pi
    off = value - (LOGPROB_ULPS + 1) * 2.0**-53 * abs(value)
    with pytest.raises(AssertionError):
        _close_logprobs(np.array([off]), np.array([value]))
