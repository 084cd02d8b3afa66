"""linear_cross_entropy: a linear layer fused into cross-entropy, its logits never
held whole (public wrapper)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import reference
from softmax_numba._api import _FLOATS, check_choice, is_device_array, resolve_backend
from softmax_numba._chunked import ChunkedRows, LossOptions, plan
from softmax_numba._interop import same_kind_out
from softmax_numba._targets import check_class_indices, check_extra_loss_options, check_loss_options

_BACKENDS = ("auto", "numpy", "cpu", "parallel")


@same_kind_out
def linear_cross_entropy(
    h: npt.ArrayLike,
    W: npt.ArrayLike,
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
    chunk_size: int | None = None,
    return_grad: bool = False,
    return_lse: bool = False,
    return_entropy: bool = False,
    backend: str = "auto",
):
    r"""Cross-entropy of the logits ``z = h @ W.T + bias``, computed a block of rows and
    a chunk of the vocabulary at a time, so that the ``N x V`` logits and their
    gradient never exist whole.

    The loss, and with ``return_grad`` its gradients with respect to ``h``, ``W`` and
    ``bias``, of ``cross_entropy(h @ W.T + bias, target)``, with PyTorch's conventions
    (``torch.nn.functional.cross_entropy`` of ``torch.nn.functional.linear``) and the
    loss options of Liger-Kernel's fused linear cross-entropy.

    Parameters
    ----------
    h : array_like, shape (..., d)
        The hidden states, one row per token; float32 or float64 (float32 stays
        float32: the matrix products are NumPy's BLAS ``matmul``).  Integers and
        bools are promoted, as everywhere in the library: to the floating dtype of
        the other arrays, or to float64 when none is floating.  float16 and bfloat16
        are refused (their products lose too much).
    W : array_like, shape (V, d)
        The output projection, one row per class, of ``h``'s dtype (or promoted).
    target : array_like of int, shape (...)
        The class index of each row, in ``[0, V)`` or ``ignore_index``.
    bias : array_like, shape (V,), optional
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides the cross-entropy by ``sum_i w_{t_i}`` (the number of rows
        that count, without ``class_weights``) and the z-loss by the number of rows
        that count; a mean over no row is NaN, its gradients zeros.
    label_smoothing : float in [0, 1]
        ``q = (1 - eps) onehot(t) + eps / V``.
    ignore_index : int, optional
        Rows whose target equals it give zero loss and gradient.
    z_loss : float >= 0
        Adds ``z_loss * lse**2`` per row, ``lse`` the row's log-sum-exp of the (capped)
        logits (Chowdhery et al. [3]_).
    softcap : float > 0, optional
        Replaces each logit by ``softcap * tanh(z / softcap)`` (Gemma 2 [4]_).
    class_weights : array_like, shape (V,), optional
        Non-negative weights of the classes, as ``weight=`` of PyTorch.
    chunk_size : int in [1, V], optional
        Classes per chunk.  By default the whole vocabulary, in blocks of rows that
        fit ``config.CHUNKED_LOSS_BYTES`` (with at least
        ``config.CHUNKED_LOSS_MIN_ROWS`` rows; else the chunk is what fits beside
        them).  With several chunks the gradient computes the logits again.
    return_grad : bool
        Also return ``(dh, dW, dbias)`` (``dbias`` is ``None`` without ``bias``),
        the gradient of the loss as reduced.
    return_lse, return_entropy : bool
        Also return each row's log-sum-exp and the entropy of its softmax (of the
        capped logits), shaped as ``target``.
    backend : {"auto", "numpy", "cpu", "parallel"}
        The Numba engine of the per-chunk kernels (the matrix products run on
        NumPy's BLAS threads either way).  ``"numpy"`` is the reference path of the
        other functions' numpy engine: the ``N x V`` logits held whole and the
        formulas of :func:`softmax_numba.reference.cross_entropy_options`, in the
        input's dtype; it saves no memory and serves to check the sweep.

    Returns
    -------
    loss : ndarray or NumPy scalar
        A NumPy scalar for ``"mean"`` and ``"sum"`` (a 0-d tensor for torch
        input), else shaped as ``target``.
    grads : tuple of ndarray
        Only with ``return_grad``: ``(dh, dW, dbias)``.
    lse, entropy : ndarray
        Only when asked, in this order.

    Raises
    ------
    ValueError
        Shapes that do not match, a class index out of range, ``chunk_size`` outside
        ``[1, V]``, a bad option.
    TypeError
        A dtype other than float32, float64, integer or bool, or ``h``, ``W`` and
        ``bias`` of different floating dtypes.

    See Also
    --------
    cross_entropy : the same loss and options on logits in memory.

    Notes
    -----
    Each row keeps its state ``(m, s)`` over the chunks, merged exactly (Milakov &
    Gimelshein [1]_), with the smoothing gaps and entropy sums rescaled as the max
    rises (:mod:`softmax_numba._chunked`); the cross-entropy is the sum of
    non-negative terms ``w_t (1 - eps)((m - z_t) + log1p(s)) + (eps / V)(sum_j w_j
    (m - z_j) + W log1p(s))`` (Blanchard, Higham & Higham [2]_), accurate relative
    to the loss whatever the offset of the logits.  The gradient of a chunk,
    ``G = a p - q`` (times the cap's slope), gives ``dh += G @ W_c``, ``dW_c += G.T @
    h`` and ``dbias_c += sum_i G_i``: three matrix products when the vocabulary is
    one chunk (the logits computed once, the gradient written over them), four
    with several.  Extra memory: one chunk of logits and at most one more for
    summing ``dW`` over blocks of rows.

    Error bound (first order): the rounding of each logit, ``|dz_j| <= (d + 2) u
    (|h| . |W_j| + |b_j|)``, changes the loss of a row by at most ``2 max_j |dz_j|``;
    on top, the cross-entropy's own ``(9 + 2 sigma(V) + spread) u`` relative to the
    loss of :func:`cross_entropy`.

    References
    ----------
    .. [1] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.
    .. [2] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [3] A. Chowdhery et al., "PaLM: Scaling language modeling with pathways",
       JMLR 24(240), 2023 (the z-loss, section 5).
    .. [4] Gemma Team, "Gemma 2: Improving open language models at a practical
       size", arXiv:2408.00118, 2024 (logit soft-capping).

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import cross_entropy, linear_cross_entropy
    >>> rng = np.random.default_rng(0)
    >>> h, W = rng.standard_normal((8, 16)), rng.standard_normal((100, 16))
    >>> y = rng.integers(0, 100, size=8)
    >>> loss, (dh, dW, _) = linear_cross_entropy(h, W, y, chunk_size=32, return_grad=True)
    >>> bool(np.isclose(loss, cross_entropy(h @ W.T, y)))
    True
    >>> dh.shape, dW.shape
    ((8, 16), (100, 16))
    """
    return _linear_cross_entropy(
        h, W, target, bias=bias, reduction=reduction, label_smoothing=label_smoothing,
        ignore_index=ignore_index, z_loss=z_loss, softcap=softcap, class_weights=class_weights,
        chunk_size=chunk_size, return_grad=return_grad, return_lse=return_lse,
        return_entropy=return_entropy, backend=backend,
    )  # fmt: skip


def _linear_cross_entropy(
    h, W, target, *, bias, reduction, label_smoothing, ignore_index, z_loss, softcap,
    class_weights, chunk_size, return_grad, return_lse, return_entropy, backend, upstream=None,
):  # fmt: skip
    """:func:`linear_cross_entropy`; with ``upstream`` (one value per row of a
    ``"none"`` loss), the gradients are those of ``sum_i upstream_i loss_i``: the
    backward pass of :func:`softmax_numba.torch.linear_cross_entropy`."""
    check_loss_options(reduction, label_smoothing)
    check_choice("backend", backend, _BACKENDS)
    h, W, bias = _checked_arrays(h, W, bias)
    n_classes, d = W.shape
    dtype = h.dtype
    target = np.asarray(target)
    check_target(target, h.shape)
    if chunk_size is not None and not (
        isinstance(chunk_size, (int, np.integer)) and 1 <= chunk_size <= n_classes
    ):
        raise ValueError(
            f"linear_cross_entropy(): chunk_size must be an integer in [1, {n_classes}] "
            f"(the vocabulary), got {chunk_size!r}"
        )
    weights = check_extra_loss_options(
        z_loss, softcap, class_weights, n_classes, dtype, "linear_cross_entropy"
    )
    options = LossOptions(reduction, label_smoothing, ignore_index, z_loss, softcap, weights)
    rows_h = h.reshape(-1, d)
    labels = target.reshape(-1).astype(np.int64)
    check_class_indices(labels, n_classes, ignore_index, "linear_cross_entropy")
    engine = resolve_backend(backend, rows_h.shape[0] * n_classes)
    if engine == "numpy":
        loss, grads, lse, entropy = _materialized(
            rows_h, W, bias, labels, options, return_grad, upstream
        )
    else:
        state = ChunkedRows(labels, n_classes, options, dtype, engine, return_entropy)
        grads = _sweep(rows_h, W, bias, state, chunk_size, return_grad, upstream)
        loss = state.reduced(*state.losses())
        lse = state.lse() if return_lse else None
        entropy = state.entropy() if return_entropy else None

    # A full reduction is a NumPy scalar, as NumPy's and scipy's (see softmax_numba).
    loss = loss.reshape(target.shape) if reduction == "none" else loss[()]
    results = [loss]
    if return_grad:
        dh, dW, dbias = grads
        results.append((dh.reshape(h.shape), dW, dbias))
    if return_lse:
        results.append(lse.reshape(target.shape))
    if return_entropy:
        results.append(entropy.reshape(target.shape))
    return results[0] if len(results) == 1 else tuple(results)


def _materialized(h, W, bias, labels, options: LossOptions, want_grad, upstream):
    """``backend="numpy"``: the logits ``h @ W.T + bias`` held whole and the oracle's
    formulas (:func:`softmax_numba.reference.cross_entropy_options`); returns ``(loss,
    (dh, dW, dbias) or None, lse, entropy)``, the gradients weighted by ``upstream``
    (one value per row) when given."""
    z = h @ W.T
    if bias is not None:
        z += bias
    loss, g, lse, entropy = reference.cross_entropy_options(
        z,
        labels,
        reduction=options.reduction,
        label_smoothing=options.label_smoothing,
        ignore_index=options.ignore_index,
        z_loss=options.z_loss,
        softcap=options.softcap,
        class_weights=options.class_weights,
    )
    if not want_grad:
        return loss, None, lse, entropy
    if upstream is not None:
        g = g * np.reshape(upstream, (-1, 1)).astype(g.dtype)
    return loss, (g @ W, g.T @ h, None if bias is None else g.sum(axis=0)), lse, entropy


def check_inputs(h, W, bias, func: str = "linear_cross_entropy") -> np.dtype:
    """The one float dtype (float32 or float64) of ``h``, ``W`` and ``bias``, after
    checking the shapes ``(..., d)``, ``(V, d)`` with ``V >= 1`` and ``(V,)``; anything
    with ``.dtype`` and ``.shape`` (NumPy or Dask arrays).  Integer and bool arrays
    take the floating dtype of the others (float64 if none is floating): the caller
    casts them."""
    floating = set()
    for name, a in (("h", h), ("W", W), ("bias", bias)):
        if a is None:
            continue
        dtype = np.dtype(a.dtype)
        if dtype in _FLOATS:
            floating.add(dtype)
        elif dtype.kind not in "iub":
            raise TypeError(
                f"{func}(): {name} must be float32 or float64 (integers and bools are "
                f"promoted), got dtype {a.dtype} (cast it first; float16 and bfloat16 "
                "products lose too much)"
            )
    if len(floating) > 1:
        raise TypeError(
            f"{func}(): h, W and bias must have one dtype (integers take the others'), got "
            + ", ".join(str(a.dtype) for a in (h, W, bias) if a is not None)
        )
    if len(h.shape) < 1 or len(W.shape) != 2 or h.shape[-1] != W.shape[1]:
        raise ValueError(f"{func}(): h must be (..., d) and W (V, d), got {h.shape} and {W.shape}")
    if W.shape[0] == 0:
        raise ValueError(f"{func}(): W has no class (V = 0)")
    if bias is not None and tuple(bias.shape) != (W.shape[0],):
        raise ValueError(f"{func}(): bias must have shape ({W.shape[0]},), got {bias.shape}")
    return floating.pop() if floating else np.dtype(np.float64)


def check_target(target, h_shape, func: str = "linear_cross_entropy") -> None:
    """Integer class indices with the shape of ``h`` without its last axis."""
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"{func}(): target must be integer class indices, got dtype {target.dtype}")
    if tuple(target.shape) != tuple(h_shape[:-1]):
        raise ValueError(
            f"{func}(): target must have shape {tuple(h_shape[:-1])} (h without its last "
            f"axis), got {tuple(target.shape)}"
        )


def _checked_arrays(h, W, bias):
    """``h``, ``W`` and ``bias`` as C-contiguous arrays of one float dtype (integers and
    bools promoted), shapes checked."""
    if any(is_device_array(a) for a in (h, W, bias)):
        raise TypeError(
            "linear_cross_entropy(): runs on the CPU (NumPy's BLAS); got an array on a GPU"
        )
    h, W = np.asarray(h), np.asarray(W)
    bias = None if bias is None else np.asarray(bias)
    dtype = check_inputs(h, W, bias)

    def contiguous(a):
        return np.ascontiguousarray(a, dtype=dtype)

    return contiguous(h), contiguous(W), None if bias is None else contiguous(bias)


def _logits_into(buffer, h_block, W, bias, start, stop):
    """``h_block @ W[start:stop].T + bias[start:stop]`` into a C-contiguous view of
    ``buffer``."""
    z = buffer[: h_block.shape[0] * (stop - start)].reshape(h_block.shape[0], stop - start)
    np.matmul(h_block, W[start:stop].T, out=z)
    if bias is not None:
        z += bias[start:stop]
    return z


def _add_product(dst, a, b, first: bool, scratch) -> None:
    """``dst += a @ b`` (``dst = a @ b`` when ``first``), through ``scratch`` in slabs of
    ``dst``'s rows, so that no temporary of ``dst``'s size is made."""
    if first:
        np.matmul(a, b, out=dst)
        return
    slab = max(1, scratch.size // dst.shape[1])
    for lo in range(0, dst.shape[0], slab):
        hi = min(dst.shape[0], lo + slab)
        part = scratch[: (hi - lo) * dst.shape[1]].reshape(hi - lo, dst.shape[1])
        np.matmul(a[lo:hi], b, out=part)
        dst[lo:hi] += part


def _fold_chunks(state, buffer, h, W, bias, part: slice, chunks) -> None:
    """Fold the logits of the rows ``part`` over every chunk of classes into ``state``."""
    for start, stop in chunks:
        state.fold(_logits_into(buffer, h[part], W, bias, start, stop), part, start)


def _sweep(h, W, bias, state: ChunkedRows, chunk_size, want_grad, upstream=None):
    """Fold every (block of rows, chunk of classes) into ``state``; with ``want_grad``,
    the gradients ``(dh, dW, dbias)`` (times ``upstream``, one value per row, when
    given: the backward pass of ``reduction="none"``)."""
    rows, d = h.shape
    n_classes = W.shape[0]
    block, chunk = plan(rows, n_classes, h.dtype.itemsize, chunk_size)
    buffer = np.empty(block * chunk, h.dtype)
    chunks = [(c, min(n_classes, c + chunk)) for c in range(0, n_classes, chunk)]
    if not want_grad:
        for r in range(0, rows, block):
            _fold_chunks(state, buffer, h, W, bias, slice(r, min(rows, r + block)), chunks)
        return None

    dh = np.empty_like(h)
    dW = np.zeros_like(W) if rows == 0 else np.empty_like(W)
    dbias = None if bias is None else np.zeros_like(bias)
    # Sums over several blocks or chunks go through one more buffer of at most a chunk.
    several = len(chunks) > 1 or block < rows
    scratch = np.empty(max(d, min(block * chunk, max(chunk, block) * d)) if several else 0, h.dtype)
    for r in range(0, rows, block):
        part = slice(r, min(rows, r + block))
        h_block, first_block = h[part], r == 0
        if len(chunks) == 1:  # the logits once, the gradient written over them
            z = _logits_into(buffer, h_block, W, bias, 0, n_classes)
            state.fold(z, part, 0)
            coefficients = state.gradient_coefficients(part, _rows(upstream, part))
            state.gradient_into(z, part, 0, coefficients, z)
            _finish_chunk(
                z, h_block, W, (0, n_classes), (dh[part], dW, dbias), (True, first_block), scratch
            )
            continue
        _fold_chunks(state, buffer, h, W, bias, part, chunks)
        coefficients = state.gradient_coefficients(part, _rows(upstream, part))
        for k, (start, stop) in enumerate(chunks):
            z = _logits_into(buffer, h_block, W, bias, start, stop)
            state.soft_cap(z)
            state.gradient_into(z, part, start, coefficients, z)
            _finish_chunk(
                z, h_block, W, (start, stop), (dh[part], dW, dbias), (k == 0, first_block), scratch
            )
    return dh, dW, dbias


def _gemm_accumulate(dW_chunk, g, h_block) -> bool:
    """``dW_chunk += g.T @ h_block`` in place by BLAS ``gemm`` with ``beta = 1``
    (SciPy's wrapper, when SciPy is installed): no temporary and no second pass over
    ``dW``.  In column-major terms ``dW_chunk.T += h_block.T @ g``, all three operands
    viewed without a copy.  False when SciPy is missing (the caller sums through a
    scratch buffer)."""
    try:
        from scipy.linalg import blas
    except ImportError:
        return False
    gemm = blas.sgemm if dW_chunk.dtype == np.float32 else blas.dgemm
    c = dW_chunk.T
    result = gemm(1.0, h_block.T, g.T, beta=1.0, c=c, trans_b=1, overwrite_c=1)
    if not np.shares_memory(result, c):  # the wrapper copied: keep the sum anyway
        c[...] = result
    return True


def _rows(upstream, part: slice):
    return None if upstream is None else upstream.reshape(-1)[part]


def _finish_chunk(g, h_block, W, classes, grads, firsts, scratch):
    """The products of one chunk's gradient ``g`` (classes ``[start, stop)``):
    ``dh_block += g @ W_c``, ``dW_c += g.T @ h_block``, ``dbias_c += sum_i g_i``
    (``=`` on the first chunk, or the first block of rows, for ``firsts``)."""
    (start, stop), (dh_block, dW, dbias), (first_chunk, first_block) = classes, grads, firsts
    _add_product(dh_block, g, W[start:stop], first_chunk, scratch)
    if first_block or not _gemm_accumulate(dW[start:stop], g, h_block):
        _add_product(dW[start:stop], g.T, h_block, first_block, scratch)
    if dbias is not None:
        dbias[start:stop] += g.sum(axis=0)
