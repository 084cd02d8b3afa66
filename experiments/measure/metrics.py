"""Error metrics of a computed result against a reference from the same rounded input."""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from experiments.measure.lowprec import Format, ulp
from softmax_numba import registry
from softmax_numba.error_metrics import scaled_error


def error_metrics(entry: registry.Entry, got, ref, args, fmt: Format) -> dict:
    """Metrics of one computation (all errors in units of the format's u).

    - ``max_error_u``: largest per-row normwise error (``scaled_error``)
      over the rows whose non-finite pattern matches the reference;
    - ``max_rel_error_u``: largest componentwise error of the first output
      (``Entry.errors``: relative to each exact entry, or to the scale the entry
      declares, entries below the underflow floor not scored); ``bound_u``: the
      largest per-row bound of the entry's analysis there; ``bound_ratio``: the
      largest error over bound of any output and row (at most 1: within the bound);
    - ``max_ulp``: largest ``|got - ref| / ulp(ref)`` over finite references;
    - ``sum_error_u``: largest ``|sum(p) - 1|`` over rows (distributions only);
    - ``max_kl``: largest ``KL(ref || p) = sum ref log(ref / p)`` over rows;
    - ``mismatched_rows``: rows with NaN or inf where the reference has none (or
      the reverse): overflow, underflow to 0/0;
    - ``nan``, ``inf``, ``zero``: counts of such outputs (``zero``: where the
      reference is positive), and ``support``: mean nonzeros per row.
    """
    got_all, ref_all = registry.outputs(got), registry.outputs(ref)
    ref_all = ref_all[: len(got_all)]  # a peer computes the first output only
    u = fmt.u
    pairs = entry.errors(args, got_all, ref_all)
    with np.errstate(invalid="ignore", divide="ignore"):
        # An exact op (bound 0, maxout) with no error is within its bound: 0, not 0/0.
        ratios = np.concatenate(
            [np.where(err == 0, 0.0, err / allowed).ravel() for err, allowed in pairs]
        )
    first_err, first_bound = pairs[0]
    errors = [
        scaled_error(kind, g, r, args)
        for kind, g, r in zip(entry.kinds, got_all, ref_all, strict=False)
    ]
    err = np.concatenate([e.ravel() for e in errors]) if errors else np.zeros(0)
    finite_err = err[np.isfinite(err)]
    g = np.asarray(got_all[0], dtype=np.float64)
    r = np.asarray(ref_all[0], dtype=np.longdouble)
    finite_ref = np.isfinite(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        ulps = np.abs(g - r.astype(np.float64)) / ulp(r.astype(np.float64), fmt)
    ulps = ulps[finite_ref & np.isfinite(g)]
    row = {
        "max_error_u": float(finite_err.max() / u) if finite_err.size else np.nan,
        "max_rel_error_u": float(first_err.max()) if first_err.size else np.nan,
        "bound_u": float(first_bound.max()) if first_bound.size else np.nan,
        "bound_ratio": float(np.nanmax(ratios)) if np.isfinite(ratios).any() else np.inf,
        "max_ulp": float(ulps.max()) if ulps.size else np.nan,
        "mismatched_rows": int(np.sum(~np.isfinite(err))),
        "nan": int(np.isnan(g).sum()),
        "inf": int(np.isinf(g).sum()),
        "zero": int(np.sum((g == 0) & (r > 0))),
        "sum_error_u": np.nan,
        "max_kl": np.nan,
        "support": np.nan,
    }
    if entry.kinds[0] == "probability" and g.ndim and g.size:
        rows = g.reshape(-1, g.shape[-1])
        ref_rows = np.asarray(r, dtype=np.float64).reshape(rows.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            sums = np.abs(rows.sum(axis=-1) - 1) / u
            kl = np.sum(xlogy(ref_rows, ref_rows) - xlogy(ref_rows, rows), axis=-1)
        row["sum_error_u"] = float(np.nanmax(sums)) if np.isfinite(sums).any() else np.nan
        row["max_kl"] = float(np.nanmax(kl)) if np.isfinite(kl).any() else np.nan
        row["support"] = float(np.mean(np.count_nonzero(rows > 0, axis=-1)))
    return row
