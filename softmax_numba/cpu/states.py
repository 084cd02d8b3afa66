"""Partial softmax states ``(m, d)`` of row pieces, their exact merge, and the
normalization from a merged state (Numba CPU).

A row split into pieces (Dask chunks, machines) is normalized in three steps:
each piece's state ``m = max(x)``, ``d = sum_i exp(x_i - m)`` (:data:`STATES`),
the states merged with

    m = max(m_1, m_2),    d = d_1 exp(m_1 - m) + d_2 exp(m_2 - m)

(Milakov & Gimelshein, "Online normalizer calculation for softmax",
arXiv:1805.02867, 2018, eq. (4); :data:`MERGE`), and each piece normalized on its
own: ``exp(x_i - m) / d`` (:data:`SOFTMAX`) or ``x_i - (m + log d)``
(:data:`LOG_SOFTMAX`).  The merge is exact in the sense that it computes the same
sum as one pass over the whole row, up to the rounding of each addition.

Non-finite entries are carried by the state so that the result follows the rules
of the in-memory functions (scipy's): ``m`` is the maximum over the numbers
(never NaN); ``d`` is NaN when the piece holds a NaN; for ``m = +inf``, ``d`` is 1
(``logsumexp`` gives ``+inf``, ``softmax`` NaN); for ``m = -inf`` (an empty or
all ``-inf`` piece), ``d`` is 0.  Kernels take 2-D C-contiguous ``(rows, n)``
arrays and compute in their dtype (float32 or float64).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines, jit, like
from softmax_numba.cpu._math import kernel_exp as exp
from softmax_numba.cpu._math import kernel_exp_nonpositive as exp_nonpositive
from softmax_numba.cpu.softmax import online_state


@jit
def piece_state(x):
    """``(m, d)`` of one row piece, with the conventions of the module docstring."""
    m, d = online_state(x)
    if m == np.inf:  # online_state gives NaN; 1 keeps logsumexp = +inf
        d = like(x, 1.0)
        for v in x:
            if math.isnan(v):
                d = v
                break
    return m, d


@jit
def merge_row(ms, ds):
    """Merge the states ``(ms[k], ds[k])`` of the pieces of one row into one.

    ``m = max_k m_k``, ``d = sum_k d_k exp(m_k - m)``; a piece with ``m_k = -inf``
    adds nothing (no ``0 * NaN`` from ``exp(-inf + inf)``), a NaN ``d_k`` makes
    ``d`` NaN, and ``m = +inf`` gives ``d = 1``.
    """
    m = like(ms, -np.inf)
    for k in range(ms.size):
        m = ms[k] if ms[k] > m else m
    d = like(ds, 0.0)
    nan = False
    for k in range(ms.size):
        if math.isnan(ds[k]):
            nan = True
        elif ms[k] != -np.inf and m != np.inf:
            d += ds[k] * exp(ms[k] - m)
    if m == np.inf:
        d = like(ds, 1.0)
    if nan:
        d = like(ds, np.nan)
    return m, d


def _states(x, m, d):
    """``(m[i], d[i])``: the state of row ``i`` of ``x``."""
    for i in prange(x.shape[0]):
        m[i], d[i] = piece_state(x[i])


def _merge(ms, ds, m, d):
    """Row ``i`` of ``ms``/``ds`` holds the states of the pieces of one row."""
    for i in prange(ms.shape[0]):
        m[i], d[i] = merge_row(ms[i], ds[i])


def _softmax(x, m, d, out):
    """``out_ij = exp(x_ij - m_i) / d_i`` (NaN for a row whose ``m_i`` is ``+inf``)."""
    for i in prange(x.shape[0]):
        xi, oi, mi = x[i], out[i], m[i]
        r = like(xi, 1.0) / d[i] if mi != np.inf else like(xi, np.nan)
        for j in range(xi.size):
            oi[j] = exp_nonpositive(xi[j] - mi) * r


def _log_softmax(x, m, d, out):
    """``out_ij = x_ij - (m_i + log d_i)``."""
    for i in prange(x.shape[0]):
        xi, oi = x[i], out[i]
        lse = m[i] + math.log(d[i])
        for j in range(xi.size):
            oi[j] = xi[j] - lse


def _index_grad(x, m, d, target, valid, scale, keep, floor, out):
    """Gradient of cross-entropy with class-index targets on one piece of the rows:
    ``scale (softmax(x)_ij - keep [j == target_i] - floor)``, 0 where not ``valid``;
    ``target_i`` is relative to the piece (outside ``[0, n)``: not in this piece)."""
    n = x.shape[1]
    for i in prange(x.shape[0]):
        xi, oi, mi = x[i], out[i], m[i]
        if not valid[i]:
            oi[:] = 0
            continue
        sc = like(xi, scale)
        r = sc / d[i] if mi != np.inf else like(xi, np.nan)
        fl = like(xi, floor) * sc
        for j in range(n):
            oi[j] = exp_nonpositive(xi[j] - mi) * r - fl
        t = target[i]
        if 0 <= t < n:
            oi[t] -= like(xi, keep) * sc


STATES = engines(_states)
MERGE = engines(_merge)
SOFTMAX = engines(_softmax)
LOG_SOFTMAX = engines(_log_softmax)
INDEX_GRAD = engines(_index_grad)
