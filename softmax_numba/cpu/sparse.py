"""Sparse maps onto the simplex: sparsemax and alpha-entmax (Numba CPU).

sparsemax (Martins & Astudillo, ICML 2016) is the Euclidean projection onto the
simplex, ``p = max(x - tau, 0)`` with ``sum(p) = 1``.  Two ways to find ``tau``:
sorting (their Algorithm 1, O(n log n)) and the randomized-pivot selection of
Duchi, Shalev-Shwartz, Singer & Chandra (ICML 2008, Figure 2, expected O(n)).

alpha-entmax (Peters, Niculae & Martins, ACL 2019) is
``p = max((alpha - 1) x - tau, 0)^(1/(alpha - 1))``; alpha = 1.5 has an exact
sort-based threshold (their Algorithm 2), any alpha > 1 a bisection (Algorithm 1).

A row with a NaN, a ``+inf`` or no entry above ``-inf`` has no projection: NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu.softmax import (
    SUM_BLOCK,
    add_compensated,
    compensated_total,
    maximum,
)


@jit
def projection_max(x, out):
    """``max(x)`` if the row has a projection; else ``out`` is filled with NaN and
    NaN returned (a NaN, a ``+inf`` or no entry above ``-inf``)."""
    m = maximum(x)
    nans = 0
    for i in range(x.size):  # a counting loop vectorizes; a search for the first does not
        nans += x[i] != x[i]
    if nans or math.isinf(m):
        out[:] = np.nan
        return in_dtype_of(x, np.nan)
    return m


@jit
def clip_shift_into(x, tau, out):
    """``out = max(x - tau, 0)``; returns the number of nonzero entries (which can
    differ by rounding from the support size the threshold search found)."""
    zero = in_dtype_of(x, 0.0)
    nonzero = 0
    for j in range(x.size):
        v = max(x[j] - tau, zero)
        out[j] = v
        nonzero += v > zero
    return nonzero


@jit
def sparsemax_sort_row(x, out):
    """sparsemax by sorting, on ``x - max(x)`` (a sum of raw entries would overflow
    near the largest float); returns the number of nonzero entries."""
    m = projection_max(x, out)
    if math.isnan(m):
        return 0
    z = np.sort(x)
    n = z.size
    total = carry = in_dtype_of(x, 0.0)  # compensated prefix sums (add_compensated)
    kept = in_dtype_of(x, 0.0)
    support = 0
    for j in range(n):
        v = z[n - 1 - j] - m
        total, carry = add_compensated(total, carry, v)
        if in_dtype_of(x, 1.0) + in_dtype_of(x, j + 1) * v > total + carry:
            support = j + 1
            kept = total + carry
        else:
            break
    return clip_shift_into(x, m + (kept - in_dtype_of(x, 1.0)) / in_dtype_of(x, support), out)


@jit
def pivot_support(work, n, squared):
    """The support of a threshold map on ``z = work[:n]``, by randomized-pivot
    selection (Duchi et al. 2008, Fig. 2; expected O(n), no sort).

    The threshold ``tau`` solves ``g(tau) = 1`` with ``g(t) = sum_i max(z_i - t, 0)``
    (sparsemax) or, if ``squared``, ``sum_i max(z_i - t, 0)^2`` (1.5-entmax); ``g``
    decreases, so for a pivot ``p``: ``g(p) < 1`` puts every ``z_i >= p`` in the
    support, and ``g(p) >= 1`` puts every ``z_i <= p`` out.  Over a known-in set with
    ``k`` entries, sum ``s1`` and sum of squares ``s2``,
    ``g(p) = s1 - k p`` or ``s2 - 2 p s1 + k p^2``.  ``work`` is reordered; the
    pivots come from a fixed-seed generator, so results are deterministic.
    Returns ``(k, s1, s2)`` of the support.  Every sum is compensated
    (:func:`~softmax_numba.cpu.softmax.add_compensated`, per entry: the loop is
    scalar), so that its error does not grow with the support.
    """
    zero = work.dtype.type(0.0)
    one = work.dtype.type(1.0)
    lo, hi = 0, n
    k, s1, s2, c1, c2 = 0, zero, zero, zero, zero
    state = np.int64(0x2545F4914F6CDD1D)
    while lo < hi:
        state = state * np.int64(6364136223846793005) + np.int64(1442695040888963407)
        p = lo + ((state >> 33) & 0x7FFFFFFF) % (hi - lo)
        pv = work[p]
        work[p] = work[lo]
        work[lo] = pv
        t1, e1 = add_compensated(s1, c1, pv)
        t2, e2 = add_compensated(s2, c2, pv * pv)
        j = lo + 1
        for i in range(lo + 1, hi):
            v = work[i]
            if v >= pv:
                work[i] = work[j]
                work[j] = v
                t1, e1 = add_compensated(t1, e1, v)
                t2, e2 = add_compensated(t2, e2, v * v)
                j += 1
        count = k + j - lo
        c = work.dtype.type(count)
        u1, u2 = compensated_total(t1, e1), compensated_total(t2, e2)
        g = (u2 - (pv + pv) * u1 + c * pv * pv) if squared else (u1 - c * pv)
        if g < one:
            k, s1, s2, c1, c2 = count, t1, t2, e1, e2
            lo = j
        else:
            lo, hi = lo + 1, j
    return k, compensated_total(s1, c1), compensated_total(s2, c2)


@jit
def candidates_into(x, work, shift, scale):
    """``work[:n] = (x_i - shift) * scale`` for the ``n`` entries with
    ``x_i - shift > -1 / scale``; returns ``n``.

    With ``shift = max(x)``, the others cannot reach the support of either map:
    ``g(tau) = 1`` forces ``tau >= -1`` on ``z = (x - max x) * scale`` (the maximum's
    own term is at most 1), so every ``z_i <= -1`` is at or below the threshold.
    This one branch-free pass leaves the pivot search a few entries on the usual
    inputs (and ``-inf`` never passes it).
    """
    n = 0
    bound = -in_dtype_of(x, 1.0) / scale
    for i in range(x.size):
        v = x[i] - shift
        work[n] = v * scale
        n += v > bound
    return n


@jit
def sparsemax_pivot_row(x, out, work):
    """sparsemax by randomized-pivot selection (:func:`pivot_support`).

    ``work`` is scratch space of the row's length.  Returns the number of nonzero
    entries.
    """
    m = projection_max(x, out)
    if math.isnan(m):
        return 0
    n = candidates_into(x, work, m, in_dtype_of(x, 1.0))
    k, s1, _ = pivot_support(work, n, False)
    return clip_shift_into(x, m + (s1 - in_dtype_of(x, 1.0)) / in_dtype_of(x, k), out)


def _sparsemax_sort(x, out, support):
    for i in prange(x.shape[0]):
        support[i] = sparsemax_sort_row(x[i], out[i])


def _sparsemax_pivot(x, out, support):
    for i in prange(x.shape[0]):
        work = np.empty(x.shape[1], dtype=x.dtype)
        support[i] = sparsemax_pivot_row(x[i], out[i], work)


def _sparsemax_backward(y, dy, dx):
    """``dx = s * (dy - mean_s(dy))`` with ``s`` the support of ``y``."""
    for i in prange(y.shape[0]):
        yi, dyi, dxi = y[i], dy[i], dx[i]
        total = carry = in_dtype_of(dyi, 0.0)
        count = 0
        for start in range(0, yi.size, SUM_BLOCK):
            yb, db = yi[start : start + SUM_BLOCK], dyi[start : start + SUM_BLOCK]
            s = in_dtype_of(dyi, 0.0)
            for j in range(yb.size):
                if yb[j] > 0:
                    s += db[j]
                    count += 1
            total, carry = add_compensated(total, carry, s)
        mean = compensated_total(total, carry) / in_dtype_of(dyi, count)
        for j in range(yi.size):
            dxi[j] = dyi[j] - mean if yi[j] > 0 else in_dtype_of(dyi, 0.0)


@jit
def entmax15_sort_row(x, out):
    """Exact 1.5-entmax of one row by sorting (Peters et al. 2019, Algorithm 2).

    With ``z = (x - max x) / 2`` sorted decreasingly, ``tau_k = mean_k -
    sqrt(max((1 - k (meansq_k - mean_k^2)) / k, 0))``; the support is the largest
    ``k`` with ``tau_k <= z_(k)`` and ``p = max(z - tau, 0)^2``.
    """
    m = projection_max(x, out)
    if math.isnan(m):
        return
    half = in_dtype_of(x, 0.5)
    z = np.sort(x)
    n = z.size
    s1 = c1 = s2 = c2 = in_dtype_of(x, 0.0)  # compensated prefix sums (add_compensated)
    tau_star = in_dtype_of(x, 0.0)
    for j in range(n):
        v = (z[n - 1 - j] - m) * half
        s1, c1 = add_compensated(s1, c1, v)
        s2, c2 = add_compensated(s2, c2, v * v)
        k = in_dtype_of(x, j + 1)
        mean = (s1 + c1) / k
        delta = (in_dtype_of(x, 1.0) - ((s2 + c2) - k * mean * mean)) / k
        tau = mean - math.sqrt(max(delta, in_dtype_of(x, 0.0)))
        if tau <= v:
            tau_star = tau
        else:
            break
    zero = in_dtype_of(x, 0.0)
    for j in range(x.size):
        d = max((x[j] - m) * half - tau_star, zero)
        out[j] = d * d


@jit
def entmax15_pivot_row(x, out, work):
    """Exact 1.5-entmax of one row without sorting: the support by randomized pivot
    (:func:`pivot_support` on ``z = (x - max x) / 2``), then the threshold
    ``tau = mean - sqrt(max((1 - (s2 - k mean^2)) / k, 0))`` of the sort-based
    algorithm (Peters et al. 2019, Algorithm 2) from the support's ``k``, ``s1``,
    ``s2``, and ``p = max(z - tau, 0)^2``.  Expected O(n) per row.
    """
    m = projection_max(x, out)
    if math.isnan(m):
        return
    half = in_dtype_of(x, 0.5)
    n = candidates_into(x, work, m, half)
    k, s1, s2 = pivot_support(work, n, True)
    c = in_dtype_of(x, k)
    mean = s1 / c
    delta = (in_dtype_of(x, 1.0) - (s2 - c * mean * mean)) / c
    tau = mean - math.sqrt(max(delta, in_dtype_of(x, 0.0)))
    zero = in_dtype_of(x, 0.0)
    for j in range(x.size):
        d = max((x[j] - m) * half - tau, zero)
        out[j] = d * d


def _entmax15_sort(x, out):
    for i in prange(x.shape[0]):
        entmax15_sort_row(x[i], out[i])


def _entmax15_pivot(x, out):
    for i in prange(x.shape[0]):
        work = np.empty(x.shape[1], dtype=x.dtype)
        entmax15_pivot_row(x[i], out[i], work)


@jit
def entmax_power_sum(y, tau, inv):
    """``sum_j max(y_j - tau, 0)^inv`` (``inv = 1/(alpha - 1)``)."""
    s = in_dtype_of(y, 0.0)
    zero = in_dtype_of(y, 0.0)
    for j in range(y.size):
        d = max(y[j] - tau, zero)
        s += d * d if inv == 2 else d**inv
    return s


def _entmax_bisect(x, alpha, n_iter, out):
    """alpha-entmax by bisection on ``tau`` in ``[-1, -n^(1 - alpha)]`` (Peters et al.
    2019, Algorithm 1), on ``y = (alpha - 1) (x - max x)``; ``p / sum(p)``.

    Shifted by the max, so that ``tau`` keeps its resolution whatever the offset of
    ``x``; ``n`` counts the entries above ``-inf`` only, so that appending ``-inf``
    entries (which never reach the support) leaves the bracket, and the result, as
    they are."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        m = projection_max(xi, yi)
        if math.isnan(m):
            continue
        a1 = in_dtype_of(xi, alpha - 1.0)
        inv = in_dtype_of(xi, 1.0) / a1
        finite = 0
        for j in range(xi.size):
            yi[j] = (xi[j] - m) * a1
            finite += xi[j] > -np.inf
        tau = -in_dtype_of(xi, 1.0)
        width = in_dtype_of(xi, 1.0) - in_dtype_of(xi, finite) ** (-a1)
        for _ in range(n_iter):
            width *= in_dtype_of(xi, 0.5)
            mid = tau + width
            if entmax_power_sum(yi, mid, inv) >= in_dtype_of(xi, 1.0):
                tau = mid
        zero = in_dtype_of(xi, 0.0)
        total = in_dtype_of(xi, 0.0)
        for j in range(xi.size):
            d = max(yi[j] - tau, zero)
            d = d * d if inv == 2 else d**inv
            yi[j] = d
            total += d
        scale = in_dtype_of(xi, 1.0) / total
        for j in range(xi.size):
            yi[j] *= scale


def _entmax15_backward(y, dy, dx):
    """``dx = g dy - g sum(g dy) / sum(g)`` with ``g = sqrt(y)``."""
    for i in prange(y.shape[0]):
        yi, dyi, dxi = y[i], dy[i], dx[i]
        sg = cg = sgd = cgd = in_dtype_of(dyi, 0.0)
        for start in range(0, yi.size, SUM_BLOCK):
            yb, db = yi[start : start + SUM_BLOCK], dyi[start : start + SUM_BLOCK]
            b1 = b2 = in_dtype_of(dyi, 0.0)
            for j in range(yb.size):
                g = math.sqrt(yb[j])
                b1 += g
                b2 += g * db[j]
            sg, cg = add_compensated(sg, cg, b1)
            sgd, cgd = add_compensated(sgd, cgd, b2)
        q = compensated_total(sgd, cgd) / compensated_total(sg, cg)
        for j in range(yi.size):
            g = math.sqrt(yi[j])
            dxi[j] = g * (dyi[j] - q)


SPARSEMAX = {"sort": engines(_sparsemax_sort), "pivot": engines(_sparsemax_pivot)}
SPARSEMAX_BACKWARD = engines(_sparsemax_backward)
ENTMAX15 = {"sort": engines(_entmax15_sort), "pivot": engines(_entmax15_pivot)}
ENTMAX_BISECT = engines(_entmax_bisect)
ENTMAX15_BACKWARD = engines(_entmax15_backward)
