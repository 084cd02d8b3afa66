"""The kernels' vectorizable exp: accuracy in ulp against a correctly rounded reference."""

from __future__ import annotations

import numpy as np
import pytest

from softmax_numba.cpu._math import exp_array


def _ulps(dtype, x):
    out = np.empty_like(x)
    exp_array(x, out)
    exact = np.exp(x.astype(np.longdouble))
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = exact.astype(dtype)
        spacing = np.spacing(np.abs(rounded)).astype(np.longdouble)
        ulps = np.abs(out.astype(np.longdouble) - exact) / spacing
    return out, exact, rounded, ulps


@pytest.mark.parametrize(
    ("dtype", "lo", "hi"), [(np.float32, -110.0, 90.0), (np.float64, -750.0, 712.0)]
)
def test_at_most_one_and_a_half_ulp_on_a_dense_grid(dtype, lo, hi, rng):
    x = np.concatenate([np.linspace(lo, hi, 2_000_001), rng.uniform(-5, 5, 200_000)]).astype(dtype)
    out, _exact, rounded, ulps = _ulps(dtype, x)
    finite = np.isfinite(rounded)
    assert np.max(ulps[finite]) <= 1.5
    # Overflow and underflow exactly where the correctly rounded result does.
    np.testing.assert_array_equal(np.isinf(out), ~finite)
    np.testing.assert_array_equal(out == 0, rounded == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype)
    out = np.empty_like(x)
    exp_array(x, out)
    np.testing.assert_array_equal(out, [np.nan, np.inf, 0.0, 1.0, 1.0])
