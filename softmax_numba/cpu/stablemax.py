r"""StableMax (Prieto, Barsbey, Mediano & Birdal 2025), its log, its cross-entropy
and its vector-Jacobian product (Numba CPU).

StableMax replaces ``exp`` by ``s(x) = x + 1`` for ``x >= 0`` and ``1 / (1 - x)``
for ``x < 0``.  Every kernel works on the ratios ``r_j = s(x_j) / s(m)``, ``m =
max(x)``, which lie in ``(0, 1]`` (1 at the maxima), so that no sum overflows and
no term underflows before it has to; ``s(m)`` itself is never formed (it overflows
with ``m`` and underflows for ``m`` near the most negative float):

- ``m >= 0``: ``r_j = (1 + x_j) / c`` for ``x_j >= 0`` and ``1 / ((1 - x_j) c)``
  for ``x_j < 0``, ``c = 1 + m``;
- ``m < 0``: ``r_j = c / (1 - x_j)``, ``c = 1 - m``.

One division per entry (:func:`ratio`: a numerator and a denominator chosen by
selects, which vectorize).  ``c`` is rounded once and shared by every entry of the
row, so its rounding cancels from ``r_j / sum_j r_j``.  The log-domain results use
the same ratios' logarithms without forming them: ``-log r_j = log1p(d_j) (+
log1p(m))`` (:func:`neg_log_ratio`), a sum of non-negative terms, and ``log1p(t)``
with ``t = sum_{j != k} r_j`` (one maximum ``k`` left out, as the state of
:mod:`softmax_numba.state_algebra`), so ``log stablemax_j = -(-log r_j + log1p(t))``
adds two terms of one sign and is accurate relative to itself.

Sums run a block of ``SUM_BLOCK`` at a time, the blocks' sums added with a
compensated addition, as every row sum of :mod:`softmax_numba.cpu.softmax`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu.softmax import (
    SUM_BLOCK,
    add_compensated,
    compensated_total,
    maximum,
    row_dot,
    scale_into,
)


@jit
def scale_constants(x, m):
    """``(c, a, b)`` of a row with max ``m``: :func:`ratio` is ``(1 + v) / c`` for
    ``v >= 0`` and ``a / ((1 - v) b)`` for ``v < 0``; ``c = 1 + m`` and ``(a, b) =
    (1, c)`` when ``m >= 0``, ``c = 1 - m`` and ``(a, b) = (c, 1)`` otherwise (then no
    ``v >= 0``).  ``m = -inf`` (an empty, all ``-inf`` or all NaN row) gives ``c =
    inf``, and every ratio NaN."""
    one = in_dtype_of(x, 1.0)
    if m >= 0:
        c = one + m
        return c, one, c
    c = one - m
    return c, c, one


@jit
def ratio(v, c, a, b):
    """``s(v) / s(m)`` for the constants of :func:`scale_constants`: 0 for ``v =
    -inf`` (``m`` finite), NaN for a NaN ``v`` and for ``v = m = +inf``."""
    one = in_dtype_of(v, 1.0)
    nonneg = v >= 0
    num = one + v if nonneg else a
    den = c if nonneg else (one - v) * b
    return num / den


@jit
def neg_log_ratio(v, m, c, log1p_m):
    """``-log(s(v) / s(m)) >= 0`` without forming the ratio: ``log1p((m - v) / (1 +
    v))`` for ``0 <= v`` (``m >= 0``), ``log1p(-v) + log1p(m)`` for ``v < 0 <= m``,
    ``log1p((m - v) / c)`` for ``m < 0`` (``c = 1 - m``); ``log1p_m = log1p(m)``
    (unused for ``m < 0``).  0 at ``v = m``, ``+inf`` at ``v = -inf``."""
    one = in_dtype_of(v, 1.0)
    zero = in_dtype_of(v, 0.0)
    positive = m >= zero
    inner = positive and v < zero
    den = one + v if positive else c
    d = -v if inner else (m - v) / den
    return log1p(d) + (log1p_m if inner else zero)


@jit
def ratios_into(x, c, a, b, out):
    """``out_j = r_j`` on a piece of a row; returns ``sum_j r_j``."""
    s = in_dtype_of(x, 0.0)
    for j in range(x.size):
        r = ratio(x[j], c, a, b)
        out[j] = r
        s += r
    return s


@jit
def excluded_piece(x, m, c, a, b):
    """The sum of the ratios of a piece of a row but those of its maxima (``x_j ==
    m``), and the count of the maxima (as a float, for one type in the loop)."""
    s = in_dtype_of(x, 0.0)
    ties = in_dtype_of(x, 0.0)
    for j in range(x.size):
        top = x[j] == m
        r = ratio(x[j], c, a, b)
        s += in_dtype_of(x, 0.0) if top else r
        ties += in_dtype_of(x, 1.0) if top else in_dtype_of(x, 0.0)
    return s, ties


@jit
def excluded_into_piece(x, m, c, a, b, out):
    """:func:`excluded_piece`, also writing ``out_j = r_j``.  The maxima are taken out
    by a product with ``1 - [x_j == m]``, which LLVM vectorizes with the store (the
    select of :func:`excluded_piece` left this loop scalar: a sequential sum, 75 u off
    on a float32 row of 2048 near-equal terms); at a maximum ``r_j = 1``, so the
    product is 0, except for ``m = +-inf`` (``r_j`` NaN), which
    :func:`excluded_sum_into` sums again."""
    s = in_dtype_of(x, 0.0)
    ties = in_dtype_of(x, 0.0)
    for j in range(x.size):
        top = in_dtype_of(x, 1.0) if x[j] == m else in_dtype_of(x, 0.0)
        r = ratio(x[j], c, a, b)
        out[j] = r
        s += r * (in_dtype_of(x, 1.0) - top)
        ties += top
    return s, ties


@jit
def excluded_sum(x, m, c, a, b):
    """``t = sum_{j != k} r_j``, one maximum ``k`` left out: the ratios of the
    entries below ``m``, plus 1 for each further maximum (exactly).  ``t = n - 1``
    for an all ``-inf`` row (every entry a maximum), NaN with a NaN."""
    total = carry = ties = in_dtype_of(x, 0.0)
    for start in range(0, x.size, SUM_BLOCK):
        s, k = excluded_piece(x[start : start + SUM_BLOCK], m, c, a, b)
        total, carry = add_compensated(total, carry, s)
        ties += k
    return compensated_total(total, carry) + max(ties - in_dtype_of(x, 1.0), in_dtype_of(x, 0.0))


@jit
def excluded_sum_into(x, m, c, a, b, out):
    """:func:`excluded_sum`, also writing ``out_j = r_j`` (every entry)."""
    total = carry = ties = in_dtype_of(x, 0.0)
    for start in range(0, x.size, SUM_BLOCK):
        stop = start + SUM_BLOCK
        s, k = excluded_into_piece(x[start:stop], m, c, a, b, out[start:stop])
        total, carry = add_compensated(total, carry, s)
        ties += k
    if math.isinf(m):  # its maxima's NaN ratios (inf / inf) were multiplied by 0
        return excluded_sum(x, m, c, a, b)
    return compensated_total(total, carry) + max(ties - in_dtype_of(x, 1.0), in_dtype_of(x, 0.0))


@jit
def log_ratios_into(x, m, c, log1p_t, out):
    """``out_j = -(-log r_j + log1p(t))`` on a row (:func:`neg_log_ratio`)."""
    log1p_m = log1p(m) if m >= 0 else in_dtype_of(x, 0.0)
    for j in range(x.size):
        out[j] = -(neg_log_ratio(x[j], m, c, log1p_m) + log1p_t)


# --------------------------------------------------------------------------- 2-D loops


def _stablemax(x, out):
    """``r_j / sum_j r_j``: a read-only max pass, a pass that writes the ratios and
    sums them, a scaling pass over the row in cache."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        c, a, b = scale_constants(xi, maximum(xi))
        total = carry = in_dtype_of(xi, 0.0)
        for start in range(0, xi.size, SUM_BLOCK):
            stop = start + SUM_BLOCK
            piece = ratios_into(xi[start:stop], c, a, b, yi[start:stop])
            total, carry = add_compensated(total, carry, piece)
        scale_into(yi, in_dtype_of(xi, 1.0) / compensated_total(total, carry))


def _log_stablemax(x, out):
    """``-(-log r_j + log1p(t))``: a max pass, a sum pass for ``t``, a write pass."""
    for i in prange(x.shape[0]):
        xi = x[i]
        m = maximum(xi)
        c, a, b = scale_constants(xi, m)
        t = excluded_sum(xi, m, c, a, b)
        log_ratios_into(xi, m, c, log1p(t), out[i])


def _stablemax_cross_entropy(x, target, ignore, scale, want_grad, loss, grad):
    """Class-index targets: ``loss_i = -log r_t + log1p(t)``; with ``want_grad``,
    ``grad_ij = (p_j - [j = t]) scale / (1 + |x_j|)`` with ``p_j = r_j / (1 + t)``
    (NaN for a ``+inf`` max, as :func:`_stablemax`).  Rows whose target equals
    ``ignore`` give 0 (``ignore < 0`` never matches a validated target)."""
    for i in prange(x.shape[0]):
        xi, t = x[i], target[i]
        if t == ignore:
            loss[i] = 0
            if want_grad:
                grad[i, :] = 0
            continue
        m = maximum(xi)
        c, a, b = scale_constants(xi, m)
        if want_grad:
            total = excluded_sum_into(xi, m, c, a, b, grad[i])
        else:
            total = excluded_sum(xi, m, c, a, b)
        log1p_m = log1p(m) if m >= 0 else in_dtype_of(xi, 0.0)
        loss[i] = neg_log_ratio(xi[t], m, c, log1p_m) + log1p(total)
        if not want_grad:
            continue
        one = in_dtype_of(xi, 1.0)
        sc = in_dtype_of(xi, scale)
        k = sc / (one + total)
        if m == np.inf:
            k = in_dtype_of(xi, np.nan)
        gi = grad[i]
        for j in range(gi.size):
            gi[j] = gi[j] * k / (one + abs(xi[j]))
        gi[t] = (ratio(xi[t], c, a, b) * k - sc) / (one + abs(xi[t]))


def _stablemax_backward(y, dy, x, dx):
    """``dx = y (dy - <y, dy>) / (1 + |x|)``: the vector-Jacobian product of
    stablemax, whose Jacobian is ``(diag(s'(x)) - y s'(x)^T) / S`` with ``s'(x) /
    s(x) = 1 / (1 + |x|)``."""
    for i in prange(y.shape[0]):
        yi, dyi, xi, dxi = y[i], dy[i], x[i], dx[i]
        dot = row_dot(yi, dyi)
        one = in_dtype_of(yi, 1.0)
        for j in range(yi.size):
            dxi[j] = yi[j] * (dyi[j] - dot) / (one + abs(xi[j]))


STABLEMAX = engines(_stablemax)
LOG_STABLEMAX = engines(_log_stablemax)
STABLEMAX_CROSS_ENTROPY = engines(_stablemax_cross_entropy)
STABLEMAX_BACKWARD = engines(_stablemax_backward)
