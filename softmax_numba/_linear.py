"""linear_cross_entropy: a linear layer fused into cross-entropy, its logits never
held whole (public wrapper)."""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt

from softmax_numba import reference
from softmax_numba._api import _FLOATS, check_choice, is_device_array, resolve_backend
from softmax_numba._chunked import ChunkedRows, LossOptions
from softmax_numba._interop import same_kind_out
from softmax_numba._linear_products import products_for
from softmax_numba._linear_sweep import Sweep, plan_tiles
from softmax_numba._targets import check_class_indices, check_extra_loss_options, check_loss_options

_BACKENDS = ("auto", "numpy", "cpu", "parallel")
_LOW_PRECISION = ("bfloat16", "float16")


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
    grad_threshold: float = 0.0,
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
        The hidden states, one row per token: a NumPy array or a torch CPU tensor of
        float32 or float64 (computed in that dtype), or of bfloat16 (ml_dtypes or
        torch) or float16, widened to float32 a block of tokens and a chunk of ``W``
        at a time, the gradients rounded back to the input's dtype.  Integers and
        bools are promoted, as everywhere in the library: to the floating dtype of
        the other arrays, or to float64 when none is floating.  The matrix products
        run in the library of ``h``: torch's ``mm``/``addmm_`` for tensors, NumPy's
        ``matmul`` and SciPy's BLAS ``gemm`` for arrays, into preallocated buffers,
        with no copy of ``h`` or ``W``.
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
        Classes per chunk.  By default planned within
        ``config.LINEAR_CE_WORKSPACE_BYTES`` (64 MiB): the whole vocabulary when a
        block of ``config.LINEAR_CE_ONE_CHUNK_MIN_ROWS`` tokens of it fits (the
        logits computed once, three matrix products), else square tiles of tokens
        by classes (the logits computed again for the gradient, four products).
    grad_threshold : float in [0, 1), default 0
        Gradient filtering (Wijmans et al. [5]_): a tile of the gradient on the
        logits whose every entry, its target term aside, is at most
        ``grad_threshold * a_i`` (``a_i`` the factor of ``p_ij`` in row ``i``: ``1 /
        count`` for a plain mean) skips its two gradient products.  0 is exact.  The
        loss is unchanged; each skipped entry is off by at most that much, so ``dh``
        is within ``grad_threshold * a_i * sum_j |W_jk|`` of the exact one, ``dW``
        within ``grad_threshold * sum_i a_i |h_ik|`` and ``dbias`` within
        ``grad_threshold * sum_i a_i`` (on top of the rounding bound below).
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
    with several.

    Memory: beyond the inputs, the gradients and a few values per token and per
    class, at most ``config.LINEAR_CE_WORKSPACE_BYTES`` whatever ``N`` and ``V``
    (:mod:`softmax_numba._linear_sweep`); bfloat16 and float16 inputs add one
    float32 array of ``h``'s shape, the sum of ``dh`` over the chunks.

    Error bound (first order, ``u`` the unit roundoff of the compute dtype): the
    rounding of each logit, ``|dz_j| <= (d + 2) u (|h| . |W_j| + |b_j|)``, changes
    the loss of a row by at most ``2 max_j |dz_j|``; on top, the cross-entropy's own
    ``(9 + 2 sigma(V) + spread) u`` relative to the loss of :func:`cross_entropy`.
    bfloat16 and float16 gradients add their final rounding, ``u_low |g|``.

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
    .. [5] E. Wijmans, B. Huval, A. Hertzberg, V. Koltun and P. Krähenbühl, "Cut
       your losses in large-vocabulary language models", ICLR 2025 (gradient
       filtering, section 4.3).

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
    return _in_kind_of_h(
        h, W, target, bias=bias, reduction=reduction, label_smoothing=label_smoothing,
        ignore_index=ignore_index, z_loss=z_loss, softcap=softcap, class_weights=class_weights,
        chunk_size=chunk_size, grad_threshold=grad_threshold, return_grad=return_grad,
        return_lse=return_lse, return_entropy=return_entropy, backend=backend,
        library="torch" if _is_torch_tensor(h) else "numpy",
    )  # fmt: skip


def _is_torch_tensor(a) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def _linear_cross_entropy(
    h, W, target, *, bias, reduction, label_smoothing, ignore_index, z_loss, softcap,
    class_weights, chunk_size, return_grad, return_lse, return_entropy, backend,
    grad_threshold=0.0, library="numpy", upstream=None,
):  # fmt: skip
    """:func:`linear_cross_entropy` on host arrays, the products in ``library``
    (``"numpy"`` or ``"torch"``); with ``upstream`` (one value per row of a ``"none"``
    loss), the gradients are those of ``sum_i upstream_i loss_i``: the backward pass
    of :func:`softmax_numba.torch.linear_cross_entropy`."""
    check_loss_options(reduction, label_smoothing)
    check_choice("backend", backend, _BACKENDS)
    if not (isinstance(grad_threshold, (int, float, np.floating)) and 0 <= grad_threshold < 1):
        raise ValueError(
            f"linear_cross_entropy(): grad_threshold must be a number in [0, 1), got "
            f"{grad_threshold!r}"
        )
    h, W, bias = _checked_arrays(h, W, bias)
    n_classes, d = W.shape
    dtype = np.dtype(np.float32) if h.dtype.name in _LOW_PRECISION else h.dtype
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
    if backend == "numpy":
        loss, grads, lse, entropy = _materialized(
            rows_h, W, bias, labels, options, return_grad, upstream
        )
    else:
        products = products_for(library)
        tiles = plan_tiles(
            rows_h.shape[0], n_classes, d, dtype.itemsize, dtype != h.dtype,
            products.needs_scratch, chunk_size,
        )  # fmt: skip
        # The kernels run on one tile at a time: its size picks the engine.
        engine = resolve_backend(backend, min(rows_h.shape[0], tiles.block) * tiles.chunk)
        state = ChunkedRows(labels, n_classes, options, dtype, engine, return_entropy)
        sweep = Sweep(rows_h, W, bias, state, products, tiles, grad_threshold)
        if not (return_grad and tiles.one_chunk):
            sweep.forward()
        grads = sweep.gradients(upstream) if return_grad else None
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
    (one value per row) when given.  bfloat16 and float16 compute in float32, the
    gradients rounded to the input's dtype."""
    given = h.dtype
    if given.name in _LOW_PRECISION:
        h, W = h.astype(np.float32), W.astype(np.float32)
        bias = None if bias is None else bias.astype(np.float32)
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
    grads = (g @ W, g.T @ h, None if bias is None else g.sum(axis=0))
    grads = tuple(None if x is None else x.astype(given, copy=False) for x in grads)
    return loss, grads, lse, entropy


def _in_kind_of_h_entry(h, W, target, /, **options):
    return _linear_cross_entropy(h, W, target, **options)


_in_kind_of_h_entry.__name__ = "linear_cross_entropy"
#: :func:`_linear_cross_entropy` taking and returning torch tensors, CuPy and JAX
#: arrays as :func:`softmax_numba._interop.same_kind_out` describes.
_in_kind_of_h = same_kind_out(_in_kind_of_h_entry)


def check_inputs(
    h, W, bias, func: str = "linear_cross_entropy", low_precision: bool = False
) -> np.dtype:
    """The one float dtype (float32 or float64; bfloat16 and float16 too with
    ``low_precision``) of ``h``, ``W`` and ``bias``, after checking the shapes ``(...,
    d)``, ``(V, d)`` with ``V >= 1`` and ``(V,)``; anything with ``.dtype`` and
    ``.shape`` (NumPy or Dask arrays).  Integer and bool arrays take the floating
    dtype of the others (float64 if none is floating): the caller casts them."""
    floating = set()
    for name, a in (("h", h), ("W", W), ("bias", bias)):
        if a is None:
            continue
        dtype = np.dtype(a.dtype)
        if dtype in _FLOATS or (low_precision and dtype.name in _LOW_PRECISION):
            floating.add(dtype)
        elif dtype.kind not in "iub":
            accepted = (
                "float32, float64, bfloat16 or float16" if low_precision else ("float32 or float64")
            )
            raise TypeError(
                f"{func}(): {name} must be {accepted} (integers and bools are "
                f"promoted), got dtype {a.dtype}"
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
    dtype = check_inputs(h, W, bias, low_precision=True)

    def contiguous(a):
        return np.ascontiguousarray(a, dtype=dtype)

    return contiguous(h), contiguous(W), None if bias is None else contiguous(bias)
