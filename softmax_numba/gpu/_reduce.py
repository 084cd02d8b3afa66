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
    def merge(m1, s1, m2, s2):
        """Exact merge of two states ``(m, s)``, ``s = sum_{i != k} exp(x_i - m)``:
        ``s = s1 + (1 + s2) exp(m2 - m1)`` for ``m1 >= m2`` (Milakov & Gimelshein 2018,
        eq. (4), for ``s = d - 1``); an empty state (``m = -inf``) adds nothing, nor
        does anything beside a ``+inf`` max (NaNs are flagged apart, see
        :func:`row_state`)."""
        if m2 > m1:
            m1, s1, m2, s2 = m2, s2, m1, s1
        if m2 != -math.inf and m1 != math.inf:
            s1 += (dtype(1.0) + s2) * math.exp(m2 - m1)
        return m1, s1

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

    @cuda.jit(device=True)
    def thread_online(xi):
        """This thread's state over its strided share of the row (its first maximum
        counts nothing, every later entry ``exp(x_j - m)``)."""
        m = dtype(-math.inf)
        s = dtype(0.0)
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            v = xi[j]
            if v > m:
                s = (s + dtype(1.0)) * math.exp(m - v)
                m = v
            elif v != -math.inf:
                s += math.exp(v - m)
        return m, s

    @cuda.jit(device=True)
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

    @cuda.jit(device=True)
    def softmax_scale(m, s):
        """``1 / (1 + s)``; NaN for a ``+inf`` max."""
        return dtype(math.nan) if m == math.inf else dtype(1.0) / (dtype(1.0) + s)

    @cuda.jit(device=True)
    def row_logsumexp(xi):
        """``m + log1p(s)``: scipy's rules (NaN, +inf, all -inf) follow from the state."""
        m, s, _nan = row_state(xi)
        return m + math.log1p(s)

    return SimpleNamespace(
        block_sum=block_sum, block_max=block_max, block_online=block_online,
        row_state=row_state, row_logsumexp=row_logsumexp, softmax_scale=softmax_scale,
    )  # fmt: skip
