"""Where each softmax formula overflows or underflows, per floating format.

Rows of ``offset + N(0, 1)`` logits are rounded to the format and pushed through
each algorithm, both in the format's own arithmetic (fp16 and bf16 simulated with
a rounding after every operation, :mod:`experiments.measure.lowprec`) and through the
package's kernels (which compute fp16 and bf16 in float32).  The table records,
per offset, the fraction of rows that come out non-finite and the error of the
others against a float64 (longdouble for fp64) reference.
"""

from __future__ import annotations

import numpy as np

from experiments.harness import inputs
from experiments.measure.lowprec import DTYPE_FORMATS, Arithmetic, Format
from softmax_numba import reference, softmax

ALGORITHMS = ("naive", "shifted", "online", "division_free")
OFFSETS = tuple(
    sorted(
        {
            s * v
            for s in (-1, 1)
            for v in (0, 1, 2, 5, 10, 11, 12, 20, 50, 88, 89, 100, 200, 500, 709, 710, 1000, 10000)
        }
    )
)
KEY = ["dtype", "arithmetic", "algorithm", "offset"]
COLUMNS = [*KEY, "n", "rows", "nonfinite_fraction", "max_error_u"]


def simulated_softmax(x: np.ndarray, algorithm: str, fmt: Format) -> np.ndarray:
    """Softmax of each row of ``x`` (values of ``fmt``) in ``fmt``'s arithmetic."""
    ar = Arithmetic(fmt)
    if algorithm == "naive":
        e = ar.exp(x)
        return ar.div(e, ar.sum(e)[:, None])
    m = x.max(axis=1)
    if algorithm == "shifted":
        e = ar.exp(ar.sub(x, m[:, None]))
        return ar.div(e, ar.sum(e)[:, None])
    if algorithm == "division_free":
        k = np.argmax(x, axis=1)
        e = ar.exp(ar.sub(x, m[:, None]))
        others = np.where(np.arange(x.shape[1]) == k[:, None], 0.0, e)
        lse = ar.add(m, ar.log1p(ar.sum(others)))
        return ar.exp(ar.sub(x, lse[:, None]))
    if algorithm == "online":
        run_m = np.full(len(x), -np.inf)
        d = np.zeros(len(x))
        for j in range(x.shape[1]):
            new_m = np.maximum(run_m, x[:, j])
            with np.errstate(invalid="ignore"):
                scale = np.where(np.isneginf(run_m), 0.0, ar.exp(ar.sub(run_m, new_m)))
            d = ar.add(ar.mul(d, scale), ar.exp(ar.sub(x[:, j], new_m)))
            run_m = new_m
        return ar.div(ar.exp(ar.sub(x, run_m[:, None])), d[:, None])
    raise ValueError(f"unknown algorithm {algorithm!r}")


def cells(dtypes=inputs.DTYPES, algorithms=ALGORITHMS, offsets=OFFSETS, n=100, rows=32):
    out = []
    for dtype in dtypes:
        arithmetics = ("simulated", "kernel") if dtype in ("float16", "bfloat16") else ("kernel",)
        for arithmetic in arithmetics:
            for algorithm in algorithms:
                for offset in offsets:
                    out.append(
                        {
                            "dtype": dtype,
                            "arithmetic": arithmetic,
                            "algorithm": algorithm,
                            "offset": float(offset),
                            "n": n,
                            "rows": rows,
                        }
                    )
    return out


def measure(cell: dict) -> dict:
    fmt = DTYPE_FORMATS[cell["dtype"]]
    rng = np.random.default_rng(7)
    z = cell["offset"] + rng.standard_normal((cell["rows"], cell["n"]))
    with np.errstate(over="ignore"):
        x = z.astype(inputs.numpy_dtype(cell["dtype"]))
    high = np.longdouble if cell["dtype"] == "float64" else np.float64
    exact = reference.softmax(x.astype(high), algorithm="shifted")
    with np.errstate(all="ignore"):
        if cell["arithmetic"] == "simulated":
            p = simulated_softmax(x.astype(np.float64), cell["algorithm"], fmt)
        else:
            p = softmax(x, algorithm=cell["algorithm"], backend="cpu").astype(np.float64)
        bad = ~np.all(np.isfinite(p), axis=1) | ~np.all(np.isfinite(exact), axis=1)
        err = np.max(np.abs(p - exact), axis=1) / np.max(exact, axis=1) / fmt.u
    good = err[~bad]
    return {
        **cell,
        "nonfinite_fraction": float(bad.mean()),
        "max_error_u": float(good.max()) if good.size else np.nan,
    }
