"""Softmax, log-softmax, log-sum-exp and their backward ops on ragged segments (Numba CPU).

The kernels take ``x`` of shape ``(F, nnz)``, C-contiguous: row ``f`` holds feature
``f`` of every entry, and segment ``j`` of it is ``x[f, offsets[j]:offsets[j + 1]]``
(``offsets``: int64 CSR row pointers, checked by the caller).  A segment is a row of
:mod:`softmax_numba.cpu.softmax`, computed by its helpers: a segment of at most
``piece`` entries whole (``softmax``: the shifted algorithm of the row kernels, max,
then ``exp`` and sum, then scale; ``log_softmax`` and ``logsumexp``: the row's
:func:`~softmax_numba.cpu.softmax.online_state`, then one pass to write), a longer one
cut into chunks of at most ``piece`` entries, each chunk's online state taken and the
chunks' states merged exactly in order (:func:`~softmax_numba.cpu.softmax.merge_states`),
as the parallel engine's split rows (:func:`~softmax_numba.cpu.softmax.split_state`).
Each segment's result has the bound of the row op on it
(:func:`softmax_numba.bounds.summation_bound` covers both orders of summation; the
caller keeps ``piece`` at least ``config.SUM_BLOCK``).  The backward ops sum a
segment (or each chunk, their compensated sums then combined) as
:func:`~softmax_numba.cpu.softmax.row_dot` does.

The work is cut into *pieces* of bounded size (:func:`segment_plan`): runs of whole
short segments of about ``group`` entries, and the chunks of the long segments.  The
kernel shares the pieces out among its threads, so that one huge segment among many
tiny ones is spread over every thread, in one ``prange`` loop run once, or twice when
some segment is cut: every piece (its whole segments computed, or its chunk's state
kept), then, once each long segment's chunk states are merged, each chunk written.
The chunks depend on ``piece`` alone, not on the number of threads; and the serial
engine runs the same kernel on one thread (:func:`one_kernel`): the two engines give
the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines, in_dtype_of, jit
from softmax_numba.cpu._math import kernel_exp as exp
from softmax_numba.cpu._math import kernel_exp_shifted as exp_shifted
from softmax_numba.cpu._math import kernel_log1p as log1p
from softmax_numba.cpu.softmax import (
    SUM_BLOCK,
    add_compensated,
    compensated_total,
    exp_shifted_into,
    log_probabilities_into,
    maximum,
    merge_states,
    online_state,
    scale_into,
    softmax_scale,
    state_logsumexp,
    sum_scratch,
)

# --------------------------------------------------------------------------- the plan


@jit
def chunk_count(length, piece):
    """The chunks a segment of ``length`` entries is cut into: 1 up to ``piece``
    entries, else ``ceil(length / piece)``."""
    return 1 if length <= piece else (length + piece - 1) // piece


@jit
def chunk_bounds(offsets, j, c, k):
    """The entries ``[lo, hi)`` of chunk ``c`` of the ``k`` equal chunks of segment ``j``."""
    lo = offsets[j]
    n = offsets[j + 1] - lo
    return lo + c * n // k, lo + (c + 1) * n // k


@jit
def walk_pieces(offsets, piece, group, first, stop, chunk, chunks, fill):
    """Count the pieces of :func:`segment_plan` (and, with ``fill``, describe them in
    ``first``, ``stop``, ``chunk`` and ``chunks``): consecutive segments of at most
    ``piece`` entries gathered until they cost ``group`` (a segment costs its length
    plus one, so that empty segments are shared out too), and each longer segment's
    :func:`chunk_count` chunks, a piece each."""
    count = 0
    start = -1  # the first segment of the run being gathered, -1 for none
    load = 0
    segments = offsets.size - 1
    for j in range(segments):
        length = offsets[j + 1] - offsets[j]
        k = chunk_count(length, piece)
        if k == 1:
            if start < 0:
                start = j
            load += length + 1
            if load < group:
                continue
            stop_at, k = j + 1, 0  # close the run here
        else:
            stop_at = j
        if start >= 0:  # the run before a long segment, or the one just closed
            if fill:
                first[count], stop[count], chunk[count], chunks[count] = start, stop_at, 0, 1
            count += 1
            start, load = -1, 0
        for c in range(k):
            if fill:
                first[count], stop[count], chunk[count], chunks[count] = j, j + 1, c, k
            count += 1
    if start >= 0:
        if fill:
            first[count], stop[count], chunk[count], chunks[count] = start, segments, 0, 1
        count += 1
    return count


@jit(inline="never")
def segment_plan(offsets, piece, group):
    """The pieces of work, as four arrays: piece ``p`` covers the segments
    ``first[p]:stop[p]``; ``chunks[p] == 1`` for a run of whole segments, else it is
    chunk ``chunk[p]`` of the ``chunks[p]`` chunks of segment ``first[p]`` (the chunks
    of a segment are consecutive pieces)."""
    none = np.empty(0, np.int64)
    count = walk_pieces(offsets, piece, group, none, none, none, none, False)
    first = np.empty(count, np.int64)
    stop = np.empty(count, np.int64)
    chunk = np.empty(count, np.int64)
    chunks = np.empty(count, np.int64)
    walk_pieces(offsets, piece, group, first, stop, chunk, chunks, True)
    return first, stop, chunk, chunks


@jit(parallel=True)
def transpose_into(src, dst):
    """``dst[j, i] = src[i, j]`` for C-contiguous 2-D arrays: the ``(nnz, F)`` entries of
    ``softmax_numba._segment`` as ``(F, nnz)`` rows, and the rows back.  Blocks of 512
    along the longer axis of ``src`` are shared out among the threads; each block reads
    (or writes) whole rows of ``src`` (of ``dst``).  For ``(125000, 8)`` float32 on 2
    threads, 0.20 ms in and 0.17 ms back, where NumPy's strided copy took 1.23 and
    0.45 ms."""
    rows, cols = src.shape
    if rows >= cols:
        for b in prange((rows + 511) // 512):
            for i in range(b * 512, min(rows, b * 512 + 512)):
                for j in range(cols):
                    dst[j, i] = src[i, j]
    else:
        for b in prange((cols + 511) // 512):
            for j in range(b * 512, min(cols, b * 512 + 512)):
                for i in range(rows):
                    dst[j, i] = src[i, j]


# --------------------------------------------------------------------------- forward


def one_kernel(func):
    """:func:`~softmax_numba.cpu._compile.engines` with the parallel kernel on both
    engines: the serial engine runs it on one thread (``numba.set_num_threads(1)``,
    ``softmax_numba._segment``), so that both run the same machine code.

    The per-piece work (``forward_unit``, ``backward_unit``) is a compiled function of
    its own, linked into the kernel: with it inlined, the parallel kernel took 13 s to
    compile per dtype, and a serial twin 6 s more; this way 7 s for both.  A serial
    kernel of its own would link its own copy of the unit, which LLVM optimizes again
    in that kernel: the two engines' results were 1 ulp apart in a process that loaded
    one kernel from the cache and compiled the other."""
    pair = engines(func)
    return pair._replace(cpu=pair.parallel)


#: The ``op`` argument of :data:`SEGMENT_FORWARD` (and of its numpy and CUDA twins).
SOFTMAX, LOG_SOFTMAX, LOGSUMEXP = 0, 1, 2
#: The ``op`` argument of :data:`SEGMENT_BACKWARD`.
SOFTMAX_BACKWARD, LOG_SOFTMAX_BACKWARD = 0, 1


@jit
def split_any(chunks):
    """Whether some segment is cut into chunks."""
    for p in range(chunks.size):
        if chunks[p] > 1:
            return True
    return False


@jit
def softmax_whole(x, out, acc):
    """Softmax of a whole segment as a row of ``softmax[shifted]``: its max, then ``e_i =
    exp(x_i - m)`` stored with their sum, then ``e_i / sum``."""
    m = maximum(x)
    s, _ = exp_shifted_into(x, m, out, x, acc)
    if m == np.inf:
        s = in_dtype_of(x, np.nan)
    scale_into(out, in_dtype_of(x, 1.0) / s)


@jit
def emit(op, x, out, j, lo, hi, m, s):
    """Segment ``j``'s result over its entries ``[lo, hi)`` from its state ``(m, s)``:
    ``exp(x_i - m) / (1 + s)``, ``(x_i - m) - log1p(s)`` or ``out[j] = m + log1p(s)``."""
    if op == LOGSUMEXP:
        out[j] = state_logsumexp(m, s)
    elif op == LOG_SOFTMAX:
        log_probabilities_into(x[lo:hi], out[lo:hi], m, log1p(s), False)
    else:
        r = softmax_scale(m, s)
        for i in range(lo, hi):
            out[i] = exp_shifted(x[i] - m) * r


@jit(inline="never")
def forward_unit(x, offsets, op, out, first, stop, chunk, chunks, ms, ss, acc, stage, f, p):
    """Piece ``p`` of row ``f`` in ``stage`` of :func:`_segment_forward`."""
    cut = chunks[p] > 1
    if stage == 1 and not cut:
        return
    for j in range(first[p], stop[p]):
        lo, hi = chunk_bounds(offsets, j, chunk[p], chunks[p])
        if stage == 1:
            m, s = ms[f, p - chunk[p]], ss[f, p - chunk[p]]
        elif op == SOFTMAX and not cut:
            softmax_whole(x[f, lo:hi], out[f, lo:hi], acc)
            continue
        else:
            m, s = online_state(x[f, lo:hi])
            if cut:
                ms[f, p], ss[f, p] = m, s
                continue
        emit(op, x[f], out[f], j, lo, hi, m, s)


@jit(inline="never")
def merge_chunk_states(ms, ss, chunk, chunks):
    """Each long segment's chunks' states, merged in order into its first chunk's
    (:func:`~softmax_numba.cpu.softmax.merge_states`), for every row."""
    for p in range(chunk.size):
        if chunks[p] > 1 and chunk[p] == 0:
            k = chunks[p]
            for f in range(ms.shape[0]):
                ms[f, p], ss[f, p] = merge_states(ms[f, p : p + k], ss[f, p : p + k])


def _segment_forward(x, offsets, op, out, piece, group):
    """Softmax (``op`` :data:`SOFTMAX`), log-softmax or log-sum-exp (``out`` of shape
    ``(F, S)``) of every segment of every row of ``x``, piece by piece
    (:func:`segment_plan`), in one or two stages:

    1. each piece: its whole segments computed (softmax by :func:`softmax_whole`, the
       others from their :func:`~softmax_numba.cpu.softmax.online_state`), or its
       chunk's state kept;
    2. when some segment is cut into chunks: the chunks' states merged in order
       (:func:`~softmax_numba.cpu.softmax.merge_states`), then each chunk written from
       its segment's state.
    """
    first, stop, chunk, chunks = segment_plan(offsets, piece, group)
    count = first.size
    rows = x.shape[0]
    ms = np.empty((rows, count), dtype=x.dtype)
    ss = np.empty((rows, count), dtype=x.dtype)
    accs = sum_scratch(x, rows * count)
    for stage in range(2 if split_any(chunks) else 1):
        if stage == 1:
            merge_chunk_states(ms, ss, chunk, chunks)
        for u in prange(rows * count):
            f = u // count
            forward_unit(
                x, offsets, op, out, first, stop, chunk, chunks, ms, ss, accs[u], stage, f,
                u - f * count,
            )  # fmt: skip


SEGMENT_FORWARD = one_kernel(_segment_forward)

# --------------------------------------------------------------------------- backward


@jit
def weighted_parts(y, dy, op):
    """``sum_i y_i dy_i`` (:data:`SOFTMAX_BACKWARD`) or ``sum_i dy_i`` over a segment or a
    chunk, as :func:`~softmax_numba.cpu.softmax.row_dot` and ``row_sum`` sum them,
    left as the compensated pair ``(total, carry)``."""
    total = carry = in_dtype_of(y, 0.0)
    for start in range(0, y.size, SUM_BLOCK):
        yb, db = y[start : start + SUM_BLOCK], dy[start : start + SUM_BLOCK]
        s = in_dtype_of(y, 0.0)
        if op == SOFTMAX_BACKWARD:
            for i in range(yb.size):
                s += yb[i] * db[i]
        else:
            for i in range(db.size):
                s += db[i]
        total, carry = add_compensated(total, carry, s)
    return total, carry


@jit
def combine_parts(totals, carries):
    """The chunks' compensated pairs as one: their totals added by two-sum, their
    carries added, so that the sum is within ``2 u`` of its blocks' exact sum, as a
    whole row's (:func:`~softmax_numba.cpu.softmax.add_compensated`)."""
    total = carry = in_dtype_of(totals, 0.0)
    for k in range(totals.size):
        total, carry = add_compensated(total, carry, totals[k])
        carry += carries[k]
    return total, carry


@jit
def vjp_into(op, y, dy, dx, lo, hi, total):
    """``dx_i = y_i (dy_i - total)`` (softmax) or ``dy_i - exp(y_i) total`` over ``[lo, hi)``."""
    if op == SOFTMAX_BACKWARD:
        for i in range(lo, hi):
            dx[i] = y[i] * (dy[i] - total)
    else:
        for i in range(lo, hi):
            dx[i] = dy[i] - exp(y[i]) * total


@jit(inline="never")
def combine_chunk_parts(ts, cs, chunk, chunks):
    """Each long segment's chunks' pairs combined in order into its first chunk's
    (:func:`combine_parts`), for every row."""
    for p in range(chunk.size):
        if chunks[p] > 1 and chunk[p] == 0:
            k = chunks[p]
            for f in range(ts.shape[0]):
                ts[f, p], cs[f, p] = combine_parts(ts[f, p : p + k], cs[f, p : p + k])


@jit(inline="never")
def backward_unit(y, dy, offsets, op, dx, first, stop, chunk, chunks, ts, cs, stage, f, p):
    """Piece ``p`` of row ``f`` in ``stage`` of :func:`_segment_backward`."""
    cut = chunks[p] > 1
    if stage == 1 and not cut:
        return
    for j in range(first[p], stop[p]):
        lo, hi = chunk_bounds(offsets, j, chunk[p], chunks[p])
        if stage == 1:
            t, c = ts[f, p - chunk[p]], cs[f, p - chunk[p]]
        else:
            t, c = weighted_parts(y[f, lo:hi], dy[f, lo:hi], op)
            if cut:
                ts[f, p], cs[f, p] = t, c
                continue
        vjp_into(op, y[f], dy[f], dx[f], lo, hi, compensated_total(t, c))


def _segment_backward(y, dy, offsets, op, dx, piece, group):
    """The vector-Jacobian product of softmax (``op`` :data:`SOFTMAX_BACKWARD`) or
    log-softmax over every segment: ``y_i (dy_i - sum_k y_k dy_k)`` or ``dy_i - exp(y_i)
    sum_k dy_k``, piece by piece as :func:`_segment_forward` (a chunk keeps its
    compensated partial sum; a segment's chunks' sums are combined by
    :func:`combine_parts`)."""
    first, stop, chunk, chunks = segment_plan(offsets, piece, group)
    count = first.size
    rows = y.shape[0]
    ts = np.empty((rows, count), dtype=y.dtype)
    cs = np.empty((rows, count), dtype=y.dtype)
    for stage in range(2 if split_any(chunks) else 1):
        if stage == 1:
            combine_chunk_parts(ts, cs, chunk, chunks)
        for u in prange(rows * count):
            f = u // count
            backward_unit(
                y, dy, offsets, op, dx, first, stop, chunk, chunks, ts, cs, stage, f,
                u - f * count,
            )  # fmt: skip


SEGMENT_BACKWARD = one_kernel(_segment_backward)
