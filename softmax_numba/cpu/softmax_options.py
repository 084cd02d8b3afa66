"""Softmax and log-softmax with a temperature and an attention sink (Numba CPU).

Per row, with ``y = x / T`` and a sink logit ``c`` (``-inf`` for none):

    p_i = exp(y_i) / (exp(c) + sum_j exp(y_j)),    log p_i = y_i - log(exp(c) + sum_j exp(y_j)),

the softmax of the row ``[y, c]`` without its last entry.  Both come from the
row's state ``(m, s)`` (:mod:`softmax_numba.state_algebra`) with the sink added as
one more entry, ``add(m, s, c)``: exact when ``c = -inf``, so that the sink alone
changes nothing but the denominator.

The division is fused into the max pass: it writes ``y_i = x_i / T``, correctly
rounded (compiled without ``arcp``, so bit for bit NumPy's ``x / T``), into the
output row and takes the max of what it writes; the other passes then read and
write that row in place, in cache.  With ``T = 1`` the row is read where it is.
Kernels take 2-D C-contiguous ``(rows, n)`` arrays, ``sink`` one value per row.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu._math import float_bits, max_from_bit_bounds
from softmax_numba.cpu._math import kernel_exp as exp
from softmax_numba.cpu._math import kernel_exp_shifted as exp_shifted
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu.softmax import (
    _STATE,
    ROW_CHUNKS,
    SUM_BLOCK,
    add_compensated,
    compensated_total,
    exp_shifted_into,
    log_probabilities_into,
    maximum,
    next_bit_bounds,
    row_range,
    scale_into,
    settled,
    shifted_sum_excluding,
    sum_scratch,
)

add_entry = _STATE.add


@jit(reciprocal=False)
def divided_into(x, temperature, out):
    """``out_i = x_i / T``, each quotient correctly rounded, and ``max(out)`` (as
    :func:`~softmax_numba.cpu.softmax.maximum`: NaNs skipped).  Compiled without
    ``arcp``, which would multiply by a rounded ``1 / T`` instead."""
    t = in_dtype_of(x, temperature)
    highest = lowest = float_bits(in_dtype_of(x, -np.inf))
    for i in range(x.size):
        y = x[i] / t
        out[i] = y
        highest, lowest = next_bit_bounds(highest, lowest, y)
    m = max_from_bit_bounds(highest, lowest)
    if m != m:  # a NaN among the bits: the careful max
        m = maximum(out)
    return m


@jit
def sink_scale(m, total, sink):
    """The factor of ``exp(y_i - m)`` that gives ``p_i``, from ``total = sum_j exp(y_j
    - m)``: ``1 / (total + exp(c - m))``, or, for a sink above the row's max,
    ``f / (1 + total f)`` with ``f = exp(m - c)``.  A ``+inf`` sink is NaN, as
    softmax of a row holding ``+inf``; a NaN sink is NaN."""
    if sink > m:
        if sink == np.inf:
            return in_dtype_of(total, np.nan)
        f = exp(in_dtype_of(total, m - sink))
        return f / (in_dtype_of(total, 1.0) + total * f)
    return in_dtype_of(total, 1.0) / (total + exp(in_dtype_of(total, sink - m)))


@jit
def exp_shifted_in_place(y, m, acc):
    """``y_i = exp(y_i - m)`` in place, and ``sum_i y_i``, blocked as
    :func:`~softmax_numba.cpu.softmax.exp_shifted_into`.  That function with its
    input and output one array vectorizes no more (LLVM's overlap check sends it to
    the scalar loop): one array in and out keeps the vector loop, and its order."""
    acc[0] = acc[1] = 0
    for start in range(0, y.size, SUM_BLOCK):
        block = y[start : start + SUM_BLOCK]
        s = in_dtype_of(y, 0.0)
        for i in range(block.size):
            e = exp_shifted(block[i] - m)
            block[i] = e
            s += e
        acc[0], acc[1] = add_compensated(acc[0], acc[1], s)
    return compensated_total(acc[0], acc[1])


@jit
def scaled_by_sink(out, m, total, sink):
    """``out_i = exp(y_i - m)`` times :func:`sink_scale`; a row with no finite
    entry beside a finite sink is all zeros (its terms, ``exp(-inf - (-inf))``, are
    NaN)."""
    if m == -np.inf and sink > m and sink != np.inf:
        out[:] = 0
        return
    if m == np.inf:
        total = in_dtype_of(out, np.nan)
    scale_into(out, sink_scale(m, total, in_dtype_of(out, sink)))


def _softmax_options(x, out, temperature, sink):
    """Softmax of ``x / temperature`` beside the sink logits ``sink`` (one per row):
    the max pass (dividing into ``out`` with a temperature), a pass writing
    ``exp(y_i - m)`` and summing, and one scaling the row in cache."""
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    accs = sum_scratch(x, chunks)
    divide = temperature != 1.0
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        acc = accs[c]
        for i in range(start, stop):
            if divide:
                m = divided_into(x[i], temperature, out[i])
                total = exp_shifted_in_place(out[i], m, acc)
            else:
                m = maximum(x[i])
                total, _ = exp_shifted_into(x[i], m, out[i], x[i], acc)
            scaled_by_sink(out[i], m, total, sink[i])


@jit
def log_softmax_options_row(y, m, sink, out, acc):
    """``log p_i = (y_i - M) - log1p(S)`` into ``out`` (which may be ``y``), with
    ``(M, S)`` the row's settled state with the sink added."""
    s, _ = shifted_sum_excluding(y, m, y, acc)
    big_m, big_s = add_entry(m, settled(y, m, s), in_dtype_of(y, sink))
    log_probabilities_into(y, out, big_m, log1p(big_s), False)


def _log_softmax_options(x, out, temperature, sink):
    """Log-softmax of ``x / temperature`` beside the sink logits ``sink``."""
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    accs = sum_scratch(x, chunks)
    divide = temperature != 1.0
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        acc = accs[c]
        for i in range(start, stop):
            if divide:
                m = divided_into(x[i], temperature, out[i])
                log_softmax_options_row(out[i], m, sink[i], out[i], acc)
            else:
                log_softmax_options_row(x[i], maximum(x[i]), sink[i], out[i], acc)


SOFTMAX_OPTIONS = engines(_softmax_options)
LOG_SOFTMAX_OPTIONS = engines(_log_softmax_options)


def _divided(x, out, temperature):
    """``out = x / temperature``, each quotient correctly rounded
    (:func:`divided_into`): the blocks of ``cross_entropy(..., temperature=T)``."""
    for i in prange(x.shape[0]):
        divided_into(x[i], temperature, out[i])


DIVIDED = engines(_divided)
