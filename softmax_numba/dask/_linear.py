"""linear_cross_entropy on Dask arrays: tokens and vocabulary in chunks, the pieces'
states merged exactly."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import numpy.typing as npt

from softmax_numba._chunked import ChunkedRows, LossOptions
from softmax_numba._linear import check_inputs, check_target
from softmax_numba._targets import check_class_indices, check_extra_loss_options, check_loss_options
from softmax_numba.dask._graph import engine_of, scalar

_FUNC = "linear_cross_entropy"


def _logits(h_block, W_block, bias_block):
    z = h_block @ W_block.T
    if bias_block is not None:
        z += bias_block
    return z


def _rows(labels, n_classes, options, dtype, engine, want_entropy):
    return ChunkedRows(labels.astype(np.int64), n_classes, options, dtype, engine, want_entropy)


def _piece(h_block, W_block, bias_block, labels, start, setup):
    """The states of one block of tokens over one chunk of the vocabulary alone; the
    first chunk checks the block's class indices."""
    n_classes, options, engine, want_entropy = setup
    if start == 0:
        check_class_indices(labels.astype(np.int64), n_classes, options.ignore_index, _FUNC)
    state = _rows(labels, n_classes, options, h_block.dtype, engine, want_entropy)
    state.fold(_logits(h_block, W_block, bias_block), slice(None), start, alone=True)
    return state.parts


def _merged(pieces, labels, bounds, dtype, setup):
    """The states of one block of tokens over the whole vocabulary, from its pieces'."""
    n_classes, options, engine, want_entropy = setup
    state = _rows(labels, n_classes, options, dtype, engine, want_entropy)
    for parts, (start, stop) in zip(pieces, bounds, strict=True):
        state.merge(parts, state.weight_sum(0, start), state.weight_sum(start, stop))
    return state


def _block_losses(state: ChunkedRows):
    """``(cross-entropy, z-loss)`` per row, and the block's count and target weights."""
    ce, z = state.losses()
    return ce, z, state.count, state.weight_count


def _reduced(blocks, reduction: str, dtype):
    """The 0-d ``"sum"`` or ``"mean"`` loss from the blocks' :func:`_block_losses`."""
    total_ce = sum(float(np.sum(b[0], dtype=np.float64)) for b in blocks)
    total_z = sum(float(np.sum(b[1], dtype=np.float64)) for b in blocks)
    count, weight = sum(b[2] for b in blocks), sum(b[3] for b in blocks)
    if reduction == "sum":
        return np.asarray(total_ce + total_z, dtype)
    if not count or weight <= 0:
        return np.asarray(np.nan, dtype)
    return np.asarray(total_ce / weight + total_z / count, dtype)


def _scales(blocks, reduction: str):
    """The factors of the cross-entropy and the z-loss in the gradient, over all blocks."""
    if reduction != "mean":
        return 1.0, 1.0
    count, weight = sum(b[2] for b in blocks), sum(b[3] for b in blocks)
    return (1.0 / weight if weight > 0 else 0.0), (1.0 / count if count else 0.0)


def _piece_gradients(h_block, W_block, bias_block, state, start, scales):
    """``(dh part, dW chunk part, dbias chunk part)`` of one block of tokens and one
    chunk of the vocabulary, from the block's merged state."""
    z = _logits(h_block, W_block, bias_block)
    state.soft_cap(z)
    coefficients = state.gradient_coefficients(slice(None), None, scales)
    state.gradient_into(z, slice(None), start, coefficients, z)
    return z @ W_block, z.T @ h_block, z.sum(axis=0)


def _total(parts):
    return sum(parts[1:], parts[0].copy())


def linear_cross_entropy(
    h: npt.ArrayLike,
    W: npt.ArrayLike,  # the weight matrix, as in torch.nn.functional.linear
    target: npt.ArrayLike,
    /,
    *,
    bias: npt.ArrayLike | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    class_weights: npt.ArrayLike | None = None,
    return_grad: bool = False,
    return_lse: bool = False,
    return_entropy: bool = False,
    backend: str = "auto",
):
    r""":func:`softmax_numba.linear_cross_entropy` on Dask arrays, lazy: the tokens of
    ``h`` and the vocabulary of ``W`` may each be split into chunks.

    One task per (chunk of tokens, chunk of the vocabulary) computes its logits
    ``h_i @ W_j.T + b_j`` and their states; the states of a chunk of tokens are merged
    exactly over the vocabulary (the ``(m, s)`` merge of
    :func:`softmax_numba.dask.online_states`, with the smoothing gaps and entropy sums
    rescaled as the max rises); the gradient tasks compute each piece's logits again
    and give ``dh_i = sum_j G_ij W_j``, ``dW_j = sum_i G_ij.T h_i``.  The hidden axis
    of ``h`` and ``W`` is taken whole (rechunked if split).

    Parameters
    ----------
    h : dask.array.Array or array_like, shape (..., d)
        As in :func:`softmax_numba.linear_cross_entropy` (integers and bools
        promoted).
    W : dask.array.Array or array_like, shape (V, d)
    target : dask.array.Array or array_like of int, shape (...)
        Class indices, checked when the result is computed (a ``ValueError`` then).
    bias, reduction, label_smoothing, ignore_index, z_loss, softcap, class_weights
        As in :func:`softmax_numba.linear_cross_entropy` (``class_weights`` is taken
        into memory: one value per class).
    return_grad, return_lse, return_entropy : bool
        As in :func:`softmax_numba.linear_cross_entropy`; the results are lazy, the
        gradients chunked as ``h`` and ``W``.
    backend : {"auto", "cpu", "parallel"}
        The Numba engine each task runs.

    Returns
    -------
    loss : dask.array.Array
        0-d for ``"mean"`` and ``"sum"`` (it computes to a NumPy scalar), else
        shaped as ``target``.
    grads : tuple of dask.array.Array
        Only with ``return_grad``: ``(dh, dW, dbias)`` (``dbias`` ``None`` without
        ``bias``).
    lse, entropy : dask.array.Array
        Only when asked.

    Notes
    -----
    Two pieces' states merge as ``m = max(m_1, m_2)``, ``s = s_1 + (1 + s_2) exp(m_2 -
    m_1)`` for ``m_1 >= m_2`` [1]_, ``gap = gap_1 + gap_2 + (m - m_2) W_2`` and ``ent =
    ent_1 + exp(m_2 - m_1)(ent_2 + (m_1 - m_2)(1 + s_2))``, every term ``>= 0``.

    Error bound: that of :func:`softmax_numba.linear_cross_entropy`, plus a few ``u``
    per merge (the rounding of ``exp(m_2 - m_1)`` and of the products), as in
    :func:`softmax_numba.dask.cross_entropy`.

    References
    ----------
    .. [1] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import softmax_numba as sn
    >>> from softmax_numba.dask import linear_cross_entropy
    >>> rng = np.random.default_rng(0)
    >>> h, W = rng.standard_normal((8, 4)), rng.standard_normal((10, 4))
    >>> y = rng.integers(0, 10, size=8)
    >>> loss = linear_cross_entropy(da.from_array(h, chunks=4), da.from_array(W, chunks=(3, 4)), y)
    >>> bool(np.isclose(loss.compute(), sn.linear_cross_entropy(h, W, y)))
    True
    """
    check_loss_options(reduction, label_smoothing)
    engine = engine_of(backend)
    h, W = da.asarray(h), da.asarray(W)
    bias = None if bias is None else da.asarray(bias)
    dtype = check_inputs(h, W, bias, _FUNC)  # integers and bools promoted
    h, W = h.astype(dtype), W.astype(dtype)
    bias = None if bias is None else bias.astype(dtype)
    target = da.asarray(target)
    check_target(target, h.shape, _FUNC)
    n_classes, d = W.shape
    weights = check_extra_loss_options(
        z_loss, softcap, None if class_weights is None else np.asarray(class_weights),
        n_classes, dtype, _FUNC,
    )  # fmt: skip
    options = LossOptions(reduction, label_smoothing, ignore_index, z_loss, softcap, weights)
    setup = (n_classes, options, engine, return_entropy)

    rows = h.reshape(-1, d).rechunk({1: -1})
    W = W.rechunk({1: -1})
    labels = target.reshape(-1).rechunk((rows.chunks[0],))
    h_blocks, W_blocks = rows.to_delayed()[:, 0], W.to_delayed()[:, 0]
    label_blocks = labels.to_delayed()
    bias_blocks = _bias_blocks(bias, W)
    edges = np.concatenate(([0], np.cumsum(W.chunks[0]))).astype(int)
    bounds = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))

    piece = dask.delayed(_piece, pure=True, nout=5)
    states = []
    for h_i, t_i in zip(h_blocks, label_blocks, strict=True):
        pieces = [
            piece(h_i, W_j, b_j, t_i, start, setup)
            for W_j, b_j, (start, _) in zip(W_blocks, bias_blocks, bounds, strict=True)
        ]
        states.append(dask.delayed(_merged, pure=True)(pieces, t_i, bounds, dtype, setup))
    losses = [dask.delayed(_block_losses, pure=True, nout=4)(s) for s in states]

    def per_row(function):
        parts = [
            da.from_delayed(dask.delayed(function, pure=True)(s), (n,), dtype=dtype)
            for s, n in zip(states, rows.chunks[0], strict=True)
        ]
        return da.concatenate(parts).reshape(target.shape)

    if reduction == "none":
        loss = per_row(lambda s: np.add(*s.losses()))
    else:
        total = dask.delayed(_reduced, pure=True)(losses, reduction, dtype)
        loss = scalar(da.from_delayed(total, (), dtype=dtype))
    results = [loss]
    if return_grad:
        results.append(_gradients(rows, W, bias, states, losses, h.shape, bounds, reduction))
    if return_lse:
        results.append(per_row(lambda s: s.lse()))
    if return_entropy:
        results.append(per_row(lambda s: s.entropy()))
    return results[0] if len(results) == 1 else tuple(results)


def _bias_blocks(bias, W):
    """The bias in the chunks of ``W``'s vocabulary (``None`` per chunk without one)."""
    if bias is None:
        return [None] * len(W.chunks[0])
    return list(bias.rechunk((W.chunks[0],)).to_delayed())


def _gradients(rows, W, bias, states, losses, h_shape, bounds, reduction):
    """Lazy ``(dh, dW, dbias)``: a task per piece, summed over the other axis."""
    dtype, d = rows.dtype, rows.shape[1]
    scales = dask.delayed(_scales, pure=True)(losses, reduction)
    h_blocks, W_blocks = rows.to_delayed()[:, 0], W.to_delayed()[:, 0]
    starts = [start for start, _ in bounds]
    chunks = list(zip(W_blocks, _bias_blocks(bias, W), starts, strict=True))
    grad = dask.delayed(_piece_gradients, pure=True, nout=3)
    parts = [
        [grad(h_i, W_j, b_j, s_i, start, scales) for W_j, b_j, start in chunks]
        for h_i, s_i in zip(h_blocks, states, strict=True)
    ]
    total = dask.delayed(_total, pure=True)
    dh = da.concatenate([
        da.from_delayed(total([p[0] for p in row]), (n, d), dtype=dtype)
        for row, n in zip(parts, rows.chunks[0], strict=True)
    ]).reshape(h_shape)  # fmt: skip
    dW = da.concatenate([
        da.from_delayed(total([row[j][1] for row in parts]), (v, d), dtype=dtype)
        for j, v in enumerate(W.chunks[0])
    ])  # fmt: skip
    dbias = None
    if bias is not None:
        dbias = da.concatenate([
            da.from_delayed(total([row[j][2] for row in parts]), (v,), dtype=dtype)
            for j, v in enumerate(W.chunks[0])
        ])  # fmt: skip
    return dh, dW, dbias
