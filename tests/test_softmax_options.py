"""softmax, log_softmax and cross_entropy with ``temperature=`` and ``sink=``.

The registry's entries (``softmax[options]``, ``log_softmax[options]``,
``cross_entropy[temperature]``) are checked
by the generic suites on every engine; here: what the options promise beyond a
bound (NumPy's quotients, the map of the quotients, the loss's bits), per-row and
non-finite sinks, the sink's gradient, the torch wrappers and the refusals.
"""

from __future__ import annotations

import numpy as np
import pytest

from softmax_numba import (
    bounds,
    cross_entropy,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
)
from softmax_numba.cpu import softmax_options
from softmax_numba.error_metrics import componentwise_error, unit_roundoff

HOST = ("numpy", "cpu", "parallel")


def _logits(rng, dtype, shape=(6, 300)):
    x = (rng.standard_normal(shape) * 6).astype(dtype)
    x[1, ::7] = -np.inf
    x[2] += dtype(1e4)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", [0.3, 1.7])
def test_the_division_is_numpys(temperature, dtype, rng):
    """The kernels' ``x / T`` is NumPy's bit for bit, an overflow included: compiled
    without ``arcp``, each quotient is correctly rounded."""
    x = _logits(rng, dtype)
    x[3, 5] = np.finfo(dtype).max / 2  # over the largest float once divided by 0.3
    with np.errstate(over="ignore"):
        want = x / dtype(temperature)
    for engine in ("cpu", "parallel"):
        got = np.empty_like(x)
        getattr(softmax_options.DIVIDED, engine)(x, got, temperature)
        np.testing.assert_array_equal(got, want, err_msg=engine)


def _within_twice_the_bound(got, want, y, base, dtype):
    """``got`` and ``want``, two results of one formula on the rows ``y``, each within
    ``base``'s bound of the exact one: the same non-finite entries, and within twice
    the bound of each other, relative to ``want``."""
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_array_equal(got[~np.isfinite(got)], want[~np.isfinite(want)])
    err = componentwise_error(got, want.astype(np.longdouble), np.abs(want)) / unit_roundoff(dtype)
    assert (err <= 2 * base((y,))).all(), err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("temperature", [0.3, 1.7])
def test_temperature_is_the_map_of_the_quotients(temperature, backend, dtype, rng):
    """``f(x, temperature=T)`` is ``f(x / T)`` up to the order of its sums (two
    kernels, each within the bound of the exact map of the same quotients), with or
    without ``where``, an overflowed quotient included; the loss is the same kernel
    on the same quotients: the same bits."""
    x = _logits(rng, dtype)
    x[3, 5] = np.finfo(dtype).max / 2  # over the largest float once divided by 0.3
    with np.errstate(over="ignore"):
        divided = x / dtype(temperature)
    mask = rng.random(x.shape) < 0.8
    for f, base in ((softmax, bounds.SOFTMAX), (log_softmax, bounds.LOG_DOMAIN)):
        got = f(x, temperature=temperature, backend=backend)
        _within_twice_the_bound(got, f(divided, backend=backend), divided, base, dtype)
        got = f(x, temperature=temperature, where=mask, backend=backend)
        want = f(divided, where=mask, backend=backend)
        _within_twice_the_bound(got, want, divided, base, dtype)
    loss = cross_entropy(x[:, :50], np.arange(6), temperature=temperature, backend=backend)
    want = cross_entropy(divided[:, :50], np.arange(6), backend=backend)
    np.testing.assert_array_equal(loss, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_gradient_carries_one_over_t(dtype, rng):
    """The gradient with a temperature is that of the divided logits on the same
    engine, over ``T``, within three roundings (``1 / T``, its product into the
    scale, the product by it) relative to the gradient's scale."""
    x = _logits(rng, dtype, (40, 500))
    x[1] = rng.standard_normal(500)
    target = rng.integers(0, 500, 40)
    t = 0.7
    u = unit_roundoff(dtype)
    for backend in HOST:
        _, plain = cross_entropy(
            x / dtype(t), target, reduction="sum", return_grad=True, backend=backend
        )
        _, grad = cross_entropy(
            x, target, reduction="sum", return_grad=True, temperature=t, backend=backend
        )
        scale = (np.abs(plain.astype(np.longdouble)) + 1 / x.shape[1]) / t
        err = componentwise_error(grad, plain / np.longdouble(t), scale) / u
        assert np.nanmax(err) <= 3, (backend, np.nanmax(err))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_row_and_special_sinks_within_the_bound(dtype, rng):
    """A sink per row, with ``-inf`` (no sink), a sink far above and far below the
    row, ``+inf`` and NaN, beside rows that are all ``-inf`` or hold ``+inf``: every
    engine is the oracle's softmax of ``[x, c]`` within its bound, with the same
    non-finite entries."""
    x = (rng.standard_normal((8, 40)) * 4).astype(dtype)
    x[5] = -np.inf
    x[6, 3] = np.inf
    sink = np.array([-np.inf, 0.0, 60.0, -60.0, np.inf, 1.0, 0.5, np.nan], dtype=dtype)
    rows = np.concatenate([x, sink[:, None]], axis=1)
    u = unit_roundoff(dtype)
    for f, ref_f, base, extra in (
        (softmax, _reference_softmax, bounds.SOFTMAX, 4),
        (log_softmax, _reference_log_softmax, bounds.LOG_DOMAIN, 3),
    ):
        ref = ref_f(rows.astype(np.longdouble if dtype == np.float64 else np.float64))[:, :-1]
        bound = base((rows,)) + extra
        for backend in HOST:
            got = f(x, sink=sink, backend=backend)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=backend)
            finite = np.isfinite(ref)
            np.testing.assert_array_equal(got[~finite], ref[~finite].astype(dtype))
            err = componentwise_error(got, ref, np.abs(ref)) / u  # per row, relative
            assert (err <= bound).all(), (f.__name__, backend, err, bound)
    # an all -inf row beside a finite sink: all zeros, log -inf
    assert (softmax(x[5:6], sink=1.0) == 0).all()
    assert (log_softmax(x[5:6], sink=1.0) == -np.inf).all()


def _reference_softmax(z):
    from softmax_numba import reference

    return reference.softmax(z)


def _reference_log_softmax(z):
    from softmax_numba import reference

    return reference.log_softmax(z)


@pytest.mark.parametrize("backend", HOST)
def test_no_sink_is_plain_softmax(backend, rng):
    """``sink=-inf`` adds an exact 0 to the state: the plain map, up to the order of
    its sums."""
    x = _logits(rng, np.float32)
    for f, base in ((softmax, bounds.SOFTMAX), (log_softmax, bounds.LOG_DOMAIN)):
        got = f(x, sink=-np.inf, backend=backend)
        _within_twice_the_bound(got, f(x, backend=backend), x, base, np.float32)


@pytest.mark.parametrize("forward", [softmax, log_softmax])
def test_sink_gradient_matches_finite_differences(forward):
    """``return_sink_grad``: ``dc = -sum_j dx_j`` is the derivative of ``<f(x, c),
    dy>`` in ``c`` (central differences in float64, step 1e-6: error ~1e-10)."""
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((2, 4, 9))
    sink = np.array([0.3, -2.0, 2.0, 8.0])
    backward = softmax_backward if forward is softmax else log_softmax_backward
    dx, dc = backward(forward(x, sink=sink), dy, return_sink_grad=True)
    h = 1e-6

    def objective(c):
        return np.sum(forward(x, sink=c) * dy, axis=1)

    numeric = (objective(sink + h) - objective(sink - h)) / (2 * h)
    np.testing.assert_allclose(dc, numeric, rtol=0, atol=1e-8)
    numeric_x = np.empty_like(x)
    for i in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, i] = h
        numeric_x[:, i] = (
            np.sum(forward(x + e, sink=sink) * dy, 1) - np.sum(forward(x - e, sink=sink) * dy, 1)
        ) / (2 * h)
    np.testing.assert_allclose(dx, numeric_x, rtol=0, atol=1e-8)


def test_torch_wrappers_differentiate_temperature_and_sink():
    """Gradients in ``x`` and in a learnable sink (per row and scalar) pass
    ``gradcheck`` and ``gradgradcheck`` in float64, and equal torch's own softmax of
    ``[x / T, c]``."""
    torch = pytest.importorskip("torch")
    from softmax_numba import torch as snt

    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    per_row = torch.randn(4, dtype=torch.float64, requires_grad=True)
    scalar = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    for f in (snt.softmax, snt.log_softmax):
        for sink in (per_row, scalar):

            def call(x, c, f=f):
                return f(x, temperature=0.7, sink=c)

            assert torch.autograd.gradcheck(call, (x, sink))
            assert torch.autograd.gradgradcheck(call, (x, sink))
    ours = snt.log_softmax(x, temperature=0.7, sink=per_row)
    theirs = torch.log_softmax(torch.cat([x / 0.7, per_row[:, None]], 1), 1)[:, :-1]
    torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=0)


def test_bad_options_are_refused():
    x = np.zeros((2, 3))
    for bad in (0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            softmax(x, temperature=bad)
    for bad in ("2", True, [1.0]):
        with pytest.raises(TypeError, match="temperature must be a real number"):
            log_softmax(x, temperature=bad)
    with pytest.raises(ValueError, match="one value per row"):
        softmax(x, sink=np.zeros(3))
    with pytest.raises(TypeError, match="sink must be a real number"):
        softmax(x, sink="a")
    with pytest.raises(ValueError, match="run the shifted algorithm"):
        softmax(x, algorithm="naive", temperature=2.0)
    with pytest.raises(NotImplementedError, match="does not combine"):
        cross_entropy(x, np.array([0, 1]), temperature=2.0, z_loss=1e-4)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        cross_entropy(x, np.array([0, 1]), temperature=0.0)
