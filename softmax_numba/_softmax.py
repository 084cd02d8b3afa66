"""softmax, log_softmax, logsumexp and their backward ops (public wrappers)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import bounds, reference
from softmax_numba._api import (
    check_choice,
    dtypes_for,
    is_device_array,
    lean_map,
    lean_rows,
    run,
    split_chunks,
    streams,
)
from softmax_numba._backward import vjp
from softmax_numba._interop import same_kind_out
from softmax_numba._rows import rows_of
from softmax_numba._softmax_options import masked_rows, options_map, sink_gradient
from softmax_numba.cpu import softmax as kernels
from softmax_numba.cpu import softmax_options
from softmax_numba.declaration import CORE, Entry, backward_of

SOFTMAX_ALGORITHMS = ("auto", "naive", "shifted", "division_free", "online")
#: What ``algorithm="auto"`` runs: the three-pass shifted algorithm keeps the row in
#: cache and evaluates ``exp`` once per entry, which makes it the fastest of the
#: accurate ones on a CPU.
AUTO_SOFTMAX_ALGORITHM = "shifted"


def _broadcast_with_weights(x: np.ndarray, b) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` broadcast against each other, in the floating type of both
    (integers and bools as float64), as ``scipy.special.logsumexp``."""
    b = np.asarray(b)
    dtypes_for(x.dtype, "logsumexp")
    dtypes_for(b.dtype, "logsumexp")
    dtypes = [d if d.kind == "f" else np.dtype(np.float64) for d in (x.dtype, b.dtype)]
    try:
        dtype = np.result_type(*dtypes)
    except TypeError:  # bfloat16 (ml_dtypes) beside a NumPy float: the wider one
        dtype = max(dtypes, key=lambda d: d.itemsize)
    try:
        shape = np.broadcast_shapes(x.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"logsumexp(): b has shape {b.shape}, which does not broadcast with a's shape {x.shape}"
        ) from None
    return np.broadcast_to(x, shape).astype(dtype, copy=False), np.broadcast_to(b, shape)


def _row_map(name, x, axis, where, backend, out, kernel, split_row, excluded, streaming=False):
    """The path of an op that maps each row to a row from the row's state (softmax,
    log_softmax): the small-array fast path, the rows, the ``where`` mask, the
    split-row path of the parallel engine for short stacks of long rows
    (``split_row(row, out_row, pieces)``, ``None`` for algorithms never split), else
    ``kernel`` on the chosen engine (``streaming``: the CPU kernels take whether to
    write with streaming stores); excluded entries are set to ``excluded``."""
    if where is None:
        result = lean_map(name, x, axis, backend, out, kernel, streaming=streaming)
        if result is not None:
            return result
    rows = rows_of(x, axis, name, multiple=True)
    engine = rows.engine(backend)
    data, mask = masked_rows(rows, where)
    result = rows.new_rows(out)
    chunks = split_chunks(engine, rows.count, rows.n)
    if chunks > 1 and split_row is not None:
        for i in range(rows.count):
            split_row(data[i], result[i], chunks)
    else:
        extra = (streams(engine, result.nbytes),) if streaming else ()
        run(kernel, engine, data, result, cpu_extra=extra)
    if mask is not None:
        rows.fill_where_not(result, mask, excluded)
    return rows.restore(result, out)


@same_kind_out
def softmax(
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    algorithm: str = "auto",
    temperature: float | None = None,
    sink: npt.ArrayLike | None = None,
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
    axis : int, tuple of int or None, default -1
        The axis to normalize along; a tuple normalizes over those axes together
        (as scipy does); ``None`` normalizes the flattened array.
        Note that ``scipy.special.softmax`` defaults to ``axis=None``.
    algorithm : {"auto", "naive", "shifted", "division_free", "online"}
        ``"naive"``: ``exp(x_i) / sum exp(x_j)`` with no shift; it overflows on
        purpose (for the study).  ``"shifted"``: ``m = max(x)``,
        ``exp(x_i - m) / sum exp(x_j - m)`` (three passes: max, exp and sum, scale).
        ``"division_free"``: ``exp(x_i - logsumexp(x))``, less accurate for large
        ``|logsumexp(x)|`` ([1]_, Sec. 3).  ``"online"``: one pass for the running
        max and sum ([2]_), one pass to write.  ``"auto"`` is ``"shifted"``.
    temperature : float > 0, optional
        Softmax of ``x / temperature``, each quotient rounded as NumPy's ``x / T``
        in the compute dtype (an overflow included), the division done in the
        kernel's max pass: no extra pass, no array of ``x``'s size.
    sink : float or array_like, optional
        An attention sink ([3]_, [4]_): a logit ``c`` added to the denominator only,
        :math:`p_i = e^{x_i} / (e^{c} + \sum_j e^{x_j})`, so that a row may give
        little weight to all its entries (``sink=0`` is the "off-by-one" softmax
        ``softmax1``).  A number, or one value per row (an array that broadcasts
        to ``x``'s shape without ``axis``).  Non-finite values follow softmax of
        the row ``[x, c]``: ``c = -inf`` is no sink, a ``+inf`` or NaN sink makes
        the row NaN, and an all ``-inf`` row beside a finite sink is all zeros.
        With ``temperature``, the sink is compared with ``x / temperature``.
        ``temperature`` and ``sink`` run the shifted algorithm (never split over
        threads); ``"naive"`` and ``"division_free"`` refuse them.
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

    See Also
    --------
    log_softmax, logsumexp, softmax_backward

    Notes
    -----
    The shifted and online algorithms compute, with ``m = x_k = max(x)`` and
    ``s = sum_{j != k} exp(x_j - m)``,

    .. math:: p_i = e^{x_i - m} / (1 + s),

    so no ``exp`` overflows and the largest entry adds exactly 1 to the
    denominator.  What runs on long rows: with ``backend="parallel"``, fewer rows
    than threads and rows of at least ``config.SPLIT_ROW_MIN_LENGTH`` entries, both
    ``"shifted"`` and ``"online"`` cut each row into pieces, take each piece's
    ``(m, s)`` in one pass (the online algorithm, blocks merged in order) and merge
    the pieces' states exactly ([2]_, eq. (4)): the same formula and bound, in the
    online algorithm's summation order.  ``"naive"`` and ``"division_free"`` are
    never split.  With ``backend="cuda"``, ``"shifted"`` and ``"online"`` run one
    kernel: each thread's online state, merged across the block (or, for rows of at
    most ``config.CUDA_WARP_ROW_MAX_LENGTH``, the warp), then one pass to write.

    Error bound, after the analysis of Blanchard, Higham & Higham [1]_ (first
    order, componentwise: relative to each ``p_i``, in units of the unit roundoff
    ``u`` of the computing dtype, ``2**-24`` for float32 and ``2**-53`` for
    float64):

    - ``"shifted"``, ``"online"``: ``(4 + sigma(n) + 2 spread) u``;
    - ``"division_free"``: ``(|lse| + spread + sigma(n) + 4) u`` with
      ``lse = logsumexp(x)``: it grows with ``|lse|`` ([1]_, Thm 3.3);
    - ``"naive"``: none; ``exp(x_i)`` overflows for ``x_i > 88.7`` in float32
      (709.8 in float64) and underflows for a row of large negative entries,
      and the row is then NaN.

    Here ``sigma(n)`` bounds the relative error of a sum of ``n`` positive terms
    (:func:`softmax_numba.bounds.summation_bound`): the CPU engines sum blocks of
    ``B = config.SUM_BLOCK`` (2048) terms in vector lanes and add the blocks' sums
    with a compensated addition, so ``sigma(n) = b/8 + log2(b) + 4`` with ``b =
    min(n, B)``, plus 2 beyond one block, stops growing at ``n = B`` (273); the
    CUDA engine's is ``n/8 + log2(n) + 4``.  And
    ``spread = min(max_j |x_j - m|, T)`` with ``T = 104`` for float32 and ``746``
    for float64, where ``exp`` underflows.  Entries whose exact value is below the
    smallest normal number are not bounded.

    With a sink ``c``: the bound of the row ``[x, c]`` (``n + 1`` entries, ``c`` in
    the spread), plus ``4 u`` for adding ``e^{c - m}`` apart (its sum, and for ``c >
    m`` the rescaling by ``e^{m - c}``).  With a temperature, each ``y_i = x_i /
    T`` is rounded (and so is ``T`` in the compute dtype): relative to softmax of
    the exact ``x / T``, that adds ``4 max_j |y_j| u`` (the exponents' errors
    ``2 u |y_i|``; [1]_'s analysis of softmax of ``y``, perturbed), and the bound
    of ``y`` replaces that of ``x``.

    Non-finite input follows scipy: a NaN makes its row NaN; a row with a ``+inf``
    is NaN; a row that is all ``-inf`` is NaN; ``-inf`` entries otherwise give 0.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.
    .. [3] E. Miller, "Attention is off by one", 2023
       (https://www.evanmiller.org/attention-is-off-by-one.html).
    .. [4] G. Xiao, Y. Tian, B. Chen, S. Han and M. Lewis, "Efficient streaming
       language models with attention sinks", ICLR 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import softmax
    >>> softmax(np.array([1.0, 2.0, 3.0]))
    array([0.09003057, 0.24472847, 0.66524096])
    >>> softmax(np.array([1.0, 2.0, 3.0]), temperature=2.0)  # softmax(x / 2)
    array([0.18632372, 0.30719589, 0.50648039])
    >>> softmax(np.array([0.0, 0.0]), sink=0.0)  # e^0 / (e^0 + e^0 + e^0)
    array([0.33333333, 0.33333333])
    >>> softmax(np.array([1000.0, 1001.0]))  # no overflow
    array([0.26894142, 0.73105858])
    >>> softmax(np.array([1.0, 2.0, 3.0]), where=np.array([True, False, True]))
    array([0.11920292, 0.        , 0.88079708])
    """
    check_choice("algorithm", algorithm, SOFTMAX_ALGORITHMS)
    if algorithm == "auto":
        algorithm = AUTO_SOFTMAX_ALGORITHM
    if temperature is not None or sink is not None:
        if algorithm not in ("shifted", "online"):
            raise ValueError(
                f"softmax(): temperature= and sink= run the shifted algorithm, "
                f"not algorithm={algorithm!r}"
            )
        return options_map(
            "softmax", x, axis, where, backend, out, softmax_options.SOFTMAX_OPTIONS,
            temperature, sink, 0,
        )  # fmt: skip
    split = kernels.split_softmax_row if algorithm in ("shifted", "online") else None
    return _row_map("softmax", x, axis, where, backend, out, kernels.SOFTMAX[algorithm], split, 0)


@same_kind_out
def log_softmax(
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    temperature: float | None = None,
    sink: npt.ArrayLike | None = None,
    where: npt.ArrayLike | None = None,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Log of softmax along an axis: :math:`x_i - \log \sum_j e^{x_j}`.

    Parameters
    ----------
    x, axis, temperature, sink, where, backend, out
        As in :func:`softmax`: :math:`\log p_i = y_i - \log(e^{c} + \sum_j e^{y_j})`
        with ``y = x / temperature`` and the sink ``c`` (a ``+inf`` sink gives
        ``-inf``, as log-softmax of the row ``[x, +inf]``).  Excluded entries
        (``where=False``) give ``-inf``.

    Returns
    -------
    ndarray
        ``x``'s shape and floating dtype.  Non-finite input follows
        ``scipy.special.log_softmax``: NaN poisons its row, a row with ``+inf``
        gives NaN there and ``-inf`` elsewhere, a row that is all ``-inf`` is NaN.

    See Also
    --------
    softmax, logsumexp, log_softmax_backward

    Notes
    -----
    Computed as

    .. math:: \log p_i = (x_i - m) - \operatorname{log1p}(s),

    ``m = x_k = max(x)``, ``s = sum_{j != k} exp(x_j - m)``: the shifted
    log-sum-exp of Blanchard, Higham & Higham [1]_ (Algorithm 2.2) with ``m`` kept
    apart, so both terms are non-positive and nothing cancels.  Never
    ``log(softmax(x))``, which loses every probability below the smallest normal
    number, nor ``x_i - logsumexp(x)``, which loses ``u |logsumexp(x)|``.

    Error bound, after the analysis of [1]_ (first order, relative to each entry,
    whatever the offset of ``x``): ``(6 + sigma(n) + spread) u``, with ``u``,
    ``sigma(n)`` and ``spread`` as in :func:`softmax`.  With a sink ``c``: that of
    the row ``[x, c]``, plus ``3 u`` for adding it to the state.  With a
    temperature: that of ``y = x / T``, plus ``6 max_j |y_j| u`` relative to the
    exact ``x / T`` (the exponents' errors ``2 u |y_i|``, over ``|log p_i| >= log
    2`` wherever they do not cancel).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import log_softmax
    >>> log_softmax(np.array([1.0, 2.0, 3.0]))
    array([-2.40760596, -1.40760596, -0.40760596])
    >>> log_softmax(np.array([1e4, 1e4 + 1.0]))  # no cancellation of 1e4
    array([-1.31326169, -0.31326169])
    >>> log_softmax(np.array([-1e4, -1e4]), sink=0.0)  # the sink takes nearly all
    array([-10000., -10000.])
    """
    if temperature is not None or sink is not None:
        return options_map(
            "log_softmax", x, axis, where, backend, out, softmax_options.LOG_SOFTMAX_OPTIONS,
            temperature, sink, -np.inf,
        )  # fmt: skip
    return _row_map(
        "log_softmax",
        x,
        axis,
        where,
        backend,
        out,
        kernels.LOG_SOFTMAX,
        kernels.split_log_softmax_row,
        -np.inf,
        streaming=True,
    )


@same_kind_out
def logsumexp(
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    b: npt.ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    backend: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r""":math:`\log \sum_i b_i e^{x_i}` along an axis, as ``scipy.special.logsumexp``.

    Parameters
    ----------
    x : array_like
        Input (dtypes as in :func:`softmax`).
    axis : int, tuple of int or None, default -1
        Axis to reduce (a tuple: those axes together); ``None`` reduces all.
        scipy's default is ``None``.
    b : array_like, optional
        Weights, possibly negative, broadcast against ``x``.
    keepdims : bool
        Keep the reduced axis with length 1.
    return_sign : bool
        Also return the sign of the sum; otherwise a negative sum gives NaN.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`softmax`.

    Returns
    -------
    lse : ndarray
        ``x``'s shape without ``axis`` (with it, of length 1, for ``keepdims``).
        Non-finite input follows scipy: NaN gives NaN, a ``+inf`` gives ``+inf``,
        an empty or all ``-inf`` axis gives ``-inf``.
    sign : ndarray
        Only with ``return_sign``: the sign of the sum (0 for an empty sum).

    See Also
    --------
    softmax, log_softmax

    Notes
    -----
    Without weights, the shifted algorithm of Blanchard, Higham & Higham [1]_
    (Algorithm 2.2), two reads:

    .. math:: \mathrm{lse} = m + \operatorname{log1p}(s), \quad m = x_k = \max x,
       \quad s = \sum_{i \ne k} e^{x_i - m}.

    Error bound (first order, relative to the result, in the form of [1]_,
    Thm 2.2; ``u``, ``sigma(n)`` and ``spread`` as in :func:`softmax`):
    ``u + (5 + sigma(n) + spread) u max(1, log1p(s) / |lse|)``.  The factor is the
    cancellation of ``m < 0`` against ``log1p(s)``.

    With weights ``b``: ``a + log|sum_i b_i exp(x_i - a)|`` with ``a`` the maximum
    over the entries of nonzero weight.  There is no componentwise bound: weights
    of both signs may cancel.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import logsumexp
    >>> round(float(logsumexp(np.array([1.0, 2.0, 3.0]))), 6)
    3.407606
    >>> lse, sign = logsumexp(np.array([0.0, 1.0]), b=np.array([1.0, -1.0]), return_sign=True)
    >>> round(float(lse), 6), float(sign)  # log(e - 1), negative sum
    (0.541325, -1.0)
    """
    if (
        b is None
        and not return_sign
        and (lean := lean_rows(x, axis, backend, "logsumexp")) is not None
    ):
        data, engine = lean
        result = np.empty(data.shape[0], dtype=data.dtype)
        getattr(kernels.LOGSUMEXP, engine)(data, result)
        return result.reshape(x.shape[:-1] + (1,) * keepdims)[()]
    if b is not None and not is_device_array(x):
        x, b = _broadcast_with_weights(np.asarray(x), b)
    rows = rows_of(x, axis, "logsumexp", multiple=True)
    engine = rows.engine(backend)
    result = rows.new_reduced(keepdims=keepdims)
    sign = None
    if b is not None:
        weights = rows.operand(b, "b")
        sign = rows.empty(rows.count)
        run(kernels.LOGSUMEXP_WEIGHTED, engine, rows.data, weights, result, sign)
        if not return_sign:
            rows.nan_where_negative(result, sign)
    elif (chunks := split_chunks(engine, rows.count, rows.n)) > 1:
        for i in range(rows.count):
            result[i] = kernels.split_logsumexp_row(rows.data[i], chunks)
    else:
        run(kernels.LOGSUMEXP, engine, rows.data, result)
    lse = rows.restore_reduced(result, keepdims=keepdims)
    if not return_sign:
        return lse
    if sign is None:
        sign = rows.sign_of_logsumexp(result)
    return lse, rows.restore_reduced(sign, keepdims=keepdims)


@same_kind_out
def softmax_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    return_sink_grad: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""Vector-Jacobian product of softmax: :math:`dx = y \odot (dy - \langle y, dy\rangle)`.

    Parameters
    ----------
    y : array_like
        The forward output ``softmax(x, axis=axis)``, with or without a sink.
    dy : array_like
        The upstream gradient, same shape as ``y``.
    return_sink_grad : bool
        Also return the gradient with respect to a sink ``c`` of the forward call,
        ``dc = -sum_j dx_j`` (shifting every ``x_j`` and ``c`` alike changes
        nothing); its error is at most ``sigma(n) u`` relative to the sum of the
        scales of the ``dx_j`` below, ``dx`` itself being within its bound.
        NumPy arrays only.
    axis, backend, out
        As in :func:`softmax`.

    Returns
    -------
    dx : ndarray
        The shape and floating dtype of ``y``; with a sink the formula is the same.
        With a temperature ``T`` the gradient with respect to ``x`` is ``dx / T``
        (and ``dc`` is unchanged).
    dc : ndarray
        Only with ``return_sink_grad``: one value per row (``y``'s shape without
        ``axis``).

    Notes
    -----
    The Jacobian of softmax is ``diag(y) - y y^T``; ``dx_i = y_i (dy_i - sum_j y_j
    dy_j)`` applies its transpose to ``dy`` without forming it (two reads of ``y``
    and ``dy``, one write).

    Error bound (first order, in units of the unit roundoff ``u``; ``sigma(n)`` as
    in :func:`softmax`): ``(3 + sigma(n)) u`` relative to ``|y_i| (|dy_i| + sum_j
    |y_j dy_j|)``, not to ``|dx_i|``, which may cancel (the dot product's bound,
    Higham [2]_, Sec. 3.1, with the summation of [1]_).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import softmax, softmax_backward
    >>> y = softmax(np.array([1.0, 2.0, 3.0]))
    >>> np.round(softmax_backward(y, np.array([1.0, 0.0, 0.0])), 6)
    array([ 0.081925, -0.022033, -0.059892])
    """
    dx = vjp("softmax_backward", y, dy, axis, backend, out, kernels.SOFTMAX_BACKWARD, multiple=True)
    return (dx, sink_gradient("softmax_backward", dx, axis)) if return_sink_grad else dx


@same_kind_out
def log_softmax_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    return_sink_grad: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""Vector-Jacobian product of log-softmax: :math:`dx = dy - e^{y} \sum_j dy_j`.

    Parameters
    ----------
    y : array_like
        The forward output ``log_softmax(x, axis=axis)``, with or without a sink.
    dy : array_like
        The upstream gradient, same shape as ``y``.
    return_sink_grad : bool
        Also return the gradient with respect to a sink ``c`` of the forward call,
        ``dc = -sum_j dx_j`` (shifting every ``x_j`` and ``c`` alike changes
        nothing); its error is at most ``sigma(n) u`` relative to the sum of the
        scales of the ``dx_j`` below, ``dx`` itself being within its bound.
        NumPy arrays only.
    axis, backend, out
        As in :func:`softmax`.

    Returns
    -------
    dx : ndarray
        The shape and floating dtype of ``y``; with a sink the formula is the same.
        With a temperature ``T`` the gradient with respect to ``x`` is ``dx / T``
        (and ``dc`` is unchanged).
    dc : ndarray
        Only with ``return_sink_grad``: one value per row (``y``'s shape without
        ``axis``).

    Notes
    -----
    The Jacobian of log-softmax is ``I - 1 softmax(x)^T``, so ``dx_i = dy_i -
    exp(y_i) sum_j dy_j`` (two reads of ``y`` and ``dy``, one write).

    Error bound (first order, in units of the unit roundoff ``u``; ``sigma(n)`` as
    in :func:`softmax`): ``(4 + sigma(n)) u`` relative to ``|dy_i| + exp(y_i)
    sum_j |dy_j|``, the terms it subtracts (Higham [2]_, with the summation of
    [1]_).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import log_softmax, log_softmax_backward
    >>> y = log_softmax(np.array([1.0, 2.0, 3.0]))
    >>> np.round(log_softmax_backward(y, np.array([1.0, 0.0, 0.0])), 6)
    array([ 0.909969, -0.244728, -0.665241])
    """
    dx = vjp(
        "log_softmax_backward",
        y,
        dy,
        axis,
        backend,
        out,
        kernels.LOG_SOFTMAX_BACKWARD,
        multiple=True,
    )
    return (dx, sink_gradient("log_softmax_backward", dx, axis)) if return_sink_grad else dx


# --------------------------------------------------------------------------- declarations

#: Every softmax algorithm is judged against the exact value, computed by the
#: shifted formula in higher precision (the naive one would overflow there too).
_SOFTMAX_BOUNDS = {
    "naive": bounds.SOFTMAX,
    "shifted": bounds.SOFTMAX,
    "division_free": bounds.division_free_bound,
    "online": bounds.SOFTMAX,
}

#: The temperature of the registry's ``softmax[options]``, ``log_softmax[options]``
#: and ``cross_entropy[temperature]``: not a power of two, so that ``x / T`` rounds,
#: and above 1, so that ``x / T`` never overflows where ``x`` does not (below 1 the
#: largest floats overflow, as they do in ``softmax(x / T)``;
#: ``tests/test_softmax_options.py``).
REGISTRY_TEMPERATURE = 1.7
#: The options of ``softmax[options]`` and ``log_softmax[options]``: that
#: temperature and the off-by-one softmax's sink, both at once (the sink alone, and
#: per row, in ``tests/test_softmax_options.py``).
REGISTRY_OPTIONS = {"temperature": REGISTRY_TEMPERATURE, "sink": 0.0}

#: This module's ops, for the registry (:mod:`softmax_numba.declaration`).
ENTRIES = (
    *(
        Entry(
            "softmax",
            alg,
            softmax,
            reference.softmax,
            ("probability",),
            {"algorithm": alg},
            {"algorithm": "shifted"},
            bounds=(bound,),
            study=CORE if alg == AUTO_SOFTMAX_ALGORITHM else {"family"},
        )
        for alg, bound in _SOFTMAX_BOUNDS.items()
    ),
    Entry(
        "log_softmax",
        "-",
        log_softmax,
        reference.log_softmax,
        ("log",),
        bounds=(bounds.LOG_DOMAIN,),
        study=CORE,
    ),
    *(
        Entry(
            op,
            "options",
            function,
            oracle,
            (kind,),
            REGISTRY_OPTIONS,
            REGISTRY_OPTIONS,
            bounds=(bounds.options_bound(base, extra, kind, **REGISTRY_OPTIONS),),
        )
        for op, function, oracle, kind, base, extra in (
            ("softmax", softmax, reference.softmax, "probability", bounds.SOFTMAX, 4),
            ("log_softmax", log_softmax, reference.log_softmax, "log", bounds.LOG_DOMAIN, 3),
        )
    ),
    Entry(
        "logsumexp",
        "-",
        logsumexp,
        reference.logsumexp,
        ("log",),
        bytes_factor=1.0,
        bounds=(bounds.logsumexp_bound,),
        study=CORE,
    ),
    Entry(
        "softmax_backward",
        "-",
        softmax_backward,
        reference.softmax_backward,
        ("vjp",),
        arguments=backward_of(softmax),
        bytes_factor=3.0,
        bounds=(bounds.sum_bound(3),),
        scales=(bounds.softmax_vjp_scale,),
    ),
    Entry(
        "log_softmax_backward",
        "-",
        log_softmax_backward,
        reference.log_softmax_backward,
        ("vjp",),
        arguments=backward_of(log_softmax),
        bytes_factor=3.0,
        bounds=(bounds.sum_bound(4),),
        scales=(bounds.log_softmax_vjp_scale,),
    ),
)
