"""cross_entropy: fused log-softmax and negative log-likelihood (public wrapper)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import reference
from softmax_numba._api import Rows, as_array, check_choice, is_device_array, run
from softmax_numba.cpu import losses as kernels

REDUCTIONS = ("mean", "sum", "none")


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
    grad_out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""Cross-entropy of softmax, :math:`\ell = -\sum_j q_j \log\operatorname{softmax}(x)_j`,
    fused with its gradient.

    Per row ``loss = sum_j q_j (lse - x_j)`` with the shifted log-sum-exp, and
    ``d loss / d x = sum(q) softmax(x) - q`` (``softmax(x) - q`` for a distribution
    ``q``), both from one ``(max, sum)`` pass: the logits are read twice and the
    gradient written once.  Conventions follow ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    logits : array_like
        Unnormalized scores (dtypes as in :func:`softmax`), classes along ``axis``.
    target : array_like
        Either integer class indices with the shape of ``logits`` without ``axis``,
        or probabilities (floating) with the shape of ``logits``.
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of rows whose target is not
        ``ignore_index`` (NaN if there is none); ``"none"`` returns one loss per row.
    label_smoothing : float in [0, 1]
        ``q = (1 - eps) q + eps / C`` (Szegedy et al. 2016).
    ignore_index : int, optional
        Class-index targets equal to it give zero loss and gradient.
    return_grad : bool
        Also return ``d loss / d logits`` (scaled as the reduction: ``1/count``
        for ``"mean"``; for ``"none"`` the gradient of each row's own loss).
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
    grad_out : ndarray, optional
        With ``return_grad``: an array of the logits' shape and result dtype to write
        the gradient into (a training loop's buffer, written without the page faults
        of a new array).

    Returns
    -------
    loss : ndarray
        A 0-d array for ``"mean"`` and ``"sum"``, else one value per row.
    grad : ndarray
        Only with ``return_grad``: the gradient, shaped as ``logits`` (``grad_out``
        when given).

    Raises
    ------
    ValueError
        A class index outside ``[0, C)`` (other than ``ignore_index``), a target
        shape that does not match, a bad ``reduction`` or ``label_smoothing``, a
        ``grad_out`` without ``return_grad``.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    if grad_out is not None and not return_grad:
        raise ValueError("cross_entropy(): grad_out= needs return_grad=True")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    rows = Rows(as_array(logits, "cross_entropy"), axis, "cross_entropy")
    if grad_out is not None:
        rows.check_out(grad_out, rows.shape, rows.result_dtype, name="grad_out")
    # Targets are validated on the host (a GPU target is copied: one value per row).
    target = target.copy_to_host() if is_device_array(target) else np.asarray(target)
    engine = rows.engine(backend)
    n_classes = rows.n
    row_shape = rows.moved_shape[:-1]
    if np.issubdtype(target.dtype, np.integer):
        if target.shape != row_shape:
            raise ValueError(
                f"cross_entropy(): class-index target must have shape {row_shape} "
                f"(logits without axis {rows.axis}), got {target.shape}"
            )
        labels = target.reshape(rows.rows).astype(np.int64)
        valid = labels != ignore_index if ignore_index is not None else np.ones(rows.rows, bool)
        bad = valid & ((labels < 0) | (labels >= n_classes))
        if bad.any():
            raise ValueError(
                f"cross_entropy(): class index {labels[bad][0]} is out of range for "
                f"{n_classes} classes (valid: 0..{n_classes - 1}"
                + (f", or ignore_index={ignore_index})" if ignore_index is not None else ")")
            )
        count = int(np.count_nonzero(valid))
        probabilities = None
    elif np.issubdtype(target.dtype, np.floating) or target.dtype.name == "bfloat16":
        if target.shape != rows.shape:
            raise ValueError(
                f"cross_entropy(): probability target must have the logits' shape "
                f"{rows.shape}, got {target.shape}"
            )
        if ignore_index is not None:
            raise ValueError("cross_entropy(): ignore_index applies to class-index targets only")
        probabilities = rows.operand(target, "target")
        count = rows.rows
    else:
        raise TypeError(
            f"cross_entropy(): target must be integer class indices or floating "
            f"probabilities, got dtype {target.dtype}"
        )
    scale = {"mean": 1.0 / count if count else np.nan, "sum": 1.0, "none": 1.0}[reduction]

    if engine == "numpy":
        target_rows = labels if probabilities is None else probabilities
        losses, grad = reference.cross_entropy(
            rows.data,
            target_rows,
            reduction="none",
            label_smoothing=label_smoothing,
            ignore_index=ignore_index,
            return_grad=True,
        )
        grad = grad * grad.dtype.type(scale)
    else:
        losses = rows.new_reduced()
        inputs = () if probabilities is None else (probabilities,)
        grad = (
            rows.new_rows(grad_out, inputs=inputs)
            if return_grad
            else np.empty((0, 0), rows.compute_dtype)
        )
        if probabilities is None:
            run(
                kernels.CROSS_ENTROPY_INDEX,
                engine,
                rows.data,
                labels,
                -1 if ignore_index is None else ignore_index,
                label_smoothing,
                scale,
                return_grad,
                losses,
                grad,
            )
        else:
            run(
                kernels.CROSS_ENTROPY_PROBABILITY,
                engine,
                rows.data,
                probabilities,
                label_smoothing,
                scale,
                return_grad,
                losses,
                grad,
            )

    if reduction == "none":
        loss = rows.restore_reduced(losses)
    else:
        host_losses = losses.copy_to_host() if rows.device else losses
        total = np.sum(host_losses, dtype=rows.compute_dtype)
        value = total / count if reduction == "mean" and count else total
        if reduction == "mean" and not count:
            value = np.nan
        loss = np.asarray(value, dtype=rows.result_dtype)
    if not return_grad:
        return loss
    return loss, rows.restore(grad, grad_out)
