"""cross_entropy on Dask arrays: the loss and its gradient from the merged states."""

from __future__ import annotations

import dask.array as da
import numpy as np
import numpy.typing as npt

from softmax_numba._targets import (
    INDEX,
    PROBABILITY,
    check_class_indices,
    check_loss_options,
    check_probabilities,
    check_target_shape,
    counted,
    target_kind,
)
from softmax_numba.dask._graph import (
    block_rows,
    engine_of,
    indices,
    kernels,
    prepare,
    scalar,
    state_parts,
    states,
    unstack,
)
from softmax_numba.dask._softmax import softmax


def _pick_block(block, target, cols, axis, n_classes, ignore_index, compute):
    """``x[target]`` of each row if the target's class lies in this chunk, else 0;
    the first chunk along the axis also checks the class indices."""
    offset = int(cols[0]) if cols.size else 0
    if offset == 0:
        check_class_indices(target, n_classes, ignore_index)
    moved = np.moveaxis(block, axis, -1)
    n = moved.shape[-1]
    local = target.astype(np.int64) - offset
    inside = (local >= 0) & (local < n)
    picked = np.zeros(target.shape, compute)
    if n:
        taken = np.take_along_axis(moved, np.clip(local, 0, n - 1)[..., None], -1)[..., 0]
        picked = np.where(inside, taken, 0).astype(compute)
    return np.expand_dims(picked, axis)


def _grad_block(block, state, target, cols, scale, *, axis, n_classes, ignore_index, **kw):
    """The gradient on one chunk; ``kw``: ``keep``, ``floor`` (label smoothing),
    ``engine`` and ``compute`` (dtype)."""
    keep, floor, engine, compute = kw["keep"], kw["floor"], kw["engine"], kw["compute"]
    rows, moved = block_rows(block, axis, compute)
    offset = int(cols[0]) if cols.size else 0
    if offset == 0:
        check_class_indices(target, n_classes, ignore_index)
    labels = target.reshape(-1).astype(np.int64)
    valid = counted(labels, ignore_index)
    out = np.empty_like(rows)
    m, s = unstack(state, axis)
    getattr(kernels.INDEX_GRAD, engine)(
        rows, m, s, labels - offset, valid, float(scale), keep, floor, out
    )
    return np.moveaxis(out.reshape(moved), -1, axis)


def _index_targets(x, target, axis, compute):
    row_shape = x.shape[:axis] + x.shape[axis + 1 :]
    check_target_shape(INDEX, target.shape, x.shape, row_shape, axis)
    return target.rechunk(x.chunks[:axis] + x.chunks[axis + 1 :])


def _index_loss(x, state, target, axis, compute, ignore_index, smoothing):
    """Per-row losses, the mask of rows that count, and the class indices by chunk."""
    full, _, rows = indices(x.ndim, axis)
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
    m, log1p_s = state_parts(state, axis)
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
    axis: int = -1,
    *,
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
        floating probabilities (``>= 0``) with the shape of ``logits``.  Class
        indices and the sign of probabilities are checked when the result is
        computed (a ``ValueError`` then), as in :func:`softmax_numba.cross_entropy`.
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
        0-d for ``"mean"`` and ``"sum"`` (it computes to a NumPy scalar), else one
        value per row.
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
    check_loss_options(reduction, label_smoothing)
    x, axis, compute, result = prepare(logits, axis, "cross_entropy")
    engine = engine_of(backend)
    x = x.astype(compute)
    target = target if isinstance(target, da.Array) else da.asarray(target)
    if target_kind(target.dtype, ignore_index) == PROBABILITY:
        return _probability(
            x, target, axis, reduction, label_smoothing, return_grad, engine, result
        )
    target = _index_targets(x, target, axis, compute)
    state = states(x, axis, compute, engine)
    losses, valid, cols = _index_loss(
        x, state, target, axis, compute, ignore_index, label_smoothing
    )
    count = valid.sum().astype(compute)
    loss, scale = _reduce(losses, count, reduction, compute, result)
    if not return_grad:
        return loss
    full, state_index, rows = indices(x.ndim, axis)
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
        return scalar(total.astype(result)), da.asarray(np.asarray(1.0, compute))
    safe = da.maximum(count, 1)
    mean = da.where(count > 0, total / safe, np.nan).astype(compute)
    scale = da.where(count > 0, 1.0 / safe, 0.0).astype(compute)  # no row: zeros
    return scalar(mean.astype(result)), scale


def _nonnegative(block):
    check_probabilities(block)
    return block


def _probability(x, target, axis, reduction, smoothing, return_grad, engine, result):
    """Probability targets ``q``: ``loss = sum_j q_j ((m - x_j) + log1p(s))`` from the
    merged state, ``grad = sum(q) softmax(x) - q`` from the chunked :func:`softmax`."""
    compute = np.dtype(x.dtype)
    row_shape = x.shape[:axis] + x.shape[axis + 1 :]
    check_target_shape(PROBABILITY, target.shape, x.shape, row_shape, axis)
    # A negative probability is a ValueError when the result is computed.
    target = target.map_blocks(_nonnegative, dtype=target.dtype)
    q = target.astype(compute).rechunk(x.chunks)
    if smoothing:
        q = (1.0 - smoothing) * q + smoothing / x.shape[axis]
    # -log_softmax_j = (m - x_j) + log1p(s) from the merged state, every term halved
    # (exactly) and the sum doubled, so that m - x_j cannot overflow (as in memory).
    m, log1p_s = state_parts(states(x, axis, compute, engine), axis)
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
