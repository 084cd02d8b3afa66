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

from softmax_numba.cpu._compile import engines, jit, like
from softmax_numba.cpu.softmax import maximum, nan_or


@jit
def undefined_row(x, out):
    """Fill ``out`` with NaN and return True when the row has no projection."""
    m = maximum(x)
    v = nan_or(x, m)
    if math.isinf(v) or math.isnan(v):
        out[:] = np.nan
        return True
    return False


@jit
def clip_shift_into(x, tau, out):
    """``out = max(x - tau, 0)``; returns the number of nonzero entries (which can
    differ by rounding from the support size the threshold search found)."""
    zero = like(x, 0.0)
    nonzero = 0
    for j in range(x.size):
        v = max(x[j] - tau, zero)
        out[j] = v
        nonzero += v > zero
    return nonzero


@jit
def sparsemax_sort_row(x, out):
    """sparsemax by sorting; returns the number of nonzero entries."""
    if undefined_row(x, out):
        return 0
    z = np.sort(x)
    n = z.size
    total = like(x, 0.0)
    kept = like(x, 0.0)
    support = 0
    for j in range(n):
        v = z[n - 1 - j]
        total += v
        if like(x, 1.0) + like(x, j + 1) * v > total:
            support = j + 1
            kept = total
        else:
            break
    return clip_shift_into(x, (kept - like(x, 1.0)) / like(x, support), out)


@jit
def sparsemax_pivot_row(x, out, work):
    """sparsemax by randomized-pivot selection (Duchi et al. 2008, Fig. 2).

    ``work`` is scratch space of the row's length.  The pivot sequence comes from a
    fixed-seed generator, so results are deterministic.  Returns the number of
    nonzero entries.
    """
    if undefined_row(x, out):
        return 0
    n = 0
    for v in x:
        if v > -np.inf:
            work[n] = v
            n += 1
    lo, hi = 0, n
    s = like(x, 0.0)
    rho = 0
    state = np.int64(0x2545F4914F6CDD1D)
    while lo < hi:
        state = state * np.int64(6364136223846793005) + np.int64(1442695040888963407)
        p = lo + ((state >> 33) & 0x7FFFFFFF) % (hi - lo)
        pv = work[p]
        work[p] = work[lo]
        work[lo] = pv
        ds = pv
        j = lo + 1
        for i in range(lo + 1, hi):
            v = work[i]
            if v >= pv:
                work[i] = work[j]
                work[j] = v
                ds += v
                j += 1
        if (s + ds) - like(x, rho + j - lo) * pv < like(x, 1.0):
            s += ds
            rho += j - lo
            lo = j
        else:
            lo, hi = lo + 1, j
    return clip_shift_into(x, (s - like(x, 1.0)) / like(x, rho), out)


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
        total = like(dyi, 0.0)
        count = 0
        for j in range(yi.size):
            if yi[j] > 0:
                total += dyi[j]
                count += 1
        mean = total / like(dyi, count)
        for j in range(yi.size):
            dxi[j] = dyi[j] - mean if yi[j] > 0 else like(dyi, 0.0)


@jit
def entmax15_sort_row(x, out):
    """Exact 1.5-entmax of one row by sorting (Peters et al. 2019, Algorithm 2).

    With ``z = (x - max x) / 2`` sorted decreasingly, ``tau_k = mean_k -
    sqrt(max((1 - k (meansq_k - mean_k^2)) / k, 0))``; the support is the largest
    ``k`` with ``tau_k <= z_(k)`` and ``p = max(z - tau, 0)^2``.
    """
    if undefined_row(x, out):
        return
    m = maximum(x)
    half = like(x, 0.5)
    z = np.sort(x)
    n = z.size
    s1 = like(x, 0.0)
    s2 = like(x, 0.0)
    tau_star = like(x, 0.0)
    for j in range(n):
        v = (z[n - 1 - j] - m) * half
        s1 += v
        s2 += v * v
        k = like(x, j + 1)
        mean = s1 / k
        delta = (like(x, 1.0) - (s2 - k * mean * mean)) / k
        tau = mean - math.sqrt(max(delta, like(x, 0.0)))
        if tau <= v:
            tau_star = tau
        else:
            break
    zero = like(x, 0.0)
    for j in range(x.size):
        d = max((x[j] - m) * half - tau_star, zero)
        out[j] = d * d


def _entmax15(x, out):
    for i in prange(x.shape[0]):
        entmax15_sort_row(x[i], out[i])


@jit
def entmax_power_sum(y, tau, inv):
    """``sum_j max(y_j - tau, 0)^inv`` (``inv = 1/(alpha - 1)``)."""
    s = like(y, 0.0)
    zero = like(y, 0.0)
    for j in range(y.size):
        d = max(y[j] - tau, zero)
        s += d * d if inv == 2 else d**inv
    return s


def _entmax_bisect(x, alpha, n_iter, out):
    """alpha-entmax by bisection on ``tau`` in ``[max - 1, max - n^(1 - alpha)]``
    (Peters et al. 2019, Algorithm 1), on ``y = (alpha - 1) x``; ``p / sum(p)``."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        if undefined_row(xi, yi):
            continue
        a1 = like(xi, alpha - 1.0)
        inv = like(xi, 1.0) / a1
        for j in range(xi.size):
            yi[j] = xi[j] * a1
        m = maximum(yi)
        tau = m - like(xi, 1.0)
        width = like(xi, 1.0) - like(xi, xi.size) ** (-a1)
        for _ in range(n_iter):
            width *= like(xi, 0.5)
            mid = tau + width
            if entmax_power_sum(yi, mid, inv) >= like(xi, 1.0):
                tau = mid
        zero = like(xi, 0.0)
        total = like(xi, 0.0)
        for j in range(xi.size):
            d = max(yi[j] - tau, zero)
            d = d * d if inv == 2 else d**inv
            yi[j] = d
            total += d
        scale = like(xi, 1.0) / total
        for j in range(xi.size):
            yi[j] *= scale


def _entmax15_backward(y, dy, dx):
    """``dx = g dy - g sum(g dy) / sum(g)`` with ``g = sqrt(y)``."""
    for i in prange(y.shape[0]):
        yi, dyi, dxi = y[i], dy[i], dx[i]
        sg = like(dyi, 0.0)
        sgd = like(dyi, 0.0)
        for j in range(yi.size):
            g = math.sqrt(yi[j])
            sg += g
            sgd += g * dyi[j]
        q = sgd / sg
        for j in range(yi.size):
            g = math.sqrt(yi[j])
            dxi[j] = g * (dyi[j] - q)


SPARSEMAX = {"sort": engines(_sparsemax_sort), "pivot": engines(_sparsemax_pivot)}
SPARSEMAX_BACKWARD = engines(_sparsemax_backward)
ENTMAX15 = engines(_entmax15)
ENTMAX_BISECT = engines(_entmax_bisect)
ENTMAX15_BACKWARD = engines(_entmax15_backward)
