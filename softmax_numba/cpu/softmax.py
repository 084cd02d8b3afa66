"""Softmax, log-softmax, log-sum-exp and their backward ops on rows (Numba CPU).

All kernels take 2-D C-contiguous ``(rows, n)`` arrays and compute in the dtype of
their input (float32 or float64).  Algorithms follow Blanchard, Higham & Higham,
"Accurately computing the log-sum-exp and softmax functions", IMA J. Numer. Anal.
41(4), 2021 (Algorithms 2.1-2.3), and Milakov & Gimelshein, "Online normalizer
calculation for softmax", arXiv:1805.02867, 2018 (Algorithm 3).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines, jit, like
from softmax_numba.cpu._math import float_bits, max_from_bit_bounds, maxnum
from softmax_numba.cpu._math import kernel_exp as exp
from softmax_numba.cpu._math import kernel_exp_nonpositive as exp_nonpositive
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu._stream import stream_affine, stream_fence

# --------------------------------------------------------------------------- row pieces


@jit
def maximum(x):
    """``max(x)`` skipping NaNs; ``-inf`` for an empty row or one with no number.

    One vectorized pass of IEEE ``maxNum`` (:func:`~softmax_numba.cpu._math.maxnum`).
    """
    m = like(x, -np.inf)
    for i in range(x.size):
        m = maxnum(m, x[i])
    return m


@jit
def next_bit_bounds(highest, lowest, value):
    """One step of the running maximum of the *next* row, kept as the largest and the
    smallest :func:`~softmax_numba.cpu._math.float_bits` seen (two integer ops, which
    vectorize inside another row's loop); read it back with
    :func:`~softmax_numba.cpu._math.max_from_bit_bounds`."""
    b = float_bits(value)
    return max(highest, b), min(lowest, b)


@jit
def shifted_sum_excluding(x, m, following):
    """``sum_{i != k} exp(x_i - m)`` for ``m = x_k = max(x)``: the ``s`` of the
    shifted algorithm, in one vectorizable pass; also ``max(following)``.

    Rather than look for ``k``, each entry equal to ``m`` adds ``exp(0) - 1 = 0``
    (exactly) and is counted; all of them but one are added back, exactly, at the
    end.  ``following`` (the next row, or ``x`` itself) is read in the same loop, so
    that its load from memory overlaps this row's arithmetic (see
    :func:`next_bit_bounds`).  A NaN of that row may win or be passed over; either
    way it poisons the row, through the max or through ``exp(NaN - m)``.
    """
    s = like(x, 0.0)
    ties = like(x, 0.0)  # a float count keeps every lane of the loop in one type
    highest = lowest = float_bits(like(x, -np.inf))
    for i in range(x.size):
        top = like(x, 1.0) if x[i] == m else like(x, 0.0)
        s += exp_nonpositive(x[i] - m) - top
        ties += top
        highest, lowest = next_bit_bounds(highest, lowest, following[i])
    return s + max(ties - like(x, 1.0), like(x, 0.0)), max_from_bit_bounds(highest, lowest)


@jit
def exp_shifted_excluding_into(x, m, out, following):
    """:func:`shifted_sum_excluding`, also writing ``out_i = exp(x_i - m)`` (1 at the
    maxima), for callers that need the terms again."""
    s = like(x, 0.0)
    ties = like(x, 0.0)
    highest = lowest = float_bits(like(x, -np.inf))
    for i in range(x.size):
        top = like(x, 1.0) if x[i] == m else like(x, 0.0)
        e = exp_nonpositive(x[i] - m)
        out[i] = e
        s += e - top
        ties += top
        highest, lowest = next_bit_bounds(highest, lowest, following[i])
    return s + max(ties - like(x, 1.0), like(x, 0.0)), max_from_bit_bounds(highest, lowest)


@jit
def nan_or(x, value):
    """The first NaN of ``x`` if it has one, else ``value`` (a NaN poisons its row)."""
    for i in range(x.size):
        if math.isnan(x[i]):
            return x[i]
    return value


@jit
def row_logsumexp(x):
    """Shifted log-sum-exp of one row: ``a + log1p(sum_{i != k} exp(x_i - a))``.

    ``a = max(x)`` attained at ``k`` (Blanchard, Higham & Higham 2021, Alg. 2.2).
    Non-finite rules as scipy: NaN gives NaN, any ``+inf`` gives ``+inf``, a row
    that is empty or all ``-inf`` gives ``-inf``.
    """
    m = maximum(x)
    return logsumexp_from(x, m, shifted_sum_excluding(x, m, x)[0])


@jit
def logsumexp_from(x, m, s):
    """``m + log1p(s)`` with scipy's rules for a non-finite ``m = max(x)``."""
    if math.isinf(m) or math.isnan(m):
        return nan_or(x, m)
    return m + log1p(s)


@jit
def exp_shifted_into(x, m, out, following):
    """``out_i = exp(x_i - m)`` for ``m = max(x)``; returns ``sum_i out_i`` (one read,
    one write) and ``max(following)`` (see :func:`shifted_sum_excluding`)."""
    s = like(x, 0.0)
    highest = lowest = float_bits(like(x, -np.inf))
    for i in range(x.size):
        e = exp_nonpositive(x[i] - m)
        out[i] = e
        s += e
        highest, lowest = next_bit_bounds(highest, lowest, following[i])
    return s, max_from_bit_bounds(highest, lowest)


@jit
def scale_into(out, factor):
    for i in range(out.size):
        out[i] *= factor


@jit
def affine_into(src, dst, a, b, stream):
    """``dst_i = src_i a + b`` (in place if ``dst`` is ``src``), with streaming stores
    when ``stream`` (then ``src`` and ``dst`` must not overlap)."""
    if stream:
        stream_affine(src, dst, a, b)
    else:
        for i in range(dst.size):
            dst[i] = src[i] * a + b


#: Runs of consecutive rows in the pipelined 2-D kernels (the threads share them out;
#: each run starts its pipeline with one max pass of its own).
ROW_CHUNKS = 64


@jit
def row_range(chunk, chunks, rows):
    """The rows ``[start, stop)`` of ``chunk`` out of ``chunks`` equal parts."""
    return chunk * rows // chunks, (chunk + 1) * rows // chunks


# --------------------------------------------------------------------------- softmax rows


@jit
def softmax_naive_row(x, out):
    """``exp(x_i) / sum_j exp(x_j)`` with no shift: overflows on purpose."""
    s = like(x, 0.0)
    for i in range(x.size):
        e = exp(x[i])
        out[i] = e
        s += e
    scale_into(out, like(x, 1.0) / s)


@jit
def softmax_division_free_row(x, out):
    """``exp(x_i - lse(x))`` (Blanchard, Higham & Higham 2021, eq. (2.5))."""
    lse = row_logsumexp(x)
    if lse == np.inf:
        lse = like(x, np.nan)
    for i in range(x.size):
        out[i] = exp(x[i] - lse)


#: Elements per block of the online softmax: a block's max and exp-sum run over data
#: still in L1 and vectorize; the blocks' states are merged exactly.
ONLINE_BLOCK = 256


@jit
def online_state(x):
    """One pass for ``(m, d)`` with ``d = sum_i exp(x_i - m)`` (Milakov & Gimelshein
    2018), a block of ``ONLINE_BLOCK`` entries at a time: each block's ``(m_b, d_b)``
    is merged into the running state with ``m = max(m, m_b)``,
    ``d = d exp(m_old - m) + d_b exp(m_b - m)``.  Summing within blocks keeps the
    rounding error of ``d`` near ``(B + n / B) u`` instead of ``n u``.
    """
    m = like(x, -np.inf)
    d = like(x, 0.0)
    for start in range(0, x.size, ONLINE_BLOCK):
        block = x[start : start + ONLINE_BLOCK]
        bm = maximum(block)
        if bm == -np.inf:
            bd = nan_or(block, like(x, 0.0))  # nothing to add, but a NaN poisons
        else:
            bd = like(x, 0.0)
            for v in block:
                bd += exp_nonpositive(v - bm)
        if bm > m:
            # m = -inf before the first number: d is 0 and exp(-inf) is 0, no 0 * NaN.
            d = d * exp(m - bm) + bd
            m = bm
        elif bd != 0:
            d += bd * exp(bm - m)
    if m == np.inf:
        d = like(x, np.nan)
    return m, d


@jit
def softmax_online_row(x, out):
    """Online softmax: one pass for ``(m, d)``, one pass for ``exp(x_i - m) / d``."""
    m, d = online_state(x)
    r = like(x, 1.0) / d
    for i in range(x.size):
        out[i] = exp_nonpositive(x[i] - m) * r


@jit
def weighted_logsumexp_row(x, b):
    """``(log|s|, sign(s))`` with ``s = sum_i b_i exp(x_i)``, shifted by the maximum
    of the ``x_i`` whose weight is not zero (as ``scipy.special.logsumexp``)."""
    m = like(x, -np.inf)
    for i in range(x.size):
        if b[i] != 0 and x[i] > m:
            m = x[i]
    if math.isinf(m):
        shift = like(x, 0.0)
    else:
        shift = m
    s = like(x, 0.0)
    for i in range(x.size):
        if b[i] != 0:
            s += b[i] * exp(x[i] - shift)
    sign = like(x, 1.0) if s > 0 else (like(x, -1.0) if s < 0 else like(x, 0.0))
    if math.isnan(s):
        sign = s
    return shift + math.log(abs(s)), sign


# --------------------------------------------------------------------------- 2-D loops


def _softmax_naive(x, out):
    for i in prange(x.shape[0]):
        softmax_naive_row(x[i], out[i])


def _softmax_shifted(x, out):
    """Rows in up to ``ROW_CHUNKS`` runs, shared out among the threads; in each run
    the max of row ``i + 1`` is taken in the exp pass of row ``i`` (one load stream,
    overlapped with the arithmetic), then the row is scaled in cache."""
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        if start == stop:
            continue
        m = maximum(x[start])
        for i in range(start, stop):
            s, m_next = exp_shifted_into(x[i], m, out[i], x[min(i + 1, stop - 1)])
            if m == np.inf:
                s = like(x, np.nan)
            scale_into(out[i], like(x, 1.0) / s)
            m = m_next


def _softmax_division_free(x, out):
    for i in prange(x.shape[0]):
        softmax_division_free_row(x[i], out[i])


def _softmax_online(x, out):
    for i in prange(x.shape[0]):
        softmax_online_row(x[i], out[i])


def _log_softmax(x, out, stream):
    """``x_i - lse`` row by row, pipelined as :func:`_softmax_shifted`, and one row
    behind: row ``i - 1`` is written after the exp pass of row ``i``, so that the
    latency of its ``log1p`` (some 50 cycles, on which every entry of the write
    depends) hides behind that pass.  With ``stream`` the output is written with
    streaming stores (it is the last pass and reads ``x``, so it needs no scratch
    row)."""
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        if start == stop:
            continue
        m = maximum(x[start])
        lse = like(x, 0.0)
        for i in range(start, stop):
            s, m_next = shifted_sum_excluding(x[i], m, x[min(i + 1, stop - 1)])
            if i > start:
                affine_into(x[i - 1], out[i - 1], like(x, 1.0), -lse, stream)
            lse = logsumexp_from(x[i], m, s)
            m = m_next
        affine_into(x[stop - 1], out[stop - 1], like(x, 1.0), -lse, stream)
        if stream:
            stream_fence()


def _logsumexp(x, out):
    """The shifted log-sum-exp of every row, pipelined as :func:`_softmax_shifted`.

    A run of rows first stores each row's ``s`` in ``out`` and its max in a scratch
    array; then one vectorized loop over the run gives ``m + log1p(s)``.  A scalar
    ``log1p`` at the end of each row would put its latency (a division and a
    polynomial, some 50 cycles) between two rows; this way it costs a fraction of
    that.  A row whose max is not finite stores scipy's result as its "max" and
    ``s = 0``, and ``log1p(0) = 0`` leaves it as it is.
    """
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        if start == stop:
            continue
        shifts = np.empty(stop - start, dtype=x.dtype)
        m = maximum(x[start])
        for i in range(start, stop):
            s, m_next = shifted_sum_excluding(x[i], m, x[min(i + 1, stop - 1)])
            if math.isinf(m) or math.isnan(m):
                m, s = nan_or(x[i], m), like(x, 0.0)
            shifts[i - start] = m
            out[i] = s
            m = m_next
        for i in range(start, stop):
            out[i] = shifts[i - start] + log1p(out[i])


def _logsumexp_weighted(x, b, out, sign):
    for i in prange(x.shape[0]):
        out[i], sign[i] = weighted_logsumexp_row(x[i], b[i])


def _softmax_backward(y, dy, dx):
    """``dx = y * (dy - sum(y * dy))``: the vector-Jacobian product of softmax."""
    for i in prange(y.shape[0]):
        yi, dyi, dxi = y[i], dy[i], dx[i]
        dot = like(yi, 0.0)
        for j in range(yi.size):
            dot += yi[j] * dyi[j]
        for j in range(yi.size):
            dxi[j] = yi[j] * (dyi[j] - dot)


def _log_softmax_backward(y, dy, dx):
    """``dx = dy - exp(y) * sum(dy)``: the vector-Jacobian product of log-softmax."""
    for i in prange(y.shape[0]):
        yi, dyi, dxi = y[i], dy[i], dx[i]
        total = like(yi, 0.0)
        for j in range(yi.size):
            total += dyi[j]
        for j in range(yi.size):
            dxi[j] = dyi[j] - exp(yi[j]) * total


SOFTMAX = {
    "naive": engines(_softmax_naive),
    "shifted": engines(_softmax_shifted),
    "division_free": engines(_softmax_division_free),
    "online": engines(_softmax_online),
}
LOG_SOFTMAX = engines(_log_softmax)
LOGSUMEXP = engines(_logsumexp)
LOGSUMEXP_WEIGHTED = engines(_logsumexp_weighted)
SOFTMAX_BACKWARD = engines(_softmax_backward)
LOG_SOFTMAX_BACKWARD = engines(_log_softmax_backward)


# --------------------------------------------------------------------------- long rows


@jit(parallel=True)
def split_state(x, chunks):
    """``(m, d)`` of one long row, computed on ``chunks`` pieces in parallel.

    Each piece gets its own online state; the states are merged exactly with
    ``m = max(m1, m2)``, ``d = d1 exp(m1 - m) + d2 exp(m2 - m)`` (Milakov &
    Gimelshein 2018, eq. (4)).  A piece with ``m = -inf`` contributes nothing.
    """
    n = x.size
    ms = np.empty(chunks, dtype=x.dtype)
    ds = np.empty(chunks, dtype=x.dtype)
    for c in prange(chunks):
        ms[c], ds[c] = online_state(x[c * n // chunks : (c + 1) * n // chunks])
    m = like(x, -np.inf)
    for c in range(chunks):
        m = max(m, ms[c])
    d = like(x, 0.0)
    for c in range(chunks):
        if ms[c] != -np.inf:
            d += ds[c] * exp(ms[c] - m)
    for c in range(chunks):
        if math.isnan(ms[c]) or math.isnan(ds[c]):
            d = like(x, np.nan)
    return m, d


@jit(parallel=True)
def split_softmax_row(x, out, chunks):
    """Softmax of one long row across threads: ``exp(x_i - m) / d``."""
    m, d = split_state(x, chunks)
    r = like(x, 1.0) / d
    n = x.size
    for c in prange(chunks):
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            out[i] = exp_nonpositive(x[i] - m) * r


@jit
def split_logsumexp_row(x, chunks):
    """Log-sum-exp of one long row across threads: ``m + log(d)`` (scipy's inf rules)."""
    m, d = split_state(x, chunks)
    if math.isinf(m):
        return nan_or(x, m)
    return m + math.log(d)


@jit(parallel=True)
def split_log_softmax_row(x, out, chunks):
    """Log-softmax of one long row across threads: ``x_i - lse``."""
    lse = split_logsumexp_row(x, chunks)
    n = x.size
    for c in prange(chunks):
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            out[i] = x[i] - lse
