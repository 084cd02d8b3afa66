r"""Sampling from logits as CUDA kernels: thresholds without a sort, and the draw.

The CUDA twins of :mod:`softmax_numba.cpu.sampling` (``_sample``, ``_filter_logits``
and ``_top_logprobs``, the same arguments), one thread block per row (a grid-stride
loop over the rows), in float64 whatever the row's dtype, with ``m = max(x)``, ``d_j
= (x_j - m) / T`` and ``w_j = exp(d_j)``.  Nothing of the row's size is stored: ``w_j``
is recomputed from ``x_j`` by every pass that needs it.

1. **The row** (one pass, one block reduction): ``m`` with its first index (the
   peak), the smallest entry above ``-inf``, and the status (NaN, ``+inf``, all
   ``-inf``), as :func:`softmax_numba.cpu.sampling.scan_row` and ``first_argmax``.
2. **Thresholds** (:func:`threshold` inside :func:`build`): the CPU's definition, the
   largest entry ``t`` whose entries ``x_j >= t`` reach the goal (a count for top-k, a
   mass ``sum w_j`` for top-p, over the top-k set), ties kept.  Each probe at a pivot
   ``p`` is one pass and one block reduction of three numbers: the count or mass of
   ``{x_j >= p}``, the smallest entry ``>= p`` and the largest entry ``< p``.  The
   search keeps two *entries*, ``low`` (the criterion holds there) and ``below``
   (the largest entry under the smallest known failing level); a probe that holds
   moves ``low`` up to the smallest entry at or above the pivot, one that fails moves
   ``below`` down to the largest entry under it, and the search ends when no entry
   lies strictly between the two: ``low`` is then the threshold, exactly, with no
   gather and no sort.  The pivot (:func:`pivot`) halves the value range where
   ``low`` and ``below`` are within a factor 4 of each other and of one sign, takes
   their geometric mean where they are further apart (so that a range of any
   magnitudes closes in about 11 steps) and 0 across the sign.  min-p is the CPU's
   ``min_p_floor`` (one reduction).
3. **The draw**: each thread owns a contiguous chunk of the row; the kept weights of
   each chunk are summed, their exclusive prefix taken over the block (sequential
   within each warp, then over the warps: the prefixes never decrease, so exactly one
   thread's range ``[prefix, next prefix)`` holds the target ``u S``), and that thread
   walks its chunk to the first kept index whose running sum exceeds the target (its
   last kept entry of positive weight if rounding leaves the target beyond it; the
   row's last kept entry of positive weight if the target is beyond the whole sum).
   ``u`` is Philox4x64-10 (:mod:`softmax_numba.philox`, compiled with
   ``numba.cuda.jit(device=True)``) at the CPU's counter, so a row's uniforms are the
   same on every engine.  The log-probability is the CPU's ``d_j - log1p(s)``, ``s``
   the kept weights without the peak's ``exp(0) = 1``.
4. ``_top_logprobs``: the ``k`` entries in order (largest first, ties by index) by
   ``k`` rounds of a block-wide lexicographic maximum over the entries after the
   previous pick: ``O(k n)`` work, no sort and no buffer.

Every pass over a row reads it through :mod:`softmax_numba.gpu._wide` (16 bytes per
access where the row is aligned, a scalar edge elsewhere; a thread's own chunk in the
draw in index order); only the draw's walk to the picked index reads one entry at a
time, once per draw and in one thread.

Only the block reductions and the prefix hold shared arrays, and they are called from
the kernels themselves (every other device function is inlined): NVVM links each once
(see :mod:`softmax_numba.gpu._reduce`).  On the simulator the warp trees are
``_reduce``'s shared-memory stand-ins.
"""

from __future__ import annotations

import math

from numba import cuda, float64, uint64

from softmax_numba import config, philox
from softmax_numba.cpu.sampling import ALL_NEGINF, HAS_NAN, HAS_POSINF, VALID
from softmax_numba.gpu import _reduce, _wide
from softmax_numba.gpu._runtime import WARP

#: The most probes of one threshold search.  The search ends by itself well before:
#: two probes at ``m`` and at the lowest candidate, one at 0 across the sign, about 11
#: geometric means (each halves the exponent range, at most 2098 binades), then
#: halvings of a range within a factor 4 (at most 54 until no float lies between):
#: under 70 in the worst case, 15 to 22 on rows of 32000 and 128256 normal logits
#: (top-k 50 and 1000, top-p 0.5 to 0.99).  The cap only bounds a loop whose end is
#: argued, not proved by the compiler.
MAX_PROBES = 256
#: The smallest positive float64 (a subnormal): the stand-in for 0 in a geometric mean.
TINY = 5e-324
#: The most threads of a block (the prefix of the chunk sums holds one slot each).
_SLOTS = config.CUDA_MAX_THREADS_PER_BLOCK
#: The warps' offsets and the total (a constant: a shared array's size must be one).
_WARP_SLOTS = WARP + 1


def build(dtype, red) -> dict:
    """The three kernels.  ``dtype`` and ``red`` (the launcher's float reductions) are
    not used: the kernels compute in float64 for float32 and float64 rows alike and
    build their own float64 reductions."""
    del dtype, red
    ninf, inf = -math.inf, math.inf
    uniform = philox.build(cuda.jit(device=True)).uniform

    # ------------------------------------------------------------ block reductions
    @cuda.jit(device=True, inline="always")
    def sum_max_max(a1, b1, c1, a2, b2, c2):
        return a1 + a2, max(b1, b2), max(c1, c2)

    @cuda.jit(device=True, inline="always")
    def lex_max(a1, b1, c1, a2, b2, c2):
        """The larger of ``(a, b)`` in lexicographic order (a NaN ``a2`` loses), with
        the larger ``c``."""
        if a2 > a1 or (a2 == a1 and b2 > b1):
            a1, b1 = a2, b2
        return a1, b1, max(c1, c2)

    warp_smm = _reduce._warp_tree(float64, sum_max_max, width=3)
    warp_lex = _reduce._warp_tree(float64, lex_max, width=3)

    @cuda.jit(device=True, inline="always")
    def lanes_here():
        t = cuda.threadIdx.x
        warp = t // WARP
        return warp, t % WARP, min(WARP, cuda.blockDim.x - warp * WARP)

    def block_tree(combine, warp_tree):
        """A block-wide reduction of three float64 values by ``combine`` (each warp by
        ``warp_tree``, then the warps' results in order), its result on every thread."""

        @cuda.jit(device=True)
        def reduce(a, b, c):
            sha = cuda.shared.array(WARP, float64)
            shb = cuda.shared.array(WARP, float64)
            shc = cuda.shared.array(WARP, float64)
            warp, lane, lanes = lanes_here()
            a, b, c = warp_tree(a, b, c, lanes)
            if lane == 0:
                sha[warp], shb[warp], shc[warp] = a, b, c
            cuda.syncthreads()
            a, b, c = sha[0], shb[0], shc[0]
            for w in range(1, (cuda.blockDim.x + WARP - 1) // WARP):
                a, b, c = combine(a, b, c, sha[w], shb[w], shc[w])
            cuda.syncthreads()
            return a, b, c

        return reduce

    #: ``(sum a, max b, max c)`` over the block.
    block_smm = block_tree(sum_max_max, warp_smm)
    #: ``(a, b)`` the lexicographic maximum and ``max c`` over the block.
    block_lex = block_tree(lex_max, warp_lex)

    @cuda.jit(device=True)
    def chunk_prefix(value):
        """``(before, after)``: the sum of the block's ``value`` over the threads before
        this one and through it.  Sequential in each warp (lane 0), then over the
        warps (thread 0); ``after`` is the next thread's ``before`` to the bit, and
        the prefixes never decrease for non-negative values (a rounded sum is
        monotone in each term)."""
        sh = cuda.shared.array(_SLOTS, float64)
        offsets = cuda.shared.array(_WARP_SLOTS, float64)
        t = cuda.threadIdx.x
        warp, lane, lanes = lanes_here()
        warps = (cuda.blockDim.x + WARP - 1) // WARP
        sh[t] = value
        cuda.syncthreads()
        if lane == 0:
            running = 0.0
            for k in range(t, t + lanes):
                v = sh[k]
                sh[k] = running
                running += v
            offsets[warp] = running
        cuda.syncthreads()
        if t == 0:
            running = 0.0
            for w in range(warps):
                v = offsets[w]
                offsets[w] = running
                running += v
            offsets[warps] = running
        cuda.syncthreads()
        before = offsets[warp] + sh[t]
        nxt = t + 1
        after = offsets[warps] if nxt == cuda.blockDim.x else offsets[nxt // WARP] + sh[nxt]
        cuda.syncthreads()
        return before, after

    # ------------------------------------------------------------------- the row
    w = _wide.build()
    whole, span = w.whole, w.span

    @cuda.jit(device=True, inline="always")
    def scan_step(acc, j, v, params):
        a, b, c = acc
        v = float64(v)
        a, b, _ = lex_max(a, b, ninf, v, float64(-j), ninf)
        if v != v:
            c = inf
        elif v > ninf:
            c = max(c, -v)
        return a, b, c

    scan_fold = _wide.fold(scan_step)

    @cuda.jit(device=True, inline="always")
    def scan_row(xi):
        """``(m, peak, lowest, status)``: the maximum and its first index, the
        smallest entry above ``-inf`` (``+inf`` if none), and the CPU's status."""
        # (max, -its first index), -lowest (+inf: a NaN)
        acc = (ninf, ninf, ninf)
        a, b, c = scan_fold(xi, whole(xi), cuda.threadIdx.x, cuda.blockDim.x, acc, 0)
        m, b, c = block_lex(a, b, c)
        status = VALID
        if c == inf:
            status = HAS_NAN
        elif m == inf:
            status = HAS_POSINF
        elif m == ninf:
            status = ALL_NEGINF
        return m, int(-b) if b > ninf else 0, -c, status

    @cuda.jit(device=True, inline="always")
    def weight(v, m, inv_t):
        return math.exp((v - m) * inv_t)

    # ---------------------------------------------------------------- thresholds
    @cuda.jit(device=True, inline="always")
    def probe_step(acc, j, v, params):
        s, e, f = acc
        p, m, inv_t, by_mass = params
        v = float64(v)
        if v >= p:
            s += weight(v, m, inv_t) if by_mass else 1.0
            e = max(e, -v)
        else:
            f = max(f, v)
        return s, e, f

    probe_fold = _wide.fold(probe_step)

    @cuda.jit(device=True, inline="always")
    def probe(xi, p, m, inv_t, by_mass):
        """``(S, e, f)``: the mass (``by_mass``) or the count of the entries ``x_j >=
        p``, the smallest of them (``+inf`` if none), the largest entry below ``p``
        (``-inf`` if none)."""
        acc = (0.0, ninf, ninf)  # e as -min
        params = (p, m, inv_t, by_mass)
        s, e, f = probe_fold(xi, whole(xi), cuda.threadIdx.x, cuda.blockDim.x, acc, params)
        s, e, f = block_smm(s, e, f)
        return s, -e, f

    @cuda.jit(device=True, inline="always")
    def pivot(lo, hi):
        """A level in ``(lo, hi]`` (``lo < hi``): the middle of the values within a
        factor 4 on one side of 0, the geometric mean further apart, 0 across it."""
        if lo < 0.0 and hi > 0.0:
            return 0.0
        if lo >= 0.0:
            if lo > 0.0 and hi <= 4.0 * lo:
                p = lo + (hi - lo) * 0.5
            else:
                p = math.sqrt(max(lo, TINY)) * math.sqrt(hi)
        elif hi < 0.0 and lo >= 4.0 * hi:
            p = hi + (lo - hi) * 0.5
        else:
            p = -(math.sqrt(-lo) * math.sqrt(max(-hi, TINY)))
        if not (lo < p and p <= hi):
            p = hi  # a step down to the next entry: slow, never wrong
        return p

    @cuda.jit(device=True, inline="always")
    def threshold(xi, floor, m, lowest, inv_t, goal, by_mass):
        """The largest entry ``t >= floor`` whose entries ``x_j >= t`` reach
        ``goal`` (a count, or with ``by_mass`` a mass), ties included; ``-inf`` when
        even ``max(lowest, floor)`` does not (:func:`softmax_numba.cpu.sampling.
        threshold`).  One probe a step, from a single call site."""
        p = m
        phase = 0  # 0: the probe at m; 1: at low; 2: bisection
        low, below = m, ninf
        for _ in range(MAX_PROBES):
            s, e, f = probe(xi, p, m, inv_t, by_mass)
            if phase == 0:
                if s >= goal:
                    return m
                below = f  # the largest entry under m
                low = max(lowest, floor)
                phase = 1
                p = low
                continue
            if phase == 1:
                if s < goal:
                    return ninf
                phase = 2
            elif s >= goal:
                low = e
            else:
                below = f
            if below <= low:
                return low
            p = pivot(low, below)
        return low

    @cuda.jit(device=True, inline="always")
    def min_p_step(b, j, v, params):
        m, inv_t, log_min_p = params
        v = float64(v)
        return max(b, -v) if (v - m) * inv_t >= log_min_p else b

    min_p_fold = _wide.fold(min_p_step)

    @cuda.jit(device=True, inline="always")
    def min_p_floor(xi, m, inv_t, log_min_p):
        """The smallest entry with ``(x_j - m) / T >= log(min_p)`` (``m`` if none)."""
        params = (m, inv_t, log_min_p)
        b = min_p_fold(xi, whole(xi), cuda.threadIdx.x, cuda.blockDim.x, -m, params)
        _, b, _ = block_smm(0.0, b, ninf)
        return -b

    @cuda.jit(device=True, inline="always")
    def row_floor(xi, m, lowest, inv_t, top_k, top_p, log_min_p):
        """The threshold of the kept set ``{x_j >= t}``: top-k's, then top-p's over
        the top-k set, then min-p's (``-inf`` when none filters).  One threshold call
        site for both searches."""
        floor = ninf
        for stage in range(2):
            if stage == 0 and top_k < xi.size:
                goal = float64(top_k)
            elif stage == 1 and top_p < 1.0:
                total, _, _ = probe(xi, floor, m, inv_t, True)
                goal = top_p * total
            else:
                continue
            floor = threshold(xi, floor, m, lowest, inv_t, goal, stage == 1)
        if log_min_p > ninf:
            floor = max(floor, min_p_floor(xi, m, inv_t, log_min_p))
        return floor

    @cuda.jit(device=True, inline="always")
    def chunk_step(acc, j, v, params):
        """A thread's chunk, in order: its kept weight, that without the peak, its
        last kept entry of positive weight."""
        mass, rest, last = acc
        floor, m, scale, peak = params
        v = float64(v)
        if v >= floor:
            w = weight(v, m, scale)
            if w > 0.0:
                mass += w
                rest += w if j != peak else 0.0
                last = float64(j)
        return mass, rest, last

    chunk_fold = _wide.fold(chunk_step)

    @cuda.jit(device=True, inline="always")
    def kept(j, v, params):
        floor, temp = params
        if float64(v) >= floor:
            return v / temp if temp != 1.0 else float64(v)
        return ninf

    @cuda.jit(device=True, inline="always")
    def constant(j, value):
        return value

    kept_map = _wide.mapping(kept)
    fill = _wide.generate(constant)

    @cuda.jit(device=True, inline="always")
    def rest_step(rest, j, v, params):
        m, peak = params
        return rest + (weight(float64(v), m, 1.0) if j != peak else 0.0)

    @cuda.jit(device=True, inline="always")
    def after_step(acc, j, v, params):
        """The lexicographic maximum of ``(x_j, -j)`` after the pick ``params``."""
        a, b = acc
        value, index = params
        v = float64(v)
        if v < value or (v == value and j > index):
            a, b, _ = lex_max(a, b, ninf, v, float64(-j), ninf)
        return a, b

    rest_fold = _wide.fold(rest_step)
    after_fold = _wide.fold(after_step)

    # ------------------------------------------------------------------- kernels
    @cuda.jit
    def _sample(
        x, first_row, inv_t, greedy, top_k, top_p, log_min_p, key, offset, out, logprob_out, status
    ):
        t = cuda.threadIdx.x
        n = x.shape[1]
        draws = out.shape[1]
        chunk = (n + cuda.blockDim.x - 1) // cuda.blockDim.x
        start = min(n, t * chunk)
        stop = min(n, start + chunk)
        last_thread = t == cuda.blockDim.x - 1
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi = x[i]
            m, peak, lowest, code = scan_row(xi)
            if t == 0:
                status[i] = code
            if code != VALID:
                continue
            if greedy[i]:
                for s in range(t, draws, cuda.blockDim.x):
                    out[i, s] = peak
                    logprob_out[i, s] = 0.0
                continue
            scale = inv_t[i]
            floor = row_floor(xi, m, lowest, scale, top_k[i], top_p[i], log_min_p[i])
            # this thread's chunk: its kept weight, that without the peak, its last
            # kept entry of positive weight
            params = (floor, m, scale, peak)
            chunk = span(xi, xi, xi, start, stop)
            mass, rest, last = chunk_fold(xi, chunk, 0, 1, (0.0, 0.0, ninf), params)
            rest, last, _ = block_smm(rest, last, ninf)
            before, after = chunk_prefix(mass)
            total = 1.0 + rest
            log_total = math.log1p(rest)
            row = uint64(first_row + i)
            for s in range(draws):
                target = uniform(key[0], key[1], offset[0], offset[1], row, uint64(s)) * total
                pick = ninf  # -index
                if before <= target and (after > target or last_thread):
                    running = before
                    mine = -1
                    for j in range(start, stop):
                        v = float64(xi[j])
                        if v >= floor:
                            w = weight(v, m, scale)
                            if w > 0.0:
                                running += w
                                mine = j
                                if running > target:
                                    break
                    if mine >= 0:
                        pick = float64(-mine)
                _, pick, _ = block_smm(0.0, pick, ninf)
                if t == 0:
                    j = int(-pick) if pick > ninf else int(last)
                    out[i, s] = j
                    logprob_out[i, s] = (float64(xi[j]) - m) * scale - log_total

    @cuda.jit
    def _filter_logits(x, temperature, inv_t, top_k, top_p, log_min_p, out, status):
        t = cuda.threadIdx.x
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi = x[i]
            m, _peak, lowest, code = scan_row(xi)
            if t == 0:
                status[i] = code
            if code != VALID:
                oi = out[i]
                fill(oi, whole(oi), t, cuda.blockDim.x, math.nan)
                continue
            floor = row_floor(xi, m, lowest, inv_t[i], top_k[i], top_p[i], log_min_p[i])
            oi = out[i]
            part = span(xi, oi, oi, 0, x.shape[1])
            kept_map(xi, oi, part, t, cuda.blockDim.x, (floor, temperature[i]))

    @cuda.jit
    def _top_logprobs(x, out, logprob_out, status):
        t = cuda.threadIdx.x
        k = out.shape[1]
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi = x[i]
            m, peak, _lowest, code = scan_row(xi)
            if t == 0:
                status[i] = code
            if code != VALID:
                for c in range(t, k, cuda.blockDim.x):
                    out[i, c] = -1
                    logprob_out[i, c] = math.nan
                continue
            part = whole(xi)
            rest = rest_fold(xi, part, t, cuda.blockDim.x, 0.0, (m, peak))
            rest, _, _ = block_smm(rest, ninf, ninf)
            log_total = math.log1p(rest)
            # round c picks the largest (value, -index) after the previous pick
            value, index = m, peak
            for c in range(k):
                if c:
                    acc = (ninf, ninf)
                    a, b = after_fold(xi, part, t, cuda.blockDim.x, acc, (value, index))
                    a, b, _ = block_lex(a, b, ninf)
                    value, index = a, int(-b)
                if t == 0:
                    out[i, c] = index
                    logprob_out[i, c] = (value - m) - log_total

    return {
        "_sample": _sample,
        "_filter_logits": _filter_logits,
        "_top_logprobs": _top_logprobs,
    }
