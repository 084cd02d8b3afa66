r"""The softmax family on Dask arrays, exact along a chunked axis.

``pip install "softmax_numba[dask]"`` brings Dask.  Every function takes a
``dask.array.Array`` (or anything ``dask.array.asarray`` accepts) and returns a lazy
Dask array; nothing is computed until you call ``.compute()``, ``da.store`` or a
reduction of your own.

The axis may be split into any number of chunks, and no chunk is ever rechunked to
hold a whole row.  Three steps, each a Dask task per chunk:

1. every chunk's partial state along the axis, ``m = x_k = max_i x_i`` and
   ``s = sum_{i != k} exp(x_i - m)``, with the Numba kernels of
   :mod:`softmax_numba.cpu.states`;
2. the states of the chunks of a row merged exactly, as a Dask tree reduction, with
   ``m = max(m_1, m_2)``, ``s = s_1 + (1 + s_2) exp(m_2 - m_1)`` for ``m_1 >= m_2``
   (Milakov & Gimelshein, "Online normalizer calculation for softmax",
   arXiv:1805.02867, 2018, eq. (4), for ``s = d - 1``);
3. every chunk normalized on its own: ``softmax = exp(x_i - m) / (1 + s)``,
   ``log_softmax = (x_i - m) - log1p(s)``, ``logsumexp = m + log1p(s)``, and the
   loss ``(m - x_t) + log1p(s)``: each a sum of terms of one sign, accurate relative
   to the result whatever the offset of the logits, as in memory (Blanchard,
   Higham & Higham 2021).

The input is read twice (steps 1 and 3) and the output written once, as by the
in-memory online algorithm.  float32 is computed in float32, float64 in float64,
float16/bfloat16 in float32, integers and bools become float64
(:func:`softmax_numba._api.dtypes_for`).  Non-finite input follows the in-memory
functions: a NaN poisons its row, a row with ``+inf`` (or all ``-inf``) is NaN
under ``softmax``, ``logsumexp`` gives ``+inf`` (``-inf``) for it.

Not supported (``NotImplementedError``): ``axis=None`` on arrays of more than one
dimension, ``b=`` and ``return_sign=`` of ``logsumexp``, ``backend="numpy"`` and
``"cuda"``.
"""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np
import numpy.typing as npt

from softmax_numba._api import check_choice, dtypes_for
from softmax_numba.cpu import states as kernels

BACKENDS = ("auto", "cpu", "parallel")
REDUCTIONS = ("mean", "sum", "none")

__all__ = ["cross_entropy", "log_softmax", "logsumexp", "online_states", "softmax"]


# --------------------------------------------------------------------------- set-up


def _engine(backend: str) -> str:
    """``"auto"`` runs the serial kernel in each task: Dask spreads the chunks."""
    if backend in ("numpy", "cuda"):
        raise NotImplementedError(
            f"backend={backend!r} is not available on Dask arrays; "
            f"use one of {', '.join(map(repr, BACKENDS))}"
        )
    check_choice("backend", backend, BACKENDS)
    return "cpu" if backend == "auto" else backend


def _prepare(x, axis, func: str):
    """``(x as a Dask array, normalized axis, compute dtype, result dtype)``."""
    x = x if isinstance(x, da.Array) else da.asarray(x)
    compute, result = dtypes_for(np.dtype(x.dtype), func)
    if axis is None:
        if x.ndim > 1:
            raise NotImplementedError(
                f"{func}(): axis=None on a {x.ndim}-d Dask array is not supported; "
                "pass the axis to work along"
            )
        return x.reshape(1) if x.ndim == 0 else x, 0, compute, result
    if x.ndim == 0:
        raise np.exceptions.AxisError(f"{func}() needs an array with at least one dimension")
    if not isinstance(axis, int | np.integer):
        raise TypeError(f"{func}(): axis must be an int or None, got {axis!r}")
    axis = np.lib.array_utils.normalize_axis_index(int(axis), x.ndim)
    return x, axis, compute, result


def _indices(ndim: int, axis: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Blockwise indices: the array's, the state's (its axis contracted: one block of
    length 2), and the rows' (the array's without the axis)."""
    full = tuple(range(ndim))
    state = tuple(ndim if i == axis else i for i in full)
    return full, state, tuple(i for i in full if i != axis)


# --------------------------------------------------------------------------- blocks


def _rows(block: np.ndarray, axis: int, dtype) -> tuple[np.ndarray, tuple[int, ...]]:
    """The block as C-contiguous ``(rows, n)`` along ``axis``, and its moved shape."""
    moved = np.moveaxis(block, axis, -1)
    rows = int(np.prod(moved.shape[:-1], dtype=np.int64))
    return np.ascontiguousarray(moved.reshape(rows, moved.shape[-1]), dtype=dtype), moved.shape


def _stack(m: np.ndarray, s: np.ndarray, lead: tuple[int, ...], axis: int) -> np.ndarray:
    """States ``(rows,)`` as an array whose ``axis`` has length 2: ``[m, s]``."""
    return np.moveaxis(np.stack([m, s], axis=-1).reshape(*lead, 2), -1, axis)


def _unstack(state: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    flat = np.moveaxis(state, axis, -1).reshape(-1, 2)
    return np.ascontiguousarray(flat[:, 0]), np.ascontiguousarray(flat[:, 1])


def _chunk_state(block, axis, keepdims, engine, compute):
    """Step 1, one chunk: its ``(m, s)`` per row."""
    (axis,) = axis
    rows, moved = _rows(block, axis, compute)
    m, s = np.empty(len(rows), compute), np.empty(len(rows), compute)
    getattr(kernels.STATES, engine)(rows, m, s)
    return _stack(m, s, moved[:-1], axis)


def _merge_states(states, axis, keepdims, engine):
    """Step 2: states concatenated along the axis (``[m1, s1, m2, s2, ...]``) into one."""
    (axis,) = axis
    moved = np.moveaxis(states, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    ms, ss = np.ascontiguousarray(flat[:, 0::2]), np.ascontiguousarray(flat[:, 1::2])
    m, s = np.empty(len(flat), flat.dtype), np.empty(len(flat), flat.dtype)
    getattr(kernels.MERGE, engine)(ms, ss, m, s)
    return _stack(m, s, moved.shape[:-1], axis)


def _normalize_block(block, state, axis, kernel, engine, compute, result):
    """Step 3, one chunk: ``kernel(x, m, s, out)`` on its rows.

    ``kernel`` is the name of the kernels in :mod:`softmax_numba.cpu.states`: the
    graph holds only plain values (Dask's ``sizeof`` of Numba objects imports
    ``numba.cuda``, which fails on the CUDA simulator).
    """
    kernel = getattr(kernels, kernel)
    rows, moved = _rows(block, axis, compute)
    out = np.empty_like(rows)
    getattr(kernel, engine)(rows, *_unstack(state, axis), out)
    return np.moveaxis(out.reshape(moved), -1, axis).astype(result, copy=False)


def _lse_block(state, axis, keepdims, result):
    m, s = (np.take(state, [k], axis=axis) for k in (0, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = m + np.log1p(s)
    return (lse if keepdims else np.squeeze(lse, axis)).astype(result, copy=False)


# --------------------------------------------------------------------------- graphs


def _states(x, axis: int, compute, engine: str, split_every=None):
    """Steps 1 and 2: the merged state, ``x``'s shape with ``axis`` of length 2."""
    return da.reduction(
        x,
        chunk=functools.partial(_chunk_state, engine=engine, compute=compute),
        combine=functools.partial(_merge_states, engine=engine),
        aggregate=functools.partial(_merge_states, engine=engine),
        axis=axis,
        keepdims=True,
        dtype=compute,
        split_every=split_every,
        concatenate=True,
        output_size=2,
        meta=np.empty((0,) * x.ndim, compute),
        name="softmax-state",
    )


def _normalized(x, state, axis: int, kernel: str, engine: str, compute, result, name: str):
    full, state_index, _ = _indices(x.ndim, axis)
    return da.blockwise(
        _normalize_block,
        full,
        x,
        full,
        state,
        state_index,
        axis=axis,
        kernel=kernel,
        engine=engine,
        compute=compute,
        result=result,
        concatenate=True,
        dtype=result,
        meta=np.empty((0,) * x.ndim, result),
        token=name,
    )


def _masked(x, where, compute):
    """``x`` in the compute dtype, ``-inf`` where ``where`` is false; and the mask."""
    x = x.astype(compute)
    if where is None:
        return x, None
    mask = da.broadcast_to(da.asarray(where).astype(bool), x.shape).rechunk(x.chunks)
    return da.where(mask, x, -np.inf).astype(compute), mask


def _restore(out, shape):
    return out.reshape(shape) if out.shape != shape else out


def online_states(
    x: npt.ArrayLike,
    /,
    *,
    axis: int = -1,
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
    x, axis, compute, _ = _prepare(x, axis, "online_states")
    return _states(x.astype(compute), axis, compute, _engine(backend), split_every)


# --------------------------------------------------------------------------- public


def softmax(
    x: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
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
    x, axis, compute, result = _prepare(x, axis, "softmax")
    engine = _engine(backend)
    x, mask = _masked(x, where, compute)
    state = _states(x, axis, compute, engine)
    out = _normalized(x, state, axis, "SOFTMAX", engine, compute, result, "softmax")
    if mask is not None:
        out = da.where(mask, out, 0).astype(result)
    return _restore(out, tuple(shape))


def log_softmax(
    x: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
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
    x, axis, compute, result = _prepare(x, axis, "log_softmax")
    engine = _engine(backend)
    x, mask = _masked(x, where, compute)
    state = _states(x, axis, compute, engine)
    out = _normalized(x, state, axis, "LOG_SOFTMAX", engine, compute, result, "log_softmax")
    if mask is not None:
        out = da.where(mask, out, -np.inf).astype(result)
    return _restore(out, tuple(shape))


def _logsumexp(state, axis: int, keepdims: bool, result):
    full, state_index, rows = _indices(state.ndim, axis)
    return da.blockwise(
        _lse_block,
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
    *,
    axis: int | None = -1,
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
    x, axis, compute, result = _prepare(x, axis, "logsumexp")
    state = _states(x.astype(compute), axis, compute, _engine(backend))
    lse = _logsumexp(state, axis, keepdims, result)
    return lse.reshape(()) if ndim == 0 else lse


# --------------------------------------------------------------------------- cross-entropy


def _pick_block(block, target, cols, axis, n_classes, ignore_index, compute):
    """``x[target]`` of each row if the target's class lies in this chunk, else 0;
    the first chunk along the axis also checks the class indices."""
    offset = int(cols[0]) if cols.size else 0
    if offset == 0:
        _check_labels(target, n_classes, ignore_index)
    moved = np.moveaxis(block, axis, -1)
    n = moved.shape[-1]
    local = target.astype(np.int64) - offset
    inside = (local >= 0) & (local < n)
    picked = np.zeros(target.shape, compute)
    if n:
        taken = np.take_along_axis(moved, np.clip(local, 0, n - 1)[..., None], -1)[..., 0]
        picked = np.where(inside, taken, 0).astype(compute)
    return np.expand_dims(picked, axis)


def _check_labels(target, n_classes, ignore_index) -> None:
    valid = target != ignore_index if ignore_index is not None else np.ones(target.shape, bool)
    bad = valid & ((target < 0) | (target >= n_classes))
    if bad.any():
        raise ValueError(
            f"cross_entropy(): class index {target[bad].flat[0]} is out of range for "
            f"{n_classes} classes (valid: 0..{n_classes - 1}"
            + (f", or ignore_index={ignore_index})" if ignore_index is not None else ")")
        )


def _grad_block(block, state, target, cols, scale, *, axis, n_classes, ignore_index, **kw):
    """The gradient on one chunk; ``kw``: ``keep``, ``floor`` (label smoothing),
    ``engine`` and ``compute`` (dtype)."""
    keep, floor, engine, compute = kw["keep"], kw["floor"], kw["engine"], kw["compute"]
    rows, moved = _rows(block, axis, compute)
    offset = int(cols[0]) if cols.size else 0
    if offset == 0:
        _check_labels(target, n_classes, ignore_index)
    labels = target.reshape(-1).astype(np.int64)
    valid = labels != ignore_index if ignore_index is not None else np.ones(len(labels), bool)
    out = np.empty_like(rows)
    m, s = _unstack(state, axis)
    getattr(kernels.INDEX_GRAD, engine)(
        rows, m, s, labels - offset, valid, float(scale), keep, floor, out
    )
    return np.moveaxis(out.reshape(moved), -1, axis)


def _index_targets(x, target, axis, compute):
    row_shape = x.shape[:axis] + x.shape[axis + 1 :]
    if target.shape != row_shape:
        raise ValueError(
            f"cross_entropy(): class-index target must have shape {row_shape} "
            f"(logits without axis {axis}), got {target.shape}"
        )
    return target.rechunk(x.chunks[:axis] + x.chunks[axis + 1 :])


def _state_parts(state, axis: int) -> tuple[da.Array, da.Array]:
    """``m`` and ``log1p(s)`` of every row from the merged state."""
    m, s = (da.take(state, k, axis=axis) for k in (0, 1))
    return m, da.log1p(s)


def _index_loss(x, state, target, axis, compute, ignore_index, smoothing):
    """Per-row losses, the mask of rows that count, and the class indices by chunk."""
    full, _, rows = _indices(x.ndim, axis)
    n_classes = x.shape[axis]
    cols = da.arange(n_classes, chunks=(x.chunks[axis],))
    picked = da.blockwise(
        _pick_block,
        full,
        x,
        full,
        target,
        rows,
        cols,
        (axis,),
        axis=axis,
        n_classes=n_classes,
        ignore_index=ignore_index,
        compute=compute,
        adjust_chunks={axis: 1},
        dtype=compute,
        meta=np.empty((0,) * x.ndim, compute),
        token="cross-entropy-pick",
    ).sum(axis=axis, dtype=compute)
    m, log1p_s = _state_parts(state, axis)
    # Every term halved (exactly) and the sum doubled, so that m - x_t cannot overflow;
    # the mean of m - x_j as sum_j (m/2 - x_j/2) / n (scaling first would cancel).
    half = compute.type(0.5)
    loss = (1.0 - smoothing) * ((m * half - picked * half) + log1p_s * half)
    if smoothing:
        w = compute.type(1.0 / n_classes)
        m_half = da.expand_dims(m, axis) * half
        gap = ((m_half - x * half) * w).sum(axis=axis, dtype=compute)
        loss = loss + smoothing * (gap + log1p_s * half)
    loss = loss + loss
    valid = target != ignore_index if ignore_index is not None else da.ones_like(target, bool)
    return da.where(valid, loss, 0).astype(compute), valid, cols


def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    /,
    *,
    axis: int = -1,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    return_grad: bool = False,
    backend: str = "auto",
) -> da.Array | tuple[da.Array, da.Array]:
    r"""Cross-entropy of softmax on a Dask array, :math:`\ell = -\sum_j q_j
    \log\operatorname{softmax}(x)_j`, and optionally its gradient, both lazy.

    PyTorch's conventions, as :func:`softmax_numba.cross_entropy`.  The class axis
    may be split into chunks.

    Parameters
    ----------
    logits : dask.array.Array or array_like
        Unnormalized scores, classes along ``axis``.
    target : dask.array.Array or array_like
        Integer class indices with the shape of ``logits`` without ``axis``, or
        floating probabilities with the shape of ``logits``.  Class indices are
        checked when the result is computed (a ``ValueError`` then).
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of rows whose target is not ``ignore_index``
        (if there is none, the loss is NaN and the gradient zeros).
    label_smoothing : float in [0, 1]
        ``q = (1 - eps) q + eps / C`` for ``C`` classes.
    ignore_index : int, optional
        Class-index targets equal to it give zero loss and gradient.
    return_grad : bool
        Also return the gradient (a lazy array of the logits' shape and chunks),
        scaled as the reduction.
    backend : {"auto", "cpu", "parallel"}
        The Numba engine each task runs.

    Returns
    -------
    loss : dask.array.Array
        0-d for ``"mean"`` and ``"sum"``, else one value per row.
    grad : dask.array.Array
        Only with ``return_grad``.

    Notes
    -----
    With ``(m, s)`` the merged online state of each row (:func:`online_states`;
    [1]_, eq. (4)), a class index ``t`` and ``q = (1 - eps) onehot(t) + eps / C``:

    .. math:: \ell = (1 - \varepsilon) \big((m - x_t) + \operatorname{log1p}(s)\big)
       + \varepsilon \big(\overline{m - x} + \operatorname{log1p}(s)\big),

    with the mean of ``m - x_j`` taken as ``sum_j (m/2 - x_j/2) (2/C)`` (never a
    sum of raw logits), and ``d loss / d x = softmax(x) - q``.  Probability
    targets give ``-sum_j q_j log_softmax(x)_j`` (a sum of non-negative terms,
    from :func:`log_softmax`) and ``sum(q) softmax(x) - q``.

    Error bounds (first order, per row, ``n = C``; ``u``, ``sigma(n)`` and
    ``spread`` as in :func:`softmax_numba.softmax`, after the analysis of [2]_):
    the loss's error is at most ``(6 + sigma(n) + spread) u`` relative to the loss
    for a class index, ``(9 + 2 sigma(n) + spread) u`` with label smoothing or
    probability targets; the gradient's ``(6 + sigma(n) + 2 spread) u`` relative
    to ``sum(q) p_j + q_j``.
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
    >>> from softmax_numba.dask import cross_entropy
    >>> x = da.from_array(np.array([[1.0, 2.0, 3.0, 4.0]]), chunks=(1, 2))
    >>> loss, grad = cross_entropy(x, np.array([3]), return_grad=True)
    >>> round(float(loss.compute()), 6), np.round(grad.compute(), 4)
    (0.44019, array([[ 0.0321,  0.0871,  0.2369, -0.3561]]))
    """
    check_choice("reduction", reduction, REDUCTIONS)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    x, axis, compute, result = _prepare(logits, axis, "cross_entropy")
    engine = _engine(backend)
    x = x.astype(compute)
    target = target if isinstance(target, da.Array) else da.asarray(target)
    if np.issubdtype(target.dtype, np.floating) or target.dtype.name == "bfloat16":
        if ignore_index is not None:
            raise ValueError("cross_entropy(): ignore_index applies to class-index targets only")
        return _probability(
            x, target, axis, reduction, label_smoothing, return_grad, engine, result
        )
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(
            f"cross_entropy(): target must be integer class indices or floating "
            f"probabilities, got dtype {target.dtype}"
        )
    target = _index_targets(x, target, axis, compute)
    state = _states(x, axis, compute, engine)
    losses, valid, cols = _index_loss(
        x, state, target, axis, compute, ignore_index, label_smoothing
    )
    count = valid.sum().astype(compute)
    loss, scale = _reduce(losses, count, reduction, compute, result)
    if not return_grad:
        return loss
    full, state_index, rows = _indices(x.ndim, axis)
    floor = label_smoothing / x.shape[axis]
    grad = da.blockwise(
        _grad_block,
        full,
        x,
        full,
        state,
        state_index,
        target,
        rows,
        cols,
        (axis,),
        scale,
        (),
        axis=axis,
        n_classes=x.shape[axis],
        ignore_index=ignore_index,
        keep=1.0 - label_smoothing,
        floor=floor,
        engine=engine,
        compute=compute,
        concatenate=True,
        dtype=compute,
        meta=np.empty((0,) * x.ndim, compute),
        token="cross-entropy-grad",
    )
    return loss, grad.astype(result)


def _reduce(losses, count, reduction: str, compute, result):
    """The reduced loss and the gradient's scale (0-d Dask arrays)."""
    if reduction == "none":
        return losses.astype(result), da.asarray(np.asarray(1.0, compute))
    total = losses.sum(dtype=compute)
    if reduction == "sum":
        return total.astype(result), da.asarray(np.asarray(1.0, compute))
    safe = da.maximum(count, 1)
    mean = da.where(count > 0, total / safe, np.nan).astype(compute)
    scale = da.where(count > 0, 1.0 / safe, 0.0).astype(compute)  # no row: zeros
    return mean.astype(result), scale


def _probability(x, target, axis, reduction, smoothing, return_grad, engine, result):
    """Probability targets ``q``: ``loss = sum_j q_j ((m - x_j) + log1p(s))`` from the
    merged state, ``grad = sum(q) softmax(x) - q`` from the chunked :func:`softmax`."""
    compute = np.dtype(x.dtype)
    if target.shape != x.shape:
        raise ValueError(
            f"cross_entropy(): probability target must have the logits' shape "
            f"{x.shape}, got {target.shape}"
        )
    q = target.astype(compute).rechunk(x.chunks)
    if smoothing:
        q = (1.0 - smoothing) * q + smoothing / x.shape[axis]
    # -log_softmax_j = (m - x_j) + log1p(s) from the merged state, every term halved
    # (exactly) and the sum doubled, so that m - x_j cannot overflow (as in memory).
    m, log1p_s = _state_parts(_states(x, axis, compute, engine), axis)
    half = compute.type(0.5)
    nll_half = (da.expand_dims(m, axis) * half - x * half) + da.expand_dims(log1p_s, axis) * half
    losses = da.where(q == 0, 0, q * nll_half).sum(axis=axis, dtype=compute)
    losses = losses + losses
    count = da.asarray(np.asarray(losses.size, compute))
    loss, scale = _reduce(losses, count, reduction, compute, result)
    if not return_grad:
        return loss
    p = softmax(x, axis=axis, backend=engine)
    grad = (p * q.sum(axis=axis, keepdims=True, dtype=compute) - q) * scale
    return loss, grad.astype(result)
