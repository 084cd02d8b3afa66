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

Every pass reads and writes its rows through :mod:`softmax_numba.gpu._wide`: 16 bytes
per access where the row is aligned (a scalar edge elsewhere), float16 and bfloat16
(``uint16``) rows computed in float32.
"""

from __future__ import annotations

import math

from numba import cuda

from softmax_numba.gpu import _wide
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
    state_fold = red.state_fold
    empty_state = red.empty_state
    exp_map = red.exp_map
    log_map = red.log_map
    w = _wide.build()
    span, store = w.span, w.store
    one, zero = dtype(1.0), dtype(0.0)
    jit = cuda.jit(device=True, inline="always")

    @jit
    def mine():
        """``(thread, threads)`` of a block-per-row kernel."""
        return cuda.threadIdx.x, cuda.blockDim.x

    @jit
    def write_scaled_exp(xi, oi, shift, scale):
        t, threads = mine()
        exp_map(xi, oi, span(xi, oi, oi, 0, xi.size), t, threads, (shift, scale))

    @jit
    def exp_step(acc, j, v, params):
        return acc + math.exp(v)

    exp_sum = _wide.fold(exp_step)

    @cuda.jit
    def _softmax_naive(x, out):
        t, threads = mine()
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi = x[i]
            s = exp_sum(xi, span(xi, xi, xi, 0, xi.size), t, threads, zero, 0)
            s = block_sum(s)
            write_scaled_exp(xi, out[i], zero, one / s)

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
        t, threads = mine()
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi, oi = x[i], out[i]
            m, s, _nan = row_state(xi)
            log_map(xi, oi, span(xi, oi, oi, 0, xi.size), t, threads, (m, math.log1p(s)))

    @cuda.jit
    def _logsumexp(x, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            lse = row_logsumexp(x[i])
            if cuda.threadIdx.x == 0:
                store(out, i, lse)

    @jit
    def weighted_max_step(m, j, v, b, params):
        return v if b != 0 and v > m else m

    @jit
    def weighted_sum_step(s, j, v, b, shift):
        return s + b * math.exp(v - shift) if b != 0 else s

    weighted_max = _wide.fold2(weighted_max_step)
    weighted_sum = _wide.fold2(weighted_sum_step)

    @cuda.jit
    def _logsumexp_weighted(x, b, out, sign):
        t, threads = mine()
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi, bi = x[i], b[i]
            part = span(xi, bi, bi, 0, xi.size)
            m = block_max(weighted_max(xi, bi, part, t, threads, dtype(-math.inf), 0))
            shift = zero if math.isinf(m) else m
            s = block_sum(weighted_sum(xi, bi, part, t, threads, zero, shift))
            if cuda.threadIdx.x == 0:
                out[i] = shift + math.log(abs(s))
                sign[i] = s if math.isnan(s) else (one if s > 0 else (-one if s < 0 else zero))

    dot_fold, sum_fold = red.dot_fold, red.sum_fold
    softmax_vjp_map, log_softmax_vjp_map = red.softmax_vjp_map, red.log_softmax_vjp_map

    @cuda.jit
    def _softmax_backward(y, dy, dx):
        t, threads = mine()
        for i in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
            yi, dyi, dxi = y[i], dy[i], dx[i]
            part = span(yi, dyi, dxi, 0, yi.size)
            dot = block_sum(dot_fold(yi, dyi, part, t, threads, zero, 0))
            softmax_vjp_map(yi, dyi, dxi, part, t, threads, dot)

    @cuda.jit
    def _log_softmax_backward(y, dy, dx):
        t, threads = mine()
        for i in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
            yi, dyi, dxi = y[i], dy[i], dx[i]
            part = span(yi, dyi, dxi, 0, yi.size)
            total = block_sum(sum_fold(dyi, part, t, threads, zero, 0))
            log_softmax_vjp_map(yi, dyi, dxi, part, t, threads, total)

    # ------------------------------------------------- temperature and attention sink
    # One block per row: the state of ``y = x / T`` (each quotient correctly rounded,
    # as NumPy's), the sink added as one more entry, then one pass to write.

    @jit
    def tempered_step(acc, j, v, temperature):
        m, s, nan = acc
        return add_flagged(m, s, nan, v / temperature)

    tempered_fold = _wide.fold(tempered_step)

    @jit
    def tempered_exp(j, v, params):
        temperature, m, r = params
        return math.exp(v / temperature - m) * r

    @jit
    def tempered_log(j, v, params):
        temperature, m, log1p_s = params
        return log_probability(v / temperature, m, log1p_s)

    @jit
    def divided(j, v, temperature):
        return v / temperature

    tempered_exp_map = _wide.mapping(tempered_exp)
    tempered_log_map = _wide.mapping(tempered_log)
    divided_map = _wide.mapping(divided)

    @jit
    def tempered_state(xi, part, t, sink):
        """The settled state of ``xi / t`` with the entry ``sink`` added."""
        thread, threads = mine()
        m, s, nan = tempered_fold(xi, part, thread, threads, empty_state(), t)
        m, s, nan = block_online(m, s, nan)
        m, s, _nan = settled(m, s, nan)
        return add(m, s, sink)

    @cuda.jit
    def _softmax_options(x, out, temperature, sink):
        t = dtype(temperature)
        thread, threads = mine()
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi, oi = x[i], out[i]
            part = span(xi, oi, oi, 0, xi.size)
            m, s = tempered_state(xi, part, t, dtype(sink[i]))
            tempered_exp_map(xi, oi, part, thread, threads, (t, m, softmax_scale(m, s)))

    @cuda.jit
    def _log_softmax_options(x, out, temperature, sink):
        t = dtype(temperature)
        thread, threads = mine()
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi, oi = x[i], out[i]
            part = span(xi, oi, oi, 0, xi.size)
            m, s = tempered_state(xi, part, t, dtype(sink[i]))
            tempered_log_map(xi, oi, part, thread, threads, (t, m, math.log1p(s)))

    @cuda.jit
    def _divided(x, out, temperature):
        t = dtype(temperature)
        thread, threads = mine()
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi, oi = x[i], out[i]
            divided_map(xi, oi, span(xi, oi, oi, 0, xi.size), thread, threads, t)

    # ------------------------------------------------------- the row in shared memory
    # Each thread stores the entries it reads in the dynamic shared array ``row``
    # (the launch sizes it to the row) and reads the same slots back to write: the
    # read and the write take one partition of the row and its output, so that no
    # other thread touches those slots in between.  The next row of the block may start
    # at another offset from a 16-byte boundary, and so be cut elsewhere: a barrier
    # ends each row before its slots change hands.

    @jit
    def kept_step(acc, j, v, row):
        row[j] = v
        m, s, nan = acc
        return add_flagged(m, s, nan, v)

    kept_fold = _wide.fold(kept_step)

    @jit
    def kept_exp(j, params):
        row, m, r = params
        return math.exp(row[j] - m) * r

    @jit
    def kept_log(j, params):
        row, m, log1p_s = params
        return log_probability(row[j], m, log1p_s)

    kept_exp_write = _wide.generate(kept_exp)
    kept_log_write = _wide.generate(kept_log)

    @jit
    def kept_row_state(xi, part, row):
        """:func:`row_state` of ``xi``, each thread's entries of ``part`` kept in ``row``."""
        t, threads = mine()
        m, s, nan = kept_fold(xi, part, t, threads, empty_state(), row)
        m, s, nan = block_online(m, s, nan)
        return settled(m, s, nan)

    @cuda.jit
    def _softmax_online_in_shared(x, out):
        row = cuda.shared.array(0, dtype)
        t, threads = mine()
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi, oi = x[i], out[i]
            part = span(xi, oi, oi, 0, xi.size)
            m, s, _nan = kept_row_state(xi, part, row)
            kept_exp_write(oi, part, t, threads, (row, m, softmax_scale(m, s)))
            cuda.syncthreads()  # the next row is cut elsewhere: its slots are others'

    @cuda.jit
    def _log_softmax_in_shared(x, out):
        row = cuda.shared.array(0, dtype)
        t, threads = mine()
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            xi, oi = x[i], out[i]
            part = span(xi, oi, oi, 0, xi.size)
            m, s, _nan = kept_row_state(xi, part, row)
            kept_log_write(oi, part, t, threads, (row, m, math.log1p(s)))
            cuda.syncthreads()  # the next row is cut elsewhere: its slots are others'

    # ------------------------------------------------------------ a row over blocks
    # Work unit ``u`` is piece ``u % pieces`` of row ``u // pieces``; the pieces'
    # states ``(m, s, nan)`` go to ``pm, ps, pn`` of shape ``(rows, pieces)``.

    @jit
    def piece(u, pieces, n):
        """``(row, piece, start, stop)`` of work unit ``u``."""
        i, c = u // pieces, u % pieces
        length = (n + pieces - 1) // pieces
        return i, c, c * length, min(n, (c + 1) * length)

    @cuda.jit
    def _split_row_state(x, pm, ps, pn):
        pieces = pm.shape[1]
        t, threads = mine()
        for u in range(cuda.blockIdx.x, x.shape[0] * pieces, cuda.gridDim.x):
            i, c, start, stop = piece(u, pieces, x.shape[1])
            xi = x[i]
            part = span(xi, xi, xi, start, stop)
            m, s, nan = state_fold(xi, part, t, threads, empty_state(), 0)
            m, s, nan = block_online(m, s, nan)
            if cuda.threadIdx.x == 0:
                pm[i, c], ps[i, c], pn[i, c] = m, s, nan

    @jit
    def merged_pieces(pm, ps, pn, i):
        """The state of row ``i`` from its pieces', merged in piece order."""
        m, s, nan = pm[i, 0], ps[i, 0], pn[i, 0]
        for c in range(1, pm.shape[1]):
            m, s, nan = merge_flagged(m, s, nan, pm[i, c], ps[i, c], pn[i, c])
        return settled(m, s, nan)

    @cuda.jit
    def _softmax_online_split(x, pm, ps, pn, out):
        pieces = pm.shape[1]
        t, threads = mine()
        for u in range(cuda.blockIdx.x, x.shape[0] * pieces, cuda.gridDim.x):
            i, _c, start, stop = piece(u, pieces, x.shape[1])
            xi, oi = x[i], out[i]
            m, s, _nan = merged_pieces(pm, ps, pn, i)
            exp_map(xi, oi, span(xi, oi, oi, start, stop), t, threads, (m, softmax_scale(m, s)))

    @cuda.jit
    def _log_softmax_split(x, pm, ps, pn, out):
        pieces = pm.shape[1]
        t, threads = mine()
        for u in range(cuda.blockIdx.x, x.shape[0] * pieces, cuda.gridDim.x):
            i, _c, start, stop = piece(u, pieces, x.shape[1])
            xi, oi = x[i], out[i]
            m, s, _nan = merged_pieces(pm, ps, pn, i)
            log_map(xi, oi, span(xi, oi, oi, start, stop), t, threads, (m, math.log1p(s)))

    @cuda.jit
    def _logsumexp_split(x, pm, ps, pn, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            if cuda.threadIdx.x == 0:
                m, s, _nan = merged_pieces(pm, ps, pn, i)
                store(out, i, logsumexp(m, s))

    # ----------------------------------------------------------------- a warp per row
    # For short rows (``config.CUDA_WARP_ROW_MAX_LENGTH``): each warp of a block takes
    # one row, its lanes striding over it; the block's warps take consecutive rows,
    # and every warp of a block runs the same number of iterations (the rows past the
    # end with an empty state), so that the warp reduction runs in step.

    @jit
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
                xi, oi = x[i], out[i]
                part = span(xi, oi, oi, 0, xi.size)
                exp_map(xi, oi, part, lane, WARP, (m, softmax_scale(m, s)))

    @cuda.jit
    def _log_softmax_warp(x, out):
        start, step, warp, lane = warp_rows()
        for base in range(start, x.shape[0], step):
            i = base + warp
            m, s, _nan = warp_row_state(x, i, lane)
            if i < x.shape[0]:
                xi, oi = x[i], out[i]
                log_map(xi, oi, span(xi, oi, oi, 0, xi.size), lane, WARP, (m, math.log1p(s)))

    @cuda.jit
    def _logsumexp_warp(x, out):
        start, step, warp, lane = warp_rows()
        for base in range(start, x.shape[0], step):
            i = base + warp
            m, s, _nan = warp_row_state(x, i, lane)
            if i < x.shape[0] and lane == 0:
                store(out, i, logsumexp(m, s))

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
