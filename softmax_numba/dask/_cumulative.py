"""logcumsumexp on Dask arrays: a scan along a chunked axis."""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np
import numpy.typing as npt

from softmax_numba.cpu import cumulative_chunks as kernels
from softmax_numba.cpu.cumulative import LOGCUMSUMEXP
from softmax_numba.dask._graph import block_rows, engine_of, prepare, stack


def _chunk_states(block, axis, reverse, engine, compute):
    """Step 1, one chunk: the final state ``(m, s)`` of each row's scan."""
    rows, moved = block_rows(block, axis, compute)
    m, s = np.empty(len(rows), compute), np.empty(len(rows), compute)
    getattr(kernels.STATES, engine)(rows, m, s, reverse)
    return stack(m, s, moved[:-1], axis)


def _carries(states, axis, reverse, engine):
    """Step 2, the chunks' states of a block of rows (``[m1, s1, m2, s2, ...]`` along
    the axis) into each chunk's carry-in, folded in the order of the scan
    (``softmax_numba.cpu.cumulative.carry_states``), laid out the same way."""
    moved = np.moveaxis(states, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    ms, ss = np.ascontiguousarray(flat[:, 0::2]), np.ascontiguousarray(flat[:, 1::2])
    m, s = np.empty_like(ms), np.empty_like(ss)
    getattr(kernels.CARRY_IN, engine)(ms, ss, m, s, reverse)
    out = np.empty_like(flat)
    out[:, 0::2], out[:, 1::2] = m, s
    return np.moveaxis(out.reshape(moved.shape), -1, axis)


def _scan_chunk(block, carry, axis, reverse, engine, compute, result):
    """Step 3, one chunk: each row scanned from its carry-in."""
    rows, moved = block_rows(block, axis, compute)
    m0, s0 = block_rows(carry, axis, compute)[0].T
    out = np.empty_like(rows)
    m0, s0 = np.ascontiguousarray(m0), np.ascontiguousarray(s0)
    getattr(LOGCUMSUMEXP, engine)(rows, out, m0, s0, reverse)
    return np.moveaxis(out.reshape(moved), -1, axis).astype(result, copy=False)


def logcumsumexp(
    x: npt.ArrayLike,
    /,
    axis: int = -1,
    *,
    reverse: bool = False,
    backend: str = "auto",
) -> da.Array:
    r"""Cumulative log-sum-exp along an axis of a Dask array,
    :math:`y_k = \log \sum_{i \le k} e^{x_i}`, the axis in any number of chunks.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Input (dtypes as :func:`softmax_numba.logcumsumexp`).
    axis : int, default -1
        The axis to accumulate along (an int, as in memory).
    reverse : bool, default False
        Accumulate from the end: :math:`y_k = \log \sum_{i \ge k} e^{x_i}`.
    backend : {"auto", "cpu", "parallel"}
        The Numba engine each task runs; ``"auto"`` is the serial one.

    Returns
    -------
    dask.array.Array
        ``x``'s shape, chunks and floating dtype; non-finite input as in memory
        (a NaN or a ``+inf`` holds from its position on, leading ``-inf`` give
        ``-inf``).

    Notes
    -----
    A scan in three steps, a task per chunk each:

    1. each chunk's final state along the axis, ``m = max x_i`` and ``s = sum_{i !=
       j} exp(x_i - m)`` (:func:`softmax_numba.logcumsumexp`'s scan, its results
       dropped);
    2. the states of a row's chunks, in order, folded into each chunk's carry-in:
       the state of every chunk before it, folded as the entries of the scan are
       (each chunk's sum joins as one term relative to a reference that moves only
       when the maximum rises 50 above it; [1]_, eq. (4));
    3. each chunk scanned again from its carry-in:

    .. math:: y_k = m_k + \operatorname{log1p}(s_k),

    the state of the prefix, carry included.  Two reads, one write; no chunk is
    rechunked, only the states (two numbers per chunk and row) meet in one task per
    block of rows.

    Error bound (first order, in units of the unit roundoff ``u``): as
    :func:`softmax_numba.logcumsumexp` in memory, ``40 u max(|y_k|, log1p(s_k))``
    (after the analysis of [2]_), the carry included, whatever the chunks.

    References
    ----------
    .. [1] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.
    .. [2] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from softmax_numba.dask import logcumsumexp
    >>> x = da.from_array(np.zeros((1, 4)), chunks=(1, 2))
    >>> logcumsumexp(x).compute()  # log 1, log 2, log 3, log 4 across two chunks
    array([[0.        , 0.69314718, 1.09861229, 1.38629436]])
    >>> logcumsumexp(x, reverse=True).compute()
    array([[1.38629436, 1.09861229, 0.69314718, 0.        ]])
    """
    if not isinstance(reverse, bool | np.bool_):
        raise TypeError(f"logcumsumexp(): reverse must be a bool, got {reverse!r}")
    if axis is None:
        raise TypeError("logcumsumexp(): axis must be an int, got None (flatten x first)")
    x, axis, compute, result = prepare(x, axis, "logcumsumexp")
    x = x.astype(compute)
    engine, reverse = engine_of(backend), bool(reverse)
    chunks = tuple((2,) * len(c) if i == axis else c for i, c in enumerate(x.chunks))
    states = x.map_blocks(
        _chunk_states,
        axis=axis,
        reverse=reverse,
        engine=engine,
        compute=compute,
        chunks=chunks,
        dtype=compute,
        meta=np.empty((0,) * x.ndim, compute),
        name="logcumsumexp-state",
    )
    carries = (
        states.rechunk({axis: -1})
        .map_blocks(
            functools.partial(_carries, axis=axis, reverse=reverse, engine=engine),
            dtype=compute,
            meta=np.empty((0,) * x.ndim, compute),
            name="logcumsumexp-carry",
        )
        .rechunk(chunks)
    )
    index = tuple(range(x.ndim))
    return da.blockwise(
        _scan_chunk,
        index,
        x,
        index,
        carries,
        index,
        axis=axis,
        reverse=reverse,
        engine=engine,
        compute=compute,
        result=result,
        align_arrays=False,
        concatenate=False,
        dtype=result,
        meta=np.empty((0,) * x.ndim, result),
        token="logcumsumexp",
    )
