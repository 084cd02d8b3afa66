"""Block-wide and warp-wide reductions, for any block size (odd ones included).

Every thread of the block (of the warp, for the ``warp_*`` ones) calls these with
its partial value and gets the block's (the warp's) result, the same on every
thread.  A block reduction is a warp reduction in each warp, then the warps'
results through a shared array of 32 slots, which every thread folds in the same
order: two barriers per reduction, whatever the block size (a shared-memory tree
takes two per halving, 16 for 256 threads).

On a GPU a warp reduction is a tree of warp shuffles (``shfl.down``), no shared
memory and no barrier; a partial last warp (a block of 5 threads, say) shuffles
among its own lanes only, and a lane whose partner is past the end keeps its
value.  The CUDA simulator has no shuffles: there the same tree runs through
shared memory and block barriers (:func:`_simulated_warp_tree`), which every thread
of the block reaches in step, so the kernels call the warp reductions uniformly
(a thread with no data calls them with the empty value).

The passes over a row read and write it through :mod:`softmax_numba.gpu._wide` (16
bytes at a time where the row allows, float16 and bfloat16 computed in float32):
:func:`build` gives the online state's fold (``state_fold``) and the two writes of a
normalized row that the families share (``exp_map``: ``exp(x_j - shift) * scale``;
``log_map``: ``log_probability(x_j, m, log1p(s))``), and those of the backward ops
(``dot_fold``, ``sum_fold``; ``softmax_vjp_map``: ``y_j (dy_j - dot)``;
``log_softmax_vjp_map``: ``dy_j - exp(y_j) total``).

Linking for a real GPU (NVVM; ``experiments/device/compile_gate.py`` checks it):
the block reductions, which hold the shared arrays, are separate device functions;
every other device function is inlined (``inline="always"``), so that the kernel
calls the reductions itself and links each one once.  A reduction reached through
two device functions was linked twice, and NVVM refused the kernel ("Linking
globals named '_cudapy_smem_N': symbol multiply defined"); the simulator does not
link, and ran it.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from numba import cuda, uint32

from softmax_numba import config, state_algebra
from softmax_numba.gpu import _runtime, _wide
from softmax_numba.gpu._runtime import WARP

#: All 32 lanes of a warp take part in a shuffle.
FULL_MASK = 0xFFFFFFFF


def build(dtype) -> SimpleNamespace:
    """The reductions for one Numba float type (``numba.float32`` or ``float64``), and
    the state algebra (:mod:`softmax_numba.state_algebra`) compiled for the device."""
    device = cuda.jit(device=True, inline="always")

    @cuda.jit(device=True, inline="always")
    def cast(like, value):
        return dtype(value)

    state = state_algebra.build(device, device, math.exp, math.log1p, cast)
    # Device functions must be plain closure names for Numba to type them.
    merge, add, logsumexp = state.merge, state.add, state.logsumexp
    log_probability = state.log_probability

    @cuda.jit(device=True, inline="always")
    def plus(a, b):
        return a + b

    @cuda.jit(device=True, inline="always")
    def larger(a, b):
        """``max`` that keeps ``a`` unless ``b`` is greater (a NaN ``b`` is skipped)."""
        return b if b > a else a

    @cuda.jit(device=True, inline="always")
    def merge_flagged(m1, s1, f1, m2, s2, f2):
        """:func:`merge` of two states, with their NaN flags (1 if NaN was seen)."""
        m, s = merge(m1, s1, m2, s2)
        return m, s, max(f1, f2)

    warp_sum = _warp_tree(dtype, plus)
    warp_max = _warp_tree(dtype, larger)
    warp_online = _warp_tree(dtype, merge_flagged, width=3)

    @cuda.jit(device=True, inline="always")
    def lanes_here():
        """``(warp, lane, lanes)``: this thread's warp and lane, and how many lanes its
        warp has (fewer than 32 in a partial last warp)."""
        t = cuda.threadIdx.x
        warp = t // WARP
        return warp, t % WARP, min(WARP, cuda.blockDim.x - warp * WARP)

    @cuda.jit(device=True)
    def block_sum(value):
        sh = cuda.shared.array(WARP, dtype)
        warp, lane, lanes = lanes_here()
        value = warp_sum(value, lanes)
        if lane == 0:
            sh[warp] = value
        cuda.syncthreads()
        total = sh[0]
        for w in range(1, (cuda.blockDim.x + WARP - 1) // WARP):
            total += sh[w]
        cuda.syncthreads()
        return total

    @cuda.jit(device=True)
    def block_max(value):
        """Maximum, NaN skipped (a NaN never compares greater)."""
        sh = cuda.shared.array(WARP, dtype)
        warp, lane, lanes = lanes_here()
        value = warp_max(value, lanes)
        if lane == 0:
            sh[warp] = value
        cuda.syncthreads()
        top = sh[0]
        for w in range(1, (cuda.blockDim.x + WARP - 1) // WARP):
            top = larger(top, sh[w])
        cuda.syncthreads()
        return top

    @cuda.jit(device=True)
    def block_online(m, s, nan):
        """Block-wide state ``(m, s)`` and NaN flag from each thread's."""
        shm = cuda.shared.array(WARP, dtype)
        shs = cuda.shared.array(WARP, dtype)
        shn = cuda.shared.array(WARP, dtype)
        warp, lane, lanes = lanes_here()
        m, s, nan = warp_online(m, s, nan, lanes)
        if lane == 0:
            shm[warp], shs[warp], shn[warp] = m, s, nan
        cuda.syncthreads()
        m, s, nan = shm[0], shs[0], shn[0]
        for w in range(1, (cuda.blockDim.x + WARP - 1) // WARP):
            m, s, nan = merge_flagged(m, s, nan, shm[w], shs[w], shn[w])
        cuda.syncthreads()
        return m, s, nan

    @cuda.jit(device=True, inline="always")
    def settled(m, s, nan):
        """``(m, s, nan)`` by the rules of the state: ``s`` is NaN with a NaN, else 0
        for ``m = +-inf``; ``nan`` as a bool."""
        if math.isinf(m):
            s = dtype(0.0)
        if nan > 0:
            s = dtype(math.nan)
        return m, s, nan > 0

    @cuda.jit(device=True, inline="always")
    def add_flagged(m, s, nan, v):
        """:func:`add` of one entry (read in any float type, added in ``dtype``),
        with the NaN flag."""
        v = dtype(v)
        m, s = add(m, s, v)
        if v != v:
            nan = dtype(1.0)
        return m, s, nan

    @cuda.jit(device=True, inline="always")
    def add_step(acc, j, v, params):
        m, s, nan = acc
        return add_flagged(m, s, nan, v)

    #: ``state_fold(row, part, t, threads, (m, s, nan), 0)``: a thread's entries of
    #: ``part`` added to its state.
    state_fold = _wide.fold(add_step)
    whole = _wide.build().whole

    @cuda.jit(device=True, inline="always")
    def empty_state():
        return dtype(-math.inf), dtype(0.0), dtype(0.0)

    @cuda.jit(device=True, inline="always")
    def row_state(xi):
        """``(m, s, nan)``: the row's max ``m = x_k``, ``s = sum_{i != k} exp(x_i - m)``
        and whether it has a NaN (:func:`settled`), in one pass over the row."""
        m, s, nan = state_fold(xi, whole(xi), cuda.threadIdx.x, cuda.blockDim.x, empty_state(), 0)
        m, s, nan = block_online(m, s, nan)
        return settled(m, s, nan)

    @cuda.jit(device=True, inline="always")
    def row_logsumexp(xi):
        """``m + log1p(s)``: scipy's rules (NaN, +inf, all -inf) follow from the state."""
        m, s, _nan = row_state(xi)
        return logsumexp(m, s)

    @cuda.jit(device=True, inline="always")
    def warp_row_state(x, i, lane):
        """:func:`row_state` of row ``i`` of ``x`` for the 32 lanes of one warp (a
        warp per row, for short rows).  Every lane of the warp calls it, also for a
        row ``i`` past the end (then with the empty state), so that the reduction
        runs in step across the block; every lane gets the same state."""
        m, s, nan = empty_state()
        if i < x.shape[0]:
            xi = x[i]
            m, s, nan = state_fold(xi, whole(xi), lane, WARP, (m, s, nan), 0)
        m, s, nan = warp_online(m, s, nan, WARP)
        return settled(m, s, nan)

    @cuda.jit(device=True, inline="always")
    def scaled_exp(j, v, params):
        shift, scale = params
        return math.exp(v - shift) * scale

    @cuda.jit(device=True, inline="always")
    def log_probability_of(j, v, params):
        m, log1p_s = params
        return log_probability(v, m, log1p_s)  # never x - lse

    @cuda.jit(device=True, inline="always")
    def dot_step(acc, j, a, b, params):
        return acc + a * b

    @cuda.jit(device=True, inline="always")
    def sum_step(acc, j, v, params):
        return acc + v

    @cuda.jit(device=True, inline="always")
    def softmax_vjp(j, y, dy, dot):
        return y * (dy - dot)

    @cuda.jit(device=True, inline="always")
    def log_softmax_vjp(j, y, dy, total):
        return dy - math.exp(y) * total

    return SimpleNamespace(
        block_sum=block_sum, block_max=block_max, block_online=block_online,
        add_flagged=add_flagged, merge_flagged=merge_flagged, settled=settled,
        row_state=row_state, row_logsumexp=row_logsumexp, warp_row_state=warp_row_state,
        warp_online=warp_online, softmax_scale=state.softmax_scale, add=add,
        log_probability=state.log_probability, logsumexp=logsumexp,
        state_fold=state_fold, empty_state=empty_state,
        exp_map=_wide.mapping(scaled_exp), log_map=_wide.mapping(log_probability_of),
        dot_fold=_wide.fold2(dot_step), sum_fold=_wide.fold(sum_step),
        softmax_vjp_map=_wide.mapping2(softmax_vjp),
        log_softmax_vjp_map=_wide.mapping2(log_softmax_vjp),
    )  # fmt: skip


def _warp_tree(dtype, combine, width: int = 1):
    """A warp reduction of ``width`` values by ``combine`` (``combine(*a, *b)``
    returns ``width`` values): ``reduce(*values, lanes)`` gives lane 0's result on
    every lane of the warp, the first ``lanes`` lanes taking part.  Lane ``l`` folds
    in lane ``l + offset`` for ``offset = 16, 8, 4, 2, 1``, so lane 0 ends with
    ``combine`` applied in one fixed order."""
    if _runtime.simulated():
        return _simulated_warp_tree(dtype, combine, width)
    if width == 1:

        @cuda.jit(device=True, inline="always")
        def reduce_one(v, lanes):
            mask = uint32(FULL_MASK) if lanes >= WARP else uint32((1 << lanes) - 1)
            lane = cuda.laneid
            offset = WARP // 2
            while offset > 0:
                other = cuda.shfl_down_sync(mask, v, offset)
                if lane + offset < lanes:
                    v = combine(v, other)
                offset //= 2
            return cuda.shfl_sync(mask, v, 0)

        return reduce_one

    @cuda.jit(device=True, inline="always")
    def reduce_three(a, b, c, lanes):
        mask = uint32(FULL_MASK) if lanes >= WARP else uint32((1 << lanes) - 1)
        lane = cuda.laneid
        offset = WARP // 2
        while offset > 0:
            a2 = cuda.shfl_down_sync(mask, a, offset)
            b2 = cuda.shfl_down_sync(mask, b, offset)
            c2 = cuda.shfl_down_sync(mask, c, offset)
            if lane + offset < lanes:
                a, b, c = combine(a, b, c, a2, b2, c2)
            offset //= 2
        return (
            cuda.shfl_sync(mask, a, 0),
            cuda.shfl_sync(mask, b, 0),
            cuda.shfl_sync(mask, c, 0),
        )

    if width != 3:
        raise ValueError(f"warp reductions of 1 or 3 values, not {width}")
    return reduce_three


def _simulated_warp_tree(dtype, combine, width: int):
    """:func:`_warp_tree`'s stand-in for the CUDA simulator: the same tree (lane ``l``
    folds in lane ``l + offset`` when that lane exists; only lanes ``l < offset``
    write, so that no slot is read and written in one step, and lane 0 folds the
    same values in the same order as with shuffles) through shared memory, with a
    block barrier after each step.  Every thread of the block must call it."""
    size = config.CUDA_MAX_THREADS_PER_BLOCK

    @cuda.jit(device=True, inline="always")
    def first_offset():
        """The largest power of two below the block's widest warp: the steps from 16
        down to it fold nothing in a block of fewer than 32 threads, and each step
        costs a block barrier of Python threads here."""
        widest = min(WARP, cuda.blockDim.x)
        offset = 1
        while offset * 2 < widest:
            offset *= 2
        return offset if widest > 1 else 0

    if width == 1:

        @cuda.jit(device=True)
        def reduce_one(v, lanes):
            sh = cuda.shared.array(size, dtype)
            t = cuda.threadIdx.x
            lane = t % WARP
            sh[t] = v
            cuda.syncthreads()
            offset = first_offset()
            while offset > 0:
                if lane < offset and lane + offset < lanes:
                    sh[t] = combine(sh[t], sh[t + offset])
                cuda.syncthreads()
                offset //= 2
            v = sh[t - lane]
            cuda.syncthreads()
            return v

        return reduce_one

    @cuda.jit(device=True)
    def reduce_three(a, b, c, lanes):
        sha = cuda.shared.array(size, dtype)
        shb = cuda.shared.array(size, dtype)
        shc = cuda.shared.array(size, dtype)
        t = cuda.threadIdx.x
        lane = t % WARP
        sha[t], shb[t], shc[t] = a, b, c
        cuda.syncthreads()
        offset = first_offset()
        while offset > 0:
            if lane < offset and lane + offset < lanes:
                o = t + offset
                sha[t], shb[t], shc[t] = combine(sha[t], shb[t], shc[t], sha[o], shb[o], shc[o])
            cuda.syncthreads()
            offset //= 2
        base = t - lane
        a, b, c = sha[base], shb[base], shc[base]
        cuda.syncthreads()
        return a, b, c

    return reduce_three
