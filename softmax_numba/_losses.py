"""cross_entropy: fused log-softmax and negative log-likelihood (public wrapper)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import bounds, config, reference
from softmax_numba._api import is_device_array, lean_out, lean_rows, run
from softmax_numba._chunked import ChunkedRows, LossOptions, plan
from softmax_numba._chunked_probability import ChunkedProbabilityRows
from softmax_numba._interop import same_kind_out
from softmax_numba._rows import rows_of
from softmax_numba._softmax import REGISTRY_TEMPERATURE
from softmax_numba._softmax_options import checked_temperature
from softmax_numba._targets import (
    INDEX,
    check_class_indices,
    check_extra_loss_options,
    check_loss_options,
    check_probabilities,
    check_target_shape,
    target_kind,
)
from softmax_numba.cpu import losses as kernels
from softmax_numba.cpu import softmax_options
from softmax_numba.cpu.targets import counted_class_indices
from softmax_numba.declaration import CORE, Entry, with_distributions, with_targets


@same_kind_out
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
    grad_out: np.ndarray | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    class_weights: npt.ArrayLike | None = None,
    return_lse: bool = False,
    return_entropy: bool = False,
    temperature: float | None = None,
) -> np.ndarray | tuple[np.ndarray, ...]:
    r"""Cross-entropy of softmax, :math:`\ell = -\sum_j q_j \log\operatorname{softmax}(x)_j`,
    fused with its gradient.

    Conventions follow ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    logits : array_like
        Unnormalized scores (dtypes as in :func:`softmax`), classes along ``axis``.
    target : array_like
        Either integer class indices with the shape of ``logits`` without ``axis``,
        or probabilities (floating) with the shape of ``logits``.  Probabilities
        must be ``>= 0``: a negative entry is a ``ValueError`` (PyTorch documents
        ``[0, 1]`` but does not check, and a negative ``q_j`` gives a negative
        loss); rows need not sum to 1, as in PyTorch.
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of rows whose target is not
        ``ignore_index`` (if there is none, the loss is NaN and the gradient
        zeros); ``"none"`` returns one loss per row.
    label_smoothing : float in [0, 1]
        ``q = (1 - eps) q + eps / C`` for ``C`` classes (Szegedy et al. [2]_).
    ignore_index : int, optional
        Class-index targets equal to it give zero loss and gradient.
    return_grad : bool
        Also return ``d loss / d logits`` (scaled as the reduction: ``1/count``
        for ``"mean"``; for ``"none"`` the gradient of each row's own loss).
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`softmax`.
    grad_out : ndarray, optional
        With ``return_grad``: an array of the logits' shape and result dtype to write
        the gradient into (a training loop's buffer, written without the page faults
        of a new array).  It may be ``logits`` itself, when the step needs the logits
        no more: each row is read before its gradient is written over it, so the
        results are those of a separate buffer, and the memory of one is saved.
    z_loss : float >= 0
        Adds ``z_loss * lse**2`` per row (the z-loss of PaLM [3]_; Liger-Kernel's
        ``lse_square_scale``); ``"mean"`` divides it by the number of rows that count.
    softcap : float > 0, optional
        Replaces each logit by ``softcap * tanh(x / softcap)`` first (Gemma 2 [4]_);
        the gradient carries the cap's slope.
    class_weights : array_like, shape (C,), optional
        Non-negative weights of the classes, PyTorch's ``weight=``: a row's loss is
        scaled by its target's weight, the smoothing term by each class's, and
        ``"mean"`` divides by ``sum_i w_{t_i}`` over the rows that count.  A
        probability target gives ``-sum_j w_j q_j log p_j`` with ``q`` smoothed, and
        ``"mean"`` divides by the number of rows (as PyTorch does for probabilities).
    return_lse, return_entropy : bool
        Also return each row's log-sum-exp and the entropy of its softmax (after
        the cap), shaped as ``logits`` without ``axis``.

    temperature : float > 0, optional
        The loss of ``softmax(logits / temperature)``, each quotient correctly
        rounded in the compute dtype, and its gradient with respect to ``logits``
        (which carries the ``1 / temperature``).  The kernel runs on blocks of
        rows of ``config.TEMPERED_BLOCK_BYTES``, each divided into one buffer in
        the cache: never an array of the logits' size.  Its bound is that of the loss
        of ``y = x / T``, plus ``4 u max_j |y_j|`` relative to the loss of the exact
        ``x / T`` (as :func:`softmax`'s).  Not with the five options below.

    The five options above take class-index or probability targets on the CPU
    engines (``"numpy"`` runs the oracle; ``"cuda"`` refuses them); they run the
    chunked sweep of :func:`linear_cross_entropy` over the logits in memory
    (:mod:`softmax_numba._chunked_probability` for probabilities: per row ``gap =
    sum_j r_j (m - z_j)`` and ``R = sum_j r_j``, ``r_j = w_j q_j``, the loss
    ``gap + R log1p(s) + z_loss lse^2``, the gradient ``(R + 2 z_loss lse) p_j - r_j``
    times the cap's slope).

    Returns
    -------
    loss : ndarray or NumPy scalar
        A NumPy scalar of the result dtype for ``"mean"`` and ``"sum"`` (as NumPy's
        and scipy's full reductions return; a torch tensor in gives a 0-d tensor),
        else one value per row.
    grad : ndarray
        Only with ``return_grad``: the gradient, shaped as ``logits`` (``grad_out``
        when given).
    lse, entropy : ndarray
        Only when asked, in this order.

    Raises
    ------
    ValueError
        A class index outside ``[0, C)`` (other than ``ignore_index``), an empty
        class axis with class indices, a negative probability, a target shape that
        does not match (a floating target of the class-index shape is named as
        such), a bad ``reduction`` or ``label_smoothing``, a ``grad_out`` without
        ``return_grad`` or a read-only one.

    See Also
    --------
    log_softmax, softmax

    Notes
    -----
    Each row's ``m = x_k = max(x)`` and ``s = sum_{j != k} exp(x_j - m)`` come
    from one ``(max, sum)`` pass (the shifted algorithm of [1]_); a class-index
    target ``t`` then gives

    .. math:: \ell = (m - x_t) + \operatorname{log1p}(s),

    a sum of two non-negative terms.  Label smoothing and probability targets give
    the sum of non-negative terms ``sum_j q_j ((m - x_j) + log1p(s))``, with the
    mean of ``m - x_j`` taken as ``sum_j (m/2 - x_j/2) (2/C)``, never as a sum of
    raw logits (which would cancel).  The gradient ``sum(q) softmax(x) - q``
    (``softmax(x) - q`` for a distribution ``q``) reuses ``(m, s)``: the logits
    are read twice and the gradient written once.

    Error bounds, after the analysis of [1]_ (first order, per row, ``n = C``;
    ``u``, ``sigma(n)`` and ``spread`` as in :func:`softmax`):

    - loss, class-index target: ``(6 + sigma(n) + spread) u`` relative to the loss;
    - loss, label smoothing or probability targets: ``(9 + 2 sigma(n) + spread) u``;
    - gradient: ``(6 + sigma(n) + 2 spread) u`` relative to ``sum(q) p_j + q_j``
      (the two terms it subtracts).
    - probability targets with the five options (per row, ``r_j = w_j q_j``, ``R =
      sum_j r_j``): the loss within ``(11 + 2 sigma(n) + spread) u`` of its
      cross-entropy, plus ``z_loss (6 lse^2 + 2 (4 + sigma(n) + spread) |lse|
      log1p(s)) u`` and, with a cap, ``4 u sum_j ((R + 2 z_loss |lse|) p_j + r_j)
      |y_j|`` (the capped logits' rounding); the gradient within ``(16 + 2 sigma(n) +
      3 spread + 8 max|y|) u`` relative to ``(R + 2 z_loss max(|lse|, log1p(s))) p_j
      + r_j`` (the term ``8 max|y|`` with a cap only;
      :func:`softmax_numba.bounds.probability_options_bounds`).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens and Z. Wojna, "Rethinking
       the Inception architecture for computer vision", CVPR 2016.
    .. [3] A. Chowdhery et al., "PaLM: Scaling language modeling with pathways",
       JMLR 24(240), 2023 (the z-loss, section 5).
    .. [4] Gemma Team, "Gemma 2: Improving open language models at a practical
       size", arXiv:2408.00118, 2024 (logit soft-capping).

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import cross_entropy
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> loss, grad = cross_entropy(logits, np.array([0, 1]), return_grad=True)
    >>> round(float(loss), 6)
    0.31854
    >>> np.round(grad, 4)  # (softmax(x) - onehot(t)) / 2
    array([[-0.1705,  0.1212,  0.0493],
           [ 0.0543, -0.0988,  0.0445]])
    """
    check_loss_options(reduction, label_smoothing)
    if grad_out is not None and not return_grad:
        raise ValueError("cross_entropy(): grad_out= needs return_grad=True")
    extras = bool(z_loss) or softcap is not None or class_weights is not None
    t = checked_temperature("cross_entropy", temperature)
    if t != 1.0 and (extras or return_lse or return_entropy):
        raise NotImplementedError(
            "cross_entropy(): temperature= does not combine with z_loss, softcap, "
            "class_weights, return_lse or return_entropy"
        )
    if t == 1.0 and not (extras or return_lse or return_entropy):
        lean = _lean_cross_entropy(
            logits, target, axis, reduction, label_smoothing, ignore_index, return_grad,
            backend, grad_out,
        )  # fmt: skip
        if lean is not None:
            return lean
    rows = rows_of(logits, axis, "cross_entropy")
    if grad_out is not None:
        rows.check_out(grad_out, rows.shape, rows.result_dtype, name="grad_out")
    # Targets are validated on the host (a GPU target is copied: one value per row).
    target = target.copy_to_host() if is_device_array(target) else np.asarray(target)
    engine = rows.engine(backend)
    kind = target_kind(target.dtype, ignore_index)
    check_target_shape(kind, target.shape, rows.shape, rows.moved_shape[:-1], rows.axis)
    if extras or return_lse or return_entropy:
        if engine == "cuda":
            raise NotImplementedError(
                "cross_entropy(): z_loss, softcap, class_weights, return_lse and "
                'return_entropy run on the CPU engines: pass backend="numpy", "cpu" or '
                '"parallel" with host arrays'
            )
        if kind == INDEX:
            labels = target.reshape(rows.count).astype(np.int64)
            check_class_indices(labels, rows.n, ignore_index)
        else:
            check_probabilities(target)
            labels = rows.operand(target, "target")  # probabilities, (count, n)
        weights = check_extra_loss_options(
            z_loss, softcap, class_weights, rows.n, rows.compute_dtype, "cross_entropy"
        )
        options = LossOptions(reduction, label_smoothing, ignore_index, z_loss, softcap, weights)
        return _with_options(
            rows, labels, engine, options, return_grad, grad_out, return_lse, return_entropy
        )
    if kind == INDEX:
        labels = target.reshape(rows.count).astype(np.int64)
        count = int(np.count_nonzero(check_class_indices(labels, rows.n, ignore_index)))
        probabilities = None
    else:
        check_probabilities(target)
        probabilities = rows.operand(target, "target")
        count = rows.count
    scale = _gradient_scale(reduction, count) / t

    losses = rows.new_reduced()
    inputs = () if probabilities is None else (probabilities,)
    grad = (
        rows.new_rows(grad_out, inputs=inputs)
        if return_grad
        else np.empty((0, 0), rows.compute_dtype)
    )

    def losses_of(data, part):
        """The kernel on the rows ``part``, whose logits are ``data``."""
        g = grad[part] if return_grad else grad
        if probabilities is None:
            run(
                kernels.CROSS_ENTROPY_INDEX, engine, data, labels[part],
                -1 if ignore_index is None else ignore_index, label_smoothing, scale,
                return_grad, losses[part], g,
            )  # fmt: skip
        else:
            run(
                kernels.CROSS_ENTROPY_PROBABILITY, engine, data, probabilities[part],
                label_smoothing, scale, return_grad, losses[part], g,
            )  # fmt: skip

    if t == 1.0:
        losses_of(rows.data, slice(None))
    else:
        tempered_rows(rows, engine, t, losses_of)

    if reduction == "none":
        loss = rows.restore_reduced(losses)
    else:
        loss = _reduced(rows.to_host(losses), reduction, count, rows.result_dtype)
    if not return_grad:
        return loss
    return loss, rows.restore(grad, grad_out)


def tempered_rows(rows, engine: str, t: float, losses_of) -> None:
    """``losses_of(rows.data[part] / t, part)`` over the rows, a block of about
    ``config.TEMPERED_BLOCK_BYTES`` at a time divided into one buffer.  Never into
    the gradient's buffer, to run there in place: a kernel whose input and output
    are one array loses its vector loop (LLVM's overlap check), and with it the
    order of summation that its bound assumes."""
    row_bytes = max(1, rows.n * rows.compute_dtype.itemsize)
    block = max(1, min(rows.count, config.TEMPERED_BLOCK_BYTES // row_bytes))
    buffer = rows.empty((block, rows.n))
    for start in range(0, rows.count, block):
        part = slice(start, min(rows.count, start + block))
        z = buffer[: part.stop - start]
        run(softmax_options.DIVIDED, engine, rows.data[part], z, t)
        losses_of(z, part)


def _gradient_scale(reduction: str, count: int) -> float:
    """The factor of each row's gradient: ``1 / count`` for a mean (0 when no row
    counts: the mean loss is then NaN, its gradient zeros), else 1."""
    return (1.0 / count if count else 0.0) if reduction == "mean" else 1.0


def _reduced(losses: np.ndarray, reduction: str, count: int, dtype):
    """The sum or the mean (over the ``count`` rows that count) of the per-row losses,
    as a NumPy scalar of ``dtype``; NaN for a mean over no row."""
    total = np.sum(losses, dtype=losses.dtype)
    if reduction == "mean":
        total = total / count if count else np.nan
    return np.asarray(total, dtype=dtype)[()]


def lean_class_indices(logits, target, axis, backend: str, ignore_index, op: str):
    """``(rows, engine, labels, ignore, counted)`` for a loss on the lean path
    (:func:`~softmax_numba._api.lean_rows` for ``op``): int64 class indices of the
    logits' shape without the last axis, every one in range or ``ignore_index`` (one
    compiled pass, which counts the rows that count); ``ignore`` is the kernels'
    ``ignore_index`` (-1 for none).  ``None`` otherwise: the general path then checks
    everything and says what is wrong."""
    lean = lean_rows(logits, axis, backend, op)
    if (
        lean is None
        or type(target) is not np.ndarray
        or target.dtype != np.int64
        or target.shape != logits.shape[:-1]
        or not (ignore_index is None or type(ignore_index) is int)
    ):
        return None
    data, engine = lean
    labels = target.reshape(data.shape[0])
    ignore = -1 if ignore_index is None else ignore_index
    counted = counted_class_indices(labels, data.shape[1], ignore_index is not None, ignore)
    if counted < 0:
        return None
    return data, engine, labels, ignore, counted


def _lean_cross_entropy(
    logits, target, axis, reduction, smoothing, ignore_index, return_grad, backend, grad_out
):
    """:func:`cross_entropy` on the lean path (:func:`~softmax_numba._api.lean_rows`):
    logits as it takes them, int64 class indices of their shape without the last axis,
    every index in range (one compiled pass), ``grad_out`` as
    :func:`~softmax_numba._api.lean_out` takes it.  ``None`` otherwise: the general
    path then checks everything and says what is wrong."""
    lean = lean_class_indices(logits, target, axis, backend, ignore_index, "cross_entropy")
    if lean is None:
        return None
    data, engine, labels, ignore, counted = lean
    count = data.shape[0]
    grad = lean_out(grad_out, logits, data.shape) if return_grad else np.empty((0, 0), data.dtype)
    if grad is None:
        return None
    losses = np.empty(count, data.dtype)
    scale = _gradient_scale(reduction, counted)
    getattr(kernels.CROSS_ENTROPY_INDEX, engine)(
        data, labels, ignore, float(smoothing), scale, return_grad, losses, grad
    )
    if reduction == "none":
        loss = losses.reshape(logits.shape[:-1])[()]
    else:
        loss = _reduced(losses, reduction, counted, data.dtype)
    if not return_grad:
        return loss
    return loss, (grad.reshape(logits.shape) if grad_out is None else grad_out)


def _with_options(rows, labels, engine, options, return_grad, grad_out, want_lse, want_entropy):
    """:func:`cross_entropy` with the Liger-Kernel options: the chunked sweep
    (:mod:`softmax_numba._chunked`, or :mod:`softmax_numba._chunked_probability` when
    ``labels`` are probabilities, ``(count, n)``) with the whole row as one chunk, on
    the gradient's buffer (or on blocks of copied rows when a cap must not touch the
    input)."""
    if engine == "numpy":
        loss, grad, lse, entropy = reference.cross_entropy_options(
            rows.data, labels, **_option_arguments(options)
        )
        state = None
    else:
        rows_of_state = ChunkedRows if labels.ndim == 1 else ChunkedProbabilityRows
        state = rows_of_state(labels, rows.n, options, rows.compute_dtype, engine, want_entropy)
        everything = slice(None)
        if return_grad:
            grad = rows.new_rows(grad_out)
            if labels.ndim == 2 and np.may_share_memory(grad, labels):
                grad = rows.empty((rows.count, rows.n))  # the target is read after the copy
            if not np.shares_memory(grad, rows.data):
                np.copyto(grad, rows.data)
            state.fold(grad, everything, 0)
            state.gradient_into(grad, everything, 0, state.gradient_coefficients(everything), grad)
        elif options.softcap is None and rows.data.flags.writeable:
            state.fold(rows.data, everything, 0)  # read only: no cap to write
        else:
            block, _ = plan(rows.count, rows.n, rows.compute_dtype.itemsize, rows.n)
            buffer = np.empty((block, rows.n), rows.compute_dtype)
            for start in range(0, rows.count, block):
                part = slice(start, min(rows.count, start + block))
                z = buffer[: part.stop - start]
                np.copyto(z, rows.data[part])
                state.fold(z, part, 0)
        loss = state.reduced(*state.losses())
        lse = state.lse()
        entropy = state.entropy() if want_entropy else None
    if options.reduction == "none":
        loss = rows.restore_reduced(loss)
    else:
        loss = np.asarray(loss, dtype=rows.result_dtype)[()]  # a NumPy scalar
    results = [loss]
    if return_grad:
        results.append(rows.restore(grad, grad_out))
    if want_lse:
        results.append(rows.restore_reduced(np.asarray(lse, rows.compute_dtype)))
    if want_entropy:
        results.append(rows.restore_reduced(np.asarray(entropy, rows.compute_dtype)))
    return results[0] if len(results) == 1 else tuple(results)


def _option_arguments(options: LossOptions) -> dict:
    return {
        "reduction": options.reduction,
        "label_smoothing": options.label_smoothing,
        "ignore_index": options.ignore_index,
        "z_loss": options.z_loss,
        "softcap": options.softcap,
        "class_weights": options.class_weights,
    }


# --------------------------------------------------------------------------- declarations

_PER_ROW = {"reduction": "none", "return_grad": True}
_SMOOTHED = {**_PER_ROW, "label_smoothing": 0.1}

#: This module's ops, for the registry (:mod:`softmax_numba.declaration`).
ENTRIES = (
    Entry(
        "cross_entropy",
        "-",
        cross_entropy,
        reference.cross_entropy,
        ("log", "gradient"),
        _PER_ROW,
        _PER_ROW,
        with_targets,
        bounds=(bounds.LOG_DOMAIN, bounds.with_ref(bounds.shifted_bound(6.0, spreads=2.0))),
        scales=(bounds.relative, bounds.gradient_scale()),
        study=CORE,
    ),
    Entry(
        "cross_entropy",
        "temperature",
        cross_entropy,
        reference.cross_entropy,
        ("log", "gradient"),
        {**_PER_ROW, "temperature": REGISTRY_TEMPERATURE},
        {**_PER_ROW, "temperature": REGISTRY_TEMPERATURE},
        with_targets,
        bounds=(
            bounds.options_bound(bounds.LOG_DOMAIN, 0, "log", temperature=REGISTRY_TEMPERATURE),
            bounds.options_bound(
                bounds.with_ref(bounds.shifted_bound(7.0, spreads=2.0)),
                0,
                "probability",
                temperature=REGISTRY_TEMPERATURE,
            ),
        ),
        scales=(bounds.relative, bounds.gradient_scale(temperature=REGISTRY_TEMPERATURE)),
    ),
    Entry(
        "cross_entropy",
        "smoothed",
        cross_entropy,
        reference.cross_entropy,
        ("log", "gradient"),
        _SMOOTHED,
        _SMOOTHED,
        with_targets,
        bounds=bounds.SOFT_TARGET_LOSS,
        scales=(bounds.relative, bounds.gradient_scale(0.1)),
        study={"offsets"},
    ),
    Entry(
        "cross_entropy",
        "probability",
        cross_entropy,
        reference.cross_entropy,
        ("log", "gradient"),
        _PER_ROW,
        _PER_ROW,
        with_distributions,
        bounds=bounds.SOFT_TARGET_LOSS,
        scales=(bounds.relative, bounds.gradient_scale()),
        study={"offsets"},
    ),
)
