"""How a result's error is measured: componentwise against a scale, in units of u.

The tests and the study judge every output the same way: per row, the largest
``|got_i - ref_i| / scale_i`` over the entries that are scored, divided by the unit
roundoff ``u`` of the result's dtype, against a bound in units of u
(:mod:`softmax_numba.bounds`).  ``ref`` is the exact value, computed from the same
rounded input in higher precision (:func:`softmax_numba.registry.oracle_args`).
"""

from __future__ import annotations

import numpy as np


def as_rows(a) -> np.ndarray:
    """``a`` as a 2-D ``(rows, n)`` array along its last axis (a scalar: one row of 1)."""
    a = np.asarray(a)
    return a.reshape(int(np.prod(a.shape[:-1], dtype=np.int64)), a.shape[-1] if a.ndim else 1)


def unit_roundoff(dtype) -> float:
    """``u`` of a floating dtype (bfloat16: 2^-8)."""
    dtype = np.dtype(dtype)
    return 2.0**-8 if dtype.name == "bfloat16" else float(np.finfo(dtype).eps) / 2


def allowed_u(bound, args, ref, dtype) -> np.ndarray:
    """The per-row bound in units of the result dtype's u.  float16 and bfloat16
    are computed in float32 and rounded once: ``1 + bound_32 u_32 / u``."""
    dtype = np.dtype(dtype)
    b = np.asarray(bound(args, ref), dtype=np.float64)
    if dtype in (np.float32, np.float64):
        return b
    return 1 + b * 2.0**-24 / unit_roundoff(dtype)


def componentwise_error(got, ref, scale) -> np.ndarray:
    """Per row, ``max_i |got_i - ref_i| / scale_i`` over the entries whose scale is at
    least the smallest normal number of ``got``'s dtype (below it, results are
    subnormal and not scored); divide by u for units of u.

    Where the reference is not finite in ``got``'s dtype (an exact value beyond the
    largest float rounds to an infinity), or finite but below that floor, the
    result must still match its kind: the same NaN or infinity, or a finite number.
    A row that does not is ``inf``.
    """
    dtype = np.asarray(got).dtype
    tiny = 2.0**-126 if dtype.name == "bfloat16" else float(np.finfo(dtype).tiny)
    big = 3.3895313892515355e38 if dtype.name == "bfloat16" else float(np.finfo(dtype).max)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.longdouble), np.shape(ref))
    got = as_rows(np.asarray(got, dtype=np.longdouble))
    ref = as_rows(np.asarray(ref, dtype=np.longdouble))
    # Round to the dtype's range (not precision): overflow is the correct result there.
    with np.errstate(invalid="ignore"):
        ref = np.where(np.abs(ref) > big, np.sign(ref) * np.inf, ref)
    scale = as_rows(scale)
    if got.shape != ref.shape:
        raise ValueError(f"result shape {got.shape} != reference shape {ref.shape}")
    finite = np.isfinite(ref)
    matches = np.where(finite, np.isfinite(got), (got == ref) | (np.isnan(got) & np.isnan(ref)))
    scored = finite & np.isfinite(scale) & (scale >= tiny)
    with np.errstate(invalid="ignore"):
        ratio = np.where(
            scored, np.abs(got - np.where(finite, ref, 0)) / np.where(scored, scale, 1), 0
        )
    err = np.max(ratio, axis=-1, initial=0)
    return np.where(np.all(matches, axis=-1), err, np.inf).astype(np.float64)


def scaled_error(kind: str, got, ref, args) -> np.ndarray:
    """Per-row error ``max_i |got_i - ref_i| / scale`` of a result computed along the
    last axis of ``args[0]``; divide by the unit roundoff to get units of u.

    ``scale`` is the row's largest finite ``|ref_i|``, raised to

    - ``"log"``: the row's largest finite ``|x_i|`` (``x = args[0]``), since a
      log-space result carries an absolute error of order ``u max|x|``;
    - ``"gradient"``: 1, the size of the terms of ``softmax - target``;
    - ``"vjp"``: the row's ``sum |dy_i|`` (``dy = args[1]``), the size of the terms
      that a vector-Jacobian product cancels;

    and never below the smallest normal number of ``got``'s dtype (results that
    underflow may lose their subnormal digits).  Where the reference is not finite
    the result must match it exactly (NaN for NaN, the same infinity), else the
    row's error is inf.
    """
    x = np.asarray(args[0])
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    dtype = np.asarray(got).dtype
    # bfloat16 (ml_dtypes) has float32's exponent range, and no np.finfo.
    tiny = 2.0**-126 if dtype.name == "bfloat16" else float(np.finfo(dtype).tiny)
    got = np.asarray(got, dtype=np.longdouble)
    ref = np.asarray(ref, dtype=np.longdouble)
    if got.shape != ref.shape:
        raise ValueError(f"result shape {got.shape} != reference shape {ref.shape}")
    if got.size == 0:
        return np.zeros(rows)
    got, ref = got.reshape(rows, -1), ref.reshape(rows, -1)
    finite = np.isfinite(ref)
    matches = np.where(finite, True, (got == ref) | (np.isnan(got) & np.isnan(ref)))
    diff = np.abs(np.where(finite, got - np.where(finite, ref, 0), 0))
    scale = np.max(np.where(finite, np.abs(ref), 0), axis=-1)
    if kind in ("log", "vjp"):
        a = np.abs(np.asarray(args[0] if kind == "log" else args[1], dtype=np.longdouble))
        a = np.where(np.isfinite(a), a, 0).reshape(rows, -1)
        scale = np.maximum(scale, np.max(a, -1, initial=0) if kind == "log" else np.sum(a, -1))
    if kind == "gradient":
        scale = np.maximum(scale, 1)
    with np.errstate(invalid="ignore"):
        err = np.max(diff, axis=-1) / np.maximum(scale, tiny)
    return np.where(np.all(matches, axis=-1), err, np.inf).astype(np.float64)
