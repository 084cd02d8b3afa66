"""Softmax, log-softmax, log-sum-exp and backward ops as CUDA kernels.

The row's ``(max, sum)`` comes from each thread's online state merged across the
block or the warp (Milakov & Gimelshein 2018), in one pass over the row.  Softmax,
log-softmax and log-sum-exp have a kernel for each row length
(``softmax_numba.gpu._runtime.plan`` picks one per call):

- ``__warp_per_row``: rows of at most ``config.CUDA_WARP_ROW_MAX_LENGTH``, a warp
  each, several per block, reduced by warp shuffles (no shared memory, no barrier);
- ``__row_in_shared``: a block per row that fits in
  ``config.CUDA_ROW_IN_SHARED_MAX_BYTES``; each thread keeps the entries it read in
  dynamic shared memory for the write pass, so the row is read from global memory
  once;
- ``__split_row_state`` then ``__split_row``: fewer long rows than the device holds
  blocks; each row cut into pieces, a block each: the pieces' states are merged
  exactly (the same merge as the threads'), then each block writes its piece;
- the plain kernel: a block per row, read twice (once for the state, once to write).
"""

from __future__ import annotations

import math

from numba import cuda

from softmax_numba.gpu._runtime import (
    SHARED_SUFFIX,
    SPLIT_STATE_SUFFIX,
    SPLIT_SUFFIX,
    WARP,
    WARP_SUFFIX,
)


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
    add_flagged = red.add_flagged
    merge_flagged = red.merge_flagged
    settled = red.settled
    block_online = red.block_online
    add = red.add
    one, zero = dtype(1.0), dtype(0.0)

    @cuda.jit(device=True, inline="always")
    def write_scaled_exp(xi, oi, shift, scale):
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            oi[j] = math.exp(dtype(xi[j]) - shift) * scale

    @cuda.jit
    def _softmax_naive(x, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            s = zero
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                s += math.exp(dtype(x[i, j]))
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
                out[i, j] = log_probability(dtype(x[i, j]), m, log1p_s)  # never x - lse

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

    # ------------------------------------------------- temperature and attention sink
    # One block per row: the state of ``y = x / T`` (each quotient correctly rounded,
    # as NumPy's), the sink added as one more entry, then one pass to write.

    @cuda.jit(device=True, inline="always")
    def tempered_state(xi, t, sink):
        """The settled state of ``xi / t`` with the entry ``sink`` added."""
        m, s, nan = dtype(-math.inf), zero, zero
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            m, s, nan = add_flagged(m, s, nan, dtype(xi[j]) / t)
        m, s, nan = block_online(m, s, nan)
        m, s, _nan = settled(m, s, nan)
        return add(m, s, sink)

    @cuda.jit
    def _softmax_options(x, out, temperature, sink):
        t = dtype(temperature)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m, s = tempered_state(x[i], t, dtype(sink[i]))
            r = softmax_scale(m, s)
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                out[i, j] = math.exp(dtype(x[i, j]) / t - m) * r

    @cuda.jit
    def _log_softmax_options(x, out, temperature, sink):
        t = dtype(temperature)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m, s = tempered_state(x[i], t, dtype(sink[i]))
            log1p_s = math.log1p(s)
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                out[i, j] = log_probability(dtype(x[i, j]) / t, m, log1p_s)

    @cuda.jit
    def _divided(x, out, temperature):
        t = dtype(temperature)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                out[i, j] = dtype(x[i, j]) / t

    # ------------------------------------------------------- the row in shared memory
    # Each thread stores the entries it reads in the dynamic shared array ``row``
    # (the launch sizes it to the row) and reads the same slots back to write: no
    # other thread touches them, so no barrier guards them.

    @cuda.jit(device=True, inline="always")
    def kept_row_state(xi, row):
        """:func:`row_state` of ``xi``, each thread's entries kept in ``row``."""
        m, s, nan = dtype(-math.inf), zero, zero
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            v = dtype(xi[j])
            row[j] = v
            m, s, nan = add_flagged(m, s, nan, v)
        m, s, nan = block_online(m, s, nan)
        return settled(m, s, nan)

    @cuda.jit
    def _softmax_online_in_shared(x, out):
        row = cuda.shared.array(0, dtype)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m, s, _nan = kept_row_state(x[i], row)
            r = softmax_scale(m, s)
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                out[i, j] = math.exp(row[j] - m) * r

    @cuda.jit
    def _log_softmax_in_shared(x, out):
        row = cuda.shared.array(0, dtype)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m, s, _nan = kept_row_state(x[i], row)
            log1p_s = math.log1p(s)
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                out[i, j] = log_probability(row[j], m, log1p_s)

    # ------------------------------------------------------------ a row over blocks
    # Work unit ``u`` is piece ``u % pieces`` of row ``u // pieces``; the pieces'
    # states ``(m, s, nan)`` go to ``pm, ps, pn`` of shape ``(rows, pieces)``.

    @cuda.jit(device=True, inline="always")
    def piece(u, pieces, n):
        """``(row, piece, start, stop)`` of work unit ``u``."""
        i, c = u // pieces, u % pieces
        length = (n + pieces - 1) // pieces
        return i, c, c * length, min(n, (c + 1) * length)

    @cuda.jit
    def _split_row_state(x, pm, ps, pn):
        pieces = pm.shape[1]
        for u in range(cuda.blockIdx.x, x.shape[0] * pieces, cuda.gridDim.x):
            i, c, start, stop = piece(u, pieces, x.shape[1])
            m, s, nan = dtype(-math.inf), zero, zero
            for j in range(start + cuda.threadIdx.x, stop, cuda.blockDim.x):
                m, s, nan = add_flagged(m, s, nan, dtype(x[i, j]))
            m, s, nan = block_online(m, s, nan)
            if cuda.threadIdx.x == 0:
                pm[i, c], ps[i, c], pn[i, c] = m, s, nan

    @cuda.jit(device=True, inline="always")
    def merged_pieces(pm, ps, pn, i):
        """The state of row ``i`` from its pieces', merged in piece order."""
        m, s, nan = pm[i, 0], ps[i, 0], pn[i, 0]
        for c in range(1, pm.shape[1]):
            m, s, nan = merge_flagged(m, s, nan, pm[i, c], ps[i, c], pn[i, c])
        return settled(m, s, nan)

    @cuda.jit
    def _softmax_online_split(x, pm, ps, pn, out):
        pieces = pm.shape[1]
        for u in range(cuda.blockIdx.x, x.shape[0] * pieces, cuda.gridDim.x):
            i, _c, start, stop = piece(u, pieces, x.shape[1])
            m, s, _nan = merged_pieces(pm, ps, pn, i)
            r = softmax_scale(m, s)
            for j in range(start + cuda.threadIdx.x, stop, cuda.blockDim.x):
                out[i, j] = math.exp(dtype(x[i, j]) - m) * r

    @cuda.jit
    def _log_softmax_split(x, pm, ps, pn, out):
        pieces = pm.shape[1]
        for u in range(cuda.blockIdx.x, x.shape[0] * pieces, cuda.gridDim.x):
            i, _c, start, stop = piece(u, pieces, x.shape[1])
            m, s, _nan = merged_pieces(pm, ps, pn, i)
            log1p_s = math.log1p(s)
            for j in range(start + cuda.threadIdx.x, stop, cuda.blockDim.x):
                out[i, j] = log_probability(dtype(x[i, j]), m, log1p_s)

    @cuda.jit
    def _logsumexp_split(x, pm, ps, pn, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            if cuda.threadIdx.x == 0:
                m, s, _nan = merged_pieces(pm, ps, pn, i)
                out[i] = logsumexp(m, s)

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
                    out[i, j] = math.exp(dtype(x[i, j]) - m) * r

    @cuda.jit
    def _log_softmax_warp(x, out):
        start, step, warp, lane = warp_rows()
        for base in range(start, x.shape[0], step):
            i = base + warp
            m, s, _nan = warp_row_state(x, i, lane)
            if i < x.shape[0]:
                log1p_s = math.log1p(s)
                for j in range(lane, x.shape[1], WARP):
                    out[i, j] = log_probability(dtype(x[i, j]), m, log1p_s)

    @cuda.jit
    def _logsumexp_warp(x, out):
        start, step, warp, lane = warp_rows()
        for base in range(start, x.shape[0], step):
            i = base + warp
            m, s, _nan = warp_row_state(x, i, lane)
            if i < x.shape[0] and lane == 0:
                out[i] = logsumexp(m, s)

    variants = {}
    for name in ("_softmax_shifted", "_softmax_online"):  # on a GPU, one kernel
        variants |= {
            name + WARP_SUFFIX: _softmax_online_warp,
            name + SHARED_SUFFIX: _softmax_online_in_shared,
            name + SPLIT_STATE_SUFFIX: _split_row_state,
            name + SPLIT_SUFFIX: _softmax_online_split,
        }
    return variants | {
        "_log_softmax" + WARP_SUFFIX: _log_softmax_warp,
        "_log_softmax" + SHARED_SUFFIX: _log_softmax_in_shared,
        "_log_softmax" + SPLIT_STATE_SUFFIX: _split_row_state,
        "_log_softmax" + SPLIT_SUFFIX: _log_softmax_split,
        "_logsumexp" + WARP_SUFFIX: _logsumexp_warp,
        "_logsumexp" + SPLIT_STATE_SUFFIX: _split_row_state,
        "_logsumexp" + SPLIT_SUFFIX: _logsumexp_split,
        "_softmax_naive": _softmax_naive,
        "_softmax_shifted": _softmax_online,  # on a GPU the online form is the shifted one
        "_softmax_online": _softmax_online,
        "_softmax_division_free": _softmax_division_free,
        "_log_softmax": _log_softmax,
        "_softmax_options": _softmax_options,
        "_log_softmax_options": _log_softmax_options,
        "_divided": _divided,
        "_logsumexp": _logsumexp,
        "_logsumexp_weighted": _logsumexp_weighted,
        "_softmax_backward": _softmax_backward,
        "_log_softmax_backward": _log_softmax_backward,
    }
