"""The log-domain ops are accurate relative to their result whatever the offset of
the logits, and the cases users reported stay fixed (each names what it guards)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import softmax_numba as sn
from softmax_numba import error_metrics, reference, registry

ENGINES = registry.BACKENDS
LOG_DOMAIN = [e for e in registry.ENTRIES if e.op in ("log_softmax", "logsumexp", "cross_entropy")]


@given(
    offset=st.floats(-1e6, 1e6),
    scale=st.sampled_from([0.1, 1.0, 3.0, 30.0]),
    n=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    backend=st.sampled_from(ENGINES),
    index=st.integers(0, len(LOG_DOMAIN) - 1),
)
def test_log_domain_error_is_relative_to_the_result_at_any_offset(
    offset, scale, n, seed, dtype, backend, index
):
    entry = LOG_DOMAIN[index]
    rng = np.random.default_rng(seed)
    x = (offset + scale * rng.standard_normal((3, n))).astype(dtype)
    args = entry.arguments(x, rng)
    got = registry.outputs(entry.run(args, backend=backend))
    ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    for err, allowed in entry.errors(args, got, ref):
        assert np.all(err <= allowed), (entry.name, err, allowed)


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_offsets_a_user_reported_cost_no_accuracy(backend, dtype, rng):
    """x = c + 3 z, rows of 1000: ``x - logsumexp`` lost u |lse| (7.4e4 u at c = 1e4
    in float32); the careful forms stay within a few u at every c."""
    u = error_metrics.unit_roundoff(dtype)
    z = rng.standard_normal((8, 1000))
    t = rng.integers(0, 1000, 8)
    for c in (0.0, 100.0, 1e3, 1e4, 1e6, -1e6):
        x = (c + 3 * z).astype(dtype)
        exact = x.astype(np.longdouble)
        lsm = sn.log_softmax(x, backend=backend)
        assert np.max(np.abs(lsm - reference.log_softmax(exact)) / np.abs(lsm)) < 16 * u
        loss = sn.cross_entropy(x, t, reduction="none", backend=backend)
        ref = reference.cross_entropy(exact, t, reduction="none")
        assert np.max(np.abs(loss - ref) / ref) < 16 * u


@pytest.mark.parametrize("backend", ENGINES)
def test_near_certain_rows_keep_their_log_probability(backend):
    """The largest entry's log-probability is ``-log1p(s)`` with ``s`` far below u:
    not 0 (as ``x - lse`` gives), and logsumexp keeps its ``log1p(s)`` (the numpy
    engine returned 0.0 for ``[0, -40]``)."""
    x = np.array([[0.0, -40.0], [-35.0, 5.0]])  # the max first and last
    exact = np.exp(-40.0)  # log1p(e^-40) = e^-40 (1 - e^-40 / 2 ...), to 1e-17
    top = np.array([0, 1])
    lsm = sn.log_softmax(x, backend=backend)
    np.testing.assert_allclose(lsm[[0, 1], top], -exact, rtol=1e-15)
    np.testing.assert_allclose(sn.logsumexp(x, backend=backend), [exact, 5 + exact], rtol=1e-15)
    loss = sn.cross_entropy(x, top, reduction="none", backend=backend)
    np.testing.assert_allclose(loss, exact, rtol=1e-15)
    # A vectorized row, its max last: s = 99 e^-7 must not round through 1 + s.
    row = np.append(np.full(99, -7.0), 0.0)
    exact_row = np.log1p(99 * np.exp(np.longdouble(-7.0)))
    got = sn.log_softmax(row[None], backend=backend)[0, -1]
    np.testing.assert_allclose(got, -float(exact_row), rtol=16 * 2.0**-53)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(
        sn.log_softmax(x32, backend=backend)[0, 0], -np.float32(exact), rtol=1e-6
    )


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target", ["index", "probability"])
def test_label_smoothing_does_not_overflow_on_huge_logits(backend, dtype, target, rng):
    """A row's sum of logits overflows near the largest float; the loss does not."""
    big = np.finfo(dtype).max
    x = (big * rng.uniform(0.3, 0.6, (4, 7))).astype(dtype)
    x[1] = -x[1]
    x[2, ::2] = -x[2, ::2]
    t = rng.integers(0, 7, 4)
    if target == "probability":
        t = rng.dirichlet(np.ones(7), 4).astype(dtype)
    got = sn.cross_entropy(x, t, reduction="none", label_smoothing=0.2, backend=backend)
    ref = reference.cross_entropy(x.astype(np.longdouble), t, reduction="none", label_smoothing=0.2)
    finite = np.abs(ref) <= big
    assert np.all(np.isfinite(got[finite]))
    np.testing.assert_allclose(
        got[finite], ref[finite].astype(dtype), rtol=64 * np.finfo(dtype).eps
    )


@pytest.mark.parametrize("backend", ENGINES)
def test_all_ignored_targets_give_a_nan_mean_and_a_zero_gradient(backend, rng):
    x = rng.standard_normal((5, 4))
    loss, grad = sn.cross_entropy(
        x, np.full(5, -100), ignore_index=-100, return_grad=True, backend=backend
    )
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, np.zeros_like(x))


def test_engines_agree_on_a_plus_inf_logit():
    """``-log_softmax`` with scipy's rule: NaN at the ``+inf`` entry, ``+inf`` elsewhere;
    the gradient is NaN (softmax of the row is)."""
    x = np.array([[np.inf, 1.0, 2.0], [np.inf, 1.0, 2.0]])
    t = np.array([0, 1])
    results = [
        sn.cross_entropy(x, t, reduction="none", return_grad=True, backend=b) for b in ENGINES
    ]
    for loss, grad in results:
        np.testing.assert_array_equal(loss, [np.nan, np.inf])
        assert np.isnan(grad).all()


@pytest.mark.parametrize("backend", ENGINES)
def test_softplus_is_finite_where_beta_x_overflows(backend):
    for dtype in (np.float32, np.float64):
        x = np.array([np.finfo(dtype).max / 2, 1e30, -np.finfo(dtype).max], dtype=dtype)
        got = sn.softplus(x, beta=3.0, backend=backend)
        np.testing.assert_array_equal(got, [x[0], x[1], 0])


def test_logsumexp_weights_broadcast_and_promote_as_scipy():
    scipy_special = pytest.importorskip("scipy.special")
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    for b in (np.array([1.0, 2.0, 3.0]), np.array([[1], [2]]), np.array([1, 2, 3])):
        got = sn.logsumexp(a, b=b, axis=-1)
        want = scipy_special.logsumexp(a, b=b, axis=-1)
        assert got.dtype == want.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # a broadcast against b (scipy and JAX), not only b against a.
    got = sn.logsumexp(np.float32(0.5) + np.zeros((1, 3), np.float32), b=np.ones((4, 3)))
    assert got.shape == (4,)
    with pytest.raises(ValueError, match="broadcast"):
        sn.logsumexp(a, b=np.ones(4))


@pytest.mark.parametrize("backend", ENGINES)
def test_entmax_bisect_ignores_appended_minus_inf(backend, rng):
    """``-inf`` entries never reach the support: appending them changes nothing."""
    x = rng.standard_normal((6, 37)).astype(np.float32) * 2
    padded = np.concatenate([x, np.full((6, 90), -np.inf, np.float32)], axis=1)
    for alpha in (1.5, 2.0, 3.0):
        p = sn.entmax_bisect(x, alpha=alpha, backend=backend)
        q = sn.entmax_bisect(padded, alpha=alpha, backend=backend)
        np.testing.assert_array_equal(q[:, :37], p)
        assert np.all(q[:, 37:] == 0)
