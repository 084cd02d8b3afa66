"""Softmax, log-softmax, log-sum-exp and backward ops as CUDA kernels.

One block per row (a grid-stride loop over rows), the threads striding over the
row; for rows of at most ``config.CUDA_WARP_ROW_MAX_LENGTH`` entries, softmax,
log-softmax and log-sum-exp have a variant with one warp per row, reduced by warp
shuffles (no shared memory, no block barrier).  The row's ``(max, sum)`` comes from
each thread's online state merged across the block or the warp (Milakov & Gimelshein
2018), so the input is read once for the statistics and once to write: two reads
and one write in all.
"""

from __future__ import annotations

import math

from numba import cuda

from softmax_numba.gpu._runtime import WARP, WARP_SUFFIX


def build(dtype, red) -> dict:
    # Device functions must be plain closure names for Numba to type them.
    block_max = red.block_max
    block_sum = red.block_sum
    row_logsumexp = red.row_logsumexp
    row_state = red.row_state
    softmax_scale = red.softmax_scale
    log_probability = red.log_probability
    logsumexp = red.logsumexp
    warp_row_state = red.warp_row_state
    one, zero = dtype(1.0), dtype(0.0)

    @cuda.jit(device=True, inline="always")
    def write_scaled_exp(xi, oi, shift, scale):
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            oi[j] = math.exp(xi[j] - shift) * scale

    @cuda.jit
    def _softmax_naive(x, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            s = zero
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                s += math.exp(x[i, j])
            s = block_sum(s)
            write_scaled_exp(x[i], out[i], zero, one / s)

    @cuda.jit
    def _softmax_online(x, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m, s, _nan = row_state(x[i])
            write_scaled_exp(x[i], out[i], m, softmax_scale(m, s))

    @cuda.jit
    def _softmax_division_free(x, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            lse = row_logsumexp(x[i])
            if lse == math.inf:
                lse = dtype(math.nan)
            write_scaled_exp(x[i], out[i], lse, one)

    @cuda.jit
    def _log_softmax(x, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m, s, _nan = row_state(x[i])
            log1p_s = math.log1p(s)
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                out[i, j] = log_probability(x[i, j], m, log1p_s)  # never x - lse

    @cuda.jit
    def _logsumexp(x, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            lse = row_logsumexp(x[i])
            if cuda.threadIdx.x == 0:
                out[i] = lse

    @cuda.jit
    def _logsumexp_weighted(x, b, out, sign):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m = dtype(-math.inf)
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                if b[i, j] != 0 and x[i, j] > m:
                    m = x[i, j]
            m = block_max(m)
            shift = zero if math.isinf(m) else m
            s = zero
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                if b[i, j] != 0:
                    s += b[i, j] * math.exp(x[i, j] - shift)
            s = block_sum(s)
            if cuda.threadIdx.x == 0:
                out[i] = shift + math.log(abs(s))
                sign[i] = s if math.isnan(s) else (one if s > 0 else (-one if s < 0 else zero))

    @cuda.jit
    def _softmax_backward(y, dy, dx):
        for i in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
            dot = zero
            for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
                dot += y[i, j] * dy[i, j]
            dot = block_sum(dot)
            for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
                dx[i, j] = y[i, j] * (dy[i, j] - dot)

    @cuda.jit
    def _log_softmax_backward(y, dy, dx):
        for i in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
            total = zero
            for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
                total += dy[i, j]
            total = block_sum(total)
            for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
                dx[i, j] = dy[i, j] - math.exp(y[i, j]) * total

    # ----------------------------------------------------------------- a warp per row
    # For short rows (``config.CUDA_WARP_ROW_MAX_LENGTH``): each warp of a block takes
    # one row, its lanes striding over it; the block's warps take consecutive rows,
    # and every warp of a block runs the same number of iterations (the rows past the
    # end with an empty state), so that the warp reduction runs in step.

    @cuda.jit(device=True, inline="always")
    def warp_rows():
        """``(first row of this block, row step, this warp, this lane)``."""
        per_block = cuda.blockDim.x // WARP
        warp = cuda.threadIdx.x // WARP
        lane = cuda.threadIdx.x % WARP
        return cuda.blockIdx.x * per_block, cuda.gridDim.x * per_block, warp, lane

    @cuda.jit
    def _softmax_online_warp(x, out):
        start, step, warp, lane = warp_rows()
        for base in range(start, x.shape[0], step):
            i = base + warp
            m, s, _nan = warp_row_state(x, i, lane)
            if i < x.shape[0]:
                r = softmax_scale(m, s)
                for j in range(lane, x.shape[1], WARP):
                    out[i, j] = math.exp(x[i, j] - m) * r

    @cuda.jit
    def _log_softmax_warp(x, out):
        start, step, warp, lane = warp_rows()
        for base in range(start, x.shape[0], step):
            i = base + warp
            m, s, _nan = warp_row_state(x, i, lane)
            if i < x.shape[0]:
                log1p_s = math.log1p(s)
                for j in range(lane, x.shape[1], WARP):
                    out[i, j] = log_probability(x[i, j], m, log1p_s)

    @cuda.jit
    def _logsumexp_warp(x, out):
        start, step, warp, lane = warp_rows()
        for base in range(start, x.shape[0], step):
            i = base + warp
            m, s, _nan = warp_row_state(x, i, lane)
            if i < x.shape[0] and lane == 0:
                out[i] = logsumexp(m, s)

    return {
        "_softmax_shifted" + WARP_SUFFIX: _softmax_online_warp,
        "_softmax_online" + WARP_SUFFIX: _softmax_online_warp,
        "_log_softmax" + WARP_SUFFIX: _log_softmax_warp,
        "_logsumexp" + WARP_SUFFIX: _logsumexp_warp,
        "_softmax_naive": _softmax_naive,
        "_softmax_shifted": _softmax_online,  # on a GPU the online form is the shifted one
        "_softmax_online": _softmax_online,
        "_softmax_division_free": _softmax_division_free,
        "_log_softmax": _log_softmax,
        "_logsumexp": _logsumexp,
        "_logsumexp_weighted": _logsumexp_weighted,
        "_softmax_backward": _softmax_backward,
        "_log_softmax_backward": _log_softmax_backward,
    }
