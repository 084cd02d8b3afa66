"""Block-wide reductions in shared memory, for any block size (odd ones included).

Every thread of the block calls these with its partial value and gets the block's
result.  They use shared memory and ``syncthreads`` only, so the CUDA simulator
runs them; the tree halves ``s`` active slots as ``ceil(s / 2)``, so a block of 5
or 7 threads reduces correctly.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from numba import cuda

from softmax_numba import config


def build(dtype) -> SimpleNamespace:
    """The reductions for one Numba float type (``numba.float32`` or ``float64``)."""
    size = config.CUDA_MAX_THREADS_PER_BLOCK

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
    def merge(m1, d1, m2, d2):
        """Exact merge of two online states (Milakov & Gimelshein 2018, eq. (4))."""
        if m2 > m1:
            m1, d1, m2, d2 = m2, d2, m1, d1
        if d2 != 0:  # a state with nothing in it (m = -inf) adds nothing, NaN poisons
            d1 += d2 * math.exp(m2 - m1)
        return m1, d1

    @cuda.jit(device=True)
    def block_online(m, d):
        """Block-wide ``(max, sum exp(x - max))`` from each thread's online state."""
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

    @cuda.jit(device=True)
    def thread_online(xi):
        """This thread's online state over its strided share of the row."""
        m = dtype(-math.inf)
        d = dtype(0.0)
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            v = xi[j]
            if v > m:
                d = d * math.exp(m - v) + dtype(1.0)
                m = v
            elif v != -math.inf:
                d += math.exp(v - m)
        return m, d

    @cuda.jit(device=True)
    def row_state(xi):
        """``(m, d, nan)``: the row's max, ``sum exp(x - m)`` and whether it has a NaN."""
        m, d = thread_online(xi)
        nan = dtype(0.0)
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            if xi[j] != xi[j]:
                nan = dtype(1.0)
        m, d = block_online(m, d)
        return m, d, block_max(nan) > 0

    @cuda.jit(device=True)
    def row_logsumexp(xi):
        """``m + log(d)`` with scipy's rules: NaN -> NaN, +inf -> +inf, all -inf -> -inf."""
        m, d, nan = row_state(xi)
        if nan:
            return dtype(math.nan)
        if math.isinf(m):
            return m
        return m + math.log(d)

    return SimpleNamespace(
        block_sum=block_sum, block_max=block_max, block_online=block_online,
        row_state=row_state, row_logsumexp=row_logsumexp,
    )  # fmt: skip
