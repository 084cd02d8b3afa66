"""The elementwise alternatives to softmax, optionally normalized along the row
(the one-vs-all way to a distribution) (Numba CPU).

Each kernel maps ``x`` to ``y`` entry by entry in one read and one write, summing
the row as it goes; with ``normalize`` it then divides the row by that sum while it
is still in cache.  Sigmoid and softplus rescale a row whose values underflow
(:func:`underflowed`); arctan and the Gaussian (shifted by its nearest entry) need not.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu._math import kernel_atan as atan
from softmax_numba.cpu._math import kernel_exp as exp
from softmax_numba.cpu._math import kernel_exp_nonpositive as exp_nonpositive
from softmax_numba.cpu._math import kernel_log1p_unit_interval as log1p_unit_interval
from softmax_numba.cpu._math import maxnum
from softmax_numba.cpu.softmax import (
    SUM_BLOCK,
    add_compensated,
    compensated_total,
    maximum,
    scale_into,
)


@jit
def underflowed(y, s, limit):
    """Whether ``y / s`` (``s = sum(y)``) needs the rescaled form: ``s < limit`` and
    some ``y_j`` below the smallest normal number.  There ``y_j / s`` may be a normal
    number although ``y_j`` lost its digits to underflow (or is 0, and 0/0 when all
    are).  ``limit`` is the map's value at 0 (1/2 for sigmoid, ``log 2`` for ``beta``
    times softplus): below it every ``z_j < 0``, so the rescaled form's
    ``ratio(max z)`` is near 1; above it ``y / s`` loses less than a bit, in the
    entries ``y_j`` within a factor 2 of the smallest normal."""
    if not s < limit:
        return False
    tiny = in_dtype_of(y, np.finfo(y.dtype).tiny)
    for j in range(y.size):
        if y[j] < tiny:
            return True
    return False


@jit
def sigmoid_ratio(v):
    """``sigmoid(v) / e^v = 1 / (1 + e^v)`` (``v < 0`` where it is used)."""
    return in_dtype_of(v, 1.0) / (in_dtype_of(v, 1.0) + exp(v))


@jit
def softplus_ratio(z):
    """``log1p(e^z) / e^z``, from ``t = e^{-|z|}`` in [0, 1]: ``log1p(t) / t`` for
    ``z <= 0`` (1 where ``t`` underflows to 0), ``(z + log1p(t)) t`` above."""
    t = exp_nonpositive(-abs(z))
    if z > 0:
        return (z + log1p_unit_interval(t)) * t
    return in_dtype_of(z, 1.0) if t == 0 else log1p_unit_interval(t) / t


@jit
def rescaled_sigmoid_into(x, y):
    """``y = sigmoid(x) / sum(sigmoid(x))`` as ``w / sum(w)``, ``w_j = e^{x_j - m}
    sigmoid_ratio(x_j)`` with ``m = max(x)``: the same ratios, with no term below
    ``e^{x_j - m}`` to underflow early (Blanchard, Higham & Higham 2021's shift, for
    a map that goes to 0 like ``exp``)."""
    m = maximum(x)
    total = carry = in_dtype_of(x, 0.0)
    for start in range(0, x.size, SUM_BLOCK):
        xb, yb = x[start : start + SUM_BLOCK], y[start : start + SUM_BLOCK]
        t = in_dtype_of(x, 0.0)
        for j in range(xb.size):
            w = exp_nonpositive(xb[j] - m) * sigmoid_ratio(xb[j])
            yb[j] = w
            t += w
        total, carry = add_compensated(total, carry, t)
    scale_into(y, in_dtype_of(x, 1.0) / compensated_total(total, carry))


@jit
def rescaled_softplus_into(x, b, y):
    """As :func:`rescaled_sigmoid_into` for ``softplus`` with ``beta = b > 0``:
    ``w_j = e^{z_j - max(z)} softplus_ratio(z_j)``, ``z = b x`` (``max(b x) = b
    max(x)``, rounding being monotonic)."""
    top = maximum(x) * b
    total = carry = in_dtype_of(x, 0.0)
    for start in range(0, x.size, SUM_BLOCK):
        xb, yb = x[start : start + SUM_BLOCK], y[start : start + SUM_BLOCK]
        t = in_dtype_of(x, 0.0)
        for j in range(xb.size):
            z = xb[j] * b
            w = exp_nonpositive(z - top) * softplus_ratio(z)
            yb[j] = w
            t += w
        total, carry = add_compensated(total, carry, t)
    scale_into(y, in_dtype_of(x, 1.0) / compensated_total(total, carry))


@jit
def normalize_into(y, s):
    """``y /= s`` with ``s = sum(y)``; a sum that overflowed (softplus of logits
    near the largest float) is taken again over ``y_j / n``, and ``y_j / n`` divided
    by it."""
    if s != np.inf:
        scale_into(y, in_dtype_of(y, 1.0) / s)
        return
    w = in_dtype_of(y, 1.0) / in_dtype_of(y, y.size)
    total = carry = in_dtype_of(y, 0.0)
    for start in range(0, y.size, SUM_BLOCK):
        yb = y[start : start + SUM_BLOCK]
        t = in_dtype_of(y, 0.0)
        for j in range(yb.size):
            t += yb[j] * w
        total, carry = add_compensated(total, carry, t)
    t = compensated_total(total, carry)
    for j in range(y.size):
        y[j] = y[j] * w / t


def _sigmoid(x, out, normalize):
    """``1 / (1 + exp(-x))``; for ``x < 0`` as ``e / (1 + e)``, ``e = exp(x)``,
    so that ``exp`` never overflows.  Normalized, a row with entries lost to
    underflow is rescaled by its max (:func:`underflowed`,
    :func:`rescaled_sigmoid_into`)."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        if not normalize:
            sigmoid_into(xi, yi)
            continue
        total = carry = in_dtype_of(xi, 0.0)
        for start in range(0, xi.size, SUM_BLOCK):
            stop = start + SUM_BLOCK
            piece = sigmoid_into(xi[start:stop], yi[start:stop])
            total, carry = add_compensated(total, carry, piece)
        s = compensated_total(total, carry)
        if underflowed(yi, s, in_dtype_of(xi, 0.5)):
            rescaled_sigmoid_into(xi, yi)
        else:
            normalize_into(yi, s)


@jit
def sigmoid_into(x, y):
    """``y = sigmoid(x)`` on a piece of a row; returns ``sum(y)`` (the kernels add the
    pieces' sums a block of ``SUM_BLOCK`` at a time, with ``add_compensated``)."""
    s = in_dtype_of(x, 0.0)
    for j in range(x.size):
        v = x[j]
        e = exp_nonpositive(-abs(v))
        one = in_dtype_of(x, 1.0)
        r = one / (one + e) if v >= 0 else e / (one + e)
        y[j] = r
        s += r
    return s


def _softplus(x, out, beta, normalize):
    """``log1p(exp(beta x)) / beta = max(x, 0) + log1p(exp(-|z|)) / beta``, ``z = beta x``,
    with ``exp(-|z|)`` in [0, 1], where ``log1p`` needs no special cases; ``z`` only
    enters through ``exp(-|z|)``, so a ``beta x`` beyond the largest float gives
    ``x``, not ``inf``."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        b = in_dtype_of(xi, beta)
        if not normalize:
            softplus_into(xi, b, yi)
            continue
        total = carry = in_dtype_of(xi, 0.0)
        for start in range(0, xi.size, SUM_BLOCK):
            stop = start + SUM_BLOCK
            piece = softplus_into(xi[start:stop], b, yi[start:stop])
            total, carry = add_compensated(total, carry, piece)
        s = compensated_total(total, carry)
        if underflowed(yi, s * b, in_dtype_of(xi, math.log(2.0))):
            rescaled_softplus_into(xi, b, yi)
        else:
            normalize_into(yi, s)


@jit
def softplus_into(x, b, y):
    """``y = softplus(x)`` (``beta = b``) on a piece of a row; returns ``sum(y)``."""
    s = in_dtype_of(x, 0.0)
    for j in range(x.size):
        z = x[j] * b
        r = max(x[j], in_dtype_of(x, 0.0)) + log1p_unit_interval(exp_nonpositive(-abs(z))) / b
        y[j] = r
        s += r
    return s


def _arctan(x, out, normalize):
    """``1/2 + arctan(x) / pi``, as ``arctan(-1/x) / pi`` for ``x < 0`` (the same
    value, without the cancellation of ``1/2 - 0.4999...``; exactly 0 at ``-inf``):
    one ``atan`` per entry, of ``x`` or ``-1/x``, and a select (no branch)."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        if not normalize:
            arctan_into(xi, yi)
            continue
        total = carry = in_dtype_of(xi, 0.0)
        for start in range(0, xi.size, SUM_BLOCK):
            stop = start + SUM_BLOCK
            piece = arctan_into(xi[start:stop], yi[start:stop])
            total, carry = add_compensated(total, carry, piece)
        normalize_into(yi, compensated_total(total, carry))


@jit
def arctan_into(x, y):
    """``y = 1/2 + arctan(x) / pi`` on a piece of a row; returns ``sum(y)``."""
    pi = in_dtype_of(x, math.pi)
    half = in_dtype_of(x, 0.5)
    s = in_dtype_of(x, 0.0)
    for j in range(x.size):
        v = x[j]
        positive = v >= 0
        a = atan(v if positive else -in_dtype_of(x, 1.0) / v) / pi
        r = half + a if positive else a
        y[j] = r
        s += r
    return s


def _gaussian(x, out, mu, sigma, normalize):
    """``exp(a)`` with ``a = -(x - mu)^2 / (2 sigma^2)``, one pass.  Normalized, it is
    ``softmax(a)``, shifted by ``max(a) = -r^2 / (2 sigma^2)``, ``r = min|x - mu|`` (a
    read-only pass for the nearest entry) so that a row far from ``mu`` does not
    underflow to 0/0; the sum comes from the exp pass and one more pass scales."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        c = in_dtype_of(xi, mu)
        k = in_dtype_of(xi, -0.5 / (sigma * sigma))
        if not normalize:
            gaussian_into(xi, c, k, in_dtype_of(xi, 0.0), yi)
            continue
        closeness = in_dtype_of(xi, -np.inf)  # max of -|x - mu|: maxnum vectorizes
        for j in range(xi.size):
            closeness = maxnum(closeness, -abs(xi[j] - c))
        if k * closeness * closeness == -np.inf:  # max(a) overflows: NaN, as softmax(a)
            yi[:] = np.nan
            continue
        total = carry = in_dtype_of(xi, 0.0)
        for start in range(0, xi.size, SUM_BLOCK):
            stop = start + SUM_BLOCK
            piece = gaussian_into(xi[start:stop], c, k, -closeness, yi[start:stop])
            total, carry = add_compensated(total, carry, piece)
        normalize_into(yi, compensated_total(total, carry))


@jit
def gaussian_into(x, c, k, r, y):
    """``y = exp(k ((x - c)^2 - r^2))`` on a piece of a row, as ``k (d - r) (d + r)``
    with ``d = |x - c|``: ``d - r`` is exact where it cancels (0 at the nearest entry,
    whatever the contraction of the products into FMAs); returns ``sum(y)``."""
    s = in_dtype_of(x, 0.0)
    for j in range(x.size):
        d = abs(x[j] - c)
        e = exp(k * ((d - r) * (d + r)))
        y[j] = e
        s += e
    return s


SIGMOID = engines(_sigmoid)
SOFTPLUS = engines(_softplus)
ARCTAN = engines(_arctan)
GAUSSIAN = engines(_gaussian)
