"""Properties that hold for any input (hypothesis): distributions, invariances, shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmax_numba as sn
from softmax_numba import reference, registry

ENGINES = st.sampled_from(["cpu", "parallel"])
ALGORITHMS = st.sampled_from(["shifted", "division_free", "online"])
DTYPES = st.sampled_from([np.float32, np.float64])


def arrays(dtype=np.float64, max_value=1e3, min_dims=1, max_dims=3, min_side=1):
    return hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=9),
        elements=st.floats(-max_value, max_value, allow_nan=False, width=64).map(dtype),
    )


@given(x=arrays(), algorithm=ALGORITHMS, backend=ENGINES, data=st.data())
def test_softmax_is_a_distribution_along_any_axis(x, algorithm, backend, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    p = sn.softmax(x, axis=axis, algorithm=algorithm, backend=backend)
    assert p.shape == x.shape
    assert np.all((p >= 0) & (p <= 1))
    n = x.shape[axis]
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, atol=(n + 4) * 2.0**-52)


@given(x=arrays(np.float32, max_value=50), shift=st.floats(-30, 30), backend=ENGINES)
def test_softmax_is_shift_invariant(x, shift, backend):
    shifted = (x.astype(np.float64) + shift).astype(np.float32)
    # Compare with the shift the float32 rounding actually applied.
    assume(np.all(shifted.astype(np.float64) - x == shift_of(shifted, x)))
    np.testing.assert_allclose(
        sn.softmax(shifted, backend=backend), sn.softmax(x, backend=backend), atol=2e-6
    )


def shift_of(shifted, x):
    return (shifted.astype(np.float64) - x).flat[0]


@given(x=arrays(max_value=100, min_dims=1, max_dims=1, min_side=2), backend=ENGINES)
def test_softmax_is_monotonic(x, backend):
    p = sn.softmax(x, backend=backend)
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(p[order]) >= 0)


@given(x=arrays(max_value=30, min_dims=1, max_dims=1, min_side=2), backend=ENGINES)
def test_ratios_are_exponentials_of_differences(x, backend):
    p = sn.softmax(x, backend=backend)
    i, j = int(np.argmax(x)), int(np.argmin(x))
    np.testing.assert_allclose(p[j] / p[i], np.exp(x[j] - x[i]), rtol=1e-12, atol=1e-300)


@given(x=arrays(max_value=1e4), backend=ENGINES, data=st.data())
def test_log_softmax_is_log_of_softmax_where_that_does_not_underflow(x, backend, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    y = sn.log_softmax(x, axis=axis, backend=backend)
    assert np.all(y <= 0)
    # The exact x - lse within log_softmax's bound (not x - lse in float64, which
    # loses u |lse|).
    xm, ym = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    exact = reference.log_softmax(xm.astype(np.longdouble))
    entry = registry.entries("log_softmax")[0]
    ((err, allowed),) = entry.errors((xm,), (ym,), (exact,))
    assert np.all(err <= allowed), (err, allowed)
    p = sn.softmax(x, axis=axis, backend=backend)
    big = p > 1e-300
    np.testing.assert_allclose(np.exp(y[big]), p[big], rtol=1e-12)


@given(x=arrays(max_value=100), backend=ENGINES)
def test_sparse_maps_are_distributions(x, backend):
    for func in (sn.sparsemax, sn.entmax15, sn.entmax_bisect):
        p = func(x, backend=backend)
        assert np.all(p >= 0)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)


@given(x=arrays(max_value=100), backend=ENGINES)
def test_sparsemax_support_matches_the_nonzeros(x, backend):
    p, support = sn.sparsemax(x, return_support_size=True, backend=backend)
    np.testing.assert_array_equal(support, np.count_nonzero(p, axis=-1))


@given(x=arrays(max_value=100), pool=st.sampled_from([1, 2, 3, 4, 5]), backend=ENGINES)
def test_maxout_shape_and_values(x, pool, backend):
    n = x.shape[-1] - x.shape[-1] % pool
    assume(n > 0)
    y = sn.maxout(x[..., :n], pool_size=pool, backend=backend)
    assert y.shape == (*x.shape[:-1], n // pool)
    np.testing.assert_array_equal(y, x[..., :n].reshape(*x.shape[:-1], -1, pool).max(-1))


@given(x=arrays(max_value=50), normalize=st.booleans(), backend=ENGINES)
def test_elementwise_ranges(x, normalize, backend):
    for func in (sn.sigmoid, sn.arctan, sn.gaussian):
        y = func(x, normalize=normalize, backend=backend)
        assert np.all((y >= 0) & (y <= 1))
    assert np.all(sn.softplus(x, backend=backend) >= np.maximum(x, 0))


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
@given(x=arrays(max_value=40, min_dims=1, max_dims=1, min_side=2))
def test_two_class_softmax_is_the_sigmoid_of_the_difference(backend, x):
    pair = x[:2]
    np.testing.assert_allclose(
        sn.softmax(pair, backend=backend)[0],
        sn.sigmoid(pair[0] - pair[1:], backend=backend)[0],
        rtol=1e-14,
        atol=1e-300,
    )
