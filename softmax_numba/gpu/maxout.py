"""maxout as a CUDA kernel: a thread per group, one block per row."""

from __future__ import annotations

import math

from numba import cuda


def build(dtype, red) -> dict:
    @cuda.jit
    def _maxout(x, pool_size, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            for g in range(cuda.threadIdx.x, out.shape[1], cuda.blockDim.x):
                m = x[i, g * pool_size]
                nan = False
                for j in range(g * pool_size, (g + 1) * pool_size):
                    v = x[i, j]
                    m = v if v > m else m
                    nan = nan or v != v
                out[i, g] = dtype(math.nan) if nan else m

    return {"_maxout": _maxout}
