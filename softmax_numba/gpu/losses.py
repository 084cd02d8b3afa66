"""Cross-entropy with its fused gradient as CUDA kernels (one block per row).

The gradient may be written over the logits (``grad_out=logits``): each entry of a
row is read only by the thread that writes its gradient (the thread whose stride
holds the target ``t`` computes the loss from ``x_t``), so no thread writes an
entry that another still has to read.

Index targets take float16 logits as well (``_runtime.HALF_STORAGE``): each entry
is read in the kernel's float type, and the loss and gradient stored in float16.
"""

from __future__ import annotations

import math

from numba import cuda


def build(dtype, red) -> dict:
    # Device functions must be plain closure names for Numba to type them.
    block_sum = red.block_sum
    row_state = red.row_state
    softmax_scale = red.softmax_scale
    one, zero, half = dtype(1.0), dtype(0.0), dtype(0.5)

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
            m, s, _nan = row_state(x[i])
            log1p_s = math.log1p(s)
            # Every term halved (exactly), the sum doubled: m - x_j can overflow.
            gap = zero  # mean_j (m - x_j) / 2 as sum_j (m/2 - x_j/2) / n
            if smoothing != 0:
                w = one / dtype(n)
                for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
                    gap += (m * half - dtype(x[i, j]) * half) * w
                gap = block_sum(gap)
            # The thread whose entries hold x_t writes the loss, reading x_t before it
            # writes its share of the gradient (``grad`` may be ``x``: grad_out=logits).
            if cuda.threadIdx.x == t % cuda.blockDim.x:
                value = (one - eps) * ((m * half - dtype(x[i, t]) * half) + log1p_s * half)
                if smoothing != 0:
                    value += eps * (gap + log1p_s * half)
                loss[i] = value + value
            if want_grad:
                sc = dtype(scale)
                floor = eps / dtype(n) * sc
                r = sc * softmax_scale(m, s)
                for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
                    g = math.exp(dtype(x[i, j]) - m) * r - floor
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
            m, s, _nan = row_state(x[i])
            log1p_s = math.log1p(s)
            value = zero
            q_sum = zero
            for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
                qj = keep * q[i, j] + floor
                if qj != 0:  # q_j ((m - x_j) + log1p(s)), halved: m - x_j cannot overflow
                    value += qj * ((m * half - x[i, j] * half) + log1p_s * half)
                q_sum += qj
            value = block_sum(value)
            q_sum = block_sum(q_sum)
            if cuda.threadIdx.x == 0:
                loss[i] = value + value
            if want_grad:
                sc = dtype(scale)
                r = q_sum * softmax_scale(m, s)
                for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
                    grad[i, j] = (math.exp(x[i, j] - m) * r - (keep * q[i, j] + floor)) * sc

    return {
        "_cross_entropy_index": _cross_entropy_index,
        "_cross_entropy_probability": _cross_entropy_probability,
    }
