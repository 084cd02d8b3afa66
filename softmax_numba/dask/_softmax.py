"""softmax, log_softmax, logsumexp and the merged states on Dask arrays."""

from __future__ import annotations

import dask.array as da
import numpy as np
import numpy.typing as npt

from softmax_numba.dask._graph import (
    engine_of,
    indices,
    lse_block,
    masked,
    normalized,
    prepare,
    restore,
    scalar,
    states,
)


def online_states(
    x: npt.ArrayLike,
    /,
    axis: int = -1,
    *,
    split_every: int | None = None,
    backend: str = "auto",
) -> da.Array:
    r"""The merged online-softmax state ``(m, s)`` of every row along ``axis``.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Input (dtypes as :func:`softmax_numba.softmax`).
    axis : int, default -1
        The axis of the rows (``None`` only for 1-d input).
    split_every : int, optional
        How many states the tree reduction merges at a time (Dask's default if
        ``None``).
    backend : {"auto", "cpu", "parallel"}
        The Numba engine each task runs; ``"auto"`` is the serial one.

    Returns
    -------
    dask.array.Array
        ``x``'s shape with ``axis`` of length 2: ``m`` at index 0 and ``s`` at 1, in
        the compute dtype.  ``s`` is NaN for a row with a NaN, and 0 for a row whose
        maximum is ``+inf`` and for an empty or all ``-inf`` row.

    Notes
    -----
    .. math:: m = x_k = \max_i x_i, \quad s = \sum_{i \ne k} e^{x_i - m},
       \quad \sum_i e^{x_i} = e^m (1 + s),

    computed per chunk and merged with ``m = max(m_1, m_2)``, ``s = s_1 + (1 + s_2)
    e^{m_2 - m_1}`` for ``m_1 >= m_2`` ([1]_, eq. (4), for ``s = d - 1``) as a Dask
    tree reduction of ``split_every`` states at a time.  One read of the input.

    Error bound (first order, in units of the unit roundoff ``u``; ``sigma(n)``
    and ``spread`` as in :func:`softmax_numba.softmax`, after the analysis of
    [2]_): ``m`` is exact, and ``1 + s`` has a relative error of at most
    ``(2 + sigma(n) + spread) u``.
    Each level of the merge tree adds a few ``u`` (the rounding of
    ``exp(m_2 - m_1)`` and of the products).

    References
    ----------
    .. [1] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.
    .. [2] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from softmax_numba.dask import online_states
    >>> x = da.from_array(np.array([[1.0, 2.0, 3.0, 4.0]]), chunks=(1, 2))
    >>> online_states(x).compute()  # m = 4, s = e^-3 + e^-2 + e^-1
    array([[4.        , 0.55300179]])
    """
    x, axis, compute, _ = prepare(x, axis, "online_states")
    return states(x.astype(compute), axis, compute, engine_of(backend), split_every)


def softmax(
    x: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    where: npt.ArrayLike | None = None,
    backend: str = "auto",
) -> da.Array:
    r"""Softmax along an axis of a Dask array: :math:`p_i = e^{x_i - m} / (1 + s)`.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Logits (dtypes as :func:`softmax_numba.softmax`).
    axis : int or None, default -1
        The axis to normalize along (``None`` only for 1-d input).  scipy's
        default is ``None``.
    where : array_like of bool, optional
        Entries to include (broadcast to ``x``); excluded entries give 0, a row
        with no included entry gives all zeros.
    backend : {"auto", "cpu", "parallel"}
        The Numba engine each task runs; ``"auto"`` is the serial one (Dask already
        runs one task per thread).

    Returns
    -------
    dask.array.Array
        Probabilities, ``x``'s shape, chunks and floating dtype.  A NaN makes its row
        NaN; a row with ``+inf``, or all ``-inf``, is NaN.

    Notes
    -----
    ``(m, s)`` is the merged online state of the row (:func:`online_states`;
    [1]_, eq. (4)), so the axis may be split into any number of chunks; each
    chunk is then normalized on its own,

    .. math:: p_i = e^{x_i - m} / (1 + s).

    Two reads, one write.

    Error bound (first order, relative to each entry, in units of the unit
    roundoff ``u``): as :func:`softmax_numba.softmax` in memory,
    ``(4 + sigma(n) + 2 spread) u`` (after the analysis of [2]_).
    Each level of the merge tree adds a few ``u`` (the rounding of
    ``exp(m_2 - m_1)`` and of the products).

    References
    ----------
    .. [1] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.
    .. [2] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from softmax_numba.dask import softmax
    >>> x = da.from_array(np.array([[1.0, 2.0, 3.0, 4.0]]), chunks=(1, 2))
    >>> softmax(x).compute()  # the row spans two chunks
    array([[0.0320586 , 0.08714432, 0.23688282, 0.64391426]])
    """
    shape = getattr(x, "shape", np.shape(x))
    x, axis, compute, result = prepare(x, axis, "softmax", multiple=True)
    engine = engine_of(backend)
    x, mask = masked(x, where, compute)
    state = states(x, axis, compute, engine)
    out = normalized(x, state, axis, "SOFTMAX", engine, compute, result, "softmax")
    if mask is not None:
        out = da.where(mask, out, 0).astype(result)
    return restore(out, tuple(shape))


def log_softmax(
    x: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    where: npt.ArrayLike | None = None,
    backend: str = "auto",
) -> da.Array:
    r"""Log-softmax along an axis of a Dask array: :math:`(x_i - m) - \log(1 + s)`.

    Parameters
    ----------
    x, axis, where, backend
        As in :func:`softmax`; excluded entries give ``-inf``.

    Returns
    -------
    dask.array.Array
        ``x``'s shape and floating dtype.  A NaN poisons its row; a row with
        ``+inf`` gives NaN there and ``-inf`` elsewhere; an all ``-inf`` row is NaN.

    Notes
    -----
    .. math:: \log p_i = (x_i - m) - \operatorname{log1p}(s)

    with ``(m, s)`` as in :func:`online_states` ([1]_, eq. (4)): two terms of one
    sign; never ``log(softmax(x))`` nor ``x_i - logsumexp(x)``.  Two reads, one
    write.

    Error bound (first order, relative to each entry, whatever the offset of
    ``x``): as :func:`softmax_numba.log_softmax` in memory, ``(6 + sigma(n) +
    spread) u`` (after the analysis of [2]_).
    Each level of the merge tree adds a few ``u`` (the rounding of
    ``exp(m_2 - m_1)`` and of the products).

    References
    ----------
    .. [1] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.
    .. [2] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from softmax_numba.dask import log_softmax
    >>> x = da.from_array(np.array([[1.0, 2.0, 3.0, 4.0]]), chunks=(1, 2))
    >>> log_softmax(x).compute()
    array([[-3.4401897, -2.4401897, -1.4401897, -0.4401897]])
    """
    shape = getattr(x, "shape", np.shape(x))
    x, axis, compute, result = prepare(x, axis, "log_softmax", multiple=True)
    engine = engine_of(backend)
    x, mask = masked(x, where, compute)
    state = states(x, axis, compute, engine)
    out = normalized(x, state, axis, "LOG_SOFTMAX", engine, compute, result, "log_softmax")
    if mask is not None:
        out = da.where(mask, out, -np.inf).astype(result)
    return restore(out, tuple(shape))


def _logsumexp(state, axis: int, keepdims: bool, result):
    full, state_index, rows = indices(state.ndim, axis)
    return da.blockwise(
        lse_block,
        full if keepdims else rows,
        state,
        full if keepdims else state_index,
        axis=axis,
        keepdims=keepdims,
        result=result,
        concatenate=True,
        adjust_chunks={axis: 1} if keepdims else None,
        dtype=result,
        meta=np.empty((0,) * (state.ndim - (not keepdims)), result),
        token="logsumexp",
    )


def logsumexp(
    x: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    b: npt.ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    backend: str = "auto",
) -> da.Array:
    r""":math:`\log \sum_i e^{x_i} = m + \log(1 + s)` along an axis of a Dask array.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Input (dtypes as :func:`softmax_numba.logsumexp`).
    axis : int or None, default -1
        Axis to reduce (``None`` only for 1-d input); scipy's default is ``None``.
    b, return_sign
        Not supported on Dask arrays (``NotImplementedError``).
    keepdims : bool
        Keep the reduced axis with length 1.
    backend : {"auto", "cpu", "parallel"}
        The Numba engine each task runs.

    Returns
    -------
    dask.array.Array
        As scipy: NaN gives NaN, a ``+inf`` gives ``+inf``, an empty or all ``-inf``
        axis gives ``-inf``.

    Notes
    -----
    .. math:: \mathrm{lse} = m + \operatorname{log1p}(s)

    with ``(m, s)`` the merged online state of the row (:func:`online_states`;
    [1]_, eq. (4)).  One read.

    Error bound (first order, relative to the result): as
    :func:`softmax_numba.logsumexp` in memory, ``u + (5 + sigma(n) + spread) u
    max(1, log1p(s) / |lse|)`` (the form of [2]_, Thm 2.2).
    Each level of the merge tree adds a few ``u`` (the rounding of
    ``exp(m_2 - m_1)`` and of the products).

    References
    ----------
    .. [1] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.
    .. [2] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from softmax_numba.dask import logsumexp
    >>> x = da.from_array(np.array([[1.0, 2.0, 3.0, 4.0]]), chunks=(1, 2))
    >>> np.round(logsumexp(x).compute(), 6)
    array([4.44019])
    """
    if b is not None or return_sign:
        raise NotImplementedError(
            "logsumexp() on Dask arrays does not support b= or return_sign= yet; "
            "compute them with softmax_numba.logsumexp on each row block"
        )
    ndim = np.ndim(x)
    x, axis, compute, result = prepare(x, axis, "logsumexp", multiple=True)
    state = states(x.astype(compute), axis, compute, engine_of(backend))
    lse = _logsumexp(state, axis, keepdims, result)
    return scalar(lse.reshape(()) if ndim == 0 else lse)
