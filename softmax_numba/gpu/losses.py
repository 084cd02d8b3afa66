"""Cross-entropy with its fused gradient as CUDA kernels (one block per row)."""

from __future__ import annotations

import math

from numba import cuda


def build(dtype, red) -> dict:
    # Device functions must be plain closure names for Numba to type them.
    block_sum = red.block_sum
    row_state = red.row_state
    one, zero = dtype(1.0), dtype(0.0)

    @cuda.jit
    def _cross_entropy_index(x, target, ignore, smoothing, scale, want_grad, loss, grad):
        n = x.shape[1]
        eps = dtype(smoothing)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            t = target[i]
            if t == ignore:
                if cuda.threadIdx.x == 0:
                    loss[i] = zero
                if want_grad:
                    for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
                        grad[i, j] = zero
                continue
            m, d, _nan = row_state(x[i])
            lse = m + math.log(d)
            total = zero
            if smoothing != 0:
                for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
                    total += x[i, j]
                total = block_sum(total)
            if cuda.threadIdx.x == 0:
                value = (one - eps) * (lse - x[i, t])
                if smoothing != 0:
                    value += eps * (lse - total / dtype(n))
                loss[i] = value
            if want_grad:
                sc = dtype(scale)
                floor = eps / dtype(n) * sc
                r = sc / d
                for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
                    g = math.exp(x[i, j] - m) * r - floor
                    if j == t:
                        g -= (one - eps) * sc
                    grad[i, j] = g

    @cuda.jit
    def _cross_entropy_probability(x, q, smoothing, scale, want_grad, loss, grad):
        n = x.shape[1]
        eps = dtype(smoothing)
        keep = one - eps
        floor = eps / dtype(n)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m, d, _nan = row_state(x[i])
            lse = m + math.log(d)
            value = zero
            q_sum = zero
            for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
                qj = keep * q[i, j] + floor
                if qj != 0:
                    value += qj * (lse - x[i, j])
                q_sum += qj
            value = block_sum(value)
            q_sum = block_sum(q_sum)
            if cuda.threadIdx.x == 0:
                loss[i] = value
            if want_grad:
                sc = dtype(scale)
                r = q_sum / d
                for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
                    grad[i, j] = (math.exp(x[i, j] - m) * r - (keep * q[i, j] + floor)) * sc

    return {
        "_cross_entropy_index": _cross_entropy_index,
        "_cross_entropy_probability": _cross_entropy_probability,
    }
