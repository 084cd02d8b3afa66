"""Cross-entropy of softmax with its gradient in the same pass (Numba CPU).

Per row, with ``q`` the (smoothed) target distribution, ``a = x_k = max(x)`` and
``s = sum_{i != k} exp(x_i - a)`` (Blanchard, Higham & Higham 2021, Alg. 2.2):

    loss = sum_j q_j ((a - x_j) + log1p(s)),    dloss/dx_j = sum(q) softmax(x)_j - q_j,

with ``softmax(x)_j = exp(x_j - a) / (1 + s)`` from the same pass.  Every term of
the loss is ``>= 0``, so its error is relative to the loss whatever the offset of
the logits (``lse - x_t`` would lose ``u |lse|``); every term is halved (exactly)
and the sum doubled, and the mean of ``a - x_j`` that label smoothing needs is
summed as ``sum_j (a/2 - x_j/2) / n``: nothing overflows unless the loss does (a
sum of raw logits does, near the largest float).  The input is read twice, the gradient written
once (the loss alone reads it twice and writes nothing but one number per row).
The gradient may be written over the logits (``grad_out=logits``): each kernel
reads what the loss needs of a row before it writes the row's gradient.
"""

from __future__ import annotations

import math

from numba import prange

from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu._math import kernel_exp_nonpositive as exp_nonpositive
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu.softmax import (
    ROW_CHUNKS,
    SUM_BLOCK,
    add_compensated,
    compensated_total,
    exp_shifted_excluding_into,
    maximum,
    row_range,
    row_state,
    settled,
    shifted_sum_excluding,
    softmax_scale,
    sum_scratch,
    surprisal,
)


@jit
def half_mean_gap(x, m):
    """``mean_j (m - x_j) / 2``, summed as ``sum_j (m/2 - x_j/2) / n``: halving is
    exact, so each term is ``m - x_j`` rounded once, then scaled, and nothing
    overflows (``m - x_j`` itself can, near the largest float).  Scaling by ``1/n``
    before subtracting would cancel: its error would be ``u |m|``, not
    ``u (m - x_j)``."""
    w = in_dtype_of(x, 1.0) / in_dtype_of(x, x.size)
    total = carry = in_dtype_of(x, 0.0)
    for start in range(0, x.size, SUM_BLOCK):
        block = x[start : start + SUM_BLOCK]
        s = in_dtype_of(x, 0.0)
        for j in range(block.size):
            s += halved_gap(block[j], m, w)
        total, carry = add_compensated(total, carry, s)
    return compensated_total(total, carry)


@jit(reassociate=False)
def halved_gap(x, m, w):
    """``(m/2 - x/2) w``, compiled without ``reassoc``: with it, LLVM factors the two
    halvings into ``(m - x)/2``, which overflows where ``m - x`` does."""
    half = in_dtype_of(w, 0.5)
    return (m * half - x * half) * w


@jit
def finish_gradient(gi, r, floor, t, hit):
    """``g_j = e_j r - floor`` over the stored ``e_j = exp(x_j - m)``, then ``g_t -= hit``."""
    for j in range(gi.size):
        gi[j] = gi[j] * r - floor
    gi[t] -= hit


def _cross_entropy_index(x, target, ignore, smoothing, scale, want_grad, loss, grad):
    """Class-index targets; rows whose target equals ``ignore`` give 0 (``ignore < 0``
    never matches a validated target).  Rows run in chunks as in
    :func:`softmax_numba.cpu.softmax._softmax_shifted`, the max of the next row taken
    in this row's exp pass; a row's gradient is finished after the exp pass of the
    next row that has one, so that the division for its scale (and the ``log1p`` of
    its loss) overlaps that pass."""
    rows, n = x.shape
    chunks = min(rows, ROW_CHUNKS)
    accs = sum_scratch(x, chunks)
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        if start == stop:
            continue
        m = maximum(x[start])
        acc = accs[c]
        eps = in_dtype_of(x, smoothing)
        hit = (in_dtype_of(x, 1.0) - eps) * in_dtype_of(x, scale)
        floor = eps / in_dtype_of(x, n) * in_dtype_of(x, scale)
        pending, pending_r = -1, in_dtype_of(x, 0.0)
        for i in range(start, stop):
            xi, t, following = x[i], target[i], x[min(i + 1, stop - 1)]
            if t == ignore:
                loss[i] = 0
                if want_grad:
                    grad[i, :] = 0
                m = maximum(following)
                continue
            # What the loss needs of the row, read before the gradient is written:
            # ``grad`` may be ``x`` itself (``grad_out=logits``).
            half = in_dtype_of(xi, 0.5)
            x_t = xi[t]
            gap = half_mean_gap(xi, m) if smoothing != 0 else in_dtype_of(xi, 0.0)
            s_at_inf = settled(xi, m, in_dtype_of(xi, 1.0))  # (used only for an infinite m)
            if want_grad:  # keep exp(x - m) for the gradient: one exp per entry
                s, m_next = exp_shifted_excluding_into(xi, m, grad[i], following, acc)
                if pending >= 0:
                    finish_gradient(grad[pending], pending_r, floor, target[pending], hit)
                pending, pending_r = i, in_dtype_of(x, scale) * softmax_scale(m, s)
            else:
                s, m_next = shifted_sum_excluding(xi, m, following, acc)
                s = settled(xi, m, s)
            if math.isinf(m):
                s = s_at_inf
            # Every term halved (exactly) and the sum doubled: m - x_t can overflow.
            log1p_half = log1p(s) * half
            value = (in_dtype_of(xi, 1.0) - eps) * surprisal(x_t * half, m * half, log1p_half)
            if smoothing != 0:
                value += eps * (gap + log1p_half)
            loss[i] = value + value
            m = m_next
        if pending >= 0:
            finish_gradient(grad[pending], pending_r, floor, target[pending], hit)


def _cross_entropy_probability(x, q, smoothing, scale, want_grad, loss, grad):
    """Probability targets ``q`` (one row of ``q`` per row of ``x``)."""
    n = x.shape[1]
    for i in prange(x.shape[0]):
        xi, qi = x[i], q[i]
        m, s = row_state(xi)
        log1p_s = log1p(s)
        eps = in_dtype_of(xi, smoothing)
        keep = in_dtype_of(xi, 1.0) - eps
        floor = eps / in_dtype_of(xi, n)
        half = in_dtype_of(xi, 0.5)
        value = value_carry = q_sum = q_carry = in_dtype_of(xi, 0.0)
        for start in range(0, n, SUM_BLOCK):
            xb, qb = xi[start : start + SUM_BLOCK], qi[start : start + SUM_BLOCK]
            v = t = in_dtype_of(xi, 0.0)
            for j in range(xb.size):
                qj = keep * qb[j] + floor
                if qj != 0:  # halved, so that m - x_j cannot overflow
                    v += qj * surprisal(xb[j] * half, m * half, log1p_s * half)
                t += qj
            value, value_carry = add_compensated(value, value_carry, v)
            q_sum, q_carry = add_compensated(q_sum, q_carry, t)
        value = compensated_total(value, value_carry)
        q_sum = compensated_total(q_sum, q_carry)
        loss[i] = value + value
        if want_grad:
            r = q_sum * softmax_scale(m, s)
            sc = in_dtype_of(xi, scale)
            gi = grad[i]
            for j in range(n):
                gi[j] = (exp_nonpositive(xi[j] - m) * r - (keep * qi[j] + floor)) * sc


CROSS_ENTROPY_INDEX = engines(_cross_entropy_index)
CROSS_ENTROPY_PROBABILITY = engines(_cross_entropy_probability)
