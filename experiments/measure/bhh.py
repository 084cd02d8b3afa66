"""Reproduction of Blanchard, Higham & Higham, "Accurately computing the log-sum-exp
and softmax functions", IMA J. Numer. Anal. 41(4), 2021, Section 6 (MNIST logits).

Each of the 2500 pre-softmax vectors is rounded to fp16 (and, separately, bf16) and
evaluated with every operation rounded to that format (:mod:`experiments.measure.lowprec`):

- basic: ``s = sum exp(x_i)``, ``lse = log(s)``, ``g_i = exp(x_i) / s``,
  ``h_i = exp(x_i - lse)``;
- shifted: ``a = max(x) = x_k``, ``s = sum_{i != k} exp(x_i - a)``,
  ``lse = a + log1p(s)``, ``g_i = exp(x_i - a) / (1 + s)``, ``h_i = exp(x_i - lse)``;

and compared with a float64 evaluation from the same rounded input, in units of
the format's unit roundoff, against the leading-order bounds of the paper.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import scipy.io

from experiments.measure.lowprec import BF16, FP16, Arithmetic, Format

#: The published data set, vendored with its BSD licence (LICENSE.txt beside it) so
#: that a clean clone reproduces the experiment with nothing else at hand.
DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "blanchard-higham-higham"
ALGORITHMS = (
    "lse_basic",
    "lse_shifted",
    "softmax_basic_g",
    "softmax_basic_h",
    "softmax_shifted_g",
    "softmax_shifted_h",
)


def load_logits(path: pathlib.Path | None = None) -> np.ndarray:
    """The ``(2500, 10)`` MNIST pre-softmax vectors (one row per test image)."""
    path = pathlib.Path(path) if path is not None else DATA / "data_presoftmax.mat"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the Blanchard-Higham-Higham data set ships in "
            "experiments/data/blanchard-higham-higham/ (or pass --bhh-data PATH)"
        )
    mat = scipy.io.loadmat(path, variable_names=["softmat"])
    return np.ascontiguousarray(mat["softmat"].T, dtype=np.float64)


def _exact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 log-sum-exp and softmax of each row (the reference)."""
    a = x.max(axis=1, keepdims=True)
    e = np.exp(x - a)
    s = e.sum(axis=1, keepdims=True)
    return (a + np.log(s))[:, 0], e / s


def evaluate(x64: np.ndarray, fmt: Format) -> pd.DataFrame:
    """Per-vector errors (in units of u) and bounds of every algorithm in ``fmt``."""
    ar = Arithmetic(fmt)
    x = fmt.round(x64)
    n = x.shape[1]
    lse, g = _exact(x)
    gmax = g.max(axis=1)

    # basic algorithms
    ex = ar.exp(x)
    s = ar.sum(ex)
    lse_b = ar.log(s)
    g_b = ar.div(ex, s[:, None])
    h_b = ar.exp(ar.sub(x, lse_b[:, None]))
    # shifted algorithms
    k = np.argmax(x, axis=1)
    a = x[np.arange(len(x)), k]
    ex_s = ar.exp(ar.sub(x, a[:, None]))
    others = np.where(np.arange(n) == k[:, None], 0.0, ex_s)  # drop the k-th term
    s_s = ar.sum(others)
    lse_s = ar.add(a, ar.log1p(s_s))
    g_s = ar.div(ex_s, ar.add(1.0, s_s)[:, None])
    h_s = ar.exp(ar.sub(x, lse_s[:, None]))

    u = fmt.u
    spread = np.max(np.abs(x - lse[:, None]), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = lambda got: np.abs(got - lse) / np.abs(lse) / u  # noqa: E731
        soft = lambda got: np.max(np.abs(got - g), axis=1) / gmax / u  # noqa: E731
        # (result, the intermediate whose overflow spoils it, error, bound)
        rows = {
            "lse_basic": (lse_b, s, rel(lse_b), 1 + (n + 1) / np.abs(lse)),
            "lse_shifted": (lse_s, s_s, rel(lse_s), np.abs(lse + n - x.min(1)) / np.abs(lse)),
            "softmax_basic_g": (g_b, s, soft(g_b), np.full(len(x), n + 3.0)),
            "softmax_basic_h": (h_b, lse_b, soft(h_b), np.abs(lse) + spread + n + 2),
            "softmax_shifted_g": (g_s, s_s, soft(g_s), n + 2 + 2 * (x.max(1) - x.min(1))),
            "softmax_shifted_h": (h_s, lse_s, soft(h_s), 1 + spread + np.abs(lse + n - x.min(1))),
        }
    frames = []
    for name, (value, intermediate, err, bound) in rows.items():
        # An overflow anywhere (inf in s or lse) spoils the result even where the
        # result itself is finite (exp(x - inf) = 0).
        finite = np.all(np.isfinite(np.reshape(value, (len(x), -1))), axis=1)
        finite &= np.isfinite(intermediate)
        frames.append(
            pd.DataFrame(
                {
                    "format": fmt.name,
                    "algorithm": name,
                    "vector": np.arange(len(x)),
                    "finite": finite,
                    "error_over_u": np.where(finite, err, np.nan),
                    "bound_over_u": bound,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def summarize(per_vector: pd.DataFrame) -> pd.DataFrame:
    """One row per (format, algorithm): counts of overflows (vectors whose result or
    whose ``s``/``lse`` is not finite) and of bound violations among the others."""
    groups = per_vector.groupby(["format", "algorithm"], sort=False)
    return (
        groups.apply(
            lambda d: pd.Series(
                {
                    "vectors": len(d),
                    "overflows": int((~d.finite).sum()),
                    "mean_error_over_u": float(d.error_over_u.mean()),
                    "max_error_over_u": float(d.error_over_u.max()),
                    "max_bound_over_u": float(d.bound_over_u.max()),
                    "bound_violations": int((d.finite & (d.error_over_u > d.bound_over_u)).sum()),
                }
            ),
            include_groups=False,
        )
        .reset_index()
        .astype({"vectors": int, "overflows": int, "bound_violations": int})
    )


def reproduce(data_path=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_vector, summary)`` tables for fp16 and bf16."""
    x = load_logits(data_path)
    per_vector = pd.concat([evaluate(x, fmt) for fmt in (FP16, BF16)], ignore_index=True)
    return per_vector, summarize(per_vector)
