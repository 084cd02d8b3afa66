"""logcumsumexp as a CUDA kernel: a block scans a row, a block of entries at a time.

Each thread takes one entry of the block of ``blockDim`` entries and its state
``(x_j, 0)`` (``(-inf, 0)`` and a NaN flag for a NaN, the empty state past the end);
an inclusive scan of the states across the block (Hillis & Steele, "Data parallel
algorithms", Commun. ACM 29(12), 1986: ``log2(blockDim)`` steps, each merging the
state ``d`` threads back, with the exact merge of :mod:`softmax_numba.state_algebra`)
gives each thread its prefix within the block (each ``exp`` of a difference with the
difference's rounding corrected, as on the CPU); merged with the carry of the blocks
before (and the state the row carries in, ``(m0, s0)``), it gives ``y = m +
log1p(s)``.  The carry is folded as the CPU scan folds a
piece (``softmax_numba.cpu.cumulative.scan_fold``): each block's total joins a
compensated sum relative to a reference that moves only when the maximum rises
``RESCALE_SPAN`` above it, so that the carry's terms are not rescaled at every block
of an increasing row.  ``reverse`` reads and writes the row from its end.

A block of entries is staged through shared memory: read 16 bytes at a time into it
(:mod:`softmax_numba.gpu._wide`, a scalar edge where the block's entries do not start
or end on a 16-byte boundary), scanned one entry per thread, and written back from it
16 bytes at a time; the order of the merges, and so every result, is the same as a
scan that reads and writes one entry per thread.
"""

from __future__ import annotations

import math

from numba import cuda

from softmax_numba import config
from softmax_numba.cpu.cumulative import RESCALE_SPAN
from softmax_numba.gpu import _wide


def build(dtype, red) -> dict:
    size = config.CUDA_MAX_THREADS_PER_BLOCK
    wide_span = _wide.build().span
    zero, one = dtype(0.0), dtype(1.0)
    span = dtype(RESCALE_SPAN)

    @cuda.jit(device=True, inline="always")
    def two_sum(total, carry, value):
        """Knuth's two-sum: the rounded sum, its error added to ``carry``."""
        t = total + value
        b = t - total
        return t, carry + ((total - (t - b)) + (value - b))

    @cuda.jit(device=True, inline="always")
    def exp_difference(a, b):
        """``exp(a - b)`` with the rounding of ``a - b`` corrected (the CPU's
        ``exp_difference``)."""
        d = a - b
        virtual = d - a
        e = (a - (d - virtual)) + (-b - virtual)
        if e != e:
            e = zero
        t = math.exp(d)
        return t + t * e

    @cuda.jit(device=True, inline="always")
    def merge_flagged(m1, s1, f1, m2, s2, f2):
        """The exact merge of two states with their NaN flags
        (:mod:`softmax_numba.state_algebra`), its ``exp`` by :func:`exp_difference`."""
        if m2 > m1:
            m1, s1, m2, s2 = m2, s2, m1, s1
        f = max(f1, f2)
        if m2 == -math.inf or m1 == math.inf:
            return m1, s1 + s2 * zero, f
        return m1, s1 + (one + s2) * exp_difference(m2, m1), f

    @cuda.jit(device=True, inline="always")
    def rise(m, r, T, C, E, v):
        """The carry ``(m, r, T, C, E, inv)`` after a maximum ``v > m`` (the CPU's
        ``scan_rise``): the old maximum's term ``E`` joins the sum; ``T`` is rescaled
        when ``v`` is more than the span above ``r``."""
        if v == math.inf:
            return v, v, T * zero, C * zero, one, zero
        if m == -math.inf:
            return v, v, T, C, one, one
        T, C = two_sum(T, C, E)
        if v - r > span:
            f = exp_difference(r, v)
            return v, v, T * f, C * f, one, one
        E = exp_difference(v, r)
        return v, r, T, C, E, one / E

    @cuda.jit(device=True, inline="always")
    def fold(m, r, T, C, E, inv, pm, ps):
        """The carry after a block of entries whose state is ``(pm, ps)`` (the CPU's
        ``scan_fold``)."""
        if not math.isfinite(pm):
            if pm > m:
                m, r, T, C, E, inv = rise(m, r, T, C, E, pm)
            return m, r, T + ps * zero, C, E, inv
        if pm > m:
            m, r, T, C, E, inv = rise(m, r, T, C, E, pm)
            T, C = two_sum(T, C, ps * E)
        elif pm == m:
            T, C = two_sum(T, C, (one + ps) * E)
        else:
            T, C = two_sum(T, C, (one + ps) * exp_difference(pm, r))
        return m, r, T, C, E, inv

    @cuda.jit(device=True, inline="always")
    def start(m0, s0):
        """The carry ``(m, r, T, C, E, inv, nan)`` of a row that carries in ``(m0, s0)``
        (the CPU's ``scan_start``; ``m0 = -inf``: nothing)."""
        nan = one if s0 != s0 else zero
        if math.isfinite(m0):
            return m0, m0, s0, zero, one, one, nan
        return m0, m0 if m0 == math.inf else zero, zero, zero, one, zero, nan

    @cuda.jit(device=True, inline="always")
    def stage_step(acc, j, v, params):
        tile, lo = params
        tile[j - lo] = v
        return acc

    @cuda.jit(device=True, inline="always")
    def staged(j, params):
        tile, lo = params
        return tile[j - lo]

    stage = _wide.fold(stage_step)
    unstage = _wide.generate(staged)

    @cuda.jit
    def _logcumsumexp(x, out, m0, s0, reverse):
        shm = cuda.shared.array(size, dtype)
        shs = cuda.shared.array(size, dtype)
        shf = cuda.shared.array(size, dtype)
        tile = cuda.shared.array(size, dtype)
        t = cuda.threadIdx.x
        width = cuda.blockDim.x
        n = x.shape[1]
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi, oi = x[i], out[i]
            j = i if m0.size == x.shape[0] else 0
            cm, cr, cT, cC, cE, cinv, cf = start(dtype(m0[j]), dtype(s0[j]))
            for base in range(0, n, width):
                # the block's entries, lo..hi in memory, staged in shared memory 16 bytes
                # at a time (and their results written back so)
                stop = min(n, base + width)
                lo, hi = (n - stop, n - base) if reverse else (base, stop)
                stage(xi, wide_span(xi, xi, xi, lo, hi), t, width, 0, (tile, lo))
                cuda.syncthreads()
                j = base + t
                k = n - 1 - j if reverse else j
                m, s, f = dtype(-math.inf), zero, zero
                if j < n:
                    v = tile[k - lo]
                    if v != v:
                        f = one
                    else:
                        m = v
                d = 1
                while d < width:  # the inclusive scan of the block's states
                    shm[t], shs[t], shf[t] = m, s, f
                    cuda.syncthreads()
                    if t >= d:
                        m, s, f = merge_flagged(shm[t - d], shs[t - d], shf[t - d], m, s, f)
                    cuda.syncthreads()
                    d *= 2
                if t == width - 1:  # the block's total, for the carry
                    shm[0], shs[0], shf[0] = m, s, f
                if j < n:
                    ym, ys, yf = merge_flagged(cm, (cT + cC) * cinv, cf, m, s, f)
                    y = ym + math.log1p(zero if math.isinf(ym) else ys)
                    tile[k - lo] = dtype(math.nan) if yf > zero else y
                cuda.syncthreads()
                tm, ts, tf = shm[0], shs[0], shf[0]
                unstage(oi, wide_span(oi, oi, oi, lo, hi), t, width, (tile, lo))
                cuda.syncthreads()
                cm, cr, cT, cC, cE, cinv = fold(cm, cr, cT, cC, cE, cinv, tm, ts)
                cf = max(cf, tf)

    return {"_logcumsumexp": _logcumsumexp}
