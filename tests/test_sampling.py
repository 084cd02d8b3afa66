"""Sampling from logits (issue 28): ``sample``, ``filter_logits``, ``top_logprobs``.

The design is ``/work/notes/sampling_spec.md``; the oracle is the sort-based
``reference.sampling_kept`` / ``sample_rows`` / ``filtered_logits`` /
``top_logprobs_rows``.  What is checked, and against what:

- kept sets: exactly the sort-based reference's, ties and ``-inf`` included, on every
  engine (the rows are built so that no threshold falls within the rounding of a sum);
- distributions: chi-square goodness of fit at ``ALPHA`` with fixed seeds, each test
  computing its power against a stated alternative (noncentral chi-square);
- the generator: Philox4x64-10 bit for bit against NumPy's ``np.random.Philox``, and
  the public draws against the draw rule fed with NumPy's words;
- reproducibility across engines, thread counts and batch compositions;
- greedy, log-probabilities within the log_softmax bound, bad input, shapes, dtypes
  and torch tensors.
"""

from __future__ import annotations

import math

import mpmath
import numba
import numpy as np
import pytest
from scipy import stats

import softmax_numba as sn
from softmax_numba import bounds, filter_logits, philox, reference, sample, top_logprobs

ENGINES = ("numpy", "cpu", "parallel")
#: The false-alarm rate of every chi-square test: a correct sampler fails a given seed
#: with this probability (once the seed is fixed the test is deterministic).
ALPHA = 1e-4
#: The least power each chi-square test must have against its alternative.
POWER = 0.99
MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------- helpers
def _per_row(rows, top_k=None, top_p=None, min_p=None, temperature=1.0, n=None):
    """The wrapper's normalized per-row parameters, for the reference."""
    top_k = np.broadcast_to(np.asarray(n if top_k is None else top_k, np.int64), (rows,))
    top_p = np.broadcast_to(np.asarray(1.0 if top_p is None else top_p, np.float64), (rows,))
    min_p = np.broadcast_to(np.asarray(0.0 if min_p is None else min_p, np.float64), (rows,))
    log_min_p = np.array([math.log(v) if v > 0 else -math.inf for v in min_p])
    t = np.broadcast_to(np.asarray(temperature, np.float64), (rows,))
    greedy = t == 0
    inv_t = np.array([1.0 / v if v > 0 else 1.0 for v in t])
    return top_k, top_p, log_min_p, inv_t, greedy


def _kept(x, **params):
    x = np.asarray(x, np.float64)
    top_k, top_p, log_min_p, inv_t, _ = _per_row(x.shape[0], n=x.shape[1], **params)
    return reference.sampling_kept(x, top_k, top_p, log_min_p, inv_t)


def _numpy_uniforms(seed, offset, rows, draws):
    """The uniforms of the spec from NumPy's own Philox: row ``i``, draw ``s`` is word
    ``s % 4`` of the block at counter ``(s // 4, i, offset)``; NumPy increments its
    256-bit counter (given as one int, low word first) before each block."""
    out = np.empty((rows, draws))
    for i in range(rows):
        for block in range(-(-draws // 4)):
            counter = block + (i << 64) + (offset << 128) - 1
            words = np.random.Philox(key=seed, counter=counter % (1 << 256)).random_raw(4)
            for s in range(4 * block, min(4 * block + 4, draws)):
                out[i, s] = float(int(words[s % 4]) >> 11) * 2.0**-53
    return out


def _reference_sample(x, seed, offset=0, num_samples=1, uniforms=None, **params):
    """``(indices, logprobs)`` of the oracle, ``(rows, num_samples)``."""
    x = np.asarray(x, np.float64)
    rows, n = x.shape
    if uniforms is None:
        key, off = philox.split128(seed, "seed", "test"), philox.split128(offset, "offset", "t")
        uniforms = philox.uniforms(key, off, np.arange(rows), num_samples)
    return reference.sample_rows(x, *_per_row(rows, n=n, **params), uniforms)


def _as_rows(result, num_samples):
    a = np.asarray(result)
    return a.reshape(-1, num_samples)


def _safe_top_p(x, top_k, temperature, rng):
    """For each row, a ``top_p`` halfway between two consecutive levels' cumulative
    fractions of the top-k mass at the row's temperature (summed with ``np.sum``, not
    the reference's running sums): the nucleus threshold falls on the lower level,
    with every tie of it, at least 5e-10 of the mass away from a level (the sums'
    rounding is about ``n 2^-53``)."""
    out = np.empty(x.shape[0])
    for r, row in enumerate(x):
        with np.errstate(over="ignore"):
            w = np.exp((row - row.max()) / temperature[r])
        t_k = np.sort(row)[::-1][min(top_k[r], row.size) - 1]
        levels = np.unique(row[(row >= t_k) & np.isfinite(row)])[::-1]
        total = np.sum(w[row >= t_k])
        frac = np.array([np.sum(w[row >= t]) for t in levels]) / total
        # the threshold falls on levels[i + 1]
        gaps = np.flatnonzero(np.diff(frac) > 1e-9)
        if gaps.size == 0:  # one level, or the others weigh nothing: keep the max
            out[r] = frac[0] / 2
            continue
        i = rng.choice(gaps)
        out[r] = (frac[i] + frac[i + 1]) / 2
    return out


def _brute_kept(row, k, p, min_p, t):
    """The kept set straight from the spec's definitions, no sort."""
    with np.errstate(over="ignore"):
        w = np.exp((row - row.max()) / t)
        d = (row - row.max()) * (1 / t)
    values = np.unique(row)
    t_k = max(v for v in values if np.count_nonzero(row >= v) >= k)
    s_k = np.sum(w[row >= t_k])
    t_p = (
        -np.inf if p >= 1 else max(v for v in values if v >= t_k and np.sum(w[row >= v]) >= p * s_k)
    )
    log_min_p = math.log(min_p) if min_p > 0 else -np.inf
    return (row >= max(t_k, t_p)) & (d >= log_min_p)


# ------------------------------------------------------------------ the row families
def _random_rows(rng, rows=16, n=37):
    return rng.standard_normal((rows, n)) * 3


def _tied_rows(rng, rows=16, n=37):
    """Integer logits in [-6, 0] with a 0 in every row (so ``x_j - m`` is exact), and
    a few entries ``log(1/2)``: ties at every top-k and top-p threshold, and entries
    exactly at ``min_p = 1/2``."""
    x = rng.integers(-6, 1, size=(rows, n)).astype(np.float64)
    x[:, 0] = 0.0
    x[:, 5::9] = math.log(0.5)
    return rng.permuted(x, axis=1)


def _rows_with_minus_inf(rng, rows=16, n=37):
    """A third of the entries ``-inf`` (a row may have fewer finite entries than
    ``top_k``, so the k-th largest is ``-inf``), one row with a single finite entry."""
    x = _tied_rows(rng, rows, n)
    x[rng.random(x.shape) < 0.33] = -np.inf
    x[np.arange(rows), rng.integers(0, n, rows)] = 0.0
    x[1, :] = -np.inf
    x[1, 7] = -2.5
    return x


def _extreme_rows(rng, rows=16, n=37):
    """Entries from the ends of float64: +-1e308 (whose differences overflow to
    ``-inf``), the smallest subnormal (a value of its own whose weight equals 0's),
    0.0 and -0.0 (one value), 1 and ``-inf``; the max is 1e308 in half of the rows."""
    x = rng.choice([-1e308, 5e-324, -0.0, 0.0, 1.0, -2.0, -np.inf], size=(rows, n))
    x[::2, rng.integers(0, n)] = 1e308
    x[1::2, 0] = 1.0
    return x


ROW_FAMILIES = {
    "random": _random_rows,
    "ties": _tied_rows,
    "minus_inf": _rows_with_minus_inf,
    "extremes": _extreme_rows,
}
FILTERS = ("top_k", "top_p", "min_p", "all")


def _filter_params(family, which, x, rng):
    """Per-row parameters for one filter alone or all together, with temperatures
    1, 1/2, 2 and 0.7 (the tie families keep ``T = 1`` for min-p, so that ``d_j =
    x_j - m`` is exactly ``log(1/2)`` on the planted entries)."""
    rows, n = x.shape
    exact_d = family != "random" and which in ("min_p", "all")
    t = np.ones(rows) if exact_d else rng.choice([1.0, 0.5, 2.0, 0.7], rows)
    params = {"temperature": t}
    top_k = rng.integers(1, n + 1, rows)
    if which in ("top_k", "all"):
        params["top_k"] = top_k
    if which in ("top_p", "all"):
        params["top_p"] = _safe_top_p(x, top_k if which == "all" else np.full(rows, n), t, rng)
    if which in ("min_p", "all"):
        params["min_p"] = (
            np.full(rows, 0.5) if family != "random" else rng.choice([0.01, 0.1, 0.3, 1.0], rows)
        )
    return params


# ------------------------------------------------------------------- the oracle alone
@pytest.mark.parametrize("family", ROW_FAMILIES)
@pytest.mark.parametrize("which", FILTERS)
def test_reference_kept_sets_follow_the_definitions(family, which, rng):
    """The sort-based oracle against the spec's definitions written without a sort
    (every candidate threshold tried in turn)."""
    x = ROW_FAMILIES[family](rng)
    params = _filter_params(family, which, x, rng)
    kept = _kept(x, **params)
    rows, n = x.shape
    top_k, top_p, _, _, _ = _per_row(rows, n=n, **params)
    min_p = np.broadcast_to(params.get("min_p", 0.0), (rows,))
    t = np.broadcast_to(params["temperature"], (rows,))
    for r in range(rows):
        np.testing.assert_array_equal(
            kept[r], _brute_kept(x[r], top_k[r], top_p[r], min_p[r], t[r])
        )
    assert np.all(kept[np.arange(rows), np.argmax(x, axis=1)])  # the max is always kept


def test_reference_kept_sets_by_hand():
    x = np.array([[3.0, 1.0, 2.0, 2.0, 2.0, 0.0]])
    assert _kept(x, top_k=2).tolist() == [[True, False, True, True, True, False]]
    assert _kept(x, top_k=1).tolist() == [[True, False, False, False, False, False]]
    # w = 1, e^-2, 3 e^-1, e^-3: the first level has 1 / 2.29 = 0.44 of the mass
    assert _kept(x, top_p=0.43).tolist() == [[True, False, False, False, False, False]]
    assert _kept(x, top_p=0.45).tolist() == [[True, False, True, True, True, False]]
    # over the top-2 set (mass 1 + 3 e^-1 = 2.10) the first level has 0.48 of the mass
    assert _kept(x, top_p=0.47).tolist() == [[True, False, True, True, True, False]]
    assert _kept(x, top_k=2, top_p=0.47).tolist() == [[True, False, False, False, False, False]]
    assert _kept(x, top_p=1.0).all()
    zero = np.array([[0.0, 0.0, -np.inf, -1e4]])  # p = 1 keeps zero weights too
    assert _kept(zero, top_p=1.0).all()
    assert _kept(zero, top_p=0.5).tolist() == [[True, True, False, False]]  # 2 >= 0.5 * 2
    half = np.array([[0.0, math.log(0.5), math.nextafter(math.log(0.5), -1), -3.0]])
    assert _kept(half, min_p=0.5).tolist() == [[True, True, False, False]]
    assert _kept(half, min_p=1.0).tolist() == [[True, False, False, False]]
    assert _kept(half, min_p=0.0).all()


def test_reference_draw_rule_by_hand():
    """The first kept j whose running sum exceeds u S; the last uniform below 1 gives
    the last kept entry of positive weight; greedy rows give the first maximum."""
    x = np.array([[0.0, -np.inf, 0.0, 0.0, 0.0, -np.inf]])  # w = 1, 0, 1, 1, 1, 0
    u = np.array([[0.0, 0.25 - 2.0**-53, 0.25, 0.5, 0.75, 1 - 2.0**-53]])
    indices, logprobs = _reference_sample(x, 0, uniforms=u)
    assert indices.tolist() == [[0, 0, 2, 3, 4, 4]]
    np.testing.assert_array_equal(logprobs, np.full((1, 6), -math.log(4)))
    indices, logprobs = _reference_sample(x, 0, uniforms=u, temperature=0.0)
    assert indices.tolist() == [[0] * 6] and not logprobs.any()


def test_reference_logprob_of_a_near_certain_row():
    """``d_j - log1p(s)``, not ``d_j - log(S)``: with ``s = e^-30`` the latter is
    ``u / s = 1e-3`` off in relative terms, the former within a few u."""
    x = np.array([[0.0, -30.0, -35.0]])
    _, logprobs = _reference_sample(x, 0, uniforms=np.array([[0.0]]))
    with mpmath.workdps(50):
        exact = -mpmath.log1p(mpmath.exp(-30) + mpmath.exp(-35))
    assert abs(logprobs[0, 0] - float(exact)) <= 4 * 2.0**-53 * abs(float(exact))


def test_reference_top_logprobs():
    x = np.array([[1.0, 3.0, 3.0, -np.inf, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    indices, logprobs = reference.top_logprobs_rows(x, 3)
    assert indices.tolist() == [[1, 2, 4], [0, 1, 2]]
    np.testing.assert_array_equal(
        logprobs, np.take_along_axis(reference.log_softmax(x), indices, 1)
    )


def _single_row_cases():
    """One row of 12 probabilities (ties at 0.12 and 0.08, not sorted) and five
    settings: the kept sets have 12, 7, 7, 7 and 10 entries."""
    p = np.array([0.05, 0.12, 0.08, 0.20, 0.02, 0.08, 0.10, 0.06, 0.12, 0.04, 0.08, 0.05])
    x = np.log(p)
    return x, {
        "temperature": {"temperature": 0.8},
        "top_k": {"top_k": 5},  # the 5th largest, 0.08, is tied three times
        "top_p": {"top_p": 0.6},  # levels reach 0.20, 0.44, 0.54, 0.78: three 0.08 kept
        "min_p": {"min_p": 0.35},  # p_j >= 0.07
        "combined": {"temperature": 1.3, "top_k": 10, "top_p": 0.9, "min_p": 0.1},
    }


def _exact_distribution(x, **params):
    """The kept set and the renormalized kept distribution of one row (float64)."""
    kept = _kept(x[None], **params)[0]
    t = params.get("temperature", 1.0)
    w = np.where(kept, np.exp((x - x.max()) / t), 0.0)
    return kept, w / w.sum()


def _worst_power(q, draws):
    """The least power of the chi-square test at ``ALPHA`` against the alternatives
    "one probability ``q_j`` multiplied by 0.9 or 1.1, the others rescaled to sum to
    1", for every ``j``: ``P(chi2'(df, lambda) > chi2_{1 - ALPHA}(df))`` with the
    noncentrality ``lambda = N sum_j (q'_j - q_j)^2 / q_j``."""
    df = q.size - 1
    critical = stats.chi2.isf(ALPHA, df)
    powers = []
    for j in range(q.size):
        for factor in (0.9, 1.1):
            alt = q.copy()
            alt[j] *= factor
            others = np.arange(q.size) != j
            alt[others] *= (1 - alt[j]) / q[others].sum()
            powers.append(stats.ncx2.sf(critical, df, draws * np.sum((alt - q) ** 2 / q)))
    return min(powers)


def _check_frequencies(drawn, kept, q):
    """No draw outside the kept set (exact); the counts over it pass a chi-square test
    at ``ALPHA`` whose power against :func:`_worst_power`'s alternatives is at least
    ``POWER``."""
    drawn = np.asarray(drawn).ravel()
    counts = np.bincount(drawn, minlength=kept.size)
    assert not counts[~kept].any(), np.flatnonzero(counts * ~kept)
    expected = drawn.size * q[kept]
    assert expected.min() >= 5  # the chi-square approximation holds
    assert _worst_power(q[kept], drawn.size) >= POWER
    result = stats.chisquare(counts[kept], expected)
    assert result.pvalue > ALPHA, result


#: Draws per single-row test: the temperature case's smallest probability, 0.0134,
#: needs about 7e5 for a power of 0.99 against a 10% shift of it.
DRAWS = 1_000_000


@pytest.mark.parametrize("case", list(_single_row_cases()[1]))
def test_reference_draws_follow_the_filtered_distribution(case):
    """The oracle's draws with the numpy engine's uniforms, ``DRAWS`` of one row.
    False-alarm rate ``ALPHA = 1e-4``; power at least 0.99 against any one kept
    probability scaled by 0.9 or 1.1 (0.9999999995 for the temperature case, whose
    smallest probability is 0.0134, 1.0 to 10 digits for the others); draws outside
    the kept set (the distribution before the filter) fail at once."""
    x, cases = _single_row_cases()
    kept, q = _exact_distribution(x, **cases[case])
    indices, _ = _reference_sample(x[None], 2026, num_samples=DRAWS, **cases[case])
    _check_frequencies(indices, kept, q)


# -------------------------------------------------------------------- the generator
def _compiled_philox():
    from softmax_numba.cpu._compile import jit

    return philox.build(jit)


#: (key, counter) pairs; the counters as one 256-bit int, low word first, include
#: carries out of the low word and out of every word.
PHILOX_CASES = [
    (0, 0),
    (1, 1),
    (12345678901234567890, 42),
    ((1 << 128) - 1, MASK64),  # NumPy's increment carries into the second word
    (0xDEADBEEF << 64 | 7, MASK64 + (MASK64 << 64) + (5 << 128)),  # into the third
    (3 << 64, (1 << 256) - 1),  # the counter wraps to zero
    (987654321, 3 + (17 << 64) + (MASK64 << 128) + (MASK64 << 192)),
]


@pytest.mark.parametrize(("key", "counter"), PHILOX_CASES)
def test_philox_matches_numpy(key, counter):
    """Philox4x64-10, compiled and in NumPy form, against ``np.random.Philox``: its
    ``random_raw`` gives the blocks at ``counter + 1``, ``counter + 2`` (NumPy
    increments its counter before each block)."""
    gen = _compiled_philox()
    k = (np.uint64(key & MASK64), np.uint64(key >> 64))
    raw = np.random.Philox(key=key, counter=counter).random_raw(8)
    for block in range(2):
        c = (counter + 1 + block) % (1 << 256)
        words = [np.uint64((c >> (64 * i)) & MASK64) for i in range(4)]
        compiled = gen.philox4x64(*words, *k)
        with np.errstate(over="ignore"):
            python = philox._philox4x64(*words, *k)
        want = [int(r) for r in raw[4 * block : 4 * block + 4]]
        assert [int(v) for v in compiled] == want
        assert [int(v) for v in python] == want


def test_uniforms_match_numpy():
    """The compiled ``uniform`` and the numpy engine's ``philox.uniforms`` against the
    words of ``np.random.Philox`` at counter ``(s // 4, row, offset)``, ``(r >> 11)
    2^-53``, with an offset and a seed above 2^64."""
    gen = _compiled_philox()
    seed, offset, rows, draws = (5 << 64) + 11, (9 << 64) + 3, 3, 10
    want = _numpy_uniforms(seed, offset, rows, draws)
    key, off = philox.split128(seed, "seed", "t"), philox.split128(offset, "offset", "t")
    np.testing.assert_array_equal(philox.uniforms(key, off, np.arange(rows), draws), want)
    for i in range(rows):
        for s in range(draws):
            u = gen.uniform(*key, *off, np.uint64(i), np.uint64(s))
            assert u == want[i, s]


# --------------------------------------------------------------------- kept sets (API)
def _kept_by_filter(x, engine, **params):
    return np.asarray(filter_logits(x, backend=engine, **params)) != -np.inf


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("family", ROW_FAMILIES)
@pytest.mark.parametrize("which", FILTERS)
def test_kept_sets_match_the_sort_based_reference(engine, family, which, rng):
    """``filter_logits(...) != -inf`` is the oracle's kept set less the entries whose
    ``x / T`` is ``-inf`` (``-inf`` itself, or ``-1e308 / 0.5``), exactly: random rows,
    rows tied at every threshold and with entries exactly at ``min_p``, rows with
    ``-inf``, rows of extreme values; per-row parameters."""
    x = ROW_FAMILIES[family](rng)
    params = _filter_params(family, which, x, rng)
    t = np.broadcast_to(params["temperature"], (x.shape[0],))[:, None]
    with np.errstate(over="ignore"):
        want = _kept(x, **params) & (x / t > -np.inf)
    got = _kept_by_filter(x, engine, **params)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("engine", ENGINES)
def test_kept_set_of_a_vocabulary_row(engine, rng):
    """n = 128256 (Llama 3's vocabulary), every filter and all together, two rows."""
    x = rng.standard_normal((2, 128256)) * 2
    x[1, ::3] = np.round(x[1, ::3])  # many ties
    for params in (
        {"top_k": 50},
        {"top_p": 0.9},
        {"min_p": 0.05},
        {"top_k": 1000, "top_p": 0.9, "min_p": 0.05, "temperature": 0.7},
    ):
        np.testing.assert_array_equal(_kept_by_filter(x, engine, **params), _kept(x, **params))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_filter_logits_values(engine, dtype, rng):
    """Kept entries are ``x / T``, ``T`` rounded to the dtype and the quotient
    correctly rounded: NumPy's ``x / dtype(T)`` bit for bit (a reciprocal hoisted by
    ``arcp`` was one rounding off in 166 of 1800 entries); ``out=`` is filled and
    returned."""
    x = (rng.standard_normal((5, 40)) * 3).astype(dtype)
    for t in (1.0, 0.7):
        got = filter_logits(x, top_k=10, temperature=t, backend=engine)
        assert got.dtype == dtype
        kept = got != -np.inf
        want = reference.filtered_logits(x.astype(np.float64), 10, 1.0, -np.inf, t)
        np.testing.assert_array_equal(kept, want != -np.inf)
        if t == 1.0:
            np.testing.assert_array_equal(got[kept], x[kept])
        else:
            np.testing.assert_array_equal(got[kept], (x / dtype(t))[kept])
    out = np.empty_like(x)
    assert filter_logits(x, top_p=0.8, out=out, backend=engine) is out
    np.testing.assert_array_equal(out, filter_logits(x, top_p=0.8, backend=engine))


@pytest.mark.parametrize("engine", ENGINES)
def test_filter_logits_takes_min_p_with_the_callers_temperature(engine):
    """``invT = 1 / T`` of the caller's float64 ``T``, also for float32 logits (not ``1
    / float32(T)``): ``min_p`` halfway between ``-1 / 0.7`` and ``-1 / float32(0.7)``
    keeps ``x = -1`` (``d = -1.42857142857``) in float32 as in float64, as ``sample``
    does."""
    t = 0.7
    log_min_p = (-1 / t - 1 / float(np.float32(t))) / 2
    min_p = math.exp(log_min_p)
    assert -1 / t >= math.log(min_p) > -1 / float(np.float32(t))
    for dtype in (np.float64, np.float32):
        x = np.array([0.0, -1.0], dtype=dtype)
        got = filter_logits(x, temperature=t, min_p=min_p, backend=engine)
        assert got[1] != -np.inf, dtype
        # min_p slightly above: -1 is dropped
        assert filter_logits(x, temperature=t, min_p=min_p * 1.001, backend=engine)[1] == -np.inf
    indices = sample(
        np.array([0.0, 1e-9 - 1.0]), temperature=t, min_p=min_p, num_samples=200, seed=1
    )
    assert 1 in indices


# ---------------------------------------------------------------- distributions (API)
@pytest.mark.parametrize("case", list(_single_row_cases()[1]))
def test_draws_follow_the_filtered_distribution(case):
    """``DRAWS`` draws of one row (``num_samples``) on the cpu engine (the others draw
    the same, :func:`test_same_samples_on_every_engine`).  False-alarm rate ``ALPHA =
    1e-4``; power at least 0.99 against any one kept probability scaled by 0.9 or 1.1
    (0.9999999995 for the temperature case, 1.0 to 10 digits for the others),
    computed in the test; a draw outside the kept set fails at once."""
    x, cases = _single_row_cases()
    kept, q = _exact_distribution(x, **cases[case])
    drawn = sample(x, num_samples=DRAWS, seed=2027, backend="cpu", **cases[case])
    assert drawn.shape == (DRAWS,)
    _check_frequencies(drawn, kept, q)


def test_many_identical_rows_follow_the_filtered_distribution():
    """200000 identical rows, one draw each (the row index moves the counter), on the
    parallel engine, with every filter: false-alarm rate ``ALPHA = 1e-4``, power
    0.9999999998 (at least 0.99, computed in the test) against any one of the 10 kept
    probabilities (the least 0.063) scaled by 0.9 or 1.1."""
    x, cases = _single_row_cases()
    kept, q = _exact_distribution(x, **cases["combined"])
    batch = np.broadcast_to(x, (200_000, x.size))
    drawn = sample(batch, seed=7, backend="parallel", **cases["combined"])
    assert drawn.shape == (200_000,)
    _check_frequencies(drawn, kept, q)


# --------------------------------------------------------------- reproducibility (API)
def _mixed_batch(rng, rows=6, n=50):
    """Rows with per-row settings, one greedy row and one with ``-inf`` entries."""
    x = rng.standard_normal((rows, n)) * 2
    x[2, ::4] = -np.inf
    params = {
        "temperature": np.array([1.0, 0.7, 0.0, 1.5, 1.0, 0.3])[:rows],
        "top_k": np.array([n, 5, 3, 20, 1, 40])[:rows],
        "top_p": np.array([1.0, 0.9, 0.5, 0.8, 1.0, 0.95])[:rows],
        "min_p": np.array([0.0, 0.0, 0.2, 0.05, 0.0, 0.01])[:rows],
    }
    return x, params


def test_same_samples_on_every_engine(rng):
    """Bit-identical indices on numpy, cpu and parallel, equal to the draw rule fed
    with NumPy's own Philox words; log-probabilities within twice the bound of
    :func:`_logprob_bound` of the oracle's (each is within it of the exact value)."""
    x, params = _mixed_batch(rng)
    seed, offset, draws = (3 << 100) + 5, (1 << 70) + 9, 7
    results = {
        e: sample(
            x,
            num_samples=draws,
            seed=seed,
            offset=offset,
            return_logprobs=True,
            backend=e,
            **params,
        )
        for e in ENGINES
    }
    want, want_lp = _reference_sample(
        x, seed, uniforms=_numpy_uniforms(seed, offset, x.shape[0], draws), **params
    )
    kept = _kept(x, **params)
    t = params["temperature"]
    # each result within b u of the exact value: two of them within 2 b u
    rtol = [
        2 * 2.0**-53 * _logprob_bound((x[r, kept[r]] - x[r].max()) / t[r], x.shape[1], False)
        if t[r] > 0
        else 0.0
        for r in range(x.shape[0])
    ]
    for engine, (indices, logprobs) in results.items():
        assert indices.dtype == np.int64 and indices.shape == (x.shape[0], draws)
        np.testing.assert_array_equal(indices, want, err_msg=engine)
        for r in range(x.shape[0]):
            np.testing.assert_allclose(
                logprobs[r], want_lp[r], rtol=rtol[r], atol=0, err_msg=engine
            )


def test_same_samples_on_any_thread_count(rng, eager_parallel):
    """The parallel engine on 1 and 2 threads: a batch of rows, and one long row
    (128256 entries, which the engine may split over threads)."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 threads")
    batch = rng.standard_normal((64, 1000)) * 2
    long_row = rng.standard_normal((1, 128256)) * 2
    settings = {"top_k": 100, "top_p": 0.9, "min_p": 0.02, "temperature": 0.8}
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results.append(
                [
                    sample(a, num_samples=5, seed=11, backend="parallel", **settings)
                    for a in (batch, long_row)
                ]
            )
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)
    for a, got in zip((batch, long_row), results[0], strict=True):
        want, _ = _reference_sample(a, 11, num_samples=5, **settings)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("settings", [{}, {"top_p": 0.9, "min_p": 0.01}], ids=["plain", "top_p"])
def test_a_long_row_split_over_threads_gives_the_serial_tokens_bit_for_bit(settings, rng):
    """One row of 128256 on the parallel engine runs its exp pass over the threads
    (``cpu.sampling.sample_split``): the tokens and the log-probabilities equal the
    serial engine's exactly (each block's sum is its own loop on either engine)."""
    if numba.get_num_threads() < 2:
        pytest.skip("needs 2 threads")
    from softmax_numba._api import split_chunks

    x = (rng.standard_normal((1, 128256)) * 3).astype(np.float32)
    assert split_chunks("parallel", *x.shape) > 1
    serial = sample(x, num_samples=64, seed=5, return_logprobs=True, backend="cpu", **settings)
    split = sample(x, num_samples=64, seed=5, return_logprobs=True, backend="parallel", **settings)
    np.testing.assert_array_equal(split[0], serial[0])
    np.testing.assert_array_equal(split[1], serial[1])


@pytest.mark.parametrize("engine", ENGINES)
def test_a_row_does_not_depend_on_the_other_rows(engine, rng):
    """Row i's draws depend on (seed, offset, i) and its row only: permuting the other
    rows, changing their contents or their settings, or appending rows leaves row i
    as it was.  Its index is part of the counter, so row 0 alone gives row 0's draws,
    while the same row at another index gives other draws."""
    x, params = _mixed_batch(rng)
    i = 3

    def draws(a, p):
        return sample(a, num_samples=6, seed=99, backend=engine, **p)

    base = draws(x, params)
    others = np.array([0, 1, 2, 4, 5])
    shuffled = others[[2, 4, 0, 3, 1]]
    moved, moved_params = x.copy(), {k: v.copy() for k, v in params.items()}
    moved[others] = x[shuffled]
    for k in moved_params:
        moved_params[k][others] = params[k][shuffled]
    np.testing.assert_array_equal(draws(moved, moved_params)[i], base[i])
    changed = x.copy()
    changed[others] = rng.standard_normal((others.size, x.shape[1]))
    np.testing.assert_array_equal(draws(changed, params)[i], base[i])
    longer = np.vstack([x, rng.standard_normal((3, x.shape[1]))])
    longer_params = {k: np.concatenate([v, v[:3]]) for k, v in params.items()}
    np.testing.assert_array_equal(draws(longer, longer_params)[i], base[i])
    alone = draws(x[None, 0], {k: v[:1] for k, v in params.items()})
    np.testing.assert_array_equal(alone[0], base[0])
    # row i alone is row 0 of its batch: the reference says which draws that gives
    p_i = {k: v[i : i + 1] for k, v in params.items()}
    want, _ = _reference_sample(x[None, i], 99, num_samples=6, **p_i)
    np.testing.assert_array_equal(draws(x[None, i], p_i), want)


def test_per_row_parameters_act_row_by_row(rng):
    """Row i with per-row arrays draws as row i with its values given as scalars."""
    x, params = _mixed_batch(rng)
    batch = sample(x, num_samples=4, seed=5, backend="cpu", **params)
    for i in range(x.shape[0]):
        scalars = {k: v[i].item() for k, v in params.items()}
        np.testing.assert_array_equal(
            sample(x, num_samples=4, seed=5, backend="cpu", **scalars)[i], batch[i]
        )


def test_seeds_and_offsets(rng):
    """The same seed and offset give the same draws; another offset, another seed or
    ``seed=None`` (fresh entropy) give others (16 draws over 1000 equal entries: two
    streams agree with probability 1e-48)."""
    x = np.zeros((1, 1000))
    first = sample(x, num_samples=16, seed=1, backend="cpu")
    np.testing.assert_array_equal(sample(x, num_samples=16, seed=1, backend="cpu"), first)
    assert not np.array_equal(sample(x, num_samples=16, seed=1, offset=1, backend="cpu"), first)
    assert not np.array_equal(sample(x, num_samples=16, seed=2, backend="cpu"), first)
    fresh = [sample(x, num_samples=16, backend="cpu") for _ in range(2)]
    assert not np.array_equal(*fresh)


# ------------------------------------------------------------------------ greedy (API)
@pytest.mark.parametrize("engine", ENGINES)
def test_greedy_is_argmax_with_ties_to_the_lowest_index(engine, rng):
    """``temperature=0`` draws the first maximum, whatever the filters, with
    log-probability 0; per-row temperatures mix greedy and sampled rows."""
    x = rng.integers(-3, 3, size=(8, 30)).astype(np.float64)  # ties of the max
    x[3, :] = -np.inf
    x[3, [4, 9]] = 1.0
    want = np.argmax(x, axis=1)
    indices, logprobs = sample(
        x,
        temperature=0.0,
        top_k=2,
        top_p=0.3,
        min_p=0.9,
        num_samples=3,
        seed=1,
        return_logprobs=True,
        backend=engine,
    )
    np.testing.assert_array_equal(indices, np.repeat(want[:, None], 3, axis=1))
    np.testing.assert_array_equal(logprobs, 0.0)
    t = np.where(np.arange(8) % 2, 0.0, 1.0)
    mixed = sample(x, temperature=t, seed=1, backend=engine)
    np.testing.assert_array_equal(mixed[1::2], want[1::2])


# ---------------------------------------------------------------------- logprobs (API)
def _logprob_bound(d_kept, n, exact_scaling):
    """The bound, in float64's u, on the relative error of ``d_j - log1p(s)``.

    ``exact_scaling`` (``T = 1`` or a power of two): ``d_j`` is ``x_j - m`` rounded
    once, and the bound is log_softmax's (``bounds.LOG_DOMAIN``) on the row ``d``:
    ``6 + sigma(n) + spread(d)``.  Otherwise ``invT = fl(1/T)`` and the product
    ``(x_j - m) invT`` add two roundings: ``d_j`` is within ``3 u`` (not ``u``), each
    term ``exp(d_i)`` within ``3 u |d_i|`` (not ``u |d_i|``): ``8 + sigma(n) + 3
    spread(d)``."""
    spread = min(float(np.max(-d_kept[np.isfinite(d_kept)], initial=0)), 746.0)
    sigma = bounds.summation_bound(n)
    return 6 + sigma + spread if exact_scaling else 8 + sigma + 3 * spread


def _exact_logprob(row, kept, t, j):
    """``log(w_j / sum_K w)`` with ``w = exp(x / T)``, in 60 digits from the rounded
    input and the float64 ``T``."""
    with mpmath.workdps(60):
        m = mpmath.mpf(float(row.max()))
        tt = mpmath.mpf(float(t))
        d = [(mpmath.mpf(float(v)) - m) / tt for v in row[kept] if v > -np.inf]
        return (mpmath.mpf(float(row[j])) - m) / tt - mpmath.log(mpmath.fsum(map(mpmath.exp, d)))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.7])
def test_logprobs_within_the_log_softmax_bound(engine, dtype, temperature, rng):
    """The returned log-probability is ``log`` of the renormalized kept distribution
    at the drawn index, against 60 digits of mpmath from the same rounded input,
    within :func:`_logprob_bound` (float64 results) or ``1 + bound 2^-53 / 2^-24`` u
    of float32 (computed in float64, rounded once).  Rows: random ones at two
    scales, one near-certain (``s`` about ``2e-12``: ``d_j - log(S)`` would be
    ``6e-5`` off, 1000 u of float32), one whose max alone is kept (logprob exactly 0),
    one with ``-inf``."""
    x = rng.standard_normal((6, 40)) * np.array([[1.0], [4.0], [1.0], [1.0], [3.0], [2.0]])
    x[2] = -30.0 - rng.random(40)
    x[2, 7] = 0.0
    x[4, 11] = x[4].max() + 5
    x[5, ::3] = -np.inf
    x = x.astype(dtype)
    params = {
        "top_k": 30,
        "top_p": np.array([0.95, 0.95, 1.0, 1.0, 1.0, 0.95]),
        "min_p": np.array([0.0, 0.01, 0.0, 0.0, 0.9, 0.0]),
    }
    indices, logprobs = sample(
        x,
        temperature=temperature,
        num_samples=8,
        seed=3,
        return_logprobs=True,
        backend=engine,
        **params,
    )
    assert logprobs.dtype == dtype and logprobs.shape == indices.shape
    x64 = x.astype(np.float64)
    kept = _kept(x64, temperature=temperature, **params)
    exact_scaling = temperature in (1.0, 0.5)
    for r in range(x.shape[0]):
        d = (x64[r, kept[r]] - x64[r].max()) / temperature
        bound = _logprob_bound(d, x.shape[1], exact_scaling)
        allowed = bound if dtype == np.float64 else 1 + bound * 2.0**-29
        u = np.finfo(dtype).eps / 2
        for j, got in zip(indices[r], logprobs[r], strict=True):
            assert kept[r, j]
            exact = _exact_logprob(x64[r], kept[r], temperature, j)
            if exact == 0:
                assert got == 0
                continue
            err = float(abs((mpmath.mpf(float(got)) - exact) / exact)) / u
            assert err <= allowed, (r, j, err, allowed)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_logprobs(engine, dtype, rng):
    """The k largest, largest first, ties to the lower index, their log-probabilities
    within log_softmax's bound (``bounds.LOG_DOMAIN``) of the float64/longdouble
    reference of the same rounded input."""
    from softmax_numba import error_metrics

    x = rng.integers(-4, 4, size=(5, 30)).astype(dtype)  # ties everywhere
    x[1] = rng.standard_normal(30).astype(dtype) * 3
    x[2, ::2] = -np.inf
    k = 7
    indices, logprobs = top_logprobs(x, k, backend=engine)
    assert indices.dtype == np.int64 and indices.shape == (5, k) and logprobs.dtype == dtype
    want, _ = reference.top_logprobs_rows(x.astype(np.float64), k)
    np.testing.assert_array_equal(indices, want)
    wide = np.longdouble if dtype == np.float64 else np.float64
    exact = np.take_along_axis(reference.log_softmax(x.astype(wide)), indices, axis=-1)
    err = error_metrics.componentwise_error(logprobs, exact, np.abs(exact))
    allowed = error_metrics.allowed_u(bounds.LOG_DOMAIN, (x,), None, dtype)
    assert np.all(err / error_metrics.unit_roundoff(dtype) <= allowed), (err, allowed)


# --------------------------------------------------------------------- bad input (API)
GOOD = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 0.0, -1.0], [0.5, 0.25, 0.0, 2.0]])
NAN_ROW, INF_ROW, DEAD_ROW = GOOD.copy(), GOOD.copy(), GOOD.copy()
NAN_ROW[1, 2] = np.nan
INF_ROW[1, 0] = np.inf
DEAD_ROW[1, :] = -np.inf

BAD = {
    "top_k=0": (GOOD, {"top_k": 0}, "top_k"),
    "top_k row": (GOOD, {"top_k": np.array([2, 0, 3])}, "top_k"),
    "top_p=0": (GOOD, {"top_p": 0.0}, "top_p"),
    "top_p>1": (GOOD, {"top_p": 1.5}, "top_p"),
    "top_p nan": (GOOD, {"top_p": np.nan}, "top_p"),
    "top_p row": (GOOD, {"top_p": np.array([0.5, 0.9, -0.1])}, "top_p"),
    "min_p<0": (GOOD, {"min_p": -0.1}, "min_p"),
    "min_p>1": (GOOD, {"min_p": 1.1}, "min_p"),
    "temperature<0": (GOOD, {"temperature": -1.0}, "temperature"),
    "temperature nan": (GOOD, {"temperature": np.nan}, "temperature"),
    "temperature row": (GOOD, {"temperature": np.array([1.0, -0.5, 1.0])}, "temperature"),
    "nan row": (NAN_ROW, {}, r"row \(1,\) .*NaN"),
    "+inf row": (INF_ROW, {}, r"row \(1,\) .*\+inf"),
    "all -inf row": (DEAD_ROW, {}, r"row \(1,\) .*-inf"),
    "top_k shape": (GOOD, {"top_k": np.array([1, 2])}, "top_k"),
    "top_p shape": (GOOD, {"top_p": np.full((3, 2), 0.5)}, "top_p"),
    "temperature shape": (GOOD, {"temperature": np.ones(4)}, "temperature"),
}
SAMPLE_ONLY = {
    "num_samples=0": (GOOD, {"num_samples": 0}, "num_samples"),
    "seed<0": (GOOD, {"seed": -1}, "seed"),
    "seed>=2**128": (GOOD, {"seed": 1 << 128}, "seed"),
    "offset<0": (GOOD, {"offset": -1}, "offset"),
    "offset>=2**128": (GOOD, {"offset": 1 << 128}, "offset"),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", [*BAD, *SAMPLE_ONLY])
def test_bad_input_to_sample(case, engine):
    """Each ValueError of the spec, with a one-line message naming the argument (or
    the row)."""
    x, kwargs, match = {**BAD, **SAMPLE_ONLY}[case]
    with pytest.raises(ValueError, match=match) as info:
        sample(x, backend=engine, **{"seed": 0, **kwargs})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case", [*BAD, "temperature=0"])
def test_bad_input_to_filter_logits(case):
    """The same errors from ``filter_logits``, and ``temperature=0`` (greedy has no
    logits)."""
    x, kwargs, match = BAD.get(case, (GOOD, {"temperature": 0.0}, "temperature"))
    with pytest.raises(ValueError, match=match):
        filter_logits(x, backend="cpu", **kwargs)


# ------------------------------------------------------------------------ shapes (API)
@pytest.mark.parametrize("engine", ENGINES)
def test_axis_and_batch_shapes(engine, rng):
    """A 3-D input along axis 1: rows in C order over the other axes, results shaped
    as the input without the axis, a trailing axis of ``num_samples`` only when it is
    above 1; per-row arrays broadcast to the batch shape."""
    x = rng.standard_normal((3, 9, 4))
    rows = np.moveaxis(x, 1, -1).reshape(-1, 9)
    top_k = np.array([[2], [5], [9]])  # broadcasts to (3, 4)
    one = sample(x, axis=1, top_k=top_k, seed=8, backend=engine)
    assert one.shape == (3, 4) and one.dtype == np.int64
    many, logprobs = sample(
        x, axis=1, top_k=top_k, num_samples=5, seed=8, return_logprobs=True, backend=engine
    )
    assert many.shape == logprobs.shape == (3, 4, 5)
    want, _ = _reference_sample(
        rows, 8, num_samples=5, top_k=np.broadcast_to(top_k, (3, 4)).ravel()
    )
    np.testing.assert_array_equal(many.reshape(-1, 5), want)
    np.testing.assert_array_equal(one.ravel(), want[:, 0])
    np.testing.assert_array_equal(
        sample(np.moveaxis(x, 1, -1), num_samples=5, top_k=top_k, seed=8, backend=engine), many
    )
    filtered = filter_logits(x, axis=1, top_k=top_k, backend=engine)
    assert filtered.shape == x.shape
    kept = _kept(rows, top_k=np.broadcast_to(top_k, (3, 4)).ravel())
    np.testing.assert_array_equal(np.moveaxis(filtered, 1, -1).reshape(-1, 9) != -np.inf, kept)
    indices, lp = top_logprobs(x, 3, axis=1, backend=engine)
    assert indices.shape == lp.shape == (3, 4, 3)
    np.testing.assert_array_equal(indices.reshape(-1, 3), reference.top_logprobs_rows(rows, 3)[0])
    single = sample(rng.standard_normal(6), seed=1, backend=engine)
    assert np.ndim(single) == 0


def _dtypes():
    import ml_dtypes

    return [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int32]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", _dtypes(), ids=lambda d: np.dtype(d).name)
def test_dtypes(engine, dtype, rng):
    """float16/bfloat16/float32/float64 (and integers, as float64): the draws are the
    oracle's on the float64 values of the rounded input; log-probabilities in float32
    for the narrow floats and float32, float64 otherwise; ``filter_logits`` keeps the
    input's floating dtype."""
    x = (rng.standard_normal((4, 20)) * 3).astype(dtype)
    indices, logprobs = sample(
        x, top_p=0.9, num_samples=6, seed=4, return_logprobs=True, backend=engine
    )
    want, _ = _reference_sample(x.astype(np.float64), 4, num_samples=6, top_p=0.9)
    np.testing.assert_array_equal(indices, want)
    name = np.dtype(dtype).name
    assert logprobs.dtype == (np.float64 if name in ("float64", "int32") else np.float32)
    filtered = filter_logits(x, top_p=0.9, backend=engine)
    assert filtered.dtype == (np.float64 if name == "int32" else x.dtype)


def test_torch_tensors_in_torch_tensors_out(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 16)).astype(np.float32)
    t = torch.from_numpy(x)
    indices, logprobs = sample(t, top_k=5, num_samples=2, seed=6, return_logprobs=True)
    assert isinstance(indices, torch.Tensor) and indices.dtype == torch.int64
    assert isinstance(logprobs, torch.Tensor) and logprobs.dtype == torch.float32
    want, want_lp = sample(x, top_k=5, num_samples=2, seed=6, return_logprobs=True)
    np.testing.assert_array_equal(indices.numpy(), want)
    np.testing.assert_array_equal(logprobs.numpy(), want_lp)
    filtered = filter_logits(t, top_k=5)
    assert isinstance(filtered, torch.Tensor)
    np.testing.assert_array_equal(filtered.numpy(), filter_logits(x, top_k=5))
    idx, lp = top_logprobs(t, 4)
    assert isinstance(idx, torch.Tensor) and idx.dtype == torch.int64
    assert isinstance(lp, torch.Tensor)
    np.testing.assert_array_equal(idx.numpy(), top_logprobs(x, 4)[0])


def test_the_functions_are_exported():
    for name in ("sample", "filter_logits", "top_logprobs"):
        assert name in sn.__all__
