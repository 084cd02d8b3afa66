r"""Sampling from logits: thresholds without a sort, and the draw (Numba CPU).

One row at a time, in float64 whatever the row's dtype, with ``m = max(x)``, ``d_j =
(x_j - m) / T`` and ``w_j = exp(d_j)`` (:mod:`softmax_numba._sampling` states the
semantics; :func:`softmax_numba.reference.sampling_kept` is the sort-based oracle):

1. one pass for ``m``, the smallest finite entry and the row's validity;
2. with ``top_k`` below the row's length, its threshold on counts alone (no weight),
   and the entries at or above it gathered in index order: what follows works on
   those few;
3. one pass storing ``w`` and its block sums in scratch (the only arrays of the row's
   size);
4. each threshold (``top_k``'s on counts, ``top_p``'s on masses) by a bisection of
   the value range, each step one vectorized pass of masked counts and sums, until at
   most :data:`BRACKET` entries lie between the bounds; those are gathered, sorted
   and walked from the largest to find the exact threshold, ties included.  Expected
   O(n) per row, some ten passes (the bracketing of FlashInfer's and Qrita's pivot
   searches, on the CPU; a pivot guessed from a sample of the row would save most of
   them, not done);
5. the kept weights summed by blocks of :data:`DRAW_BLOCK`; a draw ``u S`` walks the
   block sums, then the entries of one block.

The uniforms come from Philox4x64-10 (:mod:`softmax_numba.philox`) at the counter of
``(draw, row, offset)``, so that a row's draws do not depend on the engine, the
threads or the other rows.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from softmax_numba import philox
from softmax_numba.cpu._compile import engines, jit
from softmax_numba.cpu._math import _from_bits, exp_shifted, float_bits
from softmax_numba.cpu.softmax import maximum

#: The uniforms' generator compiled for the CPU engines.
_PHILOX = philox.build(jit)
uniform = _PHILOX.uniform

#: Entries summed per block of the draw: a draw walks ``n / DRAW_BLOCK`` block sums,
#: then at most ``DRAW_BLOCK`` entries.
DRAW_BLOCK = 256
#: The bisection of a threshold stops once at most this many entries lie between its
#: bounds; they are then sorted.
BRACKET = 256
#: Bisection steps at most (a float64 interval halves to adjacent numbers in 64 steps
#: at most from any finite range; the search exits once its midpoint repeats).
_MAX_STEPS = 128

#: ``status`` of a row: sampled, or why not.
VALID, HAS_NAN, HAS_POSINF, ALL_NEGINF = 0, 1, 2, 3


#: Float64 bits read as int64 order the non-negative floats and reverse the negative
#: ones; flipping the magnitude bits of the negative ones gives keys in the floats'
#: order, whose minimum is one integer op per lane (a float minimum does not
#: vectorize without ``nnan``).
_MAGNITUDE = np.int64(0x7FFFFFFFFFFFFFFF)
_SIGN_SHIFT = np.int64(63)


@jit
def ordered_key(bits):
    """An int64 key ordered as the float64 whose bits are ``bits`` (its own inverse)."""
    return bits ^ ((bits >> _SIGN_SHIFT) & _MAGNITUDE)


@jit
def scan_row(x):
    """``(m, lowest, status)``: the row's maximum, its smallest entry above ``-inf``
    (``+inf`` if none) and whether it can be sampled (:data:`VALID`) or holds a NaN, a
    ``+inf`` or no entry above ``-inf``.  Two vectorized passes: the bit maximum, then
    the NaN count and the minimum of the ordered keys."""
    m = np.float64(maximum(x))
    nans = 0
    top = ordered_key(float_bits(np.inf))
    least = top
    for j in range(x.size):
        v = np.float64(x[j])
        nans += v != v
        key = ordered_key(float_bits(v))
        least = min(least, key if v != -np.inf else top)
    lowest = _from_bits(ordered_key(least))
    if nans:
        return m, lowest, HAS_NAN
    if m == np.inf:
        return m, lowest, HAS_POSINF
    if m == -np.inf:
        return m, lowest, ALL_NEGINF
    return m, lowest, VALID


@jit
def first_argmax(x, m):
    """The lowest index holding ``m`` (blocks of :data:`DRAW_BLOCK` counted by a
    vectorized loop, then the one that holds it searched)."""
    for start in range(0, x.size, DRAW_BLOCK):
        xs = x[start : start + DRAW_BLOCK]
        hits = 0
        for j in range(xs.size):
            hits += xs[j] == m
        if hits:
            for j in range(xs.size):
                if xs[j] == m:
                    return start + j
    return 0


@jit
def block_weights(x, m, inv_t, w, sums, b):
    """Block ``b`` of :func:`store_weights`: its ``w_j`` and ``sums[b]`` (slices keep
    the inner loop one vectorized loop)."""
    xs = x[b * DRAW_BLOCK : (b + 1) * DRAW_BLOCK]
    ws = w[b * DRAW_BLOCK : (b + 1) * DRAW_BLOCK]
    s = 0.0
    for j in range(xs.size):
        e = exp_shifted((np.float64(xs[j]) - m) * inv_t)
        ws[j] = e
        s += e
    sums[b] = s


@jit
def store_weights(x, m, inv_t, w, sums):
    """``w_j = exp((x_j - m) / T)`` (``inv_t = 1 / T``; 0 for ``-inf`` entries), and
    ``sums[b]`` the sum of block ``b`` (:data:`DRAW_BLOCK` entries)."""
    for b in range(sums.size):
        block_weights(x, m, inv_t, w, sums, b)


@jit(parallel=True)
def store_weights_split(x, m, inv_t, w, sums):
    """:func:`store_weights` with the blocks spread over the threads, for a long row
    alone: each block is summed by its own loop, so the values are the same."""
    for b in prange(sums.size):
        block_weights(x, m, inv_t, w, sums, b)


@jit
def kept_sums(x, w, floor, sums):
    """``sums[b]``: the weight of the entries ``x_j >= floor`` of block ``b``."""
    for b in range(sums.size):
        xs = x[b * DRAW_BLOCK : (b + 1) * DRAW_BLOCK]
        ws = w[b * DRAW_BLOCK : (b + 1) * DRAW_BLOCK]
        s = 0.0
        for j in range(xs.size):
            s += ws[j] if np.float64(xs[j]) >= floor else 0.0
        sums[b] = s


@jit
def count_and_mass(x, w, bound, by_mass=True):
    """The number and the weight of the entries ``x_j >= bound`` (without
    ``by_mass``, the number alone, and ``w`` is not read)."""
    count = 0
    if not by_mass:
        for j in range(x.size):
            count += np.float64(x[j]) >= bound
        return count, 0.0
    mass = 0.0
    for j in range(x.size):
        keep = np.float64(x[j]) >= bound
        count += keep
        mass += w[j] if keep else 0.0
    return count, mass


@jit
def reaches(count, mass, goal, by_mass):
    """The criterion of a threshold: enough entries (``top_k``) or enough mass
    (``top_p``) at or above it."""
    return mass >= goal if by_mass else count >= goal


@jit
def threshold(x, w, floor, m, lowest, goal, by_mass):
    """The largest entry ``t >= floor`` of the row whose entries at or above it reach
    ``goal`` (a count, or with ``by_mass`` a weight): ``top_k``'s and ``top_p``'s
    threshold, exactly, ties included; ``-inf`` when even the whole row does not
    reach it (``top_k`` above the number of entries above ``-inf``).  A count reads
    no weight: ``w`` may then be empty.

    Invariant of the bisection: the criterion holds at ``low`` and fails at
    ``high``; the entries in ``[low, high)`` are then gathered, sorted and walked
    down from ``high`` with the count and mass of the entries above.
    """
    count, mass = count_and_mass(x, w, m, by_mass)
    if reaches(count, mass, goal, by_mass):
        return m
    low = max(lowest, floor)
    high = m
    above_count, above_mass = count, mass  # of the entries at or above ``high``
    low_count, low_mass = count_and_mass(x, w, low, by_mass)
    if not reaches(low_count, low_mass, goal, by_mass):
        return -np.inf
    for _ in range(_MAX_STEPS):
        if low_count - above_count <= BRACKET:
            break
        pivot = low + (high - low) * 0.5
        if pivot <= low or pivot >= high:
            break
        count, mass = count_and_mass(x, w, pivot, by_mass)
        if reaches(count, mass, goal, by_mass):
            low, low_count = pivot, count
        else:
            high, above_count, above_mass = pivot, count, mass
    # gather the entries in [low, high) and walk them from the largest
    size = low_count - above_count
    values = np.empty(size, dtype=np.float64)
    weights = np.empty(size, dtype=np.float64)
    k = 0
    for j in range(x.size):
        v = np.float64(x[j])
        if v >= low and v < high and k < size:
            values[k] = v
            if by_mass:  # a count's w may be empty: never read it
                weights[k] = w[j]
            k += 1
    order = np.argsort(values[:k])
    count, mass = above_count, above_mass
    i = k - 1
    while i >= 0:
        v = values[order[i]]
        while i >= 0 and values[order[i]] == v:  # one group of equal entries
            count += 1
            mass += weights[order[i]]
            i -= 1
        if reaches(count, mass, goal, by_mass):
            return v
    return low  # not reached in exact arithmetic (the criterion holds at low)


@jit
def min_p_floor(x, m, inv_t, log_min_p):
    """The smallest entry with ``(x_j - m) / T >= log(min_p)``: min-p's rule as a
    threshold on ``x`` (the scaled difference is monotone in ``x_j``)."""
    lowest = m
    for j in range(x.size):
        v = np.float64(x[j])
        lowest = min(lowest, v if (v - m) * inv_t >= log_min_p else m)
    return lowest


@jit
def row_floor(x, w, m, lowest, inv_t, top_k, top_p, log_min_p):
    """The threshold ``t`` of the kept set ``{x_j >= t}``: top-k's, then top-p's over
    the top-k set renormalized, then min-p's (``-inf`` when none filters)."""
    floor = -np.inf
    if top_k < x.size:
        floor = threshold(x, w, floor, m, lowest, top_k, False)
    if top_p < 1.0:
        total = count_and_mass(x, w, floor)[1]
        floor = threshold(x, w, floor, m, lowest, top_p * total, True)
    if log_min_p > -np.inf:
        floor = max(floor, min_p_floor(x, m, inv_t, log_min_p))
    return floor


@jit
def draw(x, w, floor, m, sums, target):
    """The first kept index (``x_j >= floor``) whose running weight exceeds
    ``target``: the block sums first, then one block's entries; the last kept entry
    of positive weight when rounding leaves ``target`` beyond the running sum."""
    n = x.size
    b = 0
    running = 0.0
    while b < sums.size - 1 and running + sums[b] <= target:
        running += sums[b]
        b += 1
    last = -1
    for j in range(b * DRAW_BLOCK, min(n, (b + 1) * DRAW_BLOCK)):
        if np.float64(x[j]) >= floor and w[j] > 0.0:
            running += w[j]
            last = j
            if running > target:
                return j
    if last >= 0:
        return last
    for j in range(min(n, b * DRAW_BLOCK) - 1, -1, -1):  # the block held none
        if np.float64(x[j]) >= floor and w[j] > 0.0:
            return j
    return first_argmax(x, m)


#: The row functions are compiled once per dtype and called by both the serial and
#: the parallel kernel (``inline="never"``): inlined, each of the four kernels took
#: 15-40 s to compile.
_ROW = {"inline": "never"}


@jit(**_ROW)
def sample_row(
    x, row, inv_t, greedy, top_k, top_p, log_min_p, key, offset, out, logprob_out, split
):
    """The draws of one row into ``out`` (indices) and ``logprob_out``; returns its
    status (:data:`VALID` or why not).

    With ``top_k`` below the row's length, the top-k threshold is found on counts
    alone and the entries at or above it gathered, in index order: the weights, top-p,
    min-p and the draw then work on those few (the draw rule, the first kept index
    whose running weight exceeds ``u S``, is unchanged by the gather).  ``split``: the
    exp pass of the whole row over the threads (:func:`store_weights_split`)."""
    m, lowest, status = scan_row(x)
    if status != VALID:
        return status
    if greedy:
        out[:] = first_argmax(x, m)
        logprob_out[:] = 0.0
        return VALID
    if top_k >= x.size:
        draw_row(x, row, m, lowest, inv_t, top_p, log_min_p, key, offset, out, logprob_out, split)
        return VALID
    unread = np.empty(0, dtype=np.float64)  # counts read no weight
    t = threshold(x, unread, -np.inf, m, lowest, top_k, False)
    size = count_and_mass(x, unread, t, False)[0]
    values = np.empty(size, dtype=np.float64)
    where = np.empty(size, dtype=np.int64)
    k = 0
    for j in range(x.size):
        if np.float64(x[j]) >= t and k < size:
            values[k] = x[j]
            where[k] = j
            k += 1
    least = t if t > -np.inf else lowest  # the smallest gathered entry above -inf
    draw_row(values, row, m, least, inv_t, top_p, log_min_p, key, offset, out, logprob_out, False)
    for s in range(out.size):
        out[s] = where[out[s]]
    return VALID


@jit(**_ROW)
def draw_row(x, row, m, lowest, inv_t, top_p, log_min_p, key, offset, out, logprob_out, split):
    """The draws from the entries of ``x`` (a valid row, or the entries top-k kept)
    after top-p and min-p, into ``out`` (positions in ``x``) and ``logprob_out``."""
    n = x.size
    peak = first_argmax(x, m)
    w = np.empty(n, dtype=np.float64)
    sums = np.empty((n + DRAW_BLOCK - 1) // DRAW_BLOCK, dtype=np.float64)
    if split:
        store_weights_split(x, m, inv_t, w, sums)
    else:
        store_weights(x, m, inv_t, w, sums)
    floor = row_floor(x, w, m, lowest, inv_t, n, top_p, log_min_p)
    if floor > -np.inf:
        kept_sums(x, w, floor, sums)
    # the sum as 1 + s, s without the peak's exp(0) = 1, summed apart: log1p(s) keeps
    # a near-certain row's s (as log_softmax does)
    home = peak // DRAW_BLOCK
    rest = 0.0
    for j in range(home * DRAW_BLOCK, min(n, (home + 1) * DRAW_BLOCK)):
        rest += w[j] if j != peak and np.float64(x[j]) >= floor else 0.0
    sums[home] = rest + 1.0
    for b in range(sums.size):
        rest += sums[b] if b != home else 0.0
    total = 1.0 + rest
    log_total = math.log1p(rest)
    for s in range(out.size):
        u = uniform(key[0], key[1], offset[0], offset[1], np.uint64(row), np.uint64(s))
        j = draw(x, w, floor, m, sums, u * total)
        out[s] = j
        logprob_out[s] = (np.float64(x[j]) - m) * inv_t - log_total


@jit
def sample_into(
    i,
    x,
    first_row,
    inv_t,
    greedy,
    top_k,
    top_p,
    log_min_p,
    key,
    offset,
    out,
    logprob_out,
    status,
    split,
):
    """Row ``i`` of the kernels' arguments through :func:`sample_row`."""
    status[i] = sample_row(
        x[i],
        first_row + i,
        inv_t[i],
        greedy[i],
        top_k[i],
        top_p[i],
        log_min_p[i],
        key,
        offset,
        out[i],
        logprob_out[i],
        split,
    )


@engines
def _sample(
    x, first_row, inv_t, greedy, top_k, top_p, log_min_p, key, offset, out, logprob_out, status
):
    for i in prange(x.shape[0]):
        sample_into(
            i, x, first_row, inv_t, greedy, top_k, top_p, log_min_p, key, offset, out,
            logprob_out, status, False,
        )  # fmt: skip


@jit(inline="never")
def sample_split(
    x, first_row, inv_t, greedy, top_k, top_p, log_min_p, key, offset, out, logprob_out, status
):
    """``_sample`` for fewer rows than threads, each long: the rows one after the
    other, the exp pass of each over the threads (``backend="parallel"``, as
    :func:`softmax_numba._api.split_chunks` decides for the softmax family).  The
    same tokens and log-probabilities as the serial engine."""
    for i in range(x.shape[0]):
        sample_into(
            i, x, first_row, inv_t, greedy, top_k, top_p, log_min_p, key, offset, out,
            logprob_out, status, True,
        )  # fmt: skip


@jit(reciprocal=False)
def divided(v, t):
    """``v / t``, the correctly rounded quotient (no reciprocal hoisted by ``arcp``)."""
    return v / t


@engines
def _filter_logits(x, temperature, inv_t, top_k, top_p, log_min_p, out, status):
    for i in prange(x.shape[0]):
        status[i] = filter_row(
            x[i], temperature[i], inv_t[i], top_k[i], top_p[i], log_min_p[i], out[i]
        )


@jit(**_ROW)
def filter_row(row, t, inv_t, top_k, top_p, log_min_p, out):
    """``out``: the row divided by ``t`` where kept, ``-inf`` elsewhere (NaN for a row
    that cannot be sampled); returns its status."""
    m, lowest, code = scan_row(row)
    if code != VALID:
        out[:] = np.nan
        return code
    n = row.size
    w = np.empty(n, dtype=np.float64)
    sums = np.empty((n + DRAW_BLOCK - 1) // DRAW_BLOCK, dtype=np.float64)
    store_weights(row, m, inv_t, w, sums)
    floor = row_floor(row, w, m, lowest, inv_t, top_k, top_p, log_min_p)
    for j in range(n):
        v = row[j]
        scaled = divided(v, t) if t != 1.0 else v
        out[j] = scaled if np.float64(v) >= floor else -np.inf
    return VALID


@engines
def _top_logprobs(x, out, logprob_out, status):
    for i in prange(x.shape[0]):
        status[i] = top_logprobs_row(x[i], out[i], logprob_out[i])


@jit(**_ROW)
def top_logprobs_row(row, out, logprob_out):
    """The ``out.size`` largest entries of the row, largest first (ties by index), and
    their log-probabilities; returns the row's status."""
    k = out.size
    m, lowest, code = scan_row(row)
    if code != VALID:
        out[:] = -1
        logprob_out[:] = np.nan
        return code
    n = row.size
    w = np.empty(n, dtype=np.float64)
    sums = np.empty((n + DRAW_BLOCK - 1) // DRAW_BLOCK, dtype=np.float64)
    store_weights(row, m, 1.0, w, sums)
    t = threshold(row, w, -np.inf, m, lowest, k, False)
    peak = first_argmax(row, m)
    w[peak] = 0.0
    rest = 0.0
    for j in range(n):
        rest += w[j]
    log_total = math.log1p(rest)
    # the entries above t, then those equal to t by index, until k
    picked = np.empty(k, dtype=np.int64)
    c = 0
    for j in range(n):
        if np.float64(row[j]) > t:
            picked[c] = j
            c += 1
    for j in range(n):
        if c < k and np.float64(row[j]) == t:
            picked[c] = j
            c += 1
    # largest first, ties by index: a stable sort of the negated values
    keys = np.empty(k, dtype=np.float64)
    for c in range(k):
        keys[c] = -np.float64(row[picked[c]])
    order = np.argsort(keys, kind="mergesort")
    for c in range(k):
        j = picked[order[c]]
        out[c] = j
        logprob_out[c] = np.float64(row[j]) - m - log_total
    return VALID
