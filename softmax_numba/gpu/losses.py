"""Cross-entropy with its fused gradient as CUDA kernels (one block per row).

The gradient may be written over the logits (``grad_out=logits``): each entry of a
row is read only by the thread that writes its gradient (the thread whose share holds
the target ``t`` computes the loss from ``x_t``), so no thread writes an entry that
another still has to read.

Index targets take float16 and bfloat16 logits as well (``_runtime.HALF_STORAGE``):
each entry is read into float32, and the loss and gradient stored in the logits'
type.  Rows are read and written through :mod:`softmax_numba.gpu._wide` (16 bytes per
access where aligned); the thread that holds ``x_t`` in the gradient's partition
computes the loss (:func:`softmax_numba.gpu._wide.owner`).
"""

from __future__ import annotations

import math

from numba import cuda

from softmax_numba.gpu import _wide


def build(dtype, red) -> dict:
    # Device functions must be plain closure names for Numba to type them.
    block_sum = red.block_sum
    row_state = red.row_state
    softmax_scale = red.softmax_scale
    w = _wide.build()
    span, whole, owner, load, store, lanes = w.span, w.whole, w.owner, w.load, w.store, w.lanes
    one, zero, half = dtype(1.0), dtype(0.0), dtype(0.5)
    jit = cuda.jit(device=True, inline="always")

    @jit
    def gap_step(acc, j, v, params):
        m, weight = params
        return acc + (m * half - v * half) * weight

    gap_fold = _wide.fold(gap_step)

    @jit
    def index_gradient(j, v, params):
        m, r, floor, t, target_weight = params
        g = math.exp(v - m) * r - floor
        if j == t:
            g -= target_weight
        return g

    index_gradient_map = _wide.mapping(index_gradient)

    @jit
    def nothing(j, value):
        return value

    fill = _wide.generate(nothing)

    @cuda.jit
    def _cross_entropy_index(x, target, ignore, smoothing, scale, want_grad, loss, grad):
        n = x.shape[1]
        eps = dtype(smoothing)
        thread, threads = cuda.threadIdx.x, cuda.blockDim.x
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            t = target[i]
            xi = x[i]
            part = whole(xi)
            if want_grad:
                gi = grad[i]
                part = span(xi, gi, gi, 0, n)
            if t == ignore:
                if thread == 0:
                    store(loss, i, zero)
                if want_grad:
                    fill(grad[i], part, thread, threads, zero)
                continue
            m, s, _nan = row_state(xi)
            log1p_s = math.log1p(s)
            # Every term halved (exactly), the sum doubled: m - x_j can overflow.
            gap = zero  # mean_j (m - x_j) / 2 as sum_j (m/2 - x_j/2) / n
            if smoothing != 0:
                gap = block_sum(gap_fold(xi, part, thread, threads, zero, (m, one / dtype(n))))
            # The thread whose share of the gradient holds x_t writes the loss, reading
            # x_t before it writes its share (``grad`` may be ``x``: grad_out=logits).
            if thread == owner(part, lanes(xi), t, threads):
                value = (one - eps) * ((m * half - load(xi, t) * half) + log1p_s * half)
                if smoothing != 0:
                    value += eps * (gap + log1p_s * half)
                store(loss, i, value + value)
            if want_grad:
                sc = dtype(scale)
                floor = eps / dtype(n) * sc
                r = sc * softmax_scale(m, s)
                params = (m, r, floor, t, (one - eps) * sc)
                index_gradient_map(xi, grad[i], part, thread, threads, params)

    @jit
    def probability_step(acc, j, x, q, params):
        value, q_sum = acc
        keep, floor, m, log1p_s = params
        qj = keep * q + floor
        if qj != 0:  # q_j ((m - x_j) + log1p(s)), halved: m - x_j cannot overflow
            value += qj * ((m * half - x * half) + log1p_s * half)
        return value, q_sum + qj

    @jit
    def probability_gradient(j, x, q, params):
        keep, floor, m, r, sc = params
        return (math.exp(x - m) * r - (keep * q + floor)) * sc

    probability_fold = _wide.fold2(probability_step)
    probability_gradient_map = _wide.mapping2(probability_gradient)

    @cuda.jit
    def _cross_entropy_probability(x, q, smoothing, scale, want_grad, loss, grad):
        n = x.shape[1]
        eps = dtype(smoothing)
        keep = one - eps
        floor = eps / dtype(n)
        thread, threads = cuda.threadIdx.x, cuda.blockDim.x
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi, qi = x[i], q[i]
            part = span(xi, qi, qi, 0, n)
            if want_grad:
                gi = grad[i]
                part = span(xi, qi, gi, 0, n)
            m, s, _nan = row_state(xi)
            log1p_s = math.log1p(s)
            params = (keep, floor, m, log1p_s)
            value, q_sum = probability_fold(xi, qi, part, thread, threads, (zero, zero), params)
            value = block_sum(value)
            q_sum = block_sum(q_sum)
            if thread == 0:
                loss[i] = value + value
            if want_grad:
                params = (keep, floor, m, q_sum * softmax_scale(m, s), dtype(scale))
                probability_gradient_map(xi, qi, grad[i], part, thread, threads, params)

    return {
        "_cross_entropy_index": _cross_entropy_index,
        "_cross_entropy_probability": _cross_entropy_probability,
    }
