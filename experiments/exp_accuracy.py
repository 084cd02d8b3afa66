"""Exhaustive accuracy of the kernels' float32 ``exp`` (every float32 input), and a
large random sample for float64: the table ``exp_ulp.csv``.

Each result is compared with ``exp`` of the same input evaluated in float64 by the
C library (for float32) or in ``np.longdouble`` (for float64), in units of the
spacing of the format at the exact value (ulp).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from softmax_numba.cpu._math import _from_bits, exp, exp_array

COLUMNS = ["dtype", "inputs", "domain", "max_ulp", "mean_ulp", "worst_input", "mismatched_specials"]


@numba.njit(parallel=True, cache=True)
def _float32_errors(first, last, chunks):
    """Max and sum of ulp errors over the float32 bit patterns in ``[first, last)``."""
    worst = np.zeros(chunks)
    where = np.zeros(chunks, dtype=np.int64)
    total = np.zeros(chunks)
    special = np.zeros(chunks, dtype=np.int64)
    span = last - first
    for c in prange(chunks):
        for b in range(first + c * span // chunks, first + (c + 1) * span // chunks):
            x = _from_bits(np.int32(np.int64(b) - (np.int64(1) << 32) if b >= 2**31 else b))
            if x != x:
                continue
            got = exp(x)
            ref = math.exp(np.float64(x))
            if ref > 3.4028234663852886e38 or ref < 7.006492321624085e-46:
                if not (math.isinf(got) if ref > 3.4028234663852886e38 else got == 0.0):
                    special[c] += 1
                continue
            _, e = math.frexp(ref)
            spacing = math.ldexp(1.0, max(e - 1, -126) - 23)
            err = abs(np.float64(got) - ref) / spacing
            total[c] += err
            if err > worst[c]:
                worst[c] = err
                where[c] = b
    return worst, where, total, special


def float32_row() -> dict:
    worst, where, total, special = _float32_errors(0, 2**32, 4096)
    k = int(np.argmax(worst))
    worst_input = np.int64(where[k]).astype(np.uint32).view(np.float32)
    return {
        "dtype": "float32",
        "inputs": 2**32 - 2**24,
        "domain": "every float32 but NaN",
        "max_ulp": float(worst.max()),
        "mean_ulp": float(total.sum() / (2**32 - 2**24)),
        "worst_input": float(worst_input),
        "mismatched_specials": int(special.sum()),
    }


def float64_row(samples: int = 20_000_000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(-746, 710, samples // 2), rng.uniform(-5, 5, samples // 2)])
    out = np.empty_like(x)
    exp_array(x, out)
    exact = np.exp(x.astype(np.longdouble))
    with np.errstate(over="ignore"):
        rounded = exact.astype(np.float64)
    finite = np.isfinite(rounded) & (rounded != 0)
    _, e = np.frexp(rounded[finite])
    spacing = np.ldexp(1.0, np.maximum(e - 1, -1022) - 52).astype(np.longdouble)
    ulps = np.asarray(np.abs(out[finite].astype(np.longdouble) - exact[finite]) / spacing, float)
    special = int(np.sum(np.isinf(out[~finite]) != np.isinf(rounded[~finite])))
    return {
        "dtype": "float64",
        "inputs": len(x),
        "domain": "uniform on [-746, 710] and [-5, 5]",
        "max_ulp": float(ulps.max()),
        "mean_ulp": float(ulps.mean()),
        "worst_input": float(x[finite][np.argmax(ulps)]),
        "mismatched_specials": special,
    }


def rows(quick: bool) -> list[dict]:
    if quick:
        return [float64_row(200_000)]
    return [float32_row(), float64_row()]
