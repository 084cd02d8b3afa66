r"""The chunked cross-entropy's CUDA kernels (``softmax_numba/gpu/chunked_losses.py``)
against their CPU twins (``cpu/chunked_losses.py``, ``cpu/linear_tiles.py``), on the
simulator when there is no GPU (``NUMBA_ENABLE_CUDASIM=1``, set in conftest).

Both engines run on the same inputs, launched through ``softmax_numba._api.run`` as
the sweep of :mod:`softmax_numba._chunked` launches them; each result is checked
against the exact one (long double) computed from the same rounded input (for the
states, the capped logits that engine wrote), within the bound below, and where both
engines do the same operations in the same order their results are compared bit for
bit.  Launches are tiny and odd (5 threads a block, 2 blocks: partial warps, a block
looping over two rows); 3 rows of 37 classes in chunks of 16 (``K = 3`` chunks, the
last of 5).

Bounds, first order, in u (``E = 4``: ``exp`` within 2 ulp, CUDA's ``expf``; ``sigma``
the chunk's :func:`softmax_numba.bounds.summation_bound` in the engine's order;
``spread`` of the row, :func:`softmax_numba.bounds.spread`), each relative to the
quantity (a sum of non-negative terms):

- ``m`` and the target's logit: exact;
- ``s``: each term's ``exp`` and its argument's rounding (``E + spread``), the chunk's
  sum (``sigma``), then per merge a rescaling (``exp`` of a difference of maxima, a
  product, a sum: ``E + 2 + spread``): ``E + spread + sigma + (E + 2 + spread)(K - 1)``;
- ``gap = sum_j w_j (m - y_j)``: a difference and a product per term (2), the sum, and
  per merge the lift ``(m - m_old) W`` (the weight sum's rounding, the difference, the
  product, two sums: 5): ``2 + sigma + 5 (K - 1)``;
- ``ent = sum_j exp(y_j - m)(m - y_j)``: per term ``E + 2 + spread``, the sum, and per
  merge ``exp(-d)(ent + d (1 + s))`` (``E + 4 + spread`` and the error of ``s``);
- the gradient ``(a p_j - c w_j - b [j = t]) slope_j``, relative to ``M_j = |a| p_j +
  |c| w_j + |b| [j = t]``: ``exp`` and its argument (``E + spread``), ``a / (1 + s)``
  (3), two products and a difference (3), the slope ``1 - (y_j / cap)^2`` (4, against
  1: ``slope + (y / cap)^2 = 1``) and its product (1), the target term (2): ``17 +
  spread``;
- soft-capping ``c tanh(z / c)``: the quotient, ``tanh`` (2 ulp, CUDA's ``tanhf``) and
  the product: 6 u relative to the result.
"""

from __future__ import annotations

import numpy as np
import pytest

from softmax_numba import bounds, config
from softmax_numba._api import run
from softmax_numba.cpu import chunked_losses as kernels
from softmax_numba.cpu import linear_tiles

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
pytestmark = [
    pytest.mark.skipif(not cuda.is_available(), reason="no GPU and no simulator"),
    # The simulator evaluates kernels on NumPy scalars, which warn where a GPU is silent.
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

ROWS, CLASSES, CHUNK = 3, 37, 16
CHUNKS = [slice(a, min(CLASSES, a + CHUNK)) for a in range(0, CLASSES, CHUNK)]
#: ``exp`` and ``tanh`` within 2 ulp (CUDA's float32 functions), in u.
EXP = 4.0
CAP = 6.0
#: The target of each row: one in the first chunk, one in the last, one ignored.
TARGETS = np.array([3, 35, -100])

#: ``(dtype, cap, weighted, want_gap, want_entropy, masked)``: every option on and off,
#: in both dtypes; ``masked``: a ``-inf`` logit in each row (an entropy term of 0).
CASES = [
    pytest.param(np.float32, 2.5, True, True, True, False, id="float32-all"),
    pytest.param(np.float64, 2.5, True, True, True, False, id="float64-all"),
    pytest.param(np.float32, 2.5, False, True, False, False, id="float32-capped-smoothed"),
    pytest.param(np.float64, 0.0, False, False, True, True, id="float64-entropy-masked"),
]


@pytest.fixture(autouse=True)
def tiny_launch(monkeypatch):
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 5)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 2)


def _u(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def _problem(dtype, masked: bool, seed: int = 5):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((ROWS, CLASSES)) * 3).astype(dtype)
    if masked:
        z[np.arange(ROWS), [7, 20, 36]] = -np.inf
    weights = rng.uniform(0.1, 2.0, CLASSES).astype(dtype)
    return z, weights


def _weight_sum(weights, part: slice, weighted: bool) -> float:
    """``sum_j w_j`` over ``part``, correctly rounded to float64 (the class count without
    weights)."""
    if not weighted:
        return float(part.stop - part.start)
    return float(np.sum(weights[part].astype(np.longdouble)))


def _empty_states(dtype, want_gap, want_entropy):
    return (
        np.full(ROWS, -np.inf, dtype),
        np.zeros(ROWS, dtype),
        np.zeros(ROWS if want_gap else 0, dtype),
        np.zeros(ROWS if want_entropy else 0, dtype),
        np.zeros(ROWS, dtype),
    )


def _fold(engine, z, weights, chunks, options, *, before: float = 0.0):
    """The states of the rows over ``chunks`` (folded in order, from empty states with
    ``before`` as the weight of what came before), and the logits as the kernel left
    them (capped in place); the CUDA chunks are device arrays, read back."""
    cap, weighted, want_gap, want_entropy = options
    states = _empty_states(z.dtype, want_gap, want_entropy)
    y = z.copy()
    done = before
    for part in chunks:
        chunk = np.ascontiguousarray(z[:, part])
        if engine == "cuda":
            chunk = cuda.to_device(chunk)
        w = weights[part] if weighted else np.empty(0, z.dtype)
        piece = _weight_sum(weights, part, weighted)
        run(
            kernels.CHUNK_STATES, engine, chunk, cap, part.start, TARGETS, w, done, piece,
            want_gap, want_entropy, *states,
        )  # fmt: skip
        y[:, part] = chunk.copy_to_host() if engine == "cuda" else chunk
        done += piece
    return states, y


def _exact_states(y, weights, classes: slice, weighted: bool):
    """``(m, s, gap, ent, picked)`` of the rows' classes ``classes`` of ``y``, in long
    double."""
    yl = y[:, classes].astype(np.longdouble)
    m = np.max(yl, axis=1, keepdims=True)
    e = np.exp(yl - m)
    s = np.sum(e, axis=1) - 1  # one maximum per row here
    w = weights[classes].astype(np.longdouble) if weighted else 1
    gap = np.sum(w * (m - yl), axis=1)
    d = m - yl
    ent = np.sum(np.where(np.isinf(d), 0, e * np.where(np.isinf(d), 0, d)), axis=1)
    inside = (TARGETS >= classes.start) & (TARGETS < classes.stop)
    picked = np.where(inside, y[np.arange(ROWS), np.where(inside, TARGETS, 0)], 0)
    return m[:, 0], s, gap, ent, picked


def _state_bounds(y, engine: str, chunks: int):
    """``(s, gap, ent)`` bounds in u per row (the module's docstring)."""
    with bounds.summation_order(engine):
        sigma = bounds.summation_bound(CHUNK)
    spread = bounds.spread(y)
    b_s = EXP + spread + sigma + (EXP + 2 + spread) * (chunks - 1)
    b_gap = 2 + sigma + 5 * (chunks - 1)
    b_ent = EXP + 2 + spread + sigma + (chunks - 1) * (EXP + 4 + spread + b_s)
    return b_s, b_gap, b_ent


def _within(got, want, bound_u, u):
    """The largest error in units of its bound (<= 1 passes); an exact 0 must be 0."""
    want = np.asarray(want, dtype=np.float64)
    err = np.abs(got.astype(np.float64) - want)
    scale = bound_u * u * np.abs(want)
    return float(np.max(np.where(err == 0, 0.0, err / np.where(scale > 0, scale, 1e-300))))


def _check_states(states, y, weights, options, engine: str, chunks: int):
    _cap, weighted, want_gap, want_entropy = options
    u = _u(y.dtype)
    m, s, gap, ent, picked = states
    rm, rs, rgap, rent, rpicked = _exact_states(y, weights, slice(0, CLASSES), weighted)
    np.testing.assert_array_equal(m, rm.astype(y.dtype))
    np.testing.assert_array_equal(picked, rpicked)
    b_s, b_gap, b_ent = _state_bounds(y, engine, chunks)
    assert _within(s, rs, b_s, u) <= 1, engine
    if want_gap:
        assert _within(gap, rgap, b_gap, u) <= 1, engine
    if want_entropy:
        assert _within(ent, rent, b_ent, u) <= 1, engine


@pytest.mark.parametrize(("dtype", "cap", "weighted", "want_gap", "want_entropy", "masked"), CASES)
def test_chunk_states_within_the_bound_as_on_the_cpu(
    dtype, cap, weighted, want_gap, want_entropy, masked
):
    """Three chunks folded into the running states, every option, a row whose target
    is ignored (its picked logit stays 0), host states copied over and back."""
    z, weights = _problem(dtype, masked)
    options = (cap, weighted, want_gap, want_entropy)
    got, y_cuda = _fold("cuda", z, weights, CHUNKS, options)
    want, y_cpu = _fold("cpu", z, weights, CHUNKS, options)
    _check_states(got, y_cuda, weights, options, "cuda", len(CHUNKS))
    _check_states(want, y_cpu, weights, options, "cpu", len(CHUNKS))
    if not cap:  # the max and the picked logit are the same entries of the same input
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[4], want[4])
    else:  # the capped logits within the cap's rounding of each other's
        exact = cap * np.tanh(z.astype(np.longdouble) / cap)
        for y in (y_cuda, y_cpu):
            assert np.all(np.abs(y - exact) <= CAP * _u(dtype) * np.abs(exact))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_merged_pieces_as_one_sweep(dtype):
    """Two pieces folded apart (as Dask's chunks) and merged by
    ``_merge_chunk_states``: the states of the whole row, within the bound of the
    three chunks, and the merge's own operations as the CPU's."""
    z, weights = _problem(dtype, masked=False, seed=11)
    options = (2.5, True, True, True)
    first, second = CHUNKS[:2], CHUNKS[2:]
    w_first = _weight_sum(weights, slice(0, first[-1].stop), True)
    w_second = _weight_sum(weights, second[0], True)
    merged = {}
    for engine in ("cpu", "cuda"):
        a, y = _fold("cpu", z, weights, first, options)
        b, y2 = _fold("cpu", z, weights, second, options)
        y[:, second[0]] = y2[:, second[0]]
        run(kernels.MERGE_CHUNK_STATES, engine, *b, w_first, w_second, True, True, *a)
        _check_states(a, y, weights, options, engine, len(CHUNKS))
        merged[engine] = a
    for k in (0, 4):  # the max and the picked logits: the same operations
        np.testing.assert_array_equal(merged["cuda"][k], merged["cpu"][k])


def _coefficients(dtype):
    """``(a, b, c)`` per row, the last row's all 0 (a row that does not count)."""
    a = np.array([1.3, 0.7, 0.0], dtype)
    b = np.array([0.9, 0.5, 0.0], dtype)
    c = np.array([0.02, 0.01, 0.0], dtype)
    return a, b, c


def _exact_gradient(y, part: slice, weights, weighted, cap, coefficients, m, s):
    """``(g, M)``: the gradient on the chunk and what its error is relative to."""
    yl = y[:, part].astype(np.longdouble)
    a, b, c = (x.astype(np.longdouble)[:, None] for x in coefficients)
    w = weights[part].astype(np.longdouble) if weighted else np.longdouble(1)
    p = np.exp(yl - m.astype(np.longdouble)[:, None]) / (1 + s.astype(np.longdouble)[:, None])
    hit = (TARGETS[:, None] - part.start) == np.arange(yl.shape[1])
    slope = 1 - (yl / cap) ** 2 if cap else np.longdouble(1)
    g = (a * p - c * w - b * hit) * slope
    return g, np.abs(a) * p + np.abs(c) * w + np.abs(b) * hit


@pytest.mark.parametrize(("dtype", "cap", "weighted", "want_gap", "want_entropy", "masked"), CASES)
def test_chunk_grad_within_the_bound(dtype, cap, weighted, want_gap, want_entropy, masked):
    """The gradient of each chunk (capped logits, the merged states of the CPU sweep),
    on both engines; a row with no coefficient gets zeros; on the device the gradient
    written over the logits (``grad`` = ``z``) is the same."""
    z, weights = _problem(dtype, masked)
    (m, s, *_), y = _fold("cpu", z, weights, CHUNKS, (cap, weighted, False, False))
    coefficients = _coefficients(dtype)
    u = _u(dtype)
    for part in CHUNKS:
        chunk = np.ascontiguousarray(y[:, part])
        w = weights[part] if weighted else np.empty(0, dtype)
        exact, magnitude = _exact_gradient(y, part, weights, weighted, cap, coefficients, m, s)
        bound = (17 + bounds.spread(y)[:, None]) * u * magnitude
        results = {}
        for engine in ("cpu", "cuda"):
            grad = np.full_like(chunk, np.nan)
            run(kernels.CHUNK_GRAD, engine, chunk, cap, part.start, TARGETS, w, *coefficients,
                m, s, grad)  # fmt: skip
            assert np.all(np.abs(grad - exact) <= bound), (engine, part)
            np.testing.assert_array_equal(grad[2], 0)
            results[engine] = grad
        on_device = cuda.to_device(chunk)
        run(kernels.CHUNK_GRAD, "cuda", on_device, cap, part.start, TARGETS, w, *coefficients,
            m, s, on_device)  # fmt: skip
        np.testing.assert_array_equal(on_device.copy_to_host(), results["cuda"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_cap_within_its_rounding(dtype):
    """``c tanh(z / c)`` out of place and in place (``out`` = ``z``, on the device)."""
    z, _ = _problem(dtype, masked=True)
    cap = 2.5
    exact = cap * np.tanh(z.astype(np.longdouble) / cap)
    out = np.full_like(z, np.nan)
    run(kernels.SOFT_CAP, "cuda", z, cap, out)
    assert np.all(np.abs(out - exact) <= CAP * _u(dtype) * np.abs(exact))
    on_device = cuda.to_device(z)
    run(kernels.SOFT_CAP, "cuda", on_device, cap, on_device)
    np.testing.assert_array_equal(on_device.copy_to_host(), out)


def test_tile_within_answers_as_the_cpu():
    """Every entry within, one entry past its row's limit, a NaN, and an entry equal to
    its limit (within), in both dtypes."""
    from softmax_numba.gpu.chunked_losses import tile_within

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        g = rng.uniform(-1, 1, (3, 13)).astype(dtype)
        limits = np.array([1.0, 1.0, 1.0], dtype)
        g[1, 4] = -1.0  # equal to its limit: within
        cases = {"within": g}
        for name, (i, j, v) in {"past": (2, 12, 1.5), "nan": (0, 7, np.nan)}.items():
            cases[name] = g.copy()
            cases[name][i, j] = v
        for name, tile in cases.items():
            want = linear_tiles.tile_within(tile, limits)
            assert tile_within(tile, limits) is want is (name == "within"), name
            assert tile_within(cuda.to_device(tile), cuda.to_device(limits)) is want, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_target_terms_as_the_cpu(dtype):
    """Rows sharing a target (their updates of ``dW_t`` in row order), targets before
    and after the chunk, an ignored row, a zero coefficient: within one rounding of the
    product and of the difference per update of the exact sum, as the CPU."""
    rng = np.random.default_rng(4)
    rows, d, start, width = 7, 11, 10, 6
    h = rng.standard_normal((rows, d)).astype(dtype)
    W = rng.standard_normal((width, d)).astype(dtype)
    dh0 = rng.standard_normal((rows, d)).astype(dtype)
    dW0 = rng.standard_normal((width, d)).astype(dtype)
    targets = np.array([12, 3, 12, 15, -100, 16, 10])
    k = np.array([0.5, 1.0, -0.25, 2.0, 1.0, 1.0, 0.0], dtype)
    results = {}
    for engine in ("cpu", "cuda"):
        dh, dW = dh0.copy(), dW0.copy()
        if engine == "cpu":
            linear_tiles.add_target_terms(dh, dW, h, W, targets, start, k)
        else:
            from softmax_numba.gpu.chunked_losses import add_target_terms

            add_target_terms(dh, dW, h, W, targets, start, k)
        results[engine] = dh, dW
    # exact, and each entry's bound: (updates + 1) u times the sum of its terms' sizes
    inside = (targets >= start) & (targets < start + width) & (k != 0)
    L = np.longdouble
    dh_exact, dW_exact = dh0.astype(L), dW0.astype(L)
    dh_size, dW_size = np.abs(dh0).astype(L), np.abs(dW0).astype(L)
    updates = np.zeros(width)
    for i in np.flatnonzero(inside):
        t = targets[i] - start
        dh_exact[i] -= L(k[i]) * W[t].astype(L)
        dW_exact[t] -= L(k[i]) * h[i].astype(L)
        dh_size[i] += np.abs(L(k[i]) * W[t])
        dW_size[t] += np.abs(L(k[i]) * h[i])
        updates[t] += 1
    u = _u(dtype)
    for dh, dW in results.values():
        assert np.all(np.abs(dh - dh_exact) <= 2 * u * dh_size)
        assert np.all(np.abs(dW - dW_exact) <= (updates[:, None] + 1) * u * dW_size)
        np.testing.assert_array_equal(dh[~inside], dh0[~inside])
        np.testing.assert_array_equal(dW[updates == 0], dW0[updates == 0])


# ----------------------------------------------------------------------------- probability targets
#: ``(dtype, cap, weighted, smoothing, want_entropy, masked)``; ``masked``: a ``-inf``
#: logit in each row where the target is 0 and there is no smoothing (``r_j = 0``: its
#: gap term is 0, not ``0 * inf``).
PROBABILITY_CASES = [
    pytest.param(np.float32, 2.5, True, 0.1, True, False, id="float32-all"),
    pytest.param(np.float64, 0.0, False, 0.0, True, True, id="float64-entropy-masked"),
    pytest.param(np.float32, 2.5, False, 0.2, False, False, id="float32-capped-smoothed"),
]
MASKED = [7, 20, 36]


def _probability_problem(dtype, masked: bool, seed: int = 6):
    """Logits and weights (:func:`_problem`) and Dirichlet(1/2) targets rounded to
    ``dtype``, read only (as :class:`~softmax_numba._chunked_probability.
    ChunkedProbabilityRows` passes them), a few entries exactly 0."""
    z, weights = _problem(dtype, masked, seed)
    rng = np.random.default_rng(seed + 1)
    q = rng.dirichlet(np.full(CLASSES, 0.5), size=ROWS)
    q[:, [1, 17, 33]] = 0.0
    if masked:
        q[np.arange(ROWS), MASKED] = 0.0
    q = q.astype(dtype)
    q.flags.writeable = False
    return z, q, weights


def _fold_probability(engine, z, q, weights, options):
    """``(m, s, gap, ent, mass)`` of the rows over :data:`CHUNKS`, and the logits as
    the kernel left them (capped in place; read back from the device)."""
    cap, weighted, smoothing, want_entropy = options
    dtype = z.dtype
    states = (
        np.full(ROWS, -np.inf, dtype),
        np.zeros(ROWS, dtype),
        np.zeros(ROWS, dtype),
        np.zeros(ROWS if want_entropy else 0, dtype),
        np.zeros(ROWS, dtype),
    )
    y = z.copy()
    for part in CHUNKS:
        chunk = np.ascontiguousarray(z[:, part])
        if engine == "cuda":
            chunk = cuda.to_device(chunk)
        w = weights[part] if weighted else np.empty(0, dtype)
        run(
            kernels.PROBABILITY_CHUNK_STATES, engine, chunk, cap, part.start, q, w,
            smoothing, CLASSES, want_entropy, *states,
        )  # fmt: skip
        y[:, part] = chunk.copy_to_host() if engine == "cuda" else chunk
    return states, y


def _exact_weights(q, weights, weighted: bool, smoothing: float):
    """``r_ij = w_j ((1 - eps) q_ij + eps / V)`` in long double."""
    L = np.longdouble
    eps = L(smoothing)
    r = (1 - eps) * q.astype(L) + eps / CLASSES
    return r * weights.astype(L) if weighted else r


def _check_probability_states(states, y, q, weights, options, engine: str):
    """``m`` exact; ``s`` and ``ent`` within :func:`_state_bounds`; ``gap`` within
    ``6 + sigma + 4 (K - 1)`` u and the mass ``R`` within ``4 + sigma + (K - 1)`` u."""
    _cap, weighted, smoothing, want_entropy = options
    u, chunks = _u(y.dtype), len(CHUNKS)
    m, s, gap, ent, mass = states
    rm, rs, _gap, rent, _picked = _exact_states(y, weights, slice(0, CLASSES), False)
    r = _exact_weights(q, weights, weighted, smoothing)
    d = rm[:, None] - y.astype(np.longdouble)
    rgap = np.sum(np.where(r == 0, 0, r * np.where(r == 0, 0, d)), axis=1)
    with bounds.summation_order(engine):
        sigma = bounds.summation_bound(CHUNK)
    b_s, _b_gap, b_ent = _state_bounds(y, engine, chunks)
    np.testing.assert_array_equal(m, rm.astype(y.dtype))
    assert _within(s, rs, b_s, u) <= 1, engine
    assert _within(gap, rgap, 6 + sigma + 4 * (chunks - 1), u) <= 1, engine
    assert _within(mass, np.sum(r, axis=1), 4 + sigma + (chunks - 1), u) <= 1, engine
    if want_entropy:
        assert _within(ent, rent, b_ent, u) <= 1, engine


@pytest.mark.parametrize(
    ("dtype", "cap", "weighted", "smoothing", "want_entropy", "masked"), PROBABILITY_CASES
)
def test_probability_chunk_states_within_the_bound_as_on_the_cpu(
    dtype, cap, weighted, smoothing, want_entropy, masked
):
    """``PROBABILITY_CHUNK_STATES``: three chunks folded on each engine, each within
    the bound of the exact states of the logits that engine capped; without a cap the
    max is the same entry on both; with one, the capped logits within its rounding."""
    z, q, weights = _probability_problem(dtype, masked)
    options = (cap, weighted, smoothing, want_entropy)
    got, y_cuda = _fold_probability("cuda", z, q, weights, options)
    want, y_cpu = _fold_probability("cpu", z, q, weights, options)
    _check_probability_states(got, y_cuda, q, weights, options, "cuda")
    _check_probability_states(want, y_cpu, q, weights, options, "cpu")
    if not cap:
        np.testing.assert_array_equal(got[0], want[0])
        assert np.all(np.isfinite(got[2])) and np.all(np.isfinite(want[2]))  # masked: no NaN
    else:
        exact = cap * np.tanh(z.astype(np.longdouble) / cap)
        assert np.all(np.abs(y_cuda - exact) <= CAP * _u(dtype) * np.abs(exact))


@pytest.mark.parametrize(
    ("dtype", "cap", "weighted", "smoothing", "want_entropy", "masked"), PROBABILITY_CASES
)
def test_probability_chunk_grad_within_the_bound(
    dtype, cap, weighted, smoothing, want_entropy, masked
):
    """``PROBABILITY_CHUNK_GRAD`` on each chunk (capped logits, the CPU sweep's merged
    states) within ``(19 + spread) u (|a| p_j + |c| r_j)`` of the exact gradient on
    both engines; a row of ``a = c = 0`` gets zeros; on the device the gradient written
    over the logits is the same."""
    z, q, weights = _probability_problem(dtype, masked)
    (m, s, *_), y = _fold_probability("cpu", z, q, weights, (cap, weighted, smoothing, False))
    a = np.array([1.0, 0.8, 0.0], dtype)  # R + 2 lambda lse, the last row's 0
    c = np.array([1.0, 0.6, 0.0], dtype)
    u = _u(dtype)
    L = np.longdouble
    r = _exact_weights(q, weights, weighted, smoothing)
    for part in CHUNKS:
        chunk = np.ascontiguousarray(y[:, part])
        w = weights[part] if weighted else np.empty(0, dtype)
        yl = y[:, part].astype(L)
        p = np.exp(yl - m.astype(L)[:, None]) / (1 + s.astype(L)[:, None])
        slope = 1 - (yl / cap) ** 2 if cap else L(1)
        al, cl = a.astype(L)[:, None], c.astype(L)[:, None]
        exact = (al * p - cl * r[:, part]) * slope
        bound = (19 + bounds.spread(y)[:, None]) * u * (np.abs(al) * p + np.abs(cl) * r[:, part])
        results = {}
        for engine in ("cpu", "cuda"):
            grad = np.full_like(chunk, np.nan)
            run(kernels.PROBABILITY_CHUNK_GRAD, engine, chunk, cap, part.start, q, w, smoothing,
                CLASSES, a, c, m, s, grad)  # fmt: skip
            assert np.all(np.abs(grad - exact) <= bound), (engine, part)
            np.testing.assert_array_equal(grad[2], 0)
            results[engine] = grad
        on_device = cuda.to_device(chunk)
        run(kernels.PROBABILITY_CHUNK_GRAD, "cuda", on_device, cap, part.start, q, w, smoothing,
            CLASSES, a, c, m, s, on_device)  # fmt: skip
        np.testing.assert_array_equal(on_device.copy_to_host(), results["cuda"])
