"""NaN, +-inf and masks: the documented rules, named case by case, on every engine."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

import softmax_numba as sn

# scipy, our outside reference here, warns about the infinities it is given.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:scipy.*")

ENGINES = ("numpy", "cpu", "parallel")
STABLE_SOFTMAX = ("shifted", "division_free", "online")
INF, NAN = np.inf, np.nan

#: Rows with non-finite entries, each next to a plain row that must stay untouched.
CASES = {
    "nan": [NAN, 1.0, 2.0],
    "plus_inf": [INF, 1.0, 2.0],
    "two_plus_inf": [INF, INF, 0.0],
    "all_minus_inf": [-INF, -INF, -INF],
    "some_minus_inf": [-INF, 1.0, 2.0],
    "plus_and_minus_inf": [INF, -INF, 0.0],
}
PLAIN = [0.5, -1.0, 3.0]


def _rows(case):
    return np.array([CASES[case], PLAIN])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("algorithm", STABLE_SOFTMAX)
@pytest.mark.parametrize("backend", ENGINES)
def test_softmax_follows_scipy(case, algorithm, backend):
    x = _rows(case)
    got = sn.softmax(x, algorithm=algorithm, backend=backend)
    np.testing.assert_allclose(got, scipy.special.softmax(x, axis=-1), rtol=1e-15)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ENGINES)
def test_log_softmax_and_logsumexp_follow_scipy(case, backend):
    x = _rows(case)
    np.testing.assert_allclose(
        sn.log_softmax(x, backend=backend), scipy.special.log_softmax(x, axis=-1), rtol=1e-15
    )
    np.testing.assert_allclose(
        sn.logsumexp(x, backend=backend), scipy.special.logsumexp(x, axis=-1), rtol=1e-15
    )


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ENGINES)
def test_long_rows_split_across_threads_follow_the_same_rules(case, backend, eager_parallel):
    x = np.zeros((1, 5000))
    x[0, 100 : 100 + 3] = CASES[case]
    np.testing.assert_allclose(
        sn.softmax(x, backend=backend), scipy.special.softmax(x, axis=-1), rtol=1e-13
    )
    np.testing.assert_allclose(
        sn.logsumexp(x, backend=backend), scipy.special.logsumexp(x, axis=-1), rtol=1e-13
    )


@pytest.mark.parametrize("backend", ENGINES)
def test_naive_softmax_overflows_on_purpose(backend):
    p = sn.softmax(np.array([[1000.0, 0.0]]), algorithm="naive", backend=backend)
    assert np.isnan(p[0, 0])
    np.testing.assert_allclose(sn.softmax(np.array([[1000.0, 0.0]]), backend=backend), [[1.0, 0.0]])


@pytest.mark.parametrize("algorithm", (*STABLE_SOFTMAX, "naive"))
@pytest.mark.parametrize("backend", ENGINES)
def test_where_masks_give_zero_and_a_fully_masked_row_gives_zeros(algorithm, backend):
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    where = np.array([[True, False, True], [False, False, False]])
    p = sn.softmax(x, where=where, algorithm=algorithm, backend=backend)
    e = np.exp([1.0, 3.0])
    np.testing.assert_allclose(p, [[e[0] / e.sum(), 0, e[1] / e.sum()], [0, 0, 0]], rtol=1e-15)
    y = sn.log_softmax(x, where=where, backend=backend)
    np.testing.assert_allclose(y[0, [0, 2]], np.log(p[0, [0, 2]]), rtol=1e-14)
    assert y[0, 1] == -INF and np.all(y[1] == -INF)


@pytest.mark.parametrize("backend", ENGINES)
def test_where_broadcasts(backend):
    x = np.arange(6.0).reshape(2, 3)
    p = sn.softmax(x, where=np.array([True, True, False]), backend=backend)
    assert np.all(p[:, 2] == 0)
    np.testing.assert_allclose(p.sum(-1), 1.0)


@pytest.mark.parametrize("backend", ENGINES)
def test_nan_poisons_its_row_in_every_op(backend):
    x = np.array([[NAN, 1.0, 2.0, 3.0], [*PLAIN, 0.0]])
    for out in (
        sn.sigmoid(x, normalize=True, backend=backend),
        sn.softplus(x, normalize=True, backend=backend),
        sn.arctan(x, normalize=True, backend=backend),
        sn.gaussian(x, normalize=True, backend=backend),
        sn.sparsemax(x, backend=backend),
        sn.entmax15(x, backend=backend),
        sn.entmax_bisect(x, backend=backend),
        sn.cross_entropy(x, np.array([1, 2]), reduction="none", backend=backend),
        sn.maxout(x, pool_size=2, backend=backend)[:, :1],
    ):
        assert np.all(np.isnan(out[0]))
        assert np.all(np.isfinite(out[1]))


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("func", [sn.sparsemax, sn.entmax15, sn.entmax_bisect])
def test_sparse_maps_with_infinities(backend, func):
    x = np.array([[-INF, 1.0, 1.5], [INF, 0.0, 0.0], [-INF, -INF, -INF]])
    p = func(x, backend=backend)
    assert p[0, 0] == 0 and np.isclose(p[0].sum(), 1.0)
    assert np.all(np.isnan(p[1])) and np.all(np.isnan(p[2]))


@pytest.mark.parametrize("backend", ENGINES)
def test_elementwise_limits_do_not_overflow(backend):
    x = np.array([[-1e4, -800.0, 0.0, 800.0, 1e4, INF, -INF]])
    np.testing.assert_array_equal(sn.sigmoid(x, backend=backend), [[0, 0, 0.5, 1, 1, 1, 0]])
    np.testing.assert_array_equal(
        sn.softplus(x, backend=backend), [[0, 0, np.log(2), 800, 1e4, INF, 0]]
    )
    np.testing.assert_array_equal(sn.arctan(x[:, 5:], backend=backend), [[1, 0]])


@pytest.mark.parametrize("backend", ENGINES)
def test_normalized_gaussian_far_from_mu_is_still_a_distribution(backend):
    p = sn.gaussian(np.array([[1e3, 1e3 + 1, 1e3 + 2]]), normalize=True, backend=backend)
    np.testing.assert_allclose(p.sum(), 1.0)
    assert p[0, 0] == 1.0 and p[0, 2] == 0.0


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
@pytest.mark.parametrize("pool", [2, 3, 4, 5, 8])
def test_maxout_nan_at_every_place_in_a_group(pool, backend, rng):
    """The pool sizes with a vectorized kernel of their own (2, 3, 4) and the general
    one: a NaN anywhere in a group makes that group NaN and no other."""
    groups = 37
    x = rng.standard_normal((pool, groups * pool)).astype(np.float32)
    for row in range(pool):
        x[row, row :: 2 * pool] = NAN  # position `row` of every other group
    x[0, 1] = np.inf
    expected = x.reshape(pool, groups, pool).max(-1)  # NumPy's max propagates NaN
    np.testing.assert_array_equal(sn.maxout(x, pool_size=pool, backend=backend), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_row_max_skips_nans_of_either_sign(dtype, rng):
    """The kernels' row max (``softmax_numba.cpu.softmax.maximum``: a pass of integer
    max and min over the bits, the NaN-skipping ``maxnum`` pass only for a row whose
    result is NaN) is the max over the numbers, never NaN: a positive NaN would win
    the integer max, a negative one the integer min of an all-negative row."""
    from softmax_numba.cpu.softmax import maximum

    neg_nan = np.negative(np.array(NAN, dtype))
    assert np.signbit(neg_nan) and np.isnan(neg_nan)
    long = rng.standard_normal(1000).astype(dtype)
    cases = [
        ([NAN, 1.0, 2.0], 2.0),
        ([neg_nan, -1.0, -2.0], -1.0),
        ([-2.0, NAN, -1.0], -1.0),
        ([NAN], -INF),
        ([neg_nan, neg_nan], -INF),
        ([], -INF),
        ([-INF, NAN], -INF),
        ([INF, neg_nan], INF),
        ([-0.0, -1.0], -0.0),
        ([-0.0, 0.0], 0.0),
    ]
    for row, expected in cases:
        got = maximum(np.array(row, dtype=dtype))
        assert got == expected and np.signbit(got) == np.signbit(expected), (row, got)
    for place in (0, 517, 999):
        for nan in (NAN, neg_nan):
            row = long.copy()
            row[place] = nan
            assert maximum(row) == np.nanmax(row), (place, nan)
