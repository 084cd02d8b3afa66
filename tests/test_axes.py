"""Tuple axes: several axes normalized together, as ``scipy.special`` does."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sc

import softmax_numba as sn
from softmax_numba._rows import rows_of

ENGINES = ("numpy", "cpu", "parallel")
AXES = [(1, 2), (0, 3), (-1, -2), (2, 0), (0, 1, 2, 3), (1,), ()]
#: float64 results against scipy: a few ulps of the result.
RTOL = 1e-13


def _normalized(values, axis):
    return values / values.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("axis", AXES, ids=str)
def test_softmax_log_softmax_and_logsumexp_over_a_tuple_equal_scipy(axis, backend, rng):
    x = rng.standard_normal((3, 4, 5, 6)) * 4
    np.testing.assert_allclose(
        sn.softmax(x, axis=axis, backend=backend), sc.softmax(x, axis=axis), rtol=RTOL
    )
    np.testing.assert_allclose(
        sn.log_softmax(x, axis=axis, backend=backend),
        sc.log_softmax(x, axis=axis),
        rtol=RTOL,
        atol=1e-14,
    )
    for keepdims in (False, True):
        got = sn.logsumexp(x, axis=axis, keepdims=keepdims, backend=backend)
        want = sc.logsumexp(x, axis=axis, keepdims=keepdims)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL)


@pytest.mark.parametrize("axis", AXES[:3], ids=str)
def test_weighted_logsumexp_and_normalized_maps_over_a_tuple(axis, rng):
    x = rng.standard_normal((3, 4, 5, 6))
    b = rng.uniform(0.5, 2.0, size=(5, 6))
    got, sign = sn.logsumexp(x, axis=axis, b=b, return_sign=True)
    want, want_sign = sc.logsumexp(x, axis=axis, b=b, return_sign=True)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    np.testing.assert_array_equal(sign, want_sign)
    np.testing.assert_allclose(
        sn.sigmoid(x, axis=axis, normalize=True), _normalized(sc.expit(x), axis), rtol=RTOL
    )
    np.testing.assert_allclose(
        sn.gaussian(x, axis=axis, normalize=True), _normalized(np.exp(-x * x / 2), axis), rtol=RTOL
    )


def test_backward_ops_over_a_tuple(rng):
    x = rng.standard_normal((3, 4, 5))
    dy = rng.standard_normal(x.shape)
    y = sn.softmax(x, axis=(0, 2))
    want = y * (dy - (y * dy).sum(axis=(0, 2), keepdims=True))
    np.testing.assert_allclose(sn.softmax_backward(y, dy, axis=(0, 2)), want, rtol=1e-12)
    logy = sn.log_softmax(x, axis=(0, 2))
    want = dy - np.exp(logy) * dy.sum(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(sn.log_softmax_backward(logy, dy, axis=(0, 2)), want, rtol=1e-12)


def test_trailing_axes_of_a_contiguous_array_are_a_view_not_a_copy(rng):
    x = rng.standard_normal((3, 4, 5))
    assert np.shares_memory(rows_of(x, (1, 2), "softmax", multiple=True).data, x)
    # axes that are not adjacent in memory are gathered into one copy
    assert not np.shares_memory(rows_of(x, (0, 2), "softmax", multiple=True).data, x)


@pytest.mark.parametrize("axis", [(1, 2), (0, 2)], ids=str)
def test_out_over_a_tuple_is_written_and_returned(axis, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    out = np.empty_like(x)
    assert sn.softmax(x, axis=axis, out=out) is out
    np.testing.assert_array_equal(out, sn.softmax(x, axis=axis))
    np.testing.assert_allclose(out.sum(axis=axis), 1.0, rtol=1e-6)


def test_empty_tuple_makes_each_entry_its_own_group(rng):
    x = rng.standard_normal((2, 3))
    np.testing.assert_array_equal(sn.softmax(x, axis=()), np.ones_like(x))
    np.testing.assert_array_equal(sn.logsumexp(x, axis=()), x)


@pytest.mark.parametrize(
    ("axis", "error", "match"),
    [
        ((1, 1), ValueError, "repeats"),
        ((0, -3), ValueError, "repeats"),
        ((0, 3), np.exceptions.AxisError, "out of bounds"),
        ((0, 1.0), TypeError, "tuple of ints"),
        ([0, 1], TypeError, "tuple of ints"),
    ],
    ids=str,
)
def test_bad_tuples_are_clear_errors(axis, error, match):
    with pytest.raises(error, match=match):
        sn.softmax(np.ones((2, 3, 4)), axis=axis)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: sn.cross_entropy(x, np.zeros((2,), dtype=np.int64), axis=(1, 2)),
        lambda x: sn.maxout(x, pool_size=2, axis=(1, 2)),
        lambda x: sn.sparsemax(x, axis=(1, 2)),
        lambda x: sn.entmax15(x, axis=(1, 2)),
    ],
    ids=["cross_entropy", "maxout", "sparsemax", "entmax15"],
)
def test_ops_along_one_axis_refuse_a_tuple(call):
    with pytest.raises(TypeError, match="tuple"):
        call(np.ones((2, 4, 4)))
