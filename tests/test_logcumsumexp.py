"""logcumsumexp: every engine within its bound of the high-precision oracle, entry by
entry, on the scan's worst cases (a maximum that rises at every entry, rescalings,
offsets of 1e6, long rows, results near 0); the non-finite rules of
``np.logaddexp.accumulate``; the split rows, Dask chunks and the CUDA kernel with
their carries; the autograd wrapper; the peers, whose errors are reported."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import unit_roundoff
from hypothesis import given
from hypothesis import strategies as st

import softmax_numba as sn
from softmax_numba import bounds, config, reference, registry
from softmax_numba.error_metrics import as_rows

ENGINES = registry.BACKENDS
INF, NAN = np.inf, np.nan


def entry_errors(x, got, reverse=False):
    """Per entry of ``got = logcumsumexp(x)``: the error in u against the oracle
    (``reference.logcumsumexp`` in float64 for float32, ``np.longdouble`` for
    float64), relative to ``max(|y_k|, log1p(s_k))`` (``bounds.cumulative_scale``),
    and the bound in u (``bounds.logcumsumexp_entry_bound``).  Where the oracle is
    not finite the result must be the same NaN or infinity (else the error is inf);
    entries whose scale is below the smallest normal number are not scored."""
    x, got = np.asarray(x), np.asarray(got)
    if reverse:
        x, got = x[..., ::-1], got[..., ::-1]
    (exact,) = registry.oracle_args((x,))
    with np.errstate(all="ignore"):
        ref = reference.logcumsumexp(exact)
        scale = bounds.cumulative_scale((x,), (ref,), 0)
        g = got.astype(np.longdouble)
        finite = np.isfinite(ref)
        same = (g == ref) | (np.isnan(g) & np.isnan(ref))
        scored = finite & (scale >= np.finfo(got.dtype).tiny)
        err = np.where(scored, np.abs(g - np.where(finite, ref, 0)) / np.where(scored, scale, 1), 0)
        err = np.where(finite, np.where(np.isfinite(g), err, np.inf), np.where(same, 0, np.inf))
    err = as_rows(err.astype(np.float64) / unit_roundoff(got.dtype))
    return err, bounds.logcumsumexp_entry_bound(x)


def assert_within_bound(x, got, reverse=False):
    err, bound = entry_errors(x, got, reverse)
    if not np.all(err <= bound):
        row, k = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(f"entry {(row, k)}: {err[row, k]:.3g} u > bound {bound[row, k]:.3g} u")
    return float(np.max(err, initial=0))


def worst_rows(dtype) -> dict[str, np.ndarray]:
    """Rows of 4099 entries (16 blocks of the scan and a partial one)."""
    rng = np.random.default_rng(29)
    n = 4099
    far = -88.0 if dtype == np.float32 else -709.5
    rows = {
        # the maximum rises at every entry, by less than the span: never rescaled
        "increasing": np.linspace(-20.0, 30.0, n),
        # ... by 1.1 per entry: rescaled every 45 entries
        "steep": np.linspace(-300.0, 4200.0, n),
        # rises of up to 120 at random, above and below the span
        "jumps": np.cumsum(rng.uniform(-60.0, 120.0, n)),
        "decreasing": np.linspace(30.0, -20.0, n),
        "offset 1e6": 1e6 + 3.0 * rng.standard_normal(n),
        "offset -1e6": -1e6 + 3.0 * rng.standard_normal(n),
        # y_k = log(k / n) + noise: near 0 at the end, m_k < 0 cancels log1p(s_k)
        "near 0": np.log((1 + 0.1 * rng.standard_normal(n)) / n),
        # a near-certain prefix: s_k below u for 2000 entries (subnormal terms)
        "near certain": np.concatenate([[0.0], np.full(2000, far), rng.standard_normal(n - 2001)]),
        "equal terms": np.concatenate([[0.0], np.full(n - 1, np.log(0.5095))]),
    }
    return {name: row.astype(dtype)[None] for name, row in rows.items()}


WORST = list(worst_rows(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("reverse", [False, True])
def test_the_worst_rows_of_the_scan_within_the_bound(reverse, backend, dtype):
    rows = worst_rows(dtype)
    x = np.concatenate(list(rows.values()))
    if reverse:
        x = np.ascontiguousarray(x[:, ::-1])
    assert_within_bound(x, sn.logcumsumexp(x, reverse=reverse, backend=backend), reverse)


def test_the_exp_of_a_difference_corrects_its_rounding():
    """``exp(a - b)`` for float32 ``a`` near 0 and ``b`` 50 below: ``fl(a - b)`` is up
    to ``u |a - b|`` off, which ``exp`` turns into a relative error of up to 25 u; the
    two-sum's correction leaves ``exp``'s own (1 ulp) and one rounding."""
    from softmax_numba.cpu.cumulative import exp_difference

    rng = np.random.default_rng(3)
    a = rng.uniform(-0.5, 0.5, 2000).astype(np.float32)
    b = np.float32(-49.71875) + rng.uniform(0, 1e-3, 2000).astype(np.float32)
    exact = np.exp(a.astype(np.longdouble) - b.astype(np.longdouble))
    u = 2.0**-24
    plain = np.abs(np.exp(a - b) / exact - 1) / u
    fixed = np.array([exp_difference(p, q) for p, q in zip(a, b, strict=True)])
    assert np.max(plain) > 10  # what the correction removes
    assert np.max(np.abs(fixed / exact - 1) / u) <= 3
    assert exp_difference(np.float32(-np.inf), np.float32(2.0)) == 0
    assert np.isnan(exp_difference(np.float32(np.nan), np.float32(2.0)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_a_long_row_of_1e5_and_many_rows_within_the_bound(backend, dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 10**5)) * 3 + np.linspace(0, 40, 10**5)).astype(dtype)
    x[1] += 1e6
    assert_within_bound(x, sn.logcumsumexp(x, backend=backend))
    many = rng.standard_normal((300, 37)).astype(dtype)
    assert_within_bound(many, sn.logcumsumexp(many, backend=backend))


def test_the_running_sum_is_compensated():
    """Two maxima (``s = 1``), then 2^20 entries each a quarter of an ulp of 1: a plain
    running sum rounds every one away (``y`` stays ``log 2``); the two-sum keeps them,
    ``y = log(2 + 2^-6)`` at the end, within the bound."""
    n = 1 << 20
    x = np.full((1, n + 2), np.log(2.0**-26), dtype=np.float32)
    x[0, :2] = 0.0
    got = sn.logcumsumexp(x, backend="cpu")
    assert got[0, -1] > np.log(2.0) + 0.0077  # log(2 + 2^-6) = log 2 + 0.00778
    assert_within_bound(x, got)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_maximum_rising_at_every_entry_is_not_rescaled_at_every_entry(dtype):
    """``x_i = i 2^-12`` (exact): every entry is a new maximum.  Rescaling the sum at
    each rise (``s = (1 + s) exp(m - v)``, as a chain of merges does) multiplies a
    term by the same rounded ``exp(-2^-12)`` once per rise, an error that grows with
    ``k`` (155 u in float32 at ``k = 20000``, with ``RESCALE_SPAN = 0``); with the
    reference, ``E = exp(m - r)`` is computed afresh at each rise and the terms are
    never touched (1.6 u)."""
    x = (np.arange(20000) * 2.0**-12).astype(dtype)[None]
    for backend in ENGINES:
        assert_within_bound(x, sn.logcumsumexp(x, backend=backend))


def test_reverse_is_the_flipped_forward_bit_for_bit(rng):
    x = rng.standard_normal((5, 700))
    for backend in ENGINES:
        forward = sn.logcumsumexp(np.ascontiguousarray(x[:, ::-1]), backend=backend)
        np.testing.assert_array_equal(
            sn.logcumsumexp(x, reverse=True, backend=backend), forward[:, ::-1]
        )


@given(
    offset=st.floats(-1e6, 1e6),
    scale=st.sampled_from([0.1, 1.0, 3.0, 30.0]),
    n=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    backend=st.sampled_from(ENGINES),
    reverse=st.booleans(),
)
def test_within_the_bound_at_any_offset(offset, scale, n, seed, dtype, backend, reverse):
    x = (offset + scale * np.random.default_rng(seed).standard_normal((3, n))).astype(dtype)
    assert_within_bound(x, sn.logcumsumexp(x, reverse=reverse, backend=backend), reverse)


# ----------------------------------------------------------------------------- split rows


@pytest.fixture
def split_rows(monkeypatch):
    """Rows of at least 2048 entries cut into pieces on the parallel engine."""
    import numba

    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: rows are never split")
    monkeypatch.setattr(config, "SPLIT_ROW_MIN_LENGTH", 2048)
    monkeypatch.setattr(config, "SPLIT_MIN_PIECE", 256)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
def test_split_rows_carry_each_piece_in_within_the_bound(split_rows, reverse, dtype):
    """One row at a time (fewer rows than threads): its pieces' final states folded
    into carries, each piece scanned from its carry; the rescalings of ``steep`` and
    ``jumps`` and the near-certain prefix cross the pieces' borders."""
    from softmax_numba._api import split_chunks

    for name, x in worst_rows(dtype).items():
        assert split_chunks("parallel", 1, x.shape[1]) > 1
        got = sn.logcumsumexp(x, reverse=reverse, backend="parallel")
        try:
            assert_within_bound(x, got, reverse)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


# ----------------------------------------------------------------------------- non-finite

#: Each row a rule of ``np.logaddexp.accumulate`` (and ``torch.logcumsumexp``).
SPECIAL = np.array(
    [
        [NAN, 1, 2, 3, 4, 5, 6, 7],  # a NaN poisons the rest of the prefix...
        [1, 2, 3, NAN, 4, 5, 6, 7],  # ... and nothing before it
        [1, 2, INF, 3, 4, -INF, 5, 6],  # +inf from there on
        [1, INF, 2, NAN, 3, INF, 4, 5],  # NaN after +inf
        [-INF, -INF, -INF, 1, 2, -INF, 3, 4],  # leading -inf give -inf, later add nothing
        [-INF] * 8,
        [-INF, INF, -INF, 0, 1, 2, 3, 4],
        [3, 3, 3, 3, 3, 3, 3, 3],  # ties of the maximum
        [0, -40, -40, -80, -200, -700, -745, -1e4],  # a near-certain prefix
        [1e308, 1e308, -1e308, 0, 5e307, 1e308, 1e308, 1e308],  # sums beyond the range
    ]
)


def _special(dtype):
    with np.errstate(over="ignore"):
        return SPECIAL.astype(dtype)


def assert_rules(x, got):
    """The non-finite pattern of ``np.logaddexp.accumulate`` exactly; the finite
    entries within the bound (:func:`assert_within_bound`)."""
    with np.errstate(all="ignore"):
        want = np.logaddexp.accumulate(x.astype(np.float64), axis=-1)
        want = np.where(np.abs(want) > np.finfo(x.dtype).max, np.sign(want) * INF, want)
    for same in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(same(got), same(want))
    assert_within_bound(x, got)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_rules_on_every_engine(dtype):
    x = _special(dtype)
    for backend in ENGINES:
        with np.errstate(all="ignore"):
            assert_rules(x, sn.logcumsumexp(x, backend=backend))


def test_non_finite_rules_across_the_pieces_of_a_split_row(split_rows):
    """The special entries placed in different pieces: a NaN in the first poisons the
    last, a ``+inf`` holds across pieces, ``-inf`` lead through several."""
    base = np.linspace(-3.0, 3.0, 4096)
    x = np.tile(base, (1, 1))
    for place in ([(5, NAN)], [(1000, INF), (3000, NAN)], [(2500, INF)]):
        row = x.copy()
        for k, v in place:
            row[0, k] = v
        assert_rules(row, sn.logcumsumexp(row, backend="parallel"))
    row = x.copy()
    row[0, :3000] = -INF
    assert_rules(row, sn.logcumsumexp(row, backend="parallel"))


# ----------------------------------------------------------------------------- layout


def test_in_place_equals_a_new_array(rng):
    for backend in ENGINES:
        x = rng.standard_normal((6, 600))
        want = sn.logcumsumexp(x, backend=backend)
        assert sn.logcumsumexp(x, out=x, backend=backend) is x
        np.testing.assert_array_equal(x, want)
        y = rng.standard_normal((6, 600)).T  # the general path, in place along axis 0
        want = sn.logcumsumexp(y, 0, reverse=True, backend=backend)
        assert sn.logcumsumexp(y, 0, reverse=True, out=y, backend=backend) is y
        np.testing.assert_array_equal(y, want)


def test_float16_and_bfloat16_are_computed_in_float32(rng):
    from softmax_numba.error_metrics import allowed_u

    ml_dtypes = pytest.importorskip("ml_dtypes")
    for dtype in (np.float16, ml_dtypes.bfloat16):
        x = (rng.standard_normal((4, 300)) * 3).astype(dtype)
        got = sn.logcumsumexp(x)
        assert got.dtype == dtype
        err, _ = entry_errors(x.astype(np.float32), got.astype(np.float32))
        u16, u32 = unit_roundoff(dtype), 2.0**-24
        bound = allowed_u(
            lambda a, r: bounds.logcumsumexp_entry_bound(a[0]), (x.astype(np.float32),), None, dtype
        )
        assert np.all(err * u32 / u16 <= bound)


def test_integers_are_promoted_and_bad_arguments_refused():
    got = sn.logcumsumexp(np.array([0, 0, 0]))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.log([1.0, 2.0, 3.0]), rtol=1e-15)
    with pytest.raises(TypeError, match="axis must be an int"):
        sn.logcumsumexp(np.ones(3), axis=None)
    with pytest.raises(TypeError, match="reverse must be a bool"):
        sn.logcumsumexp(np.ones(3), reverse=1)
    with pytest.raises(np.exceptions.AxisError):
        sn.logcumsumexp(np.ones((2, 3)), 2)
    with pytest.raises(TypeError, match="accepts float16"):
        sn.logcumsumexp(np.ones(3, complex))


# ----------------------------------------------------------------------------- peers


def _peer_error_u(x, got) -> float:
    err, _ = entry_errors(x, np.asarray(got, dtype=x.dtype))
    return float(np.max(err[np.isfinite(err)], initial=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peers_follow_the_same_rules_and_their_errors_are_reported(dtype, record_property):
    """torch.logcumsumexp, np.logaddexp.accumulate and jax.lax.cumlogsumexp: the same
    non-finite pattern (the documented behaviour); on the worst rows ours is within
    its bound and theirs is recorded (``record_property``), not asserted."""
    torch = pytest.importorskip("torch")
    x = _special(dtype)
    with np.errstate(all="ignore"):
        ours = sn.logcumsumexp(x)
        peers = {
            "torch": torch.logcumsumexp(torch.from_numpy(x), -1).numpy(),
            "numpy": np.logaddexp.accumulate(x, axis=-1),
        }
    for name, theirs in peers.items():
        for same in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(same(theirs), same(ours), err_msg=name)
    rows = worst_rows(dtype)
    for name, row in rows.items():
        ours_u = assert_within_bound(row, sn.logcumsumexp(row))
        record_property(f"{name} ours u", ours_u)
        with np.errstate(all="ignore"):
            record_property(
                f"{name} torch u",
                _peer_error_u(row, torch.logcumsumexp(torch.from_numpy(row), -1).numpy()),
            )
            record_property(
                f"{name} numpy u", _peer_error_u(row, np.logaddexp.accumulate(row, axis=-1))
            )


def test_jax_follows_the_same_rules_in_float32(record_property):
    jax = pytest.importorskip("jax")
    x = _special(np.float32)
    with np.errstate(all="ignore"):
        ours = sn.logcumsumexp(x)
        forward = np.asarray(jax.lax.cumlogsumexp(x, axis=1))
        backward = np.asarray(jax.lax.cumlogsumexp(x, axis=1, reverse=True))
        ours_reverse = sn.logcumsumexp(x, reverse=True)
    for theirs, want in ((forward, ours), (backward, ours_reverse)):
        for same in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(same(theirs), same(want))
    for name, row in worst_rows(np.float32).items():
        record_property(f"{name} jax u", _peer_error_u(row, jax.lax.cumlogsumexp(row, axis=1)))


def test_the_oracle_agrees_with_mpmath():
    """The oracle itself (``np.longdouble``, float64 input) within 0.01 u of float64 of
    the exact values, on the worst rows (shortened) and the special ones."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 2600  # log1p(e^-745) from 1 + e^-745

    def exact(row):
        total, out = mpmath.mpf(0), []
        for v in row:
            total += mpmath.exp(mpmath.mpf(float(v)))
            out.append(mpmath.log(total) if total > 0 else mpmath.mpf("-inf"))
        return out

    rows = [r[0, :100] for r in worst_rows(np.float64).values()] + list(SPECIAL[[4, 7, 8]])
    for row in rows:
        ref = reference.logcumsumexp(row.astype(np.longdouble))
        for got, want in zip(ref, exact(row), strict=True):
            if mpmath.isinf(want):
                assert got == float(want)
                continue
            value = mpmath.mpf(np.format_float_scientific(got, unique=True))  # within 2^-64
            assert abs(value - want) <= 0.01 * 2.0**-53 * abs(want), (row[:3], got, want)


# ----------------------------------------------------------------------------- Dask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dask_scans_a_chunked_axis_within_the_bound(dtype):
    da = pytest.importorskip("dask.array")
    import dask

    from softmax_numba import dask as sd

    rows = worst_rows(dtype)
    x = np.concatenate([rows["steep"], rows["jumps"], rows["near 0"], rows["near certain"]])
    dx = da.from_array(x, chunks=(3, 700))  # both axes in several chunks
    for reverse in (False, True):
        lazy = sd.logcumsumexp(dx, reverse=reverse)
        assert lazy.chunks == dx.chunks and lazy.dtype == dtype
        (got,) = dask.compute(lazy, scheduler="synchronous")
        assert_within_bound(x, got, reverse)
    x = _special(dtype)
    with np.errstate(all="ignore"):
        (got,) = dask.compute(
            sd.logcumsumexp(da.from_array(x.T, chunks=3), 0), scheduler="synchronous"
        )
        assert_rules(x, got.T)


# ----------------------------------------------------------------------------- autograd


@pytest.mark.parametrize("reverse", [False, True])
def test_the_gradient_passes_finite_differences_in_float64(reverse):
    torch = pytest.importorskip("torch")
    from softmax_numba import torch as snt

    gen = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(3, 9, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: snt.logcumsumexp(x, 1, reverse=reverse), (x,))
    assert torch.autograd.gradcheck(lambda x: snt.logcumsumexp(x, 0, reverse=reverse), (x,))
    assert torch.autograd.gradgradcheck(lambda x: snt.logcumsumexp(x, 1, reverse=reverse), (x,))


def _exact_gradient(x, g, reverse=False):
    """``dx_i = sum_{k >= i} g_k exp(x_i - y_k)`` and its scale ``sum |g_k| exp(x_i -
    y_k)``, in ``np.longdouble`` from the oracle."""
    x, g = (np.asarray(a, dtype=np.longdouble) for a in (x, g))
    if reverse:
        x, g = x[..., ::-1], g[..., ::-1]
    y = reference.logcumsumexp(x)
    n = x.shape[-1]
    later = np.arange(n)[None, :] >= np.arange(n)[:, None]  # [i, k]: k >= i
    p = np.where(later, np.exp(x[..., :, None] - y[..., None, :]), 0)
    dx, scale = np.einsum("...ik,...k->...i", p, g), np.einsum("...ik,...k->...i", p, np.abs(g))
    return (dx[..., ::-1], scale[..., ::-1]) if reverse else (dx, scale)


@pytest.mark.parametrize("offset", [0.0, 1e6])
@pytest.mark.parametrize("reverse", [False, True])
def test_the_gradient_does_not_lose_the_offset_in_float32(offset, reverse, record_property):
    """float32 at offset 1e6: the gradient from ``x`` shifted by its row maximum keeps
    its error relative to ``sum_k |dy_k| exp(x_i - y_k)`` as at offset 0, a bound of
    the size of the row's spread, ``log n`` and ``|log|dy||`` (an exponent's absolute
    error is its term's relative error); ``torch.logcumsumexp``'s, from ``x_i - y_k``,
    is recorded."""
    torch = pytest.importorskip("torch")
    from softmax_numba import torch as snt

    rng = np.random.default_rng(7)
    x = (offset + 3 * rng.standard_normal((2, 200))).astype(np.float32)
    g = rng.standard_normal((2, 200)).astype(np.float32)
    exact, scale = _exact_gradient(x, g, reverse)
    t = torch.from_numpy(x).requires_grad_()
    (snt.logcumsumexp(t, 1, reverse=reverse) * torch.from_numpy(g)).sum().backward()
    err = np.max(np.abs(t.grad.numpy() - exact) / scale) / 2.0**-24
    z = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    magnitude = float(np.max(-z) + np.log(200) + np.max(np.abs(np.log(np.abs(g)))))
    # each exponent z + A: z (u |z|), A and the w inside it (40 u each, of their
    # size), log(dy) - w and z + A (2 u of theirs), exp (2 u): 86 u of the magnitude
    bound = 86 * magnitude + 4
    assert err <= bound, (err, bound)
    record_property("ours u", float(err))
    if not reverse:
        t = torch.from_numpy(x).requires_grad_()
        (torch.logcumsumexp(t, 1) * torch.from_numpy(g)).sum().backward()
        record_property("torch u", float(np.max(np.abs(t.grad.numpy() - exact) / scale) / 2.0**-24))


# ----------------------------------------------------------------------------- CUDA


@pytest.fixture
def tiny_cuda(monkeypatch):
    """The CUDA engine (the simulator without a GPU) with 5 threads a block, 2 blocks."""
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("no GPU and no simulator")
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 5)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 2)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cuda_scans_blocks_of_entries_with_their_carry(tiny_cuda):
    """Rows of 23 (five blocks of 5 entries): a steep rise (rescaled carries), a
    near-certain prefix and an offset, forward and reverse, within the CUDA bound;
    the special rows with the CPU's non-finite pattern."""
    x = np.stack(
        [
            np.linspace(-300.0, 700.0, 23),
            np.concatenate([[0.0], np.full(22, -700.0)]),
            1e6 + np.sin(np.arange(23.0)),
        ]
    ).astype(np.float32)
    with bounds.summation_order("cuda"):
        for reverse in (False, True):
            assert_within_bound(x, sn.logcumsumexp(x, reverse=reverse, backend="cuda"), reverse)
        special = _special(np.float32)
        got = sn.logcumsumexp(special, backend="cuda")
        want = sn.logcumsumexp(special, backend="cpu")
        for same in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(same(got), same(want))
        assert_within_bound(special, got)
