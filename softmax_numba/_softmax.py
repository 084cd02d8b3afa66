"""softmax, log_softmax, logsumexp and their backward ops (public wrappers)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import reference
from softmax_numba._api import (
    Rows,
    as_array,
    check_choice,
    run,
    small_rows,
    split_chunks,
    streams,
    vjp,
)
from softmax_numba.cpu import softmax as kernels

SOFTMAX_ALGORITHMS = ("auto", "naive", "shifted", "division_free", "online")
#: What ``algorithm="auto"`` runs: the three-pass shifted algorithm keeps the row in
#: cache and evaluates ``exp`` once per entry, which makes it the fastest of the
#: accurate ones on a CPU.
AUTO_SOFTMAX_ALGORITHM = "shifted"


def _masked_rows(rows: Rows, where) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows with masked-out entries set to ``-inf``, and the mask as rows."""
    if where is None:
        return rows.data, None
    if rows.device:
        raise NotImplementedError("where= is not supported for GPU arrays yet")
    mask = rows.operand(where, "where", dtype=bool)
    return np.where(mask, rows.data, -np.inf).astype(rows.compute_dtype, copy=False), mask


def softmax(
    x: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    algorithm: str = "auto",
    where: npt.ArrayLike | None = None,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Softmax along an axis: :math:`p_i = e^{x_i} / \sum_j e^{x_j}`.

    Parameters
    ----------
    x : array_like
        Logits: float16, bfloat16, float32 or float64 (integers and bools are
        promoted to float64).  float16/bfloat16 are computed in float32.
    axis : int or None, default -1
        The axis to normalize along; ``None`` normalizes the flattened array.
        Note that ``scipy.special.softmax`` defaults to ``axis=None``.
    algorithm : {"auto", "naive", "shifted", "division_free", "online"}
        ``"naive"``: ``exp(x_i) / sum exp(x_j)`` with no shift; it overflows on
        purpose (for the study).  ``"shifted"``: ``a = max(x)``,
        ``exp(x_i - a) / sum exp(x_j - a)`` (three passes: max, exp and sum, scale).
        ``"division_free"``: ``exp(x_i - logsumexp(x))``, less accurate for large
        ``|logsumexp(x)|`` (Blanchard, Higham & Higham, IMA J. Numer. Anal. 2021,
        Sec. 3).  ``"online"``: one pass for the running max and sum (Milakov &
        Gimelshein, arXiv:1805.02867, 2018), one pass to write.  ``"auto"`` is
        ``"shifted"``.
    where : array_like of bool, optional
        Entries to include (broadcast to ``x``); excluded entries give 0, a row
        with no included entry gives all zeros (as ``jax.nn.softmax``).
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        ``"auto"`` picks the serial or parallel Numba engine by size.
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into.

    Returns
    -------
    ndarray
        Probabilities with ``x``'s shape, in ``x``'s floating dtype.

    Notes
    -----
    Non-finite input follows scipy: a NaN makes its row NaN; a row with a ``+inf``
    is NaN; a row that is all ``-inf`` is NaN; ``-inf`` entries otherwise give 0.
    The parallel engine splits a single long row across threads and merges the
    partial ``(max, sum)`` states exactly (Milakov & Gimelshein 2018, eq. (4)).
    """
    check_choice("algorithm", algorithm, SOFTMAX_ALGORITHMS)
    if algorithm == "auto":
        algorithm = AUTO_SOFTMAX_ALGORITHM
    if where is None and out is None and (data := small_rows(x, axis, backend)) is not None:
        result = np.empty_like(data)
        kernels.SOFTMAX[algorithm].cpu(data, result)
        return result.reshape(x.shape)
    rows = Rows(as_array(x, "softmax"), axis, "softmax")
    engine = rows.engine(backend)
    data, mask = _masked_rows(rows, where)
    result = rows.new_rows(out)
    chunks = split_chunks(engine, rows.rows, rows.n)
    if engine == "numpy":
        result[...] = reference.softmax(data, algorithm=algorithm)
    elif chunks > 1 and algorithm in ("shifted", "online"):
        for i in range(rows.rows):
            kernels.split_softmax_row(data[i], result[i], chunks)
    else:
        run(kernels.SOFTMAX[algorithm], engine, data, result)
    if mask is not None:
        result[~mask] = 0
    return rows.restore(result, out)


def log_softmax(
    x: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    where: npt.ArrayLike | None = None,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Log of softmax, computed as :math:`x_i - \operatorname{logsumexp}(x)`.

    Never ``log(softmax(x))``, which loses every probability below the smallest
    normal number.  ``logsumexp`` is the shifted form ``a + log1p(sum_{i != k}
    exp(x_i - a))`` of Blanchard, Higham & Higham (2021), Algorithm 2.2.

    Parameters
    ----------
    x, axis, where, backend, out
        As in :func:`softmax`.  Excluded entries (``where=False``) give ``-inf``.

    Returns
    -------
    ndarray
        ``x``'s shape and floating dtype.  Non-finite input follows
        ``scipy.special.log_softmax``: NaN poisons its row, a row with ``+inf``
        gives NaN there and ``-inf`` elsewhere, a row that is all ``-inf`` is NaN.
    """
    if where is None and out is None and (data := small_rows(x, axis, backend)) is not None:
        result = np.empty_like(data)
        kernels.LOG_SOFTMAX.cpu(data, result, False)
        return result.reshape(x.shape)
    rows = Rows(as_array(x, "log_softmax"), axis, "log_softmax")
    engine = rows.engine(backend)
    data, mask = _masked_rows(rows, where)
    result = rows.new_rows(out)
    chunks = split_chunks(engine, rows.rows, rows.n)
    if engine == "numpy":
        result[...] = reference.log_softmax(data)
    elif chunks > 1:
        for i in range(rows.rows):
            kernels.split_log_softmax_row(data[i], result[i], chunks)
    else:
        run(kernels.LOG_SOFTMAX, engine, data, result, cpu_extra=(streams(engine, result.nbytes),))
    if mask is not None:
        result[~mask] = -np.inf
    return rows.restore(result, out)


def logsumexp(
    x: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    b: npt.ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    backend: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r""":math:`\log \sum_i b_i e^{x_i}` along an axis, as ``scipy.special.logsumexp``.

    Without weights: the shifted algorithm ``a + log1p(sum_{i != k} exp(x_i - a))``,
    ``a = x_k = max(x)`` (Blanchard, Higham & Higham 2021, Algorithm 2.2), whose
    relative error is bounded by about ``(n + 1 + |a|/|lse|) u`` -- two reads.
    With weights ``b`` (broadcast to ``x``): ``a + log|sum_i b_i exp(x_i - a)|``
    with ``a`` the maximum over entries of nonzero weight.

    Parameters
    ----------
    x : array_like
        Input (dtypes as in :func:`softmax`).
    axis : int or None, default -1
        Axis to reduce; ``None`` reduces all.  scipy's default is ``None``.
    b : array_like, optional
        Weights, possibly negative.
    keepdims : bool
        Keep the reduced axis with length 1.
    return_sign : bool
        Also return the sign of the sum; otherwise a negative sum gives NaN.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}

    Returns
    -------
    ndarray or (ndarray, ndarray)
        Non-finite input follows scipy: NaN gives NaN, a ``+inf`` gives ``+inf``,
        an empty or all ``-inf`` axis gives ``-inf``.
    """
    if b is None and not keepdims and not return_sign:
        if (data := small_rows(x, axis, backend)) is not None:
            result = np.empty(data.shape[0], dtype=data.dtype)
            kernels.LOGSUMEXP.cpu(data, result)
            return result.reshape(x.shape[:-1])[()]
    rows = Rows(as_array(x, "logsumexp"), axis, "logsumexp")
    engine = rows.engine(backend)
    result = rows.new_reduced(keepdims=keepdims)
    sign = None
    if rows.device and (b is not None or return_sign):
        raise NotImplementedError("b= and return_sign= are not supported for GPU arrays yet")
    if b is not None:
        weights = rows.operand(b, "b")
        sign = np.empty_like(result)
        if engine == "numpy":
            result[...], sign[...] = reference.logsumexp(rows.data, b=weights, return_sign=True)
        else:
            run(kernels.LOGSUMEXP_WEIGHTED, engine, rows.data, weights, result, sign)
        if not return_sign:
            result[sign < 0] = np.nan
    elif engine == "numpy":
        result[...] = reference.logsumexp(rows.data)
    elif (chunks := split_chunks(engine, rows.rows, rows.n)) > 1:
        for i in range(rows.rows):
            result[i] = kernels.split_logsumexp_row(rows.data[i], chunks)
    else:
        run(kernels.LOGSUMEXP, engine, rows.data, result)
    lse = rows.restore_reduced(result, keepdims=keepdims)
    if not return_sign:
        return lse
    if sign is None:
        sign = np.where(np.isnan(result), np.nan, np.where(result == -np.inf, 0.0, 1.0))
    return lse, rows.restore_reduced(sign.astype(result.dtype), keepdims=keepdims)


def softmax_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of softmax: :math:`dx = y \odot (dy - \langle y, dy\rangle)`.

    The Jacobian of softmax is ``diag(y) - y y^T``; this applies its transpose to
    ``dy`` without forming it (two reads of ``y`` and ``dy``, one write).

    Parameters
    ----------
    y : array_like
        The forward output ``softmax(x, axis=axis)``.
    dy : array_like
        The upstream gradient, same shape as ``y``.
    axis, backend, out
        As in :func:`softmax`.
    """
    return vjp(
        "softmax_backward",
        y,
        dy,
        axis,
        backend,
        out,
        kernels.SOFTMAX_BACKWARD,
        reference.softmax_backward,
    )


def log_softmax_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of log-softmax: :math:`dx = dy - e^{y} \sum_j dy_j`.

    Parameters
    ----------
    y : array_like
        The forward output ``log_softmax(x, axis=axis)``.
    dy : array_like
        The upstream gradient, same shape as ``y``.
    axis, backend, out
        As in :func:`softmax`.
    """
    return vjp(
        "log_softmax_backward",
        y,
        dy,
        axis,
        backend,
        out,
        kernels.LOG_SOFTMAX_BACKWARD,
        reference.log_softmax_backward,
    )
