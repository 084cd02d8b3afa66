"""Every registered (op, algorithm) on every engine against the NumPy oracle,
evaluated in at least twice the working precision from the same rounded input.

Each output's componentwise error (``error_metrics.componentwise_error``, relative to the
scale the entry declares, by default the exact value itself) must stay within the
entry's own bound (``Entry.bounds``: a function of the row length, the dtype and the
input, from the analysis), over scales *and* offsets of the logits: softmax is
shift-invariant, and so must be the accuracy of its log-domain relatives.
"""

from __future__ import annotations

import numpy as np
import pytest

import softmax_numba as sn
from softmax_numba import bounds, error_metrics, registry

SCALES = (1e-3, 1.0, 1e2, 1e4)
#: A common offset of the logits: ``x = c + scale z``.  ``x - logsumexp(x)`` loses
#: ``u |c|`` here, the careful formulas nothing.
OFFSETS = (0.0, -30.0, 1e4)


def _case(entry, dtype, shape, scale, offset, rng):
    x = (offset + rng.standard_normal(shape) * scale).astype(dtype)
    return x, entry.arguments(x, rng)


def check_within_bounds(entry, backend, args):
    """Run ``entry`` on ``backend`` and assert every output within its bound."""
    got = registry.outputs(entry.run(args, backend=backend))
    ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    with bounds.summation_order(backend):  # the CUDA engine sums in its own order
        errors = entry.errors(args, got, ref)
    for (err, allowed), g in zip(errors, got, strict=True):
        assert g.dtype == np.asarray(args[0]).dtype or g.dtype == np.int64
        worst = int(np.argmax(err - allowed)) if err.size else 0
        assert np.all(err <= allowed), (entry.name, backend, err[worst], allowed[worst])


#: ``make test-fast`` (``-m "not slow"``) keeps the unit scale of the grid, at every
#: offset, on every entry, engine and dtype; the other scales are ``slow``.
GRID_SCALES = [s if s == 1.0 else pytest.param(s, marks=pytest.mark.slow) for s in SCALES]

#: The large irregular shape for a few cheap entries in ``make test-fast``.
FAST_LARGE = {"softmax[shifted]", "logsumexp", "maxout[pool=4]"}
LARGE_ENTRIES = [
    e if e.name in FAST_LARGE else pytest.param(e, marks=pytest.mark.slow) for e in registry.ENTRIES
]


def _overflows(entry, x):
    return entry.algorithm == "naive" and np.max(np.abs(x), initial=0) > 80


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("backend", registry.BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", GRID_SCALES)
@pytest.mark.parametrize("offset", OFFSETS)
def test_matches_reference(entry, backend, dtype, scale, offset, rng):
    x, args = _case(entry, dtype, (37, 52), scale, offset, rng)
    if _overflows(entry, x):
        pytest.skip("the naive algorithm overflows here by design (the study measures it)")
    check_within_bounds(entry, backend, args)


@pytest.mark.parametrize("entry", LARGE_ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_irregular_large_shape(entry, backend, rng):
    _, args = _case(entry, np.float32, (1823, 780 if entry.divisor > 1 else 781), 3.0, 0.0, rng)
    check_within_bounds(entry, backend, args)


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
def test_bounds_are_tighter_than_the_old_blanket_tolerance(entry, rng):
    """The bounds are the analysis', not a blanket 64 u: on rows of 52 at unit scale
    and no offset, every bound but the division-free softmax's is below 64 u."""
    _, args = _case(entry, np.float32, (4, 52), 1.0, 0.0, rng)
    ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    for bound, r in zip(entry.bounds, ref, strict=True):
        assert np.all(error_metrics.allowed_u(bound, args, r, np.float32) < 64)


EXP_LIKE_NORMALIZED = [
    e for e in registry.ENTRIES if e.name in ("sigmoid[normalized]", "softplus[normalized]")
]


@pytest.mark.parametrize("entry", EXP_LIKE_NORMALIZED, ids=lambda e: e.name)
@pytest.mark.parametrize("backend", registry.BACKENDS)
@pytest.mark.parametrize(
    ("dtype", "offset", "scale", "shape"),
    [
        (np.float32, -100.0, 3.0, (7, 52)),
        (np.float32, -1e4, 3.0, (7, 52)),
        (np.float64, -1e3, 3.0, (7, 52)),
        (np.float64, -1e4, 3.0, (7, 52)),
    ],
)
def test_normalized_maps_whose_values_underflow(entry, backend, dtype, offset, scale, shape, rng):
    """Rows far below 0, where sigmoid and softplus underflow into subnormals or to 0
    (0/0 when normalized), and rows that mix such entries with normal ones:
    normalized, they are rescaled by the row's max, so every entry keeps its digits."""
    _, args = _case(entry, dtype, shape, scale, offset, rng)
    check_within_bounds(entry, backend, args)


@pytest.mark.parametrize("entry", EXP_LIKE_NORMALIZED, ids=lambda e: e.name)
@pytest.mark.parametrize("backend", registry.BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalized_maps_on_rows_mixing_normal_and_underflowed_values(entry, backend, dtype):
    """A row whose max is some way below 0 (its sum below 1) beside entries whose map
    is subnormal: ``y_j / sum(y)`` is a normal number there, which the subnormal
    ``y_j`` cannot give to full precision (the study's float32 rows of 10 at scale
    100 lost up to 6e5 u so)."""
    edge = -np.log(np.finfo(dtype).tiny)  # where the map leaves the normal range
    x = np.array(
        [
            [-10.0, -edge - 2, -edge - 5, -edge - 9, -edge + 3, -30.0, -edge - 40],
            [-3.0, -edge - 1, -edge - 8, -1.0, -edge - 12, -edge, -np.inf],
            # a sum just below 1 (not rescaled: shifting by 16 would underflow -edge + 10)
            [16.0, -edge + 10, -edge - 50, -np.inf, -30.0, -edge + 5, -edge - 3],
        ],
        dtype=dtype,
    )
    check_within_bounds(entry, backend, (x,))


# ----------------------------------------------------------------------------- long rows

#: Vocabulary-sized rows (issue 27): a 32000-token vocabulary, Llama 3's 128256 and
#: 2^18.  The CPU kernels sum a row in blocks of ``config.SUM_BLOCK`` and add the
#: blocks' sums with a compensated addition, so the bound (``bounds.summation_bound``)
#: no longer grows with ``n``.
LONG_ROWS = (32000, 128256, 262144)


#: The log-domain family and softmax, whose ``s`` is the sum of ``n`` exponentials.
EXP_SUMS = [
    e
    for e in registry.ENTRIES
    if e.op in ("softmax", "log_softmax", "logsumexp", "cross_entropy") and e.algorithm != "naive"
]


def _long_case(entry, dtype, n, offset, rng, rows=2):
    n -= n % entry.divisor
    x = (offset + 3.0 * rng.standard_normal((rows, n))).astype(dtype)
    return entry.arguments(x, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", registry.BACKENDS)
@pytest.mark.parametrize("name", ["log_softmax", "softmax[shifted]"])
def test_a_vocabulary_row_within_the_bound(name, backend, dtype, rng):
    """The issue's case: rows of 32000 at offset 100 and scale 3, where the cpu and
    parallel engines' log_softmax was 15.9 u (float32) and 12.6 u (float64) from
    exact, summing 32000 terms in a few vector lanes."""
    entry = next(e for e in registry.ENTRIES if e.name == name)
    check_within_bounds(entry, backend, _long_case(entry, dtype, 32000, 100.0, rng, rows=4))


def _long_row_cases():
    """Every entry at the shortest and the longest of :data:`LONG_ROWS`; the sums of
    exponentials (:data:`EXP_SUMS`, the ops of a vocabulary) at every length (the
    whole grid would cost CI minutes for the same loops)."""
    for entry in registry.ENTRIES:
        for n in LONG_ROWS:
            if n in (LONG_ROWS[0], LONG_ROWS[-1]) or entry in EXP_SUMS:
                yield pytest.param(entry, n, id=f"{entry.name}-{n}")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("entry", "n"), list(_long_row_cases()))
def test_long_rows_within_the_bound(entry, n, dtype, rng):
    """Every entry on every engine at vocabulary-sized rows, offsets 0 and 100, scale 3."""
    for offset in (0.0, 100.0):
        args = _long_case(entry, dtype, n, offset, rng)
        if _overflows(entry, args[0]):
            continue
        for backend in registry.BACKENDS:
            check_within_bounds(entry, backend, args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("entry", EXP_SUMS, ids=lambda e: e.name)
@pytest.mark.parametrize(
    "n", [LONG_ROWS[0], *(pytest.param(n, marks=pytest.mark.slow) for n in LONG_ROWS[1:])]
)
def test_long_rows_of_equal_terms_within_the_bound(n, entry, dtype):
    """A row of one maximum and ``n - 1`` equal entries: every term of ``s`` is the
    same, so in a sum of one vector lane after another every rounding goes the same
    way and the error grows with ``n``, the worst case of the linear bound (a
    float32 lane of 16384 copies of 0.51 is 4000 u off).  Summed in blocks of
    ``SUM_BLOCK`` with a compensated addition of the blocks, it stays within the
    bound, which no longer grows with ``n``."""
    x = np.full((2, n), np.log(0.5095), dtype=dtype)
    x[:, 7] = 0.0
    x[1] += 100.0
    args = entry.arguments(x, np.random.default_rng(3))
    for backend in registry.BACKENDS:
        check_within_bounds(entry, backend, args)


def test_long_row_bounds_do_not_grow_with_n(rng):
    """Beyond a block, ``sigma(n)`` is a constant: on rows of zeros (no spread, no
    magnitude for a bound to grow with), no bound at ``n = 262144`` is above its
    value at ``32000`` (the linear one grew by 29000 u)."""
    assert bounds.summation_bound(262144) == bounds.summation_bound(32000)
    for entry in registry.ENTRIES:
        shorter, longer = (
            entry.arguments(np.zeros((2, n - n % entry.divisor), np.float32), rng)
            for n in (32000, 262144)
        )
        for bound in entry.bounds:
            a, b = (np.max(bound(args, None)) for args in (shorter, longer))
            assert b <= a, (entry.name, a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_the_blocks_are_added_with_compensation(backend, dtype):
    """The blocks' sums are added with a two-sum compiled without ``reassoc``
    (``softmax_numba.cpu.softmax.add_compensated``); under ``reassoc`` LLVM folds the
    compensation away.  Here a first block sums to 1 and each of the 127 others to
    a quarter of an ulp of 1: added plainly, every block rounds away (64 u lost);
    compensated, the sum is exact but for its last rounding.  ``log_softmax_backward``
    (``dy - exp(y) sum(dy)``) at ``y = 0`` shows ``sum(dy)``."""
    from softmax_numba import config

    block, blocks = config.SUM_BLOCK, 128
    quarter_ulp = float(np.finfo(dtype).eps) / 4
    dy = np.full((1, block * blocks), quarter_ulp / block, dtype=dtype)
    dy[0, :block] = 0
    dy[0, 0] = 1
    exact = 1 + (blocks - 1) * quarter_ulp
    y = np.zeros_like(dy)
    dx = sn.log_softmax_backward(y, dy, backend=backend)
    total = dy[0, 1] - dx[0, 1].astype(np.float64)  # dx_1 = dy_1 - total, exact here
    assert abs(total - exact) <= np.finfo(dtype).eps, (total - 1) / quarter_ulp
