"""logcumsumexp: the cumulative log-sum-exp along an axis (public wrapper)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import bounds, reference
from softmax_numba._api import lean_map, run, split_chunks
from softmax_numba._interop import same_kind_out
from softmax_numba._rows import rows_of
from softmax_numba.cpu import cumulative as kernels
from softmax_numba.cpu import cumulative_chunks as chunked
from softmax_numba.declaration import Entry


@same_kind_out
def logcumsumexp(
    x: npt.ArrayLike,
    /,
    axis: int = -1,
    *,
    reverse: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Cumulative log-sum-exp along an axis: :math:`y_k = \log \sum_{i \le k} e^{x_i}`.

    Parameters
    ----------
    x : array_like
        Input: float16, bfloat16, float32 or float64 (integers and bools are promoted
        to float64).  float16/bfloat16 are computed in float32.
    axis : int, default -1
        The axis to accumulate along (an int: ``None`` is a ``TypeError``, as in
        ``torch.logcumsumexp`` and ``jax.lax.cumlogsumexp``).
    reverse : bool, default False
        Accumulate from the end: :math:`y_k = \log \sum_{i \ge k} e^{x_i}`.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        ``"auto"`` picks the serial or parallel Numba engine by size (CUDA for
        arrays on a GPU).
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into (it may be ``x``).

    Returns
    -------
    ndarray
        ``x``'s shape, in ``x``'s floating dtype.  Non-finite input follows
        ``np.logaddexp.accumulate`` and ``torch.logcumsumexp``: a NaN makes ``y_k``
        NaN from its position on; a ``+inf`` makes it ``+inf`` from its position on
        (NaN after a later NaN); ``-inf`` entries add nothing, and ``y_k = -inf``
        while every entry so far is ``-inf``.

    Raises
    ------
    TypeError
        For a non-integer ``axis`` (``None`` included) or a non-boolean ``reverse``.

    See Also
    --------
    logsumexp : the last entry of ``logcumsumexp``, alone.

    Notes
    -----
    Each prefix has a state, ``m_k = max_{i <= k} x_i`` (an entry) and ``s_k =
    sum_{i <= k, i != j} exp(x_i - m_k)`` (``j`` one maximum), and

    .. math:: y_k = m_k + \operatorname{log1p}(s_k),

    two terms whose sum is accurate relative to ``y_k`` whatever the offset of ``x``
    ([1]_, Alg. 2.2, for every prefix).  ``s_k`` is scanned with a compensated
    running sum (Knuth's two-sum) of terms ``exp(x_i - r)`` relative to a reference
    ``r``, an earlier maximum at most 50 below ``m_k``: a rise of the maximum adds
    the old maximum's term and rescales nothing until it is 50 above ``r``, so that
    an increasing row, whose maximum rises at every entry, is as accurate as any
    (rescaling ``s`` at every rise, as the online softmax [2]_ does, would round each
    term once per rise).  Every ``exp`` is of a difference whose rounding is
    corrected (``a - b = d + e`` exactly by two-sum, ``exp(d) (1 + e)``), so that a
    term 50 above its reference does not carry ``50 u``.  One read and one write of
    the row, a block of 256 entries at a time: the terms in a vectorized loop, the
    scan, then ``m_k + log1p(s_k)`` in a vectorized loop.  With
    ``backend="parallel"`` rows run in parallel; fewer rows than threads, of at
    least ``config.SPLIT_ROW_MIN_LENGTH`` entries, are cut
    into pieces: each piece's final state (in parallel), the states folded in order
    into each piece's carry-in (the exact merge of [2]_, eq. (4)), then each piece
    scanned from its carry (in parallel): two reads of the row.  With
    ``backend="cuda"`` a block scans a row, a block of entries at a time: the
    threads' states scanned across the block (a tree of exact merges), each block
    of entries carried into the next.

    Error bound (first order, componentwise, in units of the unit roundoff ``u`` of
    the computing dtype, ``2**-24`` for float32 and ``2**-53`` for float64), after
    the analysis of [1]_: ``|y_k - exact_k| <= 40 u max(|y_k|, log1p(s_k))``, that
    is, relative to ``y_k``, ``40 u max(1, log1p(s_k) / |y_k|)``: the factor is the
    cancellation of ``m_k < 0`` against ``log1p(s_k)`` for results near 0 ([1]_,
    Thm 2.2), as in :func:`logsumexp`.  The bound depends on nothing else: not on
    the offset of ``x``, its spread, ``k`` or ``n``.  The serial scan holds ``21
    u``: ``s_k`` 14 u (each term's corrected ``exp``, 3 u; at most two rescalings
    while the term is above ``e^-50`` of ``s_k``, 4 u each; the compensated sum, 2
    u; the division by ``exp(m_k - r)``, 5 u), ``log1p`` 2 u (its condition
    ``s / ((1 + s) log1p(s)) <= 1`` passes on ``s_k``'s error), the sum 1 u.  A
    carried state (split rows, Dask chunks) adds 19 u (the fold into the carry, the
    carry settled, two more rescalings); the CUDA engine adds ``6 (log2(threads) +
    1)`` u for its tree of merges (:mod:`softmax_numba.bounds`).  Subnormal terms
    (more than 87, float32, or 708, float64, below the maximum) carry an absolute
    error of half the smallest subnormal number each, outside the bound; entries
    whose exact value is below the smallest normal number are not bounded.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.
    .. [3] W. D. Hillis and G. L. Steele, "Data parallel algorithms", Commun. ACM
       29(12), 1986 (the scans of the numpy and CUDA engines).

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import logcumsumexp
    >>> logcumsumexp(np.array([0.0, 0.0, 0.0, 0.0]))  # log 1, log 2, log 3, log 4
    array([0.        , 0.69314718, 1.09861229, 1.38629436])
    >>> logcumsumexp(np.array([1e6, 1e6, 1e6]))  # no overflow, no loss to the offset
    array([1000000.        , 1000000.69314718, 1000001.09861229])
    >>> logcumsumexp(np.array([0.0, 1.0, 2.0]), reverse=True)
    array([2.40760596, 2.31326169, 2.        ])
    >>> logcumsumexp(np.array([-np.inf, 0.0, np.nan, 1.0]))
    array([-inf,   0.,  nan,  nan])
    """
    if not isinstance(reverse, bool | np.bool_):
        raise TypeError(f"logcumsumexp(): reverse must be a bool, got {reverse!r}")
    if axis is None:
        raise TypeError(
            "logcumsumexp(): axis must be an int, got None (flatten x first, as "
            "logcumsumexp(x.reshape(-1)), for the cumulative of the flattened array)"
        )
    reverse = bool(reverse)
    if type(x) is np.ndarray and x.dtype in _FLOATS:
        carry = kernels.no_carry(x.dtype)
        result = lean_map(
            "logcumsumexp", x, axis, backend, out, kernels.LOGCUMSUMEXP, *carry, reverse
        )
        if result is not None:
            return result
    rows = rows_of(x, axis, "logcumsumexp")
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    chunks = split_chunks(engine, rows.count, rows.n)
    if chunks > 1:
        for i in range(rows.count):
            chunked.split_row(rows.data[i], result[i], chunks, reverse)
    else:
        carry = kernels.no_carry(rows.compute_dtype)
        run(kernels.LOGCUMSUMEXP, engine, rows.data, result, *carry, reverse)
    return rows.restore(result, out)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- declarations

#: This module's op, for the registry (:mod:`softmax_numba.declaration`).
ENTRIES = (
    Entry(
        "logcumsumexp",
        "-",
        logcumsumexp,
        reference.logcumsumexp,
        ("log",),
        bounds=(bounds.logcumsumexp_bound,),
        scales=(bounds.cumulative_scale,),
    ),
)
