"""Softmax, log-softmax, log-sum-exp and their backward ops on rows (Numba CPU).

All kernels take 2-D C-contiguous ``(rows, n)`` arrays and compute in the dtype of
their input (float32 or float64).

Every log-domain result is formed from the *state* of a row, ``m = x_k = max(x)``
and ``s = sum_{i != k} exp(x_i - m)``: ``logsumexp = m + log1p(s)``,
``log_softmax_i = (x_i - m) - log1p(s)``, and the loss ``(m - x_t) + log1p(s)``.
Each is a sum of two terms of one sign, so its error is relative to the result
whatever the offset of the logits; ``x_i - logsumexp`` would lose ``u |logsumexp|``
to cancellation.  The state of a row whose max is not finite is ``s = 0`` (NaN if
the row holds a NaN); the same three formulas then give scipy's results for
``+inf`` and all ``-inf`` rows with no special case.  Algorithms follow Blanchard, Higham & Higham,
"Accurately computing the log-sum-exp and softmax functions", IMA J. Numer. Anal.
41(4), 2021 (Algorithms 2.1-2.3), and Milakov & Gimelshein, "Online normalizer
calculation for softmax", arXiv:1805.02867, 2018 (Algorithm 3).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from softmax_numba import config, state_algebra
from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu._math import float_bits, max_from_bit_bounds, maxnum
from softmax_numba.cpu._math import kernel_exp as exp
from softmax_numba.cpu._math import kernel_exp_nonpositive as exp_nonpositive
from softmax_numba.cpu._math import kernel_exp_shifted as exp_shifted
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu._stream import stream_fence, stream_log_probability

# --------------------------------------------------------------------------- row pieces

#: The state algebra (:mod:`softmax_numba.state_algebra`) compiled for the CPU engines.
_STATE = state_algebra.build(jit, jit(reassociate=False), exp, log1p, in_dtype_of)
#: ``(x - m) - log1p(s)``, compiled without ``reassoc``, which would hoist
#: ``m + log1p(s)`` out of a loop and lose ``u |m|``.
log_probability = _STATE.log_probability
#: ``(m - x) + log1p(s)``, the loss of one entry.
surprisal = _STATE.surprisal
#: The exact merge of two pieces' states.
merge_state = _STATE.merge
#: ``1 / (1 + s)``; NaN for a ``+inf`` max.
softmax_scale = _STATE.softmax_scale
#: ``m + log1p(s)`` of a settled state.
state_logsumexp = _STATE.logsumexp


@jit
def maximum(x):
    """``max(x)`` skipping NaNs; ``-inf`` for an empty row or one with no number.

    One vectorized pass of integer max and min over the bits
    (:func:`next_bit_bounds`, two one-cycle instructions per vector); only a row
    whose result is NaN (it holds a positive NaN, or only negative ones) takes a
    second pass of IEEE ``maxNum`` (:func:`~softmax_numba.cpu._math.maxnum`), whose
    compare and blend per vector made this pass cost as much as a third of an exp
    pass.  The kernels find a NaN of the row from its sum (``exp(NaN - m)``).
    """
    highest = lowest = float_bits(in_dtype_of(x, -np.inf))
    for i in range(x.size):
        highest, lowest = next_bit_bounds(highest, lowest, x[i])
    m = max_from_bit_bounds(highest, lowest)
    if m != m:
        m = in_dtype_of(x, -np.inf)
        for i in range(x.size):
            m = maxnum(m, x[i])
    return m


SUM_BLOCK = config.SUM_BLOCK  # baked in (see softmax_numba.config)


@jit(reassociate=False)
def add_compensated(total, carry, value):
    """``total + value`` as Knuth's two-sum: the rounded sum and, added to
    ``carry``, its rounding error, exactly.  Every row sum of the CPU kernels
    accumulates its blocks' sums (of :data:`SUM_BLOCK` terms) so; ``total + carry``
    (:func:`compensated_total`) is then within ``2 u`` of the blocks' exact sum
    (Higham 2002, sec. 4.3), and the error of a sum of any length that of one block.

    Compiled without ``reassoc``, under which LLVM simplifies ``(total - (t - b)) +
    (value - b)`` to 0 (``tests/test_accuracy.py`` fails without it); flags are per
    instruction, so they survive inlining into a kernel compiled with them."""
    t = total + value
    b = t - total
    return t, carry + ((total - (t - b)) + (value - b))


@jit
def compensated_total(total, carry):
    """``total + carry`` of :func:`add_compensated`; ``total`` itself when it is not
    finite (an overflowed or NaN sum, whose ``carry`` is NaN)."""
    if math.isfinite(total):
        return total + carry
    return total


@jit
def row_sum(a):
    """``sum_i a_i``, a block of :data:`SUM_BLOCK` at a time (:func:`add_compensated`)."""
    total = carry = in_dtype_of(a, 0.0)
    for start in range(0, a.size, SUM_BLOCK):
        block = a[start : start + SUM_BLOCK]
        s = in_dtype_of(a, 0.0)
        for i in range(block.size):
            s += block[i]
        total, carry = add_compensated(total, carry, s)
    return compensated_total(total, carry)


@jit
def row_dot(a, b):
    """``sum_i a_i b_i``, a block of :data:`SUM_BLOCK` at a time (:func:`add_compensated`)."""
    total = carry = in_dtype_of(a, 0.0)
    for start in range(0, a.size, SUM_BLOCK):
        ab, bb = a[start : start + SUM_BLOCK], b[start : start + SUM_BLOCK]
        s = in_dtype_of(a, 0.0)
        for i in range(ab.size):
            s += ab[i] * bb[i]
        total, carry = add_compensated(total, carry, s)
    return compensated_total(total, carry)


@jit
def next_bit_bounds(highest, lowest, value):
    """One step of the running maximum of the *next* row, kept as the largest and the
    smallest :func:`~softmax_numba.cpu._math.float_bits` seen (two integer ops, which
    vectorize inside another row's loop); read it back with
    :func:`~softmax_numba.cpu._math.max_from_bit_bounds`."""
    b = float_bits(value)
    return max(highest, b), min(lowest, b)


@jit
def shifted_sum_excluding(x, m, following, acc):
    """``sum_{i != k} exp(x_i - m)`` for ``m = x_k = max(x)``: the ``s`` of the
    shifted algorithm, in one vectorizable pass; also ``max(following)``.

    Rather than look for ``k``, each entry equal to ``m`` is selected away (a vector
    blend) and counted; all of them but one are added back, exactly, at the end.
    (:func:`exp_shifted_excluding_into`, which also stores the terms, multiplies by
    ``1 - [x_i == m]`` instead, which LLVM vectorizes there.)  Never ``s += exp(x_i -
    m) - [x_i == m]``: with ``reassoc`` LLVM splits that into two sums, ``(sum e) -
    ties``, whose first holds the 1 of the max and rounds a small ``s`` away
    (``log1p(e^-7)`` lost 427 u in float64).
    ``following`` (the next row, or ``x`` itself) is read in the same loop, so
    that its load from memory overlaps this row's arithmetic (see
    :func:`next_bit_bounds`).  A NaN of that row may win or be passed over; either
    way it poisons the row, through the max or through ``exp(NaN - m)``.

    The row is summed a block of :data:`SUM_BLOCK` at a time (:func:`shifted_piece`),
    the blocks' sums accumulated by :func:`add_compensated` in ``acc``
    (:func:`sum_scratch`), so that the rounding error of ``s`` is that of one block.
    """
    acc[0] = acc[1] = acc[2] = 0
    acc[3] = -np.inf
    for start in range(0, x.size, SUM_BLOCK):
        stop = start + SUM_BLOCK
        s, t, hb, lb = shifted_piece(x[start:stop], m, following[start:stop])
        acc[3] = larger(acc[3], max_from_bit_bounds(hb, lb))
        acc[0], acc[1] = add_compensated(acc[0], acc[1], s)
        acc[2] += t
    s, ties = compensated_total(acc[0], acc[1]), acc[2]
    return s + max(ties - in_dtype_of(x, 1.0), in_dtype_of(x, 0.0)), acc[3]


@jit
def shifted_piece(x, m, following):
    """The vectorized loop of :func:`shifted_sum_excluding` over a piece of a row:
    the sum of its terms other than the maxima, the count of the maxima and the bit
    bounds of ``following`` (:func:`next_bit_bounds`).  Each piece starts bounds of
    its own: carried from block to block, they kept LLVM from vectorizing the loop."""
    s = in_dtype_of(x, 0.0)
    ties = in_dtype_of(x, 0.0)  # a float count keeps every lane of the loop in one type
    highest = lowest = float_bits(in_dtype_of(x, -np.inf))
    for i in range(x.size):
        top = x[i] == m
        e = exp_shifted(x[i] - m)
        s += in_dtype_of(x, 0.0) if top else e
        ties += in_dtype_of(x, 1.0) if top else in_dtype_of(x, 0.0)
        highest, lowest = next_bit_bounds(highest, lowest, following[i])
    return s, ties, highest, lowest


@jit
def larger(a, b):
    """``a`` unless ``b`` is greater: the max of the blocks' maxima of the next row
    (a NaN may win or be passed over, as in :func:`shifted_sum_excluding`)."""
    return b if b > a else a


@jit
def sum_scratch(x, runs):
    """Scratch for the blocked sums of rows like ``x`` (:func:`shifted_sum_excluding`,
    :func:`exp_shifted_excluding_into`, :func:`exp_shifted_into`), one row of it per
    run of rows (a thread's): the running sum, its compensation, the count of maxima
    and the max of the next row so far.

    In memory rather than in registers, where they would be live across the blocks'
    vector loop: there, LLVM no longer kept ``exp``'s constants (and their addresses)
    in registers inside the loop (+5-10% on the exp pass, AVX-512).  Allocated once
    per call (an allocation per row costs some 30 ns, 7% of a row of 1000).
    """
    return np.zeros((runs, 4), dtype=x.dtype)


@jit
def exp_shifted_excluding_into(x, m, out, following, acc):
    """:func:`shifted_sum_excluding`, also writing ``out_i = exp(x_i - m)`` (1 at the
    maxima), for callers that need the terms again."""
    acc[0] = acc[1] = acc[2] = 0
    acc[3] = -np.inf
    for start in range(0, x.size, SUM_BLOCK):
        stop = start + SUM_BLOCK
        s, t, hb, lb = exp_shifted_excluding_piece(
            x[start:stop], m, out[start:stop], following[start:stop]
        )
        acc[3] = larger(acc[3], max_from_bit_bounds(hb, lb))
        acc[0], acc[1] = add_compensated(acc[0], acc[1], s)
        acc[2] += t
    s, ties = compensated_total(acc[0], acc[1]), acc[2]
    return s + max(ties - in_dtype_of(x, 1.0), in_dtype_of(x, 0.0)), acc[3]


@jit
def exp_shifted_excluding_piece(x, m, out, following):
    """The loop of :func:`exp_shifted_excluding_into` over a piece of a row (as
    :func:`shifted_piece`)."""
    s = in_dtype_of(x, 0.0)
    ties = in_dtype_of(x, 0.0)
    highest = lowest = float_bits(in_dtype_of(x, -np.inf))
    for i in range(x.size):
        top = in_dtype_of(x, 1.0) if x[i] == m else in_dtype_of(x, 0.0)
        e = exp_nonpositive(x[i] - m)
        out[i] = e
        s += e * (in_dtype_of(x, 1.0) - top)
        ties += top
        highest, lowest = next_bit_bounds(highest, lowest, following[i])
    return s, ties, highest, lowest


@jit
def tiny_sum(x, s):
    """Whether a shifted sum ``s`` over ``x`` may have lost a part that matters to the
    flush of :func:`~softmax_numba.cpu._math.exp_shifted`, which drops terms below
    ``2^-126.5`` (float32; ``2^-1022.5`` for float64): ``s`` below ``n tiny / (eps /
    128)`` (``n 2^-96``, ``n 2^-963``; every entry but the max 66 (float32) or 708
    (float64) or more below it).  Elsewhere the flushed terms are below ``u / 64`` of
    ``s``.  False for a NaN ``s``."""
    info = np.finfo(x.dtype)
    return s < in_dtype_of(x, info.tiny * 128.0 / info.eps) * in_dtype_of(x, x.size)


@jit(reassociate=False)
def careful_sum(x, m):
    """``sum_{i != k} exp(x_i - m)`` with :func:`~softmax_numba.cpu._math.exp_nonpositive`,
    subnormal terms included, for the rare row where :func:`tiny_sum` holds: a
    near-certain one, whose ``log1p(s)`` (log-softmax of its max, log-sum-exp near 0,
    the loss of its max) is relative to ``s``.  A scalar loop: entries beyond the
    underflow range (``-inf`` included, as in a masked row) are skipped by a branch,
    with no ``exp`` and no underflow, and a loop of vector code here, never run on
    other rows, made the row loops that call :func:`settled` a third slower on rows
    of 10 entries.  Without ``reassoc``, so that its bits do not depend on the copy
    of it that runs (see ``_compile.jit``)."""
    info = np.finfo(x.dtype)
    # exp rounds to 0 below (emin - p) ln2: -103.97 (float32), -745.13 (float64)
    low = in_dtype_of(x, (info.minexp - info.nmant - 1) * 0.6931471805599453)
    zero = in_dtype_of(x, 0.0)
    total = carry = ties = zero
    for start in range(0, x.size, SUM_BLOCK):  # blocks, as shifted_sum_excluding
        xb = x[start : start + SUM_BLOCK]
        block = zero
        for i in range(xb.size):
            d = xb[i] - m
            if d == zero:
                ties += in_dtype_of(x, 1.0)
            elif d >= low:
                block += exp_nonpositive(d)
        total, carry = add_compensated(total, carry, block)
    return compensated_total(total, carry) + max(ties - in_dtype_of(x, 1.0), zero)


@jit
def nan_or(x, value):
    """The first NaN of ``x`` if it has one, else ``value`` (a NaN poisons its row)."""
    for i in range(x.size):
        if math.isnan(x[i]):
            return x[i]
    return value


@jit
def settled(x, m, s):
    """The ``s`` of the state convention from a shifted sum ``s``: for a finite ``m =
    max(x)``, ``s`` itself, or summed again with the careful ``exp`` in the rare row
    where the fast one's flushed terms could matter (:func:`tiny_sum`,
    :func:`careful_sum`); for ``m = +-inf`` (where ``exp(inf - inf)`` made it NaN),
    0, or a NaN of ``x``."""
    if math.isinf(m):
        return nan_or(x, in_dtype_of(x, 0.0))
    if tiny_sum(x, s):
        return careful_sum(x, m)
    return s


@jit
def row_state(x):
    """``(m, s)`` of one row: ``m = max(x)``, ``s = sum_{i != k} exp(x_i - m)``."""
    m = maximum(x)
    if x.size <= SUM_BLOCK:  # one block: no scratch to allocate
        s, ties, _, _ = shifted_piece(x, m, x)
        return m, settled(x, m, s + max(ties - in_dtype_of(x, 1.0), in_dtype_of(x, 0.0)))
    return m, settled(x, m, shifted_sum_excluding(x, m, x, sum_scratch(x, 1)[0])[0])


@jit
def row_logsumexp(x):
    """Shifted log-sum-exp of one row: ``a + log1p(sum_{i != k} exp(x_i - a))``.

    ``a = max(x)`` attained at ``k`` (Blanchard, Higham & Higham 2021, Alg. 2.2).
    Non-finite rules as scipy: NaN gives NaN, any ``+inf`` gives ``+inf``, a row
    that is empty or all ``-inf`` gives ``-inf``.
    """
    m, s = row_state(x)
    return state_logsumexp(m, s)


@jit
def exp_shifted_into(x, m, out, following, acc):
    """``out_i = exp(x_i - m)`` for ``m = max(x)``; returns ``sum_i out_i`` (one read,
    one write) and ``max(following)`` (see :func:`shifted_sum_excluding`; blocked
    as there)."""
    acc[0] = acc[1] = 0
    acc[3] = -np.inf
    for start in range(0, x.size, SUM_BLOCK):
        stop = start + SUM_BLOCK
        s, hb, lb = exp_shifted_piece(x[start:stop], m, out[start:stop], following[start:stop])
        acc[3] = larger(acc[3], max_from_bit_bounds(hb, lb))
        acc[0], acc[1] = add_compensated(acc[0], acc[1], s)
    return compensated_total(acc[0], acc[1]), acc[3]


@jit
def exp_shifted_piece(x, m, out, following):
    """The loop of :func:`exp_shifted_into` over a piece of a row."""
    s = in_dtype_of(x, 0.0)
    highest = lowest = float_bits(in_dtype_of(x, -np.inf))
    for i in range(x.size):
        e = exp_shifted(x[i] - m)
        out[i] = e
        s += e
        highest, lowest = next_bit_bounds(highest, lowest, following[i])
    return s, highest, lowest


@jit
def scale_into(out, factor):
    for i in range(out.size):
        out[i] *= factor


@jit(reassociate=False)
def log_probabilities_into(src, dst, m, log1p_s, stream):
    """``dst_i = (src_i - m) - log1p(s)`` (:func:`log_probability`), with streaming
    stores when ``stream`` (then ``src`` and ``dst`` must not overlap).

    Compiled without ``reassoc``: Numba gives every floating-point instruction of a
    function its flags, the streaming intrinsic's included."""
    if stream:
        stream_log_probability(src, dst, m, log1p_s)
    else:
        for i in range(dst.size):
            dst[i] = log_probability(src[i], m, log1p_s)


ROW_CHUNKS = config.ROW_CHUNKS  # baked in (see softmax_numba.config)


@jit
def row_range(chunk, chunks, rows):
    """The rows ``[start, stop)`` of ``chunk`` out of ``chunks`` equal parts."""
    return chunk * rows // chunks, (chunk + 1) * rows // chunks


# --------------------------------------------------------------------------- softmax rows


@jit
def softmax_naive_row(x, out):
    """``exp(x_i) / sum_j exp(x_j)`` with no shift: overflows on purpose."""
    total = carry = in_dtype_of(x, 0.0)
    for start in range(0, x.size, SUM_BLOCK):
        xb, ob = x[start : start + SUM_BLOCK], out[start : start + SUM_BLOCK]
        s = in_dtype_of(x, 0.0)
        for i in range(xb.size):
            e = exp(xb[i])
            ob[i] = e
            s += e
        total, carry = add_compensated(total, carry, s)
    scale_into(out, in_dtype_of(x, 1.0) / compensated_total(total, carry))


@jit
def softmax_division_free_row(x, out):
    """``exp(x_i - lse(x))`` (Blanchard, Higham & Higham 2021, eq. (2.5))."""
    lse = row_logsumexp(x)
    if lse == np.inf:
        lse = in_dtype_of(x, np.nan)
    for i in range(x.size):
        out[i] = exp(x[i] - lse)


ONLINE_BLOCK = config.ONLINE_BLOCK  # baked in (see softmax_numba.config)


#: How far a piece's max may rise above the reference of a running sum of states
#: (:func:`fold_state`) before the sum is rescaled to it.  ``n e^RESCALE_SPAN`` stays
#: far below the largest float32 for any row that fits in memory, and the terms
#: rescaled twice are below ``e^-RESCALE_SPAN`` of another term of the sum.
RESCALE_SPAN = 50.0


@jit
def fold_state(m, r, total, carry, pm, ps):
    """Fold the state ``(pm, ps)`` of a piece, ``pm`` finite, into a running sum of
    states: ``m``, the max so far (``-inf`` before the first piece), and ``total +
    carry`` (:func:`add_compensated`), the sum of ``exp(x_i - r)`` over the entries
    seen but one maximum, relative to a reference ``r <= m``, ``m - r <=``
    :data:`RESCALE_SPAN`; :func:`settle_folded` gives the state.

    :func:`merge_state` in a loop rescales the sum at every rise of the max, and each
    rescaling rounds (``exp`` and a product): a row whose pieces' maxima rise one
    after another would gather that error once per piece.  Here a piece's sum joins
    the running one as a term of its own, ``(1 + ps) e^{pm - r}``, and the running
    sum is rescaled only when the max rises more than :data:`RESCALE_SPAN` above
    ``r``: a term is rescaled at most twice while it matters, and once more at the
    end."""
    if m == -np.inf:
        return pm, pm, ps, in_dtype_of(ps, 0.0)
    if pm > m:  # the old maximum joins the sum, the piece's own one leaves it
        total, carry = add_compensated(total, carry, exp(m - r))
        if pm - r > in_dtype_of(ps, RESCALE_SPAN):
            f = exp(r - pm)
            total, carry, r = total * f, carry * f, pm
        total, carry = add_compensated(total, carry, ps * exp(pm - r))
        return pm, r, total, carry
    total, carry = add_compensated(total, carry, (in_dtype_of(ps, 1.0) + ps) * exp(pm - r))
    return m, r, total, carry


@jit
def settle_folded(m, r, total, carry):
    """The ``s`` of a running sum of states (:func:`fold_state`), relative to ``m``."""
    s = compensated_total(total, carry)
    return s if r == m else s * exp(r - m)


@jit
def merge_states(ms, ss):
    """The state of a row from the states ``(ms[k], ss[k])`` of its pieces, in order:
    the pieces whose max is finite are folded (:func:`fold_state`), the others (a
    ``+inf``, an empty or all ``-inf`` piece, with their NaN) merged at the end
    (:func:`merge_state`)."""
    m = r = odd_m = in_dtype_of(ms, -np.inf)
    total = carry = odd_s = in_dtype_of(ss, 0.0)
    for k in range(ms.size):
        if math.isfinite(ms[k]):
            m, r, total, carry = fold_state(m, r, total, carry, ms[k], ss[k])
        else:
            odd_m, odd_s = merge_state(odd_m, odd_s, ms[k], ss[k])
    return merge_state(m, settle_folded(m, r, total, carry), odd_m, odd_s)


@jit
def online_state(x):
    """The state ``(m, s)`` of a row in one pass (Milakov & Gimelshein 2018), a block
    of ``ONLINE_BLOCK`` entries at a time: each block's own state (its max and
    :func:`shifted_sum_excluding`) is folded into the running one as in
    :func:`merge_states`, so that the rounding error of ``s`` is that of one
    block's sum, the compensated sum of the blocks' (``2 u``) and a few rescalings,
    whatever ``n``.
    """
    m = r = odd_m = in_dtype_of(x, -np.inf)
    total = carry = odd_s = in_dtype_of(x, 0.0)
    for start in range(0, x.size, ONLINE_BLOCK):
        bm, bs = row_state(x[start : start + ONLINE_BLOCK])
        if math.isfinite(bm):
            m, r, total, carry = fold_state(m, r, total, carry, bm, bs)
        else:
            odd_m, odd_s = merge_state(odd_m, odd_s, bm, bs)
    return merge_state(m, settle_folded(m, r, total, carry), odd_m, odd_s)


@jit
def softmax_online_row(x, out):
    """Online softmax: one pass for ``(m, s)``, one for ``exp(x_i - m) / (1 + s)``."""
    m, s = online_state(x)
    r = softmax_scale(m, s)
    for i in range(x.size):
        out[i] = exp_shifted(x[i] - m) * r


@jit
def weighted_logsumexp_row(x, b):
    """``(log|s|, sign(s))`` with ``s = sum_i b_i exp(x_i)``, shifted by the maximum
    of the ``x_i`` whose weight is not zero (as ``scipy.special.logsumexp``)."""
    m = in_dtype_of(x, -np.inf)
    for i in range(x.size):
        if b[i] != 0 and x[i] > m:
            m = x[i]
    if math.isinf(m):
        shift = in_dtype_of(x, 0.0)
    else:
        shift = m
    total = carry = in_dtype_of(x, 0.0)
    for start in range(0, x.size, SUM_BLOCK):
        xb, bb = x[start : start + SUM_BLOCK], b[start : start + SUM_BLOCK]
        s = in_dtype_of(x, 0.0)
        for i in range(xb.size):
            if bb[i] != 0:
                s += bb[i] * exp(xb[i] - shift)
        total, carry = add_compensated(total, carry, s)
    s = compensated_total(total, carry)
    sign = (
        in_dtype_of(x, 1.0) if s > 0 else (in_dtype_of(x, -1.0) if s < 0 else in_dtype_of(x, 0.0))
    )
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
    accs = sum_scratch(x, chunks)
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        if start == stop:
            continue
        m = maximum(x[start])
        acc = accs[c]
        for i in range(start, stop):
            s, m_next = exp_shifted_into(x[i], m, out[i], x[min(i + 1, stop - 1)], acc)
            if m == np.inf:
                s = in_dtype_of(x, np.nan)
            scale_into(out[i], in_dtype_of(x, 1.0) / s)
            m = m_next


def _softmax_division_free(x, out):
    for i in prange(x.shape[0]):
        softmax_division_free_row(x[i], out[i])


def _softmax_online(x, out):
    for i in prange(x.shape[0]):
        softmax_online_row(x[i], out[i])


def _log_softmax(x, out, stream):
    """``(x_i - m) - log1p(s)`` row by row, pipelined as :func:`_softmax_shifted`, and one row
    behind: row ``i - 1`` is written after the exp pass of row ``i``, so that the
    latency of its ``log1p`` (some 50 cycles, on which every entry of the write
    depends) hides behind that pass.  With ``stream`` the output is written with
    streaming stores (it is the last pass and reads ``x``, so it needs no scratch
    row)."""
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    accs = sum_scratch(x, chunks)
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        if start == stop:
            continue
        m = maximum(x[start])
        acc = accs[c]
        shift = log1p_s = in_dtype_of(x, 0.0)
        for i in range(start, stop):
            s, m_next = shifted_sum_excluding(x[i], m, x[min(i + 1, stop - 1)], acc)
            if i > start:
                log_probabilities_into(x[i - 1], out[i - 1], shift, log1p_s, stream)
            shift, log1p_s = m, log1p(settled(x[i], m, s))
            m = m_next
        log_probabilities_into(x[stop - 1], out[stop - 1], shift, log1p_s, stream)
        if stream:
            stream_fence()


def _logsumexp(x, out):
    """The shifted log-sum-exp of every row, pipelined as :func:`_softmax_shifted`.

    A run of rows first stores each row's ``s`` in ``out`` and its max in a scratch
    array; then one vectorized loop over the run gives ``m + log1p(s)``.  A scalar
    ``log1p`` at the end of each row would put its latency (a division and a
    polynomial, some 50 cycles) between two rows; this way it costs a fraction of
    that.  A row whose max is not finite has ``s = 0`` (or NaN), so ``m + log1p(s)``
    is scipy's result for it.
    """
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    accs = sum_scratch(x, chunks)
    for c in prange(chunks):
        start, stop = row_range(c, chunks, rows)
        if start == stop:
            continue
        shifts = np.empty(stop - start, dtype=x.dtype)
        m = maximum(x[start])
        acc = accs[c]
        for i in range(start, stop):
            s, m_next = shifted_sum_excluding(x[i], m, x[min(i + 1, stop - 1)], acc)
            shifts[i - start] = m
            out[i] = settled(x[i], m, s)
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
        dot = row_dot(yi, dyi)
        for j in range(yi.size):
            dxi[j] = yi[j] * (dyi[j] - dot)


def _log_softmax_backward(y, dy, dx):
    """``dx = dy - exp(y) * sum(dy)``: the vector-Jacobian product of log-softmax."""
    for i in prange(y.shape[0]):
        yi, dyi, dxi = y[i], dy[i], dx[i]
        total = row_sum(dyi)
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
    """The state ``(m, s)`` of one long row, computed on ``chunks`` pieces in
    parallel: each piece's :func:`online_state`, merged in order by
    :func:`merge_states`."""
    n = x.size
    ms = np.empty(chunks, dtype=x.dtype)
    ss = np.empty(chunks, dtype=x.dtype)
    for c in prange(chunks):
        ms[c], ss[c] = online_state(x[c * n // chunks : (c + 1) * n // chunks])
    return merge_states(ms, ss)


@jit(parallel=True)
def split_softmax_row(x, out, chunks):
    """Softmax of one long row across threads: ``exp(x_i - m) / (1 + s)``."""
    m, s = split_state(x, chunks)
    r = softmax_scale(m, s)
    n = x.size
    for c in prange(chunks):
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            out[i] = exp_shifted(x[i] - m) * r


@jit
def split_logsumexp_row(x, chunks):
    """Log-sum-exp of one long row across threads: ``m + log1p(s)``."""
    m, s = split_state(x, chunks)
    return state_logsumexp(m, s)


@jit(parallel=True)
def split_log_softmax_row(x, out, chunks):
    """Log-softmax of one long row across threads: ``(x_i - m) - log1p(s)``."""
    m, s = split_state(x, chunks)
    log1p_s = log1p(s)
    n = x.size
    for c in prange(chunks):
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            out[i] = log_probability(x[i], m, log1p_s)
