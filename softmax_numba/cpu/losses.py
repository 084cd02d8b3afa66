"""Cross-entropy of softmax with its gradient in the same pass (Numba CPU).

Per row, with ``q`` the (smoothed) target distribution and ``lse`` the shifted
log-sum-exp (Blanchard, Higham & Higham 2021, Alg. 2.2):

    loss = sum_j q_j (lse - x_j),    dloss/dx_j = sum(q) softmax(x)_j - q_j,

with ``softmax(x)_j = exp(x_j - a) / (1 + s)`` from the same ``a = max(x)`` and
``s = sum_{i != k} exp(x_i - a)``.  The input is read twice, the gradient written
once (the loss alone reads it twice and writes nothing but one number per row).
"""

from __future__ import annotations

from numba import prange

from softmax_numba.cpu._compile import engines, jit, like
from softmax_numba.cpu._math import kernel_exp_nonpositive as exp_nonpositive
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu.softmax import (
    ROW_CHUNKS,
    exp_shifted_excluding_into,
    maximum,
    row_range,
    shifted_sum_excluding,
)


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
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        if start == stop:
            continue
        m = maximum(x[start])
        eps = like(x, smoothing)
        hit = (like(x, 1.0) - eps) * like(x, scale)
        floor = eps / like(x, n) * like(x, scale)
        pending, pending_r = -1, like(x, 0.0)
        for i in range(start, stop):
            xi, t, following = x[i], target[i], x[min(i + 1, stop - 1)]
            if t == ignore:
                loss[i] = 0
                if want_grad:
                    grad[i, :] = 0
                m = maximum(following)
                continue
            if want_grad:  # keep exp(x - m) for the gradient: one exp per entry
                s, m_next = exp_shifted_excluding_into(xi, m, grad[i], following)
                if pending >= 0:
                    finish_gradient(grad[pending], pending_r, floor, target[pending], hit)
                pending, pending_r = i, like(x, scale) / (like(x, 1.0) + s)
            else:
                s, m_next = shifted_sum_excluding(xi, m, following)
            lse = m + log1p(s)
            value = (like(xi, 1.0) - eps) * (lse - xi[t])
            if smoothing != 0:
                total = like(xi, 0.0)
                for j in range(n):
                    total += xi[j]
                value += eps * (lse - total / like(xi, n))
            loss[i] = value
            m = m_next
        if pending >= 0:
            finish_gradient(grad[pending], pending_r, floor, target[pending], hit)


def _cross_entropy_probability(x, q, smoothing, scale, want_grad, loss, grad):
    """Probability targets ``q`` (one row of ``q`` per row of ``x``)."""
    n = x.shape[1]
    for i in prange(x.shape[0]):
        xi, qi = x[i], q[i]
        m = maximum(xi)
        s = shifted_sum_excluding(xi, m, xi)[0]
        lse = m + log1p(s)
        eps = like(xi, smoothing)
        keep = like(xi, 1.0) - eps
        floor = eps / like(xi, n)
        value = like(xi, 0.0)
        q_sum = like(xi, 0.0)
        for j in range(n):
            qj = keep * qi[j] + floor
            if qj != 0:
                value += qj * (lse - xi[j])
            q_sum += qj
        loss[i] = value
        if want_grad:
            r = q_sum / (like(xi, 1.0) + s)
            sc = like(xi, scale)
            gi = grad[i]
            for j in range(n):
                gi[j] = (exp_nonpositive(xi[j] - m) * r - (keep * qi[j] + floor)) * sc


CROSS_ENTROPY_INDEX = engines(_cross_entropy_index)
CROSS_ENTROPY_PROBABILITY = engines(_cross_entropy_probability)
