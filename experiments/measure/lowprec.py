"""Simulated low-precision arithmetic: round to a floating format after every operation.

This is the approach of Higham & Pranesh's ``chop`` (SIAM J. Sci. Comput. 41(5),
2019): compute each operation in float64, whose precision is at least twice that of
the simulated format, and round the result to the format (round to nearest, ties
to even, with the format's subnormals and its overflow to infinity).  One rounding
after each float64 operation is exact simulation for +, -, *, / and sqrt of
formats with at most 26 significant bits, and correctly rounded up to a double
rounding of ``exp`` and ``log``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Format:
    """A binary floating format: ``t`` significant bits (with the hidden bit) and
    the exponent range ``emin..emax`` of normal numbers (``1.x * 2^e``)."""

    name: str
    t: int
    emin: int
    emax: int

    @property
    def u(self) -> float:
        """Unit roundoff ``2^-t``."""
        return 2.0**-self.t

    @property
    def xmax(self) -> float:
        """The largest finite number."""
        return (2.0 - 2.0 ** (1 - self.t)) * 2.0**self.emax

    @property
    def exp_overflow(self) -> float:
        """The ``x`` above which ``exp(x)`` overflows: ``log(xmax)``."""
        return float(np.log(self.xmax))

    def round(self, x) -> np.ndarray:
        """Round float64 values to this format (returned as float64)."""
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            _, e = np.frexp(x)  # x = f * 2^e, 0.5 <= |f| < 1
            e = np.maximum(e - 1, self.emin)  # exponent of the leading bit, clamped
            quantum = np.ldexp(1.0, e - (self.t - 1))
            r = np.where(np.isfinite(x), np.round(x / quantum) * quantum, x)
            return np.where(np.abs(r) > self.xmax, np.copysign(np.inf, r), r)


FP16 = Format("fp16", t=11, emin=-14, emax=15)
BF16 = Format("bf16", t=8, emin=-126, emax=127)
FP32 = Format("fp32", t=24, emin=-126, emax=127)
FP64 = Format("fp64", t=53, emin=-1022, emax=1023)
FORMATS = {f.name: f for f in (FP16, BF16, FP32, FP64)}
#: The format of each NumPy dtype name the study uses.
DTYPE_FORMATS = {"float16": FP16, "bfloat16": BF16, "float32": FP32, "float64": FP64}


def ulp(x, fmt: Format) -> np.ndarray:
    """The spacing of ``fmt``'s numbers at ``|x|`` (``2^(e - t + 1)`` for ``x`` in
    ``[2^e, 2^(e+1))``, and the subnormal spacing below the normal range)."""
    _, e = np.frexp(np.abs(np.asarray(x, dtype=np.float64)))
    return np.ldexp(1.0, np.maximum(e - 1, fmt.emin) - (fmt.t - 1))


class Arithmetic:
    """Elementwise operations that round their result to ``fmt`` (vectorized)."""

    def __init__(self, fmt: Format):
        self.fmt = fmt
        self.r = fmt.round

    def add(self, a, b):
        return self.r(np.add(a, b))

    def sub(self, a, b):
        return self.r(np.subtract(a, b))

    def mul(self, a, b):
        return self.r(np.multiply(a, b))

    def div(self, a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.r(np.divide(a, b))

    def exp(self, a):
        with np.errstate(over="ignore"):
            return self.r(np.exp(a))

    def log(self, a):
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.r(np.log(a))

    def log1p(self, a):
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.r(np.log1p(a))

    def sum(self, a, axis=-1):
        """Recursive summation along ``axis``, rounding after every addition."""
        a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
        s = np.zeros(a.shape[:-1])
        for j in range(a.shape[-1]):
            s = self.add(s, a[..., j])
        return s
