"""Every registered (op, algorithm) on every engine against the NumPy oracle,
evaluated in at least twice the working precision from the same rounded input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import unit_roundoff

from softmax_numba import registry

SCALES = (1e-3, 1.0, 1e2, 1e4)

#: Allowed error in units of u, per output kind (normwise per row, see
#: ``registry.scaled_error``).  Measured worst cases on these inputs are well below;
#: a wrong formula or a float64 leak shows up as errors of order 1/u.
TOLERANCE_U = {"probability": 64, "log": 64, "elementwise": 64, "vjp": 64, "gradient": 64}


def _allowed_u(entry, kind, x):
    """Per-row allowance in units of u.  The division-free softmax ``exp(x - lse)``
    has the larger bound ``|lse| + max|x_i - lse| + n + 2`` (Blanchard, Higham &
    Higham 2021, Theorem 3.3), of order ``2 max|x|``."""
    rows = np.abs(x.reshape(int(np.prod(x.shape[:-1])), -1)).astype(np.float64)
    allowed = np.full(rows.shape[0], float(TOLERANCE_U[kind]))
    if entry.name == "softmax[division_free]" or entry.op == "sparsemax":
        # sparsemax p = x - tau: an absolute error u max|x| in tau, for p <= 1.
        allowed += 2 * np.max(rows, axis=-1, initial=0)
    if entry.name == "gaussian":
        # exp(-a) turns a relative error u in its argument a into a*u; the row's
        # largest output has the smallest a.
        allowed += np.min(rows, axis=-1, initial=0) ** 2 / 2
    return allowed


def _case(entry, dtype, shape, scale, rng):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    args = entry.arguments(x, rng)
    return x, args


def _check(entry, backend, x, args):
    u = unit_roundoff(x.dtype)
    got = registry.outputs(entry.run(args, backend=backend))
    ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    for kind, g, r in zip(entry.kinds, got, ref, strict=True):
        assert g.dtype == x.dtype or g.dtype == np.int64
        err = registry.scaled_error(kind, g, r, args) / u
        worst = np.argmax(err - _allowed_u(entry, kind, x)) if err.size else 0
        assert np.all(err <= _allowed_u(entry, kind, x)), (entry.name, kind, err[worst])


def _overflows(entry, x):
    return entry.algorithm == "naive" and np.max(np.abs(x), initial=0) > 80


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("backend", registry.BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", SCALES)
def test_matches_reference(entry, backend, dtype, scale, rng):
    x, args = _case(entry, dtype, (37, 52), scale, rng)
    if _overflows(entry, x):
        pytest.skip("the naive algorithm overflows here by design (the study measures it)")
    _check(entry, backend, x, args)


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_irregular_large_shape(entry, backend, rng):
    x, args = _case(entry, np.float32, (1823, 780 if entry.divisor > 1 else 781), 3.0, rng)
    _check(entry, backend, x, args)
