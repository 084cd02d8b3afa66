"""The cumulative log-sum-exp of rows in pieces (Numba CPU): the kernels of
:func:`softmax_numba.dask.logcumsumexp` and of the parallel engine's long rows
(:func:`split_row`).

A row cut into pieces is scanned in three steps: each piece's final state ``(m, s)``
(:data:`STATES`), the pieces' states folded in order into each piece's carry-in
(:data:`CARRY_IN`), and each piece scanned from its carry (the kernel of
:mod:`softmax_numba.cpu.cumulative`, which takes a carry per row).  Kernels take 2-D C-contiguous
``(rows, n)`` arrays and compute in their dtype (float32 or float64); ``reverse``
scans each row, and folds the pieces, from the end.  These kernels have no CUDA
twin: Dask and the split rows run them on the host.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from softmax_numba.cpu._compile import engines
from softmax_numba.cpu.cumulative import (
    LOGCUMSUMEXP,
    ROW_CHUNKS,
    carry_states,
    new_scratch,
    scan_state,
)


def _scan_states(x, m_out, s_out, reverse):
    """``(m_out[i], s_out[i])``: the final state of row ``i``'s scan, in up to
    ``ROW_CHUNKS`` runs of rows shared out among the threads, a scratch per run."""
    rows = x.shape[0]
    chunks = min(rows, ROW_CHUNKS)
    for c in prange(chunks):
        scratch = new_scratch(x)
        for i in range(c * rows // chunks, (c + 1) * rows // chunks):
            m_out[i], s_out[i] = scan_state(x[i], -np.inf, 0.0, scratch, reverse)


def _carry_in(ms, ss, m_out, s_out, reverse):
    """Row ``i`` of ``ms``/``ss`` holds the final states of the pieces of one row, in
    the row's order; ``(m_out, s_out)`` their carries-in (:func:`carry_states`, from
    the last piece with ``reverse``)."""
    for i in prange(ms.shape[0]):
        carry_states(ms[i], ss[i], m_out[i], s_out[i], reverse)


STATES = engines(_scan_states)
CARRY_IN = engines(_carry_in)


def split_row(x, out, pieces: int, reverse: bool) -> None:
    """``out = logcumsumexp(x)`` of one long C-contiguous row across threads: the row
    as ``pieces`` rows of ``n // pieces`` entries (a 2-D view, no copy) and the few
    entries left over as one more piece; the pieces' states in parallel
    (:data:`STATES`), their carries (:data:`CARRY_IN`), the pieces scanned from them
    in parallel (``softmax_numba.cpu.cumulative.LOGCUMSUMEXP``).  The row is read
    twice and written once, and ``out`` may be ``x``."""
    n = x.size
    length = n // pieces
    whole = pieces * length
    body, rest = x[:whole].reshape(pieces, length), x[whole:].reshape(1, n - whole)
    m = np.empty((1, pieces + 1), x.dtype)
    s = np.empty((1, pieces + 1), x.dtype)
    STATES.parallel(body, m[0, :pieces], s[0, :pieces], reverse)
    STATES.cpu(rest, m[0, pieces:], s[0, pieces:], reverse)
    m0, s0 = np.empty_like(m), np.empty_like(s)
    CARRY_IN.cpu(m, s, m0, s0, reverse)
    out_body, out_rest = out[:whole].reshape(pieces, length), out[whole:].reshape(1, n - whole)
    LOGCUMSUMEXP.parallel(body, out_body, m0[0, :pieces], s0[0, :pieces], reverse)
    LOGCUMSUMEXP.cpu(rest, out_rest, m0[0, pieces:], s0[0, pieces:], reverse)
