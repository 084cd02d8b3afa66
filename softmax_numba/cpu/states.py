"""Partial softmax states ``(m, s)`` of row pieces, their exact merge, and the
normalization from a merged state (Numba CPU).

A row split into pieces (Dask chunks, machines) is normalized in three steps:
each piece's state ``m = x_k = max(x)``, ``s = sum_{i != k} exp(x_i - m)``
(:data:`STATES`), the states merged with

    m = max(m_1, m_2),    s = s_1 + (1 + s_2) exp(m_2 - m_1)   (m_1 >= m_2)

(Milakov & Gimelshein, "Online normalizer calculation for softmax",
arXiv:1805.02867, 2018, eq. (4), written for ``s = d - 1`` so that a sum far below
``u`` survives; :data:`MERGE`), and each piece normalized on its own:
``exp(x_i - m) / (1 + s)`` (:data:`SOFTMAX`) or ``(x_i - m) - log1p(s)``
(:data:`LOG_SOFTMAX`).  The merge computes the same sum as one pass over the whole
row, up to the rounding of each addition.

Non-finite entries are carried by the state so that the result follows the rules
of the in-memory functions (scipy's): ``m`` is the maximum over the numbers
(never NaN); ``s`` is NaN when the piece holds a NaN; for ``m = +-inf`` (a
``+inf`` entry, or an empty or all ``-inf`` piece) ``s = 0``, so that
``m + log1p(s)`` is scipy's log-sum-exp with no special case.  Kernels take 2-D
C-contiguous ``(rows, n)`` arrays and compute in their dtype (float32 or float64).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu._math import kernel_exp_nonpositive as exp_nonpositive
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu.softmax import (
    log_probability,
    merge_state,
    online_state,
    softmax_scale,
)


@jit
def merge_row(ms, ss):
    """Merge the states ``(ms[k], ss[k])`` of the pieces of one row into one
    (:func:`~softmax_numba.cpu.softmax.merge_state`, in order)."""
    m, s = in_dtype_of(ms, -np.inf), in_dtype_of(ss, 0.0)
    for k in range(ms.size):
        m, s = merge_state(m, s, ms[k], ss[k])
    return m, s


def _states(x, m_out, s_out):
    """``(m_out[i], s_out[i])``: the state of row ``i`` of ``x``."""
    for i in prange(x.shape[0]):
        m_out[i], s_out[i] = online_state(x[i])


def _merge(ms, ss, m_out, s_out):
    """Row ``i`` of ``ms``/``ss`` holds the states of the pieces of one row."""
    for i in prange(ms.shape[0]):
        m_out[i], s_out[i] = merge_row(ms[i], ss[i])


def _softmax(x, m, s, out):
    """``out_ij = exp(x_ij - m_i) / (1 + s_i)`` (NaN for a row whose ``m_i`` is ``+inf``)."""
    for i in prange(x.shape[0]):
        xi, oi, mi = x[i], out[i], m[i]
        r = softmax_scale(mi, s[i])
        for j in range(xi.size):
            oi[j] = exp_nonpositive(xi[j] - mi) * r


def _log_softmax(x, m, s, out):
    """``out_ij = (x_ij - m_i) - log1p(s_i)``."""
    for i in prange(x.shape[0]):
        xi, oi, mi = x[i], out[i], m[i]
        log1p_s = log1p(s[i])
        for j in range(xi.size):
            oi[j] = log_probability(xi[j], mi, log1p_s)


def _index_grad(x, m, s, target, valid, scale, keep, floor, out):
    """Gradient of cross-entropy with class-index targets on one piece of the rows:
    ``scale (softmax(x)_ij - keep [j == target_i] - floor)``, 0 where not ``valid``;
    ``target_i`` is relative to the piece (outside ``[0, n)``: not in this piece)."""
    n = x.shape[1]
    for i in prange(x.shape[0]):
        xi, oi, mi = x[i], out[i], m[i]
        if not valid[i]:
            oi[:] = 0
            continue
        sc = in_dtype_of(xi, scale)
        r = sc * softmax_scale(mi, s[i])
        fl = in_dtype_of(xi, floor) * sc
        for j in range(n):
            oi[j] = exp_nonpositive(xi[j] - mi) * r - fl
        t = target[i]
        if 0 <= t < n:
            oi[t] -= in_dtype_of(xi, keep) * sc


STATES = engines(_states)
MERGE = engines(_merge)
SOFTMAX = engines(_softmax)
LOG_SOFTMAX = engines(_log_softmax)
INDEX_GRAD = engines(_index_grad)
