r"""Cross-entropy over chunks of the classes: each chunk's state merged into the
running one, then the gradient of each chunk from the merged state (Numba CPU).

A row of logits ``z`` (a vocabulary of ``V`` classes) arrives a chunk at a time,
possibly computed on the fly (``h @ W_c.T``, :func:`softmax_numba.linear_cross_entropy`),
and never whole.  Each row keeps, over the chunks seen so far, with ``m`` their max:

- ``(m, s)``, ``s = sum_{j != k} exp(z_j - m)``, merged exactly
  (:mod:`softmax_numba.state_algebra`);
- ``gap = sum_j w_j (m - z_j)``, the weighted gaps that label smoothing needs: when
  the max rises by ``delta``, ``gap += delta * sum_j w_j`` (terms ``>= 0``, so no
  cancellation, whatever the offset of ``z``);
- ``ent = sum_j exp(z_j - m) (m - z_j)``, for the entropy ``log1p(s) + ent / (1 + s)``:
  when the max rises from ``m_1`` to ``m``, ``ent = exp(m_1 - m) (ent + (m - m_1)(1 +
  s))``, again a sum of non-negative terms;
- ``picked = z_t``, the target's logit, from the chunk that holds it.

A probability target ``P`` (one row per row, :mod:`softmax_numba._chunked_probability`)
weighs class ``j`` of row ``i`` by ``r_ij = w_j ((1 - eps) P_ij + eps / V)``: its
kernels keep ``gap = sum_j r_j (m - z_j)`` and the mass ``R = sum_j r_j`` of the
classes seen, per row, and lift the gap by ``(m - m_old) R`` as the max rises.

Soft-capping (Gemma 2; Liger-Kernel) replaces each logit by ``c tanh(z / c)`` in
place before anything else reads it; the gradient carries its derivative ``1 -
(z_capped / c)^2``.  Kernels take 2-D C-contiguous ``(rows, chunk)`` arrays and
compute in their dtype (float32 or float64).
"""

from __future__ import annotations

import math

from numba import prange

from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu._math import kernel_exp_nonpositive as exp_nonpositive
from softmax_numba.cpu.softmax import (
    SUM_BLOCK,
    add_compensated,
    compensated_total,
    merge_state,
    online_state,
    softmax_scale,
)


@jit
def capped_into(zi, cap):
    """``z_j = cap tanh(z_j / cap)`` in place (``cap > 0``)."""
    for j in range(zi.size):
        zi[j] = cap * math.tanh(zi[j] / cap)


@jit
def weighted_gap(zi, m, weights):
    """``sum_j w_j (m - z_j)`` for ``m = max(z)`` (``w = 1`` when ``weights`` is empty):
    every term ``>= 0``; a block of ``SUM_BLOCK`` at a time (``add_compensated``)."""
    total = carry = in_dtype_of(zi, 0.0)
    for start in range(0, zi.size, SUM_BLOCK):
        zb = zi[start : start + SUM_BLOCK]
        s = in_dtype_of(zi, 0.0)
        if weights.size == 0:
            for j in range(zb.size):
                s += m - zb[j]
        else:
            wb = weights[start : start + SUM_BLOCK]
            for j in range(zb.size):
                s += wb[j] * (m - zb[j])
        total, carry = add_compensated(total, carry, s)
    return compensated_total(total, carry)


@jit
def entropy_sum(zi, m):
    """``sum_j exp(z_j - m) (m - z_j)`` for ``m = max(z)``; a ``-inf`` entry adds 0
    (its limit), not ``0 * inf``; a block of ``SUM_BLOCK`` at a time."""
    total = carry = in_dtype_of(zi, 0.0)
    for start in range(0, zi.size, SUM_BLOCK):
        zb = zi[start : start + SUM_BLOCK]
        s = in_dtype_of(zi, 0.0)
        for j in range(zb.size):
            d = m - zb[j]
            if d < math.inf:
                s += exp_nonpositive(-d) * d
        total, carry = add_compensated(total, carry, s)
    return compensated_total(total, carry)


@jit
def lifted_gap(gap, m_old, m, weight_sum):
    """``sum_j w_j (m - z_j)`` from ``gap = sum_j w_j (m_old - z_j)``, ``m >= m_old``."""
    if weight_sum > 0 and m > m_old:
        return gap + (m - m_old) * weight_sum
    return gap


@jit
def rescaled_entropy(ent, s, m_old, m):
    """``sum_j exp(z_j - m) (m - z_j)`` from ``ent``, the same sum at ``m_old <= m``
    over a piece whose state is ``(m_old, s)``; an empty or all ``-inf`` piece adds 0."""
    if m_old == -math.inf:
        return in_dtype_of(ent, 0.0)
    if m_old == m:
        return ent
    d = m - m_old
    return exp_nonpositive(-d) * (ent + d * (in_dtype_of(ent, 1.0) + s))


@jit
def fold_piece(i, mp, sp, gp, ep, weights, wants, m_out, s_out, gap_out, entropy_out):
    """Merge a piece's state ``(mp, sp)``, gap ``gp`` and entropy sum ``ep`` into row
    ``i`` of the running states; ``weights = (before, piece)``: the sums of the class
    weights of the running states and of the piece; ``wants = (gap, entropy)``."""
    m_old, s_old = m_out[i], s_out[i]
    m, s = merge_state(m_old, s_old, mp, sp)
    if wants[0]:
        g = lifted_gap(gap_out[i], m_old, m, in_dtype_of(m, weights[0]))
        gap_out[i] = g + lifted_gap(gp, mp, m, in_dtype_of(m, weights[1]))
    if wants[1]:
        e = rescaled_entropy(entropy_out[i], s_old, m_old, m)
        entropy_out[i] = e + rescaled_entropy(ep, sp, mp, m)
    m_out[i], s_out[i] = m, s


def _chunk_states(
    z,
    cap,
    start,
    target,
    weights,
    weight_before,
    weight_chunk,
    want_gap,
    want_entropy,
    m_out,
    s_out,
    gap_out,
    entropy_out,
    picked_out,
):
    """Fold the chunk ``z`` (classes ``start .. start + chunk``) into the running
    states of its rows.  ``cap > 0`` soft-caps ``z`` in place first.  ``weight_before``
    and ``weight_chunk``: the sums of the class weights of the earlier chunks and of
    this one (the number of classes without weights)."""
    n = z.shape[1]
    for i in prange(z.shape[0]):
        zi = z[i]
        if cap > 0:
            capped_into(zi, in_dtype_of(zi, cap))
        mc, sc = online_state(zi)
        t = target[i] - start
        if 0 <= t < n:
            picked_out[i] = zi[t]
        zero = in_dtype_of(zi, 0.0)
        gc = weighted_gap(zi, mc, weights) if want_gap else zero
        ec = entropy_sum(zi, mc) if want_entropy else zero
        weight_sums = (weight_before, weight_chunk)
        wants = (want_gap, want_entropy)
        fold_piece(i, mc, sc, gc, ec, weight_sums, wants, m_out, s_out, gap_out, entropy_out)


def _merge_chunk_states(
    m,
    s,
    gap,
    entropy,
    picked,
    weight_before,
    weight_piece,
    want_gap,
    want_entropy,
    m_out,
    s_out,
    gap_out,
    entropy_out,
    picked_out,
):
    """Fold the states of another piece of the classes (``m, s, gap, entropy,
    picked``, of class weights summing to ``weight_piece``) into the running ones
    (``*_out``, of weights summing to ``weight_before``): the merge of
    :func:`_chunk_states` for pieces folded apart (Dask)."""
    weight_sums = (weight_before, weight_piece)
    wants = (want_gap, want_entropy)
    for i in prange(m_out.shape[0]):
        zero = in_dtype_of(m[i], 0.0)
        gp = gap[i] if want_gap else zero
        ep = entropy[i] if want_entropy else zero
        fold_piece(i, m[i], s[i], gp, ep, weight_sums, wants, m_out, s_out, gap_out, entropy_out)
        picked_out[i] += picked[i]


def _soft_cap(z, cap, out):
    """``out = cap tanh(z / cap)`` (``out`` may be ``z``)."""
    for i in prange(z.shape[0]):
        zi, oi = z[i], out[i]
        c = in_dtype_of(zi, cap)
        for j in range(zi.size):
            oi[j] = c * math.tanh(zi[j] / c)


@jit
def cap_slope(zj, inv_cap, capped):
    """``d (c tanh(y / c)) / dy = 1 - (z / c)^2`` at the capped ``z`` (1 without a cap)."""
    if not capped:
        return in_dtype_of(zj, 1.0)
    return in_dtype_of(zj, 1.0) - (zj * inv_cap) * (zj * inv_cap)


def _chunk_grad(z, cap, start, target, weights, p_coef, t_coef, w_coef, m, s, grad):
    r"""The gradient on the chunk ``z`` (soft-capped already when ``cap > 0``):

    .. math:: g_{ij} = \big(a_i\, p_{ij} - c_i w_j - b_i [j = t_i]\big)\,
       \big(1 - (z_{ij}/\mathrm{cap})^2\big),

    with ``p_ij = exp(z_ij - m_i) / (1 + s_i)`` from the merged state, ``a, b, c`` =
    ``p_coef, t_coef, w_coef`` (``w = 1`` when ``weights`` is empty; the last factor
    only with a cap).  ``grad`` may be ``z``: each entry is read before it is written."""
    n = z.shape[1]
    weighted = weights.size > 0
    capped = cap > 0
    for i in prange(z.shape[0]):
        zi, gi = z[i], grad[i]
        a, b, c = p_coef[i], t_coef[i], w_coef[i]
        if a == 0 and b == 0 and c == 0:
            gi[:] = 0
            continue
        inv_cap = in_dtype_of(zi, 1.0 / cap) if capped else in_dtype_of(zi, 0.0)
        t = target[i] - start
        inside = 0 <= t < n
        hit = b * cap_slope(zi[t], inv_cap, capped) if inside else in_dtype_of(zi, 0.0)
        mi = m[i]
        r = a * softmax_scale(mi, s[i])
        # Four loops, so that the common one (no weights, no cap) vectorizes.
        if capped and weighted:
            for j in range(n):
                zj = zi[j]
                slope = cap_slope(zj, inv_cap, capped)
                gi[j] = (exp_nonpositive(zj - mi) * r - c * weights[j]) * slope
        elif capped:
            for j in range(n):
                zj = zi[j]
                gi[j] = (exp_nonpositive(zj - mi) * r - c) * cap_slope(zj, inv_cap, capped)
        elif weighted:
            for j in range(n):
                gi[j] = exp_nonpositive(zi[j] - mi) * r - c * weights[j]
        else:
            for j in range(n):
                gi[j] = exp_nonpositive(zi[j] - mi) * r - c
        if inside:
            gi[t] -= hit


@jit
def target_gap(zi, m, qi, weights, keep, floor):
    """``(sum_j r_j (m - z_j), sum_j r_j)``, ``r_j = w_j (keep q_j + floor)`` (``w = 1``
    when ``weights`` is empty), for ``m = max(z)``: every term ``>= 0``; a class of
    ``r_j = 0`` adds 0 (``xlogy``'s convention: no ``0 * inf``); a block of
    ``SUM_BLOCK`` at a time (``add_compensated``)."""
    gap = gap_carry = mass = mass_carry = in_dtype_of(zi, 0.0)
    weighted = weights.size > 0
    for start in range(0, zi.size, SUM_BLOCK):
        zb, qb = zi[start : start + SUM_BLOCK], qi[start : start + SUM_BLOCK]
        g = t = in_dtype_of(zi, 0.0)
        if weighted:
            wb = weights[start : start + SUM_BLOCK]
            for j in range(zb.size):
                r = wb[j] * (keep * qb[j] + floor)
                if r != 0:
                    g += r * (m - zb[j])
                t += r
        else:
            for j in range(zb.size):
                r = keep * qb[j] + floor
                if r != 0:
                    g += r * (m - zb[j])
                t += r
        gap, gap_carry = add_compensated(gap, gap_carry, g)
        mass, mass_carry = add_compensated(mass, mass_carry, t)
    return compensated_total(gap, gap_carry), compensated_total(mass, mass_carry)


def _probability_chunk_states(
    z,
    cap,
    start,
    q,
    weights,
    smoothing,
    n_classes,
    want_entropy,
    m_out,
    s_out,
    gap_out,
    entropy_out,
    mass_out,
):
    """Fold the chunk ``z`` (classes ``start .. start + chunk``) into the running
    states of its rows, whose probability targets are the rows of ``q`` (all
    ``n_classes`` of them; ``weights``: this chunk's).  ``cap > 0`` soft-caps ``z`` in
    place first.  ``mass_out``: ``sum_j r_j`` over the classes folded so far, by which
    the gap rises with the max."""
    n = z.shape[1]
    for i in prange(z.shape[0]):
        zi = z[i]
        if cap > 0:
            capped_into(zi, in_dtype_of(zi, cap))
        mc, sc = online_state(zi)
        keep = in_dtype_of(zi, 1.0 - smoothing)
        floor = in_dtype_of(zi, smoothing / n_classes)
        gc, rc = target_gap(zi, mc, q[i, start : start + n], weights, keep, floor)
        ec = entropy_sum(zi, mc) if want_entropy else in_dtype_of(zi, 0.0)
        masses = (mass_out[i], rc)
        wants = (True, want_entropy)
        fold_piece(i, mc, sc, gc, ec, masses, wants, m_out, s_out, gap_out, entropy_out)
        mass_out[i] += rc


def _probability_chunk_grad(
    z, cap, start, q, weights, smoothing, n_classes, p_coef, w_coef, m, s, grad
):
    r"""The gradient on the chunk ``z`` (soft-capped already when ``cap > 0``) for
    probability targets ``q`` (the rows' whole targets; ``weights``: this chunk's):

    .. math:: g_{ij} = \big(a_i\, p_{ij} - c_i\, r_{ij}\big)\,
       \big(1 - (z_{ij}/\mathrm{cap})^2\big), \qquad
       r_{ij} = w_j \big((1 - \varepsilon) q_{ij} + \varepsilon / V\big),

    ``p_ij = exp(z_ij - m_i) / (1 + s_i)`` from the merged state, ``a, c = p_coef,
    w_coef``; ``r_ij`` by the formula of :func:`target_gap`.  ``grad`` may be
    ``z`` (each entry is read before it is written), not ``q``."""
    n = z.shape[1]
    weighted = weights.size > 0
    capped = cap > 0
    for i in prange(z.shape[0]):
        zi, gi, qi = z[i], grad[i], q[i, start : start + n]
        a, c = p_coef[i], w_coef[i]
        if a == 0 and c == 0:
            gi[:] = 0
            continue
        keep = in_dtype_of(zi, 1.0 - smoothing)
        floor = in_dtype_of(zi, smoothing / n_classes)
        inv_cap = in_dtype_of(zi, 1.0 / cap) if capped else in_dtype_of(zi, 0.0)
        mi = m[i]
        r = a * softmax_scale(mi, s[i])
        one = in_dtype_of(zi, 1.0)
        for j in range(n):
            zj = zi[j]
            rj = keep * qi[j] + floor
            if weighted:
                rj = weights[j] * rj
            slope = cap_slope(zj, inv_cap, capped) if capped else one
            gi[j] = (exp_nonpositive(zj - mi) * r - c * rj) * slope


CHUNK_STATES = engines(_chunk_states)
MERGE_CHUNK_STATES = engines(_merge_chunk_states)
SOFT_CAP = engines(_soft_cap)
CHUNK_GRAD = engines(_chunk_grad)
PROBABILITY_CHUNK_STATES = engines(_probability_chunk_states)
PROBABILITY_CHUNK_GRAD = engines(_probability_chunk_grad)
