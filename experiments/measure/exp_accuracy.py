"""Exhaustive accuracy of the kernels' vectorizable float32 ``exp``, ``log1p`` and
``atan`` (every float32 input), and large random samples of the float64 ``exp``,
softplus's ``log1p`` and ``atan``: the table ``exp_ulp.csv``.

Each result is compared with the function of the same input evaluated in float64
by the C library (for float32) or in ``np.longdouble`` (for float64), in units of
the spacing of the format at the exact value (ulp).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from softmax_numba.cpu._math import (
    _from_bits,
    atan,
    atan_array,
    exp,
    exp_array,
    log1p,
    log1p_unit_interval,
    log1p_unit_interval_array,
)

COLUMNS = [
    "function",
    "dtype",
    "inputs",
    "domain",
    "max_ulp",
    "mean_ulp",
    "worst_input",
    "mismatched_specials",
]
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 7.006492321624085e-46  # half the smallest subnormal: rounds to 0 below


def _errors_over_float32(fast, reference):
    """A parallel kernel ``(first, last, chunks) -> (worst, where, total, special,
    counted, inputs)`` over the float32 bit patterns in ``[first, last)``: ulp errors of
    ``fast`` against ``reference`` in float64 where the rounded reference is a finite
    nonzero float32; elsewhere (NaN, infinities, overflow, underflow to 0) the two
    must agree exactly, and ``special`` counts the inputs where they do not."""

    @numba.njit(parallel=True)
    def errors(first, last, chunks):
        worst = np.zeros(chunks)
        where = np.zeros(chunks, dtype=np.int64)
        total = np.zeros(chunks)
        special = np.zeros(chunks, dtype=np.int64)
        counted = np.zeros(chunks, dtype=np.int64)
        inputs = np.zeros(chunks, dtype=np.int64)
        span = last - first
        for c in prange(chunks):
            for b in range(first + c * span // chunks, first + (c + 1) * span // chunks):
                x = _from_bits(np.int32(np.int64(b) - (np.int64(1) << 32) if b >= 2**31 else b))
                if x != x:
                    continue
                inputs[c] += 1
                got = np.float64(fast(x))
                ref = reference(np.float64(x))
                if ref != ref or abs(ref) > FLOAT32_MAX or abs(ref) < FLOAT32_TINY:
                    expected = np.float64(np.float32(ref))
                    same = (got != got and ref != ref) or got == expected
                    special[c] += not same
                    continue
                _, e = math.frexp(ref)
                spacing = math.ldexp(1.0, max(e - 1, -126) - 23)
                err = abs(got - ref) / spacing
                total[c] += err
                counted[c] += 1
                if err > worst[c]:
                    worst[c] = err
                    where[c] = b
        return worst, where, total, special, counted, inputs

    return errors


FLOAT32_FUNCTIONS = {
    "exp": (exp, math.exp),
    "log1p": (log1p, math.log1p),
    "log1p_unit_interval": (log1p_unit_interval, math.log1p),
    "atan": (atan, math.atan),
}
#: The float32 bit patterns ``[first, last)`` of a function's whole domain and its
#: description: every float32 but where a function takes less (softplus's ``log1p``
#: takes ``exp(-|x|)``, in [0, 1]).
EVERY_FLOAT32 = (0, 2**32, "every float32 but NaN")
DOMAINS = {"log1p_unit_interval": (0, 0x3F800001, "every float32 in [0, 1]")}


def float32_row(function: str, first: int | None = None, last: int | None = None) -> dict:
    """Ulp errors of one float32 function over the bit patterns in ``[first, last)``
    (the function's whole domain by default)."""
    fast, reference = FLOAT32_FUNCTIONS[function]
    if first is None or last is None:
        first, last, domain = DOMAINS.get(function, EVERY_FLOAT32)
    else:
        domain = f"float32 bit patterns {first}..{last}"
    errors = _errors_over_float32(fast, reference)
    worst, where, total, special, counted, inputs = errors(first, last, 4096)
    k = int(np.argmax(worst))
    worst_input = np.int64(where[k]).astype(np.uint32).view(np.float32)
    return {
        "function": function,
        "dtype": "float32",
        "inputs": int(inputs.sum()),
        "domain": domain,
        "max_ulp": float(worst.max()),
        "mean_ulp": float(total.sum() / max(counted.sum(), 1)),  # over finite results
        "worst_input": float(worst_input),
        "mismatched_specials": int(special.sum()),
    }


def _exp_inputs(rng, samples):
    return np.concatenate([rng.uniform(-746, 710, samples // 2), rng.uniform(-5, 5, samples // 2)])


def _unit_interval_inputs(rng, samples):
    # Uniform, log-uniform down to 1e-300 (the small arguments of softplus's tail) and
    # dense around the split at 1/2.
    return np.concatenate(
        [
            rng.uniform(0, 1, samples // 2),
            10 ** rng.uniform(-300, 0, samples // 4),
            rng.uniform(0.49, 0.51, samples - samples // 2 - samples // 4),
        ]
    )


#: float64 functions measured on samples: kernel over an array, exact reference in
#: long double, inputs, and the domain's description.
FLOAT64_FUNCTIONS = {
    "exp": (exp_array, np.exp, _exp_inputs, "uniform on [-746, 710] and [-5, 5]"),
    "log1p_unit_interval": (
        log1p_unit_interval_array,
        np.log1p,
        _unit_interval_inputs,
        "uniform and log-uniform on [1e-300, 1], dense at 1/2",
    ),
    "atan": (
        atan_array,
        np.arctan,
        lambda rng, samples: np.concatenate(
            [
                rng.uniform(-5, 5, samples // 2),
                rng.choice([-1.0, 1.0], samples // 2) * 10 ** rng.uniform(-300, 300, samples // 2),
            ]
        ),
        "uniform on [-5, 5] and log-uniform in magnitude on [1e-300, 1e300]",
    ),
}


def float64_row(function: str = "exp", samples: int = 20_000_000, seed: int = 0) -> dict:
    """Ulp errors of one float64 function on ``samples`` inputs, against long double."""
    kernel, reference, inputs, domain = FLOAT64_FUNCTIONS[function]
    x = inputs(np.random.default_rng(seed), samples)
    out = np.empty_like(x)
    kernel(x, out)
    exact = reference(x.astype(np.longdouble))
    with np.errstate(over="ignore"):
        rounded = exact.astype(np.float64)
    finite = np.isfinite(rounded) & (rounded != 0)
    _, e = np.frexp(rounded[finite])
    spacing = np.ldexp(1.0, np.maximum(e - 1, -1022) - 52).astype(np.longdouble)
    ulps = np.asarray(np.abs(out[finite].astype(np.longdouble) - exact[finite]) / spacing, float)
    special = int(np.sum(np.isinf(out[~finite]) != np.isinf(rounded[~finite])))
    return {
        "function": function,
        "dtype": "float64",
        "inputs": len(x),
        "domain": domain,
        "max_ulp": float(ulps.max()),
        "mean_ulp": float(ulps.mean()),
        "worst_input": float(x[finite][np.argmax(ulps)]),
        "mismatched_specials": special,
    }


def rows(quick: bool) -> list[dict]:
    if quick:  # one binade-spanning slice of the bit patterns
        return [float32_row(f, 0x3F000000, 0x3F000000 + 2**18) for f in FLOAT32_FUNCTIONS] + [
            float64_row(f, 200_000) for f in FLOAT64_FUNCTIONS
        ]
    return [float32_row(f) for f in FLOAT32_FUNCTIONS] + [float64_row(f) for f in FLOAT64_FUNCTIONS]
