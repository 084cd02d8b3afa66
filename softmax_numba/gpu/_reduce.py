"""Block-wide reductions in shared memory, for any block size (odd ones included).

Every thread of the block calls these with its partial value and gets the block's
result.  They use shared memory and ``syncthreads`` only, so the CUDA simulator
runs them; the tree halves ``s`` active slots as ``ceil(s / 2)``, so a block of 5
or 7 threads reduces correctly.

Linking for a real GPU (NVVM; ``experiments/device/compile_gate.py`` checks it):
the three block reductions, which hold the shared arrays, are separate device
functions; every other device function is inlined (``inline="always"``), so that
the kernel calls the reductions itself and links each one once.  A reduction
reached through two device functions was linked twice, and NVVM refused the kernel
("Linking globals named '_cudapy_smem_N': symbol multiply defined"); the simulator
does not link, and ran it.  Inlining a reduction instead would give each call site
its own shared array (float64 sparsemax then needs more than 48 KiB).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from numba import cuda

from softmax_numba import config, state_algebra
from softmax_numba.gpu import _runtime
from softmax_numba.gpu._runtime import WARP


def build(dtype) -> SimpleNamespace:
    """The reductions for one Numba float type (``numba.float32`` or ``float64``), and
    the state algebra (:mod:`softmax_numba.state_algebra`) compiled for the device."""
    size = config.CUDA_MAX_THREADS_PER_BLOCK
    device = cuda.jit(device=True, inline="always")

    @cuda.jit(device=True, inline="always")
    def cast(like, value):
        return dtype(value)

    state = state_algebra.build(device, device, math.exp, math.log1p, cast)
    # Device functions must be plain closure names for Numba to type them.
    merge, add, logsumexp = state.merge, state.add, state.logsumexp

    @cuda.jit(device=True)
    def block_sum(value):
        sh = cuda.shared.array(size, dtype)
        t, s = cuda.threadIdx.x, cuda.blockDim.x
        sh[t] = value
        cuda.syncthreads()
        while s > 1:
            half = (s + 1) // 2
            if t < s - half:
                sh[t] += sh[t + half]
            cuda.syncthreads()
            s = half
        total = sh[0]
        cuda.syncthreads()
        return total

    @cuda.jit(device=True)
    def block_max(value):
        """Maximum, NaN skipped (a NaN never compares greater)."""
        sh = cuda.shared.array(size, dtype)
        t, s = cuda.threadIdx.x, cuda.blockDim.x
        sh[t] = value
        cuda.syncthreads()
        while s > 1:
            half = (s + 1) // 2
            if t < s - half and sh[t + half] > sh[t]:
                sh[t] = sh[t + half]
            cuda.syncthreads()
            s = half
        total = sh[0]
        cuda.syncthreads()
        return total

    @cuda.jit(device=True)
    def block_online(m, d):
        """Block-wide state ``(m, s)`` from each thread's (``d`` holds the ``s`` part)."""
        shm = cuda.shared.array(size, dtype)
        shd = cuda.shared.array(size, dtype)
        t, s = cuda.threadIdx.x, cuda.blockDim.x
        shm[t] = m
        shd[t] = d
        cuda.syncthreads()
        while s > 1:
            half = (s + 1) // 2
            if t < s - half:
                shm[t], shd[t] = merge(shm[t], shd[t], shm[t + half], shd[t + half])
            cuda.syncthreads()
            s = half
        m, d = shm[0], shd[0]
        cuda.syncthreads()
        return m, d

    @cuda.jit(device=True, inline="always")
    def thread_online(xi):
        """This thread's state over its strided share of the row, one entry at a time
        (``state_algebra``'s ``add``)."""
        m = dtype(-math.inf)
        s = dtype(0.0)
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            m, s = add(m, s, xi[j])
        return m, s

    @cuda.jit(device=True, inline="always")
    def row_state(xi):
        """``(m, s, nan)``: the row's max ``m = x_k``, ``s = sum_{i != k} exp(x_i - m)``
        and whether it has a NaN; ``s`` is NaN with a NaN, else 0 for ``m = +-inf``."""
        m, s = thread_online(xi)
        nan = dtype(0.0)
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            if xi[j] != xi[j]:
                nan = dtype(1.0)
        m, s = block_online(m, s)
        nan = block_max(nan) > 0
        if math.isinf(m):
            s = dtype(0.0)
        if nan:
            s = dtype(math.nan)
        return m, s, nan

    @cuda.jit(device=True, inline="always")
    def row_logsumexp(xi):
        """``m + log1p(s)``: scipy's rules (NaN, +inf, all -inf) follow from the state."""
        m, s, _nan = row_state(xi)
        return logsumexp(m, s)

    warp_online = _warp_online(dtype, merge, size)

    @cuda.jit(device=True, inline="always")
    def warp_row_state(x, i, lane):
        """:func:`row_state` of row ``i`` of ``x`` for the 32 lanes of one warp (a
        warp per row, for short rows).  Every lane of the warp calls it, also for a
        row ``i`` past the end (then with the empty state), so that the reduction
        runs in step across the block; every lane gets lane 0's state."""
        m = dtype(-math.inf)
        s = dtype(0.0)
        nan = dtype(0.0)
        if i < x.shape[0]:
            for j in range(lane, x.shape[1], WARP):
                v = x[i, j]
                m, s = add(m, s, v)
                if v != v:
                    nan = dtype(1.0)
        m, s, nan = warp_online(m, s, nan)
        if math.isinf(m):
            s = dtype(0.0)
        if nan > 0:
            s = dtype(math.nan)
        return m, s, nan > 0

    return SimpleNamespace(
        block_sum=block_sum, block_max=block_max, block_online=block_online,
        row_state=row_state, row_logsumexp=row_logsumexp, warp_row_state=warp_row_state,
        softmax_scale=state.softmax_scale, log_probability=state.log_probability,
        logsumexp=logsumexp,
    )  # fmt: skip


#: All 32 lanes of a warp take part in a shuffle.
FULL_MASK = 0xFFFFFFFF


def _warp_online(dtype, merge, size):
    """``warp_online(m, s, nan)``: the warp's merged state and NaN flag, lane 0's
    result on every lane.  On a GPU, a butterfly of warp shuffles (no shared memory,
    no barrier); the merge is not symmetric to the last bit when two maxima tie, so
    lane 0's result is broadcast.  The CUDA simulator has no shuffles: there the same
    tree runs through shared memory and block barriers, which every thread of the
    block reaches in step (the kernels call it uniformly)."""
    if not _runtime.simulated():

        @cuda.jit(device=True)
        def warp_online(m, s, nan):
            offset = WARP // 2
            while offset > 0:
                m2 = cuda.shfl_xor_sync(FULL_MASK, m, offset)
                s2 = cuda.shfl_xor_sync(FULL_MASK, s, offset)
                nan = max(nan, cuda.shfl_xor_sync(FULL_MASK, nan, offset))
                m, s = merge(m, s, m2, s2)
                offset //= 2
            m = cuda.shfl_sync(FULL_MASK, m, 0)
            s = cuda.shfl_sync(FULL_MASK, s, 0)
            return m, s, nan

        return warp_online

    @cuda.jit(device=True)
    def warp_online(m, s, nan):
        shm = cuda.shared.array(size, dtype)
        shs = cuda.shared.array(size, dtype)
        shn = cuda.shared.array(size, dtype)
        t = cuda.threadIdx.x
        lane = t % WARP
        shm[t], shs[t], shn[t] = m, s, nan
        cuda.syncthreads()
        offset = WARP // 2
        while offset > 0:
            if lane < offset:
                shm[t], shs[t] = merge(shm[t], shs[t], shm[t + offset], shs[t + offset])
                shn[t] = max(shn[t], shn[t + offset])
            cuda.syncthreads()
            offset //= 2
        base = t - lane
        m, s, nan = shm[base], shs[base], shn[base]
        cuda.syncthreads()
        return m, s, nan

    return warp_online
