"""Algorithms against each other, and against outside references (scipy, mpmath)."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import scipy.special

import softmax_numba as sn

ENGINES = ("numpy", "cpu", "parallel")


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_softmax_algorithms_agree_where_none_overflows(backend, scale, rng):
    x = rng.standard_normal((50, 301)) * scale
    results = [
        sn.softmax(x, algorithm=a, backend=backend)
        for a in ("naive", "shifted", "division_free", "online")
    ]
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparsemax_pivot_equals_sort(backend, scale, dtype, rng):
    x = (rng.standard_normal((200, 1001)) * scale).astype(dtype)
    x[:5, :500] = x[:5, :1].copy()  # ties
    p_sort, k_sort = sn.sparsemax(x, algorithm="sort", return_support_size=True, backend=backend)
    p_pivot, k_pivot = sn.sparsemax(x, algorithm="pivot", return_support_size=True, backend=backend)
    u = np.finfo(dtype).eps / 2
    np.testing.assert_allclose(p_pivot, p_sort, atol=64 * u * max(scale, 1))
    assert np.mean(k_sort == k_pivot) > 0.99


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_entmax15_pivot_equals_sort(backend, scale, dtype, rng):
    x = (rng.standard_normal((200, 1001)) * scale).astype(dtype)
    x[:5, :500] = x[:5, :1].copy()  # ties
    x[5, ::3] = -np.inf
    p_sort = sn.entmax15(x, algorithm="sort", backend=backend)
    p_pivot = sn.entmax15(x, algorithm="pivot", backend=backend)
    u = np.finfo(dtype).eps / 2
    np.testing.assert_allclose(p_pivot, p_sort, atol=64 * u * max(scale, 1))
    assert np.mean((p_sort > 0) == (p_pivot > 0)) > 0.999


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_entmax15_exact_equals_bisection(backend, scale, rng):
    x = rng.standard_normal((100, 257)) * scale
    exact = sn.entmax15(x, backend=backend)
    bisect = sn.entmax_bisect(x, alpha=1.5, n_iter=60, backend=backend)
    np.testing.assert_allclose(bisect, exact, atol=1e-12)


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_entmax_bisect_with_alpha_2_is_sparsemax(backend, rng):
    x = rng.standard_normal((20, 64)) * 3
    np.testing.assert_allclose(
        sn.entmax_bisect(x, alpha=2.0, backend=backend), sn.sparsemax(x), atol=1e-12
    )


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_long_rows_split_across_threads_equal_the_serial_result(backend, rng, eager_parallel):
    x = rng.standard_normal((1, 100_003)) * 20
    for func in (sn.softmax, sn.log_softmax, sn.logsumexp):
        np.testing.assert_allclose(
            func(x, backend=backend), func(x, backend="numpy"), rtol=1e-13, atol=1e-300
        )


# ----------------------------------------------------------------------------- scipy


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("axis", [0, 1, None])
def test_against_scipy(backend, axis, rng):
    x = rng.standard_normal((30, 40)) * 10
    kw = dict(axis=axis)
    np.testing.assert_allclose(sn.softmax(x, backend=backend, **kw), scipy.special.softmax(x, **kw))
    np.testing.assert_allclose(
        sn.log_softmax(x, backend=backend, **kw), scipy.special.log_softmax(x, **kw)
    )
    np.testing.assert_allclose(
        sn.logsumexp(x, backend=backend, **kw), scipy.special.logsumexp(x, **kw)
    )
    np.testing.assert_allclose(sn.sigmoid(x, backend=backend), scipy.special.expit(x))


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_weighted_logsumexp_with_sign_matches_scipy(backend, keepdims, rng):
    x = rng.standard_normal((6, 9)) * 5
    b = rng.standard_normal((6, 9))
    b[0] = 0.0
    b[1, :] = np.abs(b[1])
    got = sn.logsumexp(x, b=b, return_sign=True, keepdims=keepdims, backend=backend)
    expected = scipy.special.logsumexp(x, axis=-1, b=b, return_sign=True, keepdims=keepdims)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-13)
    plain = sn.logsumexp(x, b=b, backend=backend)
    assert np.all(np.isnan(plain[expected[1].reshape(-1) < 0]))


@pytest.mark.parametrize("backend", ENGINES)
def test_logsumexp_sign_without_weights(backend):
    lse, sign = sn.logsumexp(
        np.array([[0.0, 1.0], [-np.inf, -np.inf]]), return_sign=True, backend=backend
    )
    np.testing.assert_array_equal(sign, [1.0, 0.0])
    assert lse[1] == -np.inf


# ----------------------------------------------------------------------------- mpmath

HAND_CASES = [
    [1.0, 2.0, 3.0],
    [-745.0, -744.0, 0.0],
    [1e-10, -1e-10, 0.0],
    [700.0, 709.0, 709.7],
    [1000.0, 999.0, 1.0],
    [2.0, 2.0, 2.0, -1.0],  # ties at the maximum: all but one are added back as 1
    [5.0, 5.0],
]


@pytest.mark.parametrize("row", HAND_CASES)
@pytest.mark.parametrize("backend", ENGINES)
def test_hand_cases_against_mpmath(row, backend):
    x = np.array([row])
    # 400 digits: log(1 + 1e-323) must not round to log(1); the shifted algorithm's
    # log1p keeps that digit and so must the reference.
    with mpmath.workdps(400):
        exact_lse = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in row))
        exact_p = [float(mpmath.exp(mpmath.mpf(v) - exact_lse)) for v in row]
    # Subnormal results keep an absolute, not a relative, accuracy.
    np.testing.assert_allclose(
        sn.softmax(x, backend=backend)[0], exact_p, rtol=8 * 2.0**-53, atol=1e-320
    )
    np.testing.assert_allclose(
        sn.logsumexp(x, backend=backend)[0], float(exact_lse), rtol=4 * 2.0**-53, atol=1e-320
    )


def test_log_softmax_keeps_what_log_of_softmax_loses():
    x = np.array([[0.0, -800.0]])
    assert sn.log_softmax(x)[0, 1] == pytest.approx(-800.0, rel=1e-15)
    with np.errstate(divide="ignore"):
        assert np.log(sn.softmax(x))[0, 1] == -np.inf


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("backend", ENGINES)
def test_cross_entropy_values(backend, rng):
    x = rng.standard_normal((8, 5))
    t = rng.integers(0, 5, 8)
    lsm = scipy.special.log_softmax(x, axis=-1)
    per_row = -lsm[np.arange(8), t]
    np.testing.assert_allclose(sn.cross_entropy(x, t, backend=backend), per_row.mean())
    np.testing.assert_allclose(
        sn.cross_entropy(x, t, reduction="sum", backend=backend), per_row.sum()
    )
    smoothed = 0.9 * per_row + 0.1 * (-lsm.mean(-1))
    np.testing.assert_allclose(
        sn.cross_entropy(x, t, reduction="none", label_smoothing=0.1, backend=backend), smoothed
    )
    onehot = np.eye(5)[t]
    np.testing.assert_allclose(
        sn.cross_entropy(x, onehot, reduction="none", backend=backend), per_row
    )


@pytest.mark.parametrize("backend", ENGINES)
def test_cross_entropy_bad_targets(backend):
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="class index 4 is out of range"):
        sn.cross_entropy(x, np.array([0, 4, 1]), backend=backend)
    with pytest.raises(ValueError, match="class index -1"):
        sn.cross_entropy(x, np.array([0, -1, 1]), backend=backend)
    with pytest.raises(ValueError, match="must have shape"):
        sn.cross_entropy(x, np.array([0, 1]), backend=backend)
    with pytest.raises(ValueError, match="logits' shape"):
        sn.cross_entropy(x, np.zeros((3, 5)), backend=backend)
    with pytest.raises(TypeError, match="target must be"):
        sn.cross_entropy(x, np.array(["a", "b", "c"]), backend=backend)
    with pytest.raises(ValueError, match="label_smoothing"):
        sn.cross_entropy(x, np.zeros(3, int), label_smoothing=1.5, backend=backend)


@pytest.mark.parametrize("backend", ENGINES)
def test_cross_entropy_all_ignored_mean_is_nan(backend):
    loss = sn.cross_entropy(np.zeros((2, 3)), np.array([-1, -1]), ignore_index=-1, backend=backend)
    assert np.isnan(loss)
