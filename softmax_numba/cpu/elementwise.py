"""The elementwise alternatives to softmax, optionally normalized along the row
(the one-vs-all way to a distribution), and maxout (Numba CPU).

Each kernel maps ``x`` to ``y`` entry by entry in one read and one write; with
``normalize`` it then divides the row by its sum (one more read and write).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines, jit, like
from softmax_numba.cpu._math import kernel_atan as atan
from softmax_numba.cpu._math import kernel_exp as exp
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu._math import maxnum
from softmax_numba.cpu.softmax import scale_into


@jit
def normalize_row(y):
    """``y / sum(y)`` in place: a row that sums to 0 gives NaN (0/0)."""
    s = like(y, 0.0)
    for j in range(y.size):
        s += y[j]
    scale_into(y, like(y, 1.0) / s)


def _sigmoid(x, out, normalize):
    """``1 / (1 + exp(-x))``; for ``x < 0`` as ``e / (1 + e)``, ``e = exp(x)``,
    so that ``exp`` never overflows."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        for j in range(xi.size):
            v = xi[j]
            e = exp(-abs(v))
            one = like(xi, 1.0)
            yi[j] = one / (one + e) if v >= 0 else e / (one + e)
        if normalize:
            normalize_row(yi)


def _softplus(x, out, beta, normalize):
    """``log1p(exp(beta x)) / beta = (max(z, 0) + log1p(exp(-|z|))) / beta``."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        b = like(xi, beta)
        for j in range(xi.size):
            z = xi[j] * b
            yi[j] = (max(z, like(xi, 0.0)) + log1p(exp(-abs(z)))) / b
        if normalize:
            normalize_row(yi)


def _arctan(x, out, normalize):
    """``1/2 + arctan(x) / pi``, as ``arctan(-1/x) / pi`` for ``x < 0`` (the same
    value, without the cancellation of ``1/2 - 0.4999...``; exactly 0 at ``-inf``):
    one ``atan`` per entry, of ``x`` or ``-1/x``, and a select (no branch)."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        pi = like(xi, math.pi)
        half = like(xi, 0.5)
        for j in range(xi.size):
            v = xi[j]
            positive = v >= 0
            a = atan(v if positive else -like(xi, 1.0) / v) / pi
            yi[j] = half + a if positive else a
        if normalize:
            normalize_row(yi)


def _gaussian(x, out, mu, sigma, normalize):
    """``exp(a)`` with ``a = -(x - mu)^2 / (2 sigma^2)``, one pass.  Normalized, it is
    ``softmax(a)``, shifted by ``max(a) = -min|x - mu|^2 / (2 sigma^2)`` (a read-only
    pass for the nearest entry) so that a row far from ``mu`` does not underflow to
    0/0; the sum comes from the exp pass and one more pass scales."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        c = like(xi, mu)
        k = like(xi, -0.5 / (sigma * sigma))
        shift = like(xi, 0.0)
        if normalize:
            closeness = like(xi, -np.inf)  # max of -|x - mu|: maxnum vectorizes
            for j in range(xi.size):
                closeness = maxnum(closeness, -abs(xi[j] - c))
            shift = k * closeness * closeness
        s = like(xi, 0.0)
        for j in range(xi.size):
            d = xi[j] - c
            e = exp(k * d * d - shift)
            yi[j] = e
            s += e
        if normalize:
            scale_into(yi, like(xi, 1.0) / s)


def _maxout(x, pool_size, out):
    """``out_g = max(x[g*pool_size : (g+1)*pool_size])``; a NaN in a group gives NaN.

    The loop runs over groups for each position in the pool, so that consecutive
    groups fill vector lanes; ``v > y or v != v`` takes a NaN and then keeps it.
    """
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        for g in range(yi.size):
            yi[g] = xi[g * pool_size]
        for j in range(1, pool_size):
            for g in range(yi.size):
                v = xi[g * pool_size + j]
                y = yi[g]
                yi[g] = v if (v > y or v != v) else y


SIGMOID = engines(_sigmoid)
SOFTPLUS = engines(_softplus)
ARCTAN = engines(_arctan)
GAUSSIAN = engines(_gaussian)
MAXOUT = engines(_maxout)
