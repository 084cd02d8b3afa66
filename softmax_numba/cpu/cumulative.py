r"""The cumulative log-sum-exp of rows (Numba CPU): ``y_k = log sum_{i <= k} exp(x_i)``.

Kernels take 2-D C-contiguous ``(rows, n)`` arrays and compute in their dtype
(float32 or float64); ``reverse`` scans each row from its end (``y_k = log
sum_{i >= k} exp(x_i)``).

Each ``y_k`` is formed from the state of the prefix, as every log-domain result of
the package (:mod:`softmax_numba.state_algebra`): ``m_k = max_{i <= k} x_i``, an
entry, and ``s_k = sum_{i <= k, i != j} exp(x_i - m_k)`` (``j`` one maximum), so that

.. math:: y_k = m_k + \operatorname{log1p}(s_k)

is a sum of two terms whose error is relative to ``y_k`` whatever the offset of
``x`` (Blanchard, Higham & Higham, "Accurately computing the log-sum-exp and
softmax functions", IMA J. Numer. Anal. 41(4), 2021, Alg. 2.2).

The scan (:func:`scan_step`) keeps the sum relative to a *reference* ``r <= m``, an
earlier maximum, rather than to ``m`` itself: ``T = sum exp(x_i - r)`` over the
entries seen but one maximum, with ``E = exp(m - r)``, so that ``s = T / E``.  A rise
of the maximum adds the old maximum's ``E`` to ``T`` and computes a new ``E``; it
rescales nothing.  Only when the maximum rises more than :data:`RESCALE_SPAN` above
``r`` are ``T`` rescaled and ``r`` moved to it (as ``softmax_numba.cpu.softmax.
fold_state``).  A rescaling at every rise, ``s = (1 + s) exp(m - v)``, would round
each term once per rise: on an increasing row the error of ``s_k`` would grow with
``k``.  Here a term is rescaled at most twice while it matters.  ``T`` is a
compensated (two-sum) running sum (``softmax_numba.cpu.softmax.add_compensated``),
within ``2 u`` of the exact sum of its terms at every ``k``: a recursive prefix sum
would be ``(k - 1) u`` off.  Every ``exp`` is of a difference whose rounding is
corrected (:func:`exp_difference`): a term 50 above the reference would otherwise
carry ``50 u``.  The bound, ``softmax_numba.bounds.CUMULATIVE_SCAN`` u relative to
``max(|y_k|, log1p(s_k))``, depends on neither the offset, the spread nor ``k``.

A row is scanned a block of :data:`SCAN_BLOCK` entries at a time (:func:`scan_row`):
the block copied into scratch in the order of the scan, its terms ``exp(x_i - r)``
(vectorized, while ``r`` stays; where an entry moves ``r``, the rest of the block
computes its terms in the scan), the scan itself, which stores ``s_k = T_k / E_k``
and ``m_k``, then ``m_k + log1p(s_k)`` written back (vectorized).

Non-finite entries follow ``np.logaddexp.accumulate`` and ``torch.logcumsumexp``: a
NaN makes ``y`` NaN from there on; a ``+inf`` makes it ``+inf`` from there on (NaN
after a later NaN); leading ``-inf`` entries give ``-inf``, later ones add nothing.

The parallel engine runs rows in parallel.  A row in pieces (a few long rows on the
parallel engine, a Dask chunk) is scanned in two passes, by the kernels of
:mod:`softmax_numba.cpu.cumulative_chunks`: each piece's final state
(:func:`scan_state`), the states folded in order into each piece's carry-in
(:func:`carry_states`), then each piece scanned from its carry.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from softmax_numba import config
from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu._math import kernel_exp as exp
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu.softmax import add_compensated

#: How far the maximum may rise above the reference ``r`` of the running sum before
#: the sum is rescaled to it: the terms stay below ``e^RESCALE_SPAN``, so that ``n``
#: of them stay far below the largest float32, and a term rescaled twice is below
#: ``e^-RESCALE_SPAN`` of the maximum's own 1 (as ``softmax_numba.cpu.softmax``'s).
RESCALE_SPAN = 50.0

#: Entries per block of the scan: the block's terms and results stay in L1.
SCAN_BLOCK = 256


# --------------------------------------------------------------------------- the scan


@jit(reassociate=False)
def exp_difference(a, b):
    """``exp(a - b)`` with the rounding of ``a - b`` corrected: ``a - b = d + e``
    exactly (Knuth's two-sum), and ``exp(a - b) = exp(d) (1 + e)`` to first order.
    ``exp(d)`` alone would carry the relative error ``u |a - b|``, up to ``50 u`` for
    a term against a reference 50 below the maximum.  ``e`` is 0 where ``d`` is not
    finite (``-inf`` gives 0, NaN gives NaN).  Compiled without ``reassoc``, which
    would fold ``e`` to 0 (flags are per instruction: they survive inlining)."""
    d = a - b
    virtual = d - a
    e = (a - (d - virtual)) + (-b - virtual)
    e = e if e == e else in_dtype_of(e, 0.0)
    t = exp(d)
    return t + t * e


@jit(reassociate=False)
def terms_into(values, r, terms):
    """``terms[k] = exp(values[k] - r)`` by :func:`exp_difference`, in one vectorized
    loop (without ``reassoc``, as that function, and so never inlined: a call per
    block)."""
    zero = in_dtype_of(r, 0.0)
    for k in range(values.size):
        a = values[k]
        d = a - r
        virtual = d - a
        e = (a - (d - virtual)) + (-r - virtual)
        e = e if e == e else zero
        t = exp(d)
        terms[k] = t + t * e


@jit
def scan_start(x, m0, s0):
    """The scan's state ``(m, r, T, C, E, inv)`` carrying in the state ``(m0, s0)`` of
    what comes before (``m0 = -inf``, ``s0 = 0``: nothing; ``s0`` NaN: a NaN).

    ``m`` is the maximum so far, ``r`` the reference, ``T + C`` the compensated sum of
    ``exp(x_i - r)`` over the entries so far but one maximum, ``E = exp(m - r)`` and
    ``inv = 1 / E``.  While ``m`` is not finite, ``inv = 0``, so that ``s = (T + C)
    inv`` is 0, or NaN after a NaN."""
    zero, one = in_dtype_of(x, 0.0), in_dtype_of(x, 1.0)
    m0, s0 = in_dtype_of(x, m0), in_dtype_of(x, s0)
    if math.isfinite(m0):
        return m0, m0, s0, zero, one, one
    return m0, m0 if m0 == np.inf else zero, s0 * zero, zero, one, zero


@jit
def scan_rise(m, r, T, C, E, inv, v):
    """The state after an entry ``v > m``, the rare case of :func:`scan_step`: the
    old maximum joins the sum (its term is ``E``) and ``v`` becomes the maximum;
    ``T`` is rescaled when ``v`` is more than :data:`RESCALE_SPAN` above ``r``."""
    zero, one = in_dtype_of(v, 0.0), in_dtype_of(v, 1.0)
    if v == np.inf:  # +inf from here on (NaN after a NaN: T * 0 keeps it)
        return v, v, T * zero, C * zero, one, zero
    if m == -np.inf:  # the first number: the reference
        return v, v, T, C, one, one
    T, C = add_compensated(T, C, E)
    if v - r > in_dtype_of(v, RESCALE_SPAN):
        f = exp_difference(r, v)
        return v, v, T * f, C * f, one, one
    E = exp_difference(v, r)
    return v, r, T, C, E, one / E


@jit
def scan_step(m, r, T, C, E, inv, v, term):
    """The state after one more entry ``v``, whose term ``exp(v - r)`` is ``term``
    (computed ahead for a block, or here when ``term`` is NaN and ``v`` is not).

    An entry below the maximum adds its term (``-inf`` adds 0); a tie adds ``E`` (a
    tie of ``+-inf`` adds nothing); a rise is :func:`scan_rise`; a NaN makes ``T``
    NaN for good."""
    if v < m:
        if term != term:
            term = exp_difference(v, r)
        T, C = add_compensated(T, C, term)
    elif v > m:
        m, r, T, C, E, inv = scan_rise(m, r, T, C, E, inv, v)
    elif v == m:
        if math.isfinite(m):
            T, C = add_compensated(T, C, E)
    else:
        T = T + v
    return m, r, T, C, E, inv


@jit
def settled_sum(T, C, inv):
    """``s = (T + C) / E`` of the scan's state (0 while ``m`` is not finite)."""
    return (T + C) * inv


@jit
def scan_block(values, sums, maxima, state):
    """Scan one block of a row from ``state``: ``sums[k] = s_k`` and ``maxima[k] =
    m_k``; returns the state after the block.  The terms ``exp(x_k - r)`` are computed
    first in one vectorized loop (into ``sums``) while ``r`` is the reference; once
    an entry moves it, the rest of the block computes its own."""
    m, r, T, C, E, inv = state
    nan = in_dtype_of(values, np.nan)
    ahead = math.isfinite(r)
    if ahead:
        terms_into(values, r, sums)
    for k in range(values.size):
        term = sums[k] if ahead else nan
        r_before = r
        m, r, T, C, E, inv = scan_step(m, r, T, C, E, inv, values[k], term)
        ahead = ahead and r == r_before
        sums[k] = settled_sum(T, C, inv)
        maxima[k] = m
    return m, r, T, C, E, inv


@jit
def load_block(x, start, values, reverse):
    """``values[k] = x[start + k]``, or with ``reverse`` the ``k``-th entry from the end
    of ``x`` on from ``start``: the block the scan reads, in the order it reads it."""
    if reverse:
        last = x.size - 1 - start
        for k in range(values.size):
            values[k] = x[last - k]
    else:
        for k in range(values.size):
            values[k] = x[start + k]


@jit
def store_block(out, start, sums, maxima, reverse):
    """``y_k = m_k + log1p(s_k)`` of a block (vectorized), into ``out`` where
    :func:`load_block` read it."""
    if reverse:
        last = out.size - 1 - start
        for k in range(sums.size):
            out[last - k] = maxima[k] + log1p(sums[k])
    else:
        for k in range(sums.size):
            out[start + k] = maxima[k] + log1p(sums[k])


@jit
def scan_row(x, out, m0, s0, scratch, reverse):
    """``out_k = log sum_{i <= k} exp(x_i)`` for one row (``i >= k`` with
    ``reverse``), carrying in the state ``(m0, s0)`` of what comes before it;
    ``scratch`` holds ``(3, SCAN_BLOCK)`` entries (:func:`new_scratch`).  Each block
    is copied into the scratch in the order of the scan before it is scanned and
    written: one compiled loop for either direction, and ``out`` may be ``x``."""
    state = scan_start(x, m0, s0)
    for start in range(0, x.size, SCAN_BLOCK):
        size = min(SCAN_BLOCK, x.size - start)
        values, sums, maxima = scratch[0, :size], scratch[1, :size], scratch[2, :size]
        load_block(x, start, values, reverse)
        state = scan_block(values, sums, maxima, state)
        store_block(out, start, sums, maxima, reverse)


@jit
def new_scratch(x):
    """The scratch of :func:`scan_row` for rows like ``x``."""
    return np.empty((3, SCAN_BLOCK), dtype=x.dtype)


@jit
def scan_state(x, m0, s0, scratch, reverse):
    """The final state ``(m, s)`` of :func:`scan_row` on ``x`` from ``(m0, s0)``, the
    same scan with its results left in the scratch (the first pass of a row in
    pieces: the same arithmetic, so that the pieces' carries hold the same bound)."""
    state = scan_start(x, m0, s0)
    for start in range(0, x.size, SCAN_BLOCK):
        size = min(SCAN_BLOCK, x.size - start)
        values, sums, maxima = scratch[0, :size], scratch[1, :size], scratch[2, :size]
        load_block(x, start, values, reverse)
        state = scan_block(values, sums, maxima, state)
    m, _r, T, C, _e, inv = state
    return m, settled_sum(T, C, inv)


ROW_CHUNKS = config.ROW_CHUNKS  # baked in (see softmax_numba.config)


# --------------------------------------------------------------------------- 2-D loops


def _logcumsumexp(x, out, m0, s0, reverse):
    """Every row of ``x`` scanned (from its end with ``reverse``), row ``i`` carrying
    in the state ``(m0[i], s0[i])`` (``m0 = -inf``, ``s0 = 0``: nothing; one state of
    one entry for every row), in up to ``ROW_CHUNKS`` runs of rows shared out among
    the threads, a scratch per run."""
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    each = m0.size == rows
    for c in prange(chunks):
        scratch = new_scratch(x)
        for i in range(c * rows // chunks, (c + 1) * rows // chunks):
            j = i if each else 0
            scan_row(x[i], out[i], m0[j], s0[j], scratch, reverse)


LOGCUMSUMEXP = engines(_logcumsumexp)


def no_carry(dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(m0, s0)`` that carry nothing into any row: one state, ``(-inf, 0)``, of
    ``dtype`` (float32 or float64; kept, so that a call allocates nothing)."""
    found = _NO_CARRY.get(dtype)
    return _NO_CARRY[np.dtype(dtype)] if found is None else found


_NO_CARRY = {
    np.dtype(t): (np.full(1, -np.inf, dtype=t), np.zeros(1, dtype=t))
    for t in (np.float32, np.float64)
}


# --------------------------------------------------------------------------- long rows


@jit
def scan_fold(m, r, T, C, E, inv, pm, ps):
    """The scan's state after a whole piece whose state is ``(pm, ps)``: its terms
    ``(1 + ps) exp(pm - r)`` join the sum as one (``ps E`` when ``pm`` is a rise of
    the maximum, :func:`scan_rise`), so that the pieces' sums are rescaled as rarely
    as the entries' (a merge at every piece would rescale the carry at every rise);
    a piece with no number adds nothing but its NaN."""
    zero, one = in_dtype_of(ps, 0.0), in_dtype_of(ps, 1.0)
    if not math.isfinite(pm):
        if pm > m:
            m, r, T, C, E, inv = scan_rise(m, r, T, C, E, inv, pm)
        return m, r, T + ps * zero, C, E, inv
    if pm > m:
        m, r, T, C, E, inv = scan_rise(m, r, T, C, E, inv, pm)
        T, C = add_compensated(T, C, ps * E)
    elif pm == m:
        T, C = add_compensated(T, C, (one + ps) * E)
    else:
        T, C = add_compensated(T, C, (one + ps) * exp_difference(pm, r))
    return m, r, T, C, E, inv


@jit
def carry_states(ms, ss, m_out, s_out, reverse):
    """``(m_out[c], s_out[c])``, each piece's carry-in from the final states ``(ms[c],
    ss[c])`` of the pieces of a row: the state of the pieces before it (after it,
    with ``reverse``), folded as the entries of a scan (:func:`scan_fold`); the first
    piece carries nothing in."""
    m, r, T, C, E, inv = scan_start(ms, -np.inf, 0.0)
    last = ms.size - 1
    for k in range(ms.size):
        c = last - k if reverse else k
        m_out[c], s_out[c] = m, settled_sum(T, C, inv)
        m, r, T, C, E, inv = scan_fold(m, r, T, C, E, inv, ms[c], ss[c])
