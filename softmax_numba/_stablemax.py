"""StableMax, its log, its cross-entropy and its backward op (public wrappers).

StableMax (Prieto, Barsbey, Mediano & Birdal, ICLR 2025) replaces softmax's ``exp``
by ``s(x) = x + 1`` (``x >= 0``), ``1 / (1 - x)`` (``x < 0``), which grows linearly
rather than exponentially.  The kernels are in :mod:`softmax_numba.cpu.stablemax`;
there is no CUDA kernel, and a GPU array or ``backend="cuda"`` is a
``NotImplementedError`` that says what to pass instead.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import bounds, reference
from softmax_numba._api import is_device_array, lean_map, lean_out, lean_rows, run
from softmax_numba._interop import same_kind_out
from softmax_numba._losses import _gradient_scale, _reduced, lean_class_indices
from softmax_numba._rows import rows_of
from softmax_numba._targets import check_class_indices, check_loss_options
from softmax_numba.cpu import stablemax as kernels
from softmax_numba.declaration import Entry, with_targets


def _host_only(name: str, x, backend: str) -> None:
    """Refuse ``backend="cuda"`` and GPU arrays: StableMax has CPU kernels only."""
    if backend == "cuda" or is_device_array(x):
        raise NotImplementedError(
            f"{name}() has no CUDA kernel: pass a host array (NumPy, or a CPU tensor: "
            "x.cpu()) and backend='auto', 'numpy', 'cpu' or 'parallel'"
        )


def _row_map(name, x, axis, backend, out, kernel_pair):
    _host_only(name, x, backend)
    result = lean_map(name, x, axis, backend, out, kernel_pair)
    if result is not None:
        return result
    rows = rows_of(x, axis, name, multiple=True)
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    run(kernel_pair, engine, rows.data, result)
    return rows.restore(result, out)


@same_kind_out
def stablemax(
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""StableMax along an axis: :math:`p_i = s(x_i) / \sum_j s(x_j)`, with
    :math:`s(x) = x + 1` for :math:`x \ge 0` and :math:`1 / (1 - x)` for :math:`x < 0`.

    Parameters
    ----------
    x : array_like
        Logits: float16, bfloat16, float32 or float64 (integers and bools are
        promoted to float64); float16 and bfloat16 are computed in float32.
    axis : int, tuple of int or None, default -1
        The axis (or axes, together) to normalize along; ``None``: the flattened
        array.
    backend : {"auto", "numpy", "cpu", "parallel"}
        As in :func:`softmax`.  There is no CUDA kernel: ``"cuda"`` and GPU arrays
        raise ``NotImplementedError``.
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into.

    Returns
    -------
    ndarray
        Probabilities with ``x``'s shape, in ``x``'s floating dtype.

    Raises
    ------
    NotImplementedError
        ``backend="cuda"`` or an array on a GPU.

    See Also
    --------
    log_stablemax, stablemax_cross_entropy, stablemax_backward, softmax

    Notes
    -----
    ``s`` is continuous and increasing, with ``s(0) = 1`` and ``s'(0) = 1`` like
    ``exp``, but it grows linearly for large ``x`` and decays like ``1 / |x|`` for
    very negative ``x`` ([1]_).  Unlike softmax, StableMax is not invariant
    to a shift of the logits.  Computed as

    .. math:: p_i = r_i / \sum_j r_j, \qquad r_i = s(x_i) / s(m), \quad m = \max_j x_j,

    with ``r_i = (1 + x_i) / (1 + m)`` (``x_i >= 0``), ``1 / ((1 - x_i)(1 + m))``
    (``x_i < 0 <= m``), ``(1 - m) / (1 - x_i)`` (``m < 0``): every ``r_i`` is in ``(0,
    1]`` and ``1 <= sum_j r_j <= n``, so nothing overflows, whatever the logits
    (``s(m)`` itself, which overflows near the largest float, is never formed).
    Three passes: the max, the ratios and their sum, the scaling.

    Error bound (first order, relative to each ``p_i``, in units of the unit
    roundoff ``u`` of the computing dtype, the rounding model of Higham [2]_):
    ``(10 + sigma(n)) u``: ``4 u`` for ``r_i`` (the rounding of the shared ``1 + m``
    or ``1 - m`` cancels), the sum of ``n`` positive terms (``4 u`` from its terms
    and ``sigma(n)``, as in :func:`softmax`, after [3]_), ``2 u`` for the reciprocal
    and product that scale the row.  No ``spread`` term: ``s`` has no exponential
    to amplify its argument's rounding.  Entries whose exact value is below the
    smallest normal number are not bounded.

    Non-finite input: ``s(+inf) = inf`` and ``s(-inf) = 0``.  A NaN makes its row NaN;
    a row with a ``+inf`` is NaN (``inf / inf``, as :func:`softmax`); a row that is all
    ``-inf`` is NaN (``0 / 0``); ``-inf`` entries otherwise give 0.

    References
    ----------
    .. [1] L. Prieto, M. Barsbey, P. A. M. Mediano and T. Birdal, "Grokking at the
       edge of numerical stability", ICLR 2025 (arXiv:2501.04697).
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.
    .. [3] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import stablemax
    >>> stablemax(np.array([-1.0, 0.0, 1.0]))  # s = 1/2, 1, 2
    array([0.14285714, 0.28571429, 0.57142857])
    >>> stablemax(np.array([1e308, 1e308]))  # the sum of s overflows, the result does not
    array([0.5, 0.5])
    """
    return _row_map("stablemax", x, axis, backend, out, kernels.STABLEMAX)


@same_kind_out
def log_stablemax(
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Log of StableMax along an axis: :math:`\log s(x_i) - \log \sum_j s(x_j)`.

    Parameters
    ----------
    x, axis, backend, out
        As in :func:`stablemax`.

    Returns
    -------
    ndarray
        ``x``'s shape and floating dtype, every entry ``<= 0``.

    Raises
    ------
    NotImplementedError
        ``backend="cuda"`` or an array on a GPU.

    See Also
    --------
    stablemax, stablemax_cross_entropy, log_softmax

    Notes
    -----
    With ``m = x_k = max(x)``, ``r_j = s(x_j) / s(m)`` and ``t = sum_{j != k} r_j``
    (the other maxima count 1 each),

    .. math:: \log p_i = -\bigl(L_i + \operatorname{log1p}(t)\bigr), \qquad
       L_i = -\log r_i \ge 0,

    where ``L_i`` is the logarithm of an exact quantity, never of a rounded ratio:
    ``log1p((m - x_i) / (1 + x_i))`` for ``0 <= x_i``, ``log1p(-x_i) + log1p(m)`` for
    ``x_i < 0 <= m``, ``log1p((m - x_i) / (1 - m))`` for ``m < 0``.  Both terms are
    ``>= 0``, so nothing cancels: ``log(stablemax(x))`` would lose every probability
    below the smallest normal number, and ``log s(x_i) - log sum_j s(x_j)`` would lose
    ``u |log sum_j s(x_j)|`` to cancellation.  Three passes: the max, ``t``, the write.

    Error bound for StableMax [1]_ (first order, relative to each entry, in units of
    ``u``; the rounding model of Higham [2]_, the form of the shifted log-softmax of [3]_):
    ``(7 + sigma(n)) u`` (``sigma(n)`` as in :func:`softmax`): ``L_i`` within ``6 u``,
    ``t`` within ``(4 + sigma(n)) u``, ``log1p``'s condition number ``t / ((1 + t)
    log1p(t)) <= 1``, ``2 u`` for ``log1p``, ``u`` for the sum.  Not bounded: an entry
    whose exact value is below the smallest normal number, and the entries of the
    maximum of a row whose terms ``r_j`` of the other entries fall below the smallest
    normal number but add up to more (logits beyond about ``1e19`` in float32,
    ``1e154`` in float64, on rows of many classes).

    Non-finite input follows :func:`log_softmax`: a NaN makes its row NaN; a row with a
    ``+inf`` gives NaN there and ``-inf`` elsewhere; a row that is all ``-inf`` is NaN;
    ``-inf`` entries otherwise give ``-inf``.

    References
    ----------
    .. [1] L. Prieto, M. Barsbey, P. A. M. Mediano and T. Birdal, "Grokking at the
       edge of numerical stability", ICLR 2025 (arXiv:2501.04697).
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.
    .. [3] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import log_stablemax
    >>> log_stablemax(np.array([-1.0, 0.0, 1.0]))
    array([-1.94591015, -1.25276297, -0.55961579])
    >>> log_stablemax(np.array([0.0, -1e30]))  # the first is -log1p(1e-30), not 0
    array([-1.00000000e-30, -6.90775528e+01])
    """
    return _row_map("log_stablemax", x, axis, backend, out, kernels.LOG_STABLEMAX)


@same_kind_out
def stablemax_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of StableMax:
    :math:`dx = y \odot (dy - \langle y, dy\rangle) / (1 + |x|)`.

    Parameters
    ----------
    y : array_like
        The forward output ``stablemax(x, axis=axis)``.
    dy : array_like
        The upstream gradient, ``y``'s shape.
    x : array_like
        The forward input, ``y``'s shape: unlike softmax's, StableMax's Jacobian
        depends on ``x`` through ``s'(x)``, which ``y`` does not determine (``y`` is
        unchanged by a rescaling of ``s(x)`` that no shift of ``x`` gives).
    axis, backend, out
        As in :func:`stablemax`.

    Returns
    -------
    ndarray
        ``dx``, the shape and floating dtype of ``y``.

    Raises
    ------
    ValueError
        ``dy`` or ``x`` of another shape than ``y``.
    NotImplementedError
        ``backend="cuda"`` or an array on a GPU.

    See Also
    --------
    stablemax, softmax_backward

    Notes
    -----
    With ``S = sum_j s(x_j)``, the Jacobian of StableMax [1]_ is

    .. math:: \frac{\partial y_i}{\partial x_j}
       = \frac{\delta_{ij} s'(x_i) - y_i s'(x_j)}{S},

    not softmax's ``diag(y) - y y^T``.  Since ``s'(x) = 1`` for ``x >= 0`` and
    ``s(x)^2`` for ``x < 0``, ``s'(x_j) / S = y_j / (1 + |x_j|)``, and ``dx_j = sum_i
    dy_i dy_i/dx_j`` is ``y_j (dy_j - sum_i y_i dy_i) / (1 + |x_j|)``, without forming
    the Jacobian (one read of each array, one write).

    Error bound (first order, in units of ``u``; ``sigma(n)`` as in :func:`softmax`):
    ``(6 + sigma(n)) u`` relative to ``|y_j| (|dy_j| + sum_i |y_i dy_i|) / (1 +
    |x_j|)``, not to ``|dx_j|``, which may cancel (the dot product's bound, Higham
    [2]_, Sec. 3.1, with the summation of [3]_, then ``1 + |x_j|`` and the division).

    References
    ----------
    .. [1] L. Prieto, M. Barsbey, P. A. M. Mediano and T. Birdal, "Grokking at the
       edge of numerical stability", ICLR 2025 (arXiv:2501.04697).
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.
    .. [3] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import stablemax, stablemax_backward
    >>> x = np.array([-1.0, 0.0, 1.0])
    >>> y = stablemax(x)
    >>> np.round(stablemax_backward(y, np.array([0.0, 0.0, 1.0]), x), 6)
    array([-0.040816, -0.163265,  0.122449])
    """
    name = "stablemax_backward"
    _host_only(name, y, backend)
    lean = lean_rows(y, axis, backend, name)
    if lean is not None and all(
        type(a) is np.ndarray and a.shape == y.shape and a.dtype == y.dtype and a.flags.c_contiguous
        for a in (dy, x)
    ):
        data, engine = lean
        result = lean_out(out, y, data.shape, inputs=(dy, x))
        if result is not None:
            getattr(kernels.STABLEMAX_BACKWARD, engine)(
                data, dy.reshape(data.shape), x.reshape(data.shape), result
            )
            return result.reshape(y.shape) if out is None else out
    rows = rows_of(y, axis, name, multiple=True)
    operands = []
    for label, a in (("dy", dy), ("x", x)):
        a = np.asarray(a)
        if a.shape != rows.shape:
            raise ValueError(f"{name}(): {label} has shape {a.shape}, y has shape {rows.shape}")
        operand = rows.operand(a, label)
        # a view of the caller's array is read-only: so is a copy, for one signature
        operand.flags.writeable = False
        operands.append(operand)
    engine = rows.engine(backend)
    result = rows.new_rows(out, inputs=tuple(operands))
    run(kernels.STABLEMAX_BACKWARD, engine, rows.data, *operands, result)
    return rows.restore(result, out)


@same_kind_out
def stablemax_cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    /,
    axis: int = -1,
    *,
    reduction: str = "mean",
    ignore_index: int | None = None,
    return_grad: bool = False,
    backend: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""Cross-entropy of StableMax, :math:`\ell = -\log \operatorname{stablemax}(x)_t`,
    fused with its gradient.

    The conventions of :func:`cross_entropy` (PyTorch's), for class-index targets.

    Parameters
    ----------
    logits : array_like
        Unnormalized scores (dtypes as in :func:`stablemax`), classes along ``axis``.
    target : array_like of int
        Class indices, the shape of ``logits`` without ``axis``.
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}
        As in :func:`cross_entropy`: ``"mean"`` divides by the number of rows whose
        target is not ``ignore_index`` (none: the loss is NaN, the gradient zeros).
    ignore_index : int, optional
        Targets equal to it give zero loss and gradient.
    return_grad : bool
        Also return ``d loss / d logits`` (scaled as the reduction).
    backend : {"auto", "numpy", "cpu", "parallel"}
        As in :func:`stablemax`.

    Label smoothing, probability targets and the options of :func:`cross_entropy`
    that run its chunked sweep are not offered.

    Returns
    -------
    loss : ndarray or NumPy scalar
        A NumPy scalar for ``"mean"`` and ``"sum"``, else one value per row.
    grad : ndarray
        Only with ``return_grad``: the gradient, shaped as ``logits``.

    Raises
    ------
    ValueError
        A class index outside ``[0, C)`` (other than ``ignore_index``), a target of
        the wrong shape, a bad ``reduction``.
    TypeError
        A target that is not of an integer dtype.
    NotImplementedError
        ``backend="cuda"`` or an array on a GPU.

    See Also
    --------
    log_stablemax, cross_entropy

    Notes
    -----
    Per row, with ``m``, ``r_j`` and ``t`` as in :func:`log_stablemax`,

    .. math:: \ell = L_t + \operatorname{log1p}(t), \qquad
       \frac{\partial \ell}{\partial x_j} = \frac{p_j - [j = t]}{1 + |x_j|},

    a sum of two non-negative terms and, from ``s'(x) / s(x) = 1 / (1 + |x|)``,
    softmax's ``p - onehot(t)`` divided by ``1 + |x|`` (``p = stablemax(x) = r / (1 +
    t)``).  The gradient reuses the ratios of the loss's pass: two reads of the
    logits and one write.

    Error bounds (first order, per row, in units of ``u``, the rounding model of
    Higham [2]_; ``sigma(n)`` as in :func:`softmax`, after [3]_): the loss ``(7 +
    sigma(n)) u`` relative to the loss (as :func:`log_stablemax`); the gradient ``(16
    + sigma(n)) u`` relative to ``(p_j + [j = t]) / (1 + |x_j|)`` times the
    reduction's scale (the two terms it subtracts).

    As with softmax, the gradient at the target is ``p_t - 1`` rounded: once the other
    terms ``t`` fall below ``u``, ``p_t`` rounds to 1 and that entry is exactly 0
    ("softmax collapse", [1]_); ``t`` falls like ``1 / |x|^2`` here rather than like
    ``exp(-gap)``, which delays it (the study's claim 16 measures by how much).

    References
    ----------
    .. [1] L. Prieto, M. Barsbey, P. A. M. Mediano and T. Birdal, "Grokking at the
       edge of numerical stability", ICLR 2025 (arXiv:2501.04697).
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.
    .. [3] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import stablemax_cross_entropy
    >>> logits = np.array([[2.0, 1.0, -1.0], [0.5, 2.5, 0.3]])
    >>> loss, grad = stablemax_cross_entropy(logits, np.array([0, 1]), return_grad=True)
    >>> round(float(loss), 6)
    0.596961
    >>> np.round(grad, 4)  # (stablemax(x) - onehot(t)) / (1 + |x|) / 2
    array([[-0.0758,  0.0909,  0.0227],
           [ 0.0794, -0.0635,  0.0794]])
    """
    name = "stablemax_cross_entropy"
    check_loss_options(reduction, 0.0)
    _host_only(name, logits, backend)
    lean = _lean(logits, target, axis, reduction, ignore_index, return_grad, backend)
    if lean is not None:
        return lean
    rows = rows_of(logits, axis, name)
    target = np.asarray(target)
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(
            f"{name}(): target must be integer class indices, got dtype {target.dtype} "
            "(probability targets are not offered)"
        )
    row_shape = rows.moved_shape[:-1]
    if target.shape != row_shape:
        raise ValueError(
            f"{name}(): target must have shape {row_shape} (logits without axis "
            f"{rows.axis}), got {target.shape}"
        )
    labels = target.reshape(rows.count).astype(np.int64)
    count = int(np.count_nonzero(check_class_indices(labels, rows.n, ignore_index, name)))
    engine = rows.engine(backend)
    losses = rows.new_reduced()
    grad = rows.new_rows() if return_grad else np.empty((0, 0), rows.compute_dtype)
    ignore = -1 if ignore_index is None else int(ignore_index)
    scale = _gradient_scale(reduction, count)
    run(
        kernels.STABLEMAX_CROSS_ENTROPY,
        engine,
        rows.data,
        labels,
        ignore,
        scale,
        return_grad,
        losses,
        grad,
    )
    if reduction == "none":
        loss = rows.restore_reduced(losses)
    else:
        loss = _reduced(losses, reduction, count, rows.result_dtype)
    return (loss, rows.restore(grad)) if return_grad else loss


def _lean(logits, target, axis, reduction, ignore_index, return_grad, backend):
    """:func:`stablemax_cross_entropy` on the lean path (as ``cross_entropy``'s): int64
    class indices of the logits' shape without the last axis, every one in range;
    ``None`` otherwise (the general path checks and says what is wrong)."""
    found = lean_class_indices(
        logits, target, axis, backend, ignore_index, "stablemax_cross_entropy"
    )
    if found is None:
        return None
    data, engine, labels, ignore, counted = found
    count = data.shape[0]
    grad = np.empty(data.shape if return_grad else (0, 0), data.dtype)
    losses = np.empty(count, data.dtype)
    scale = _gradient_scale(reduction, counted)
    getattr(kernels.STABLEMAX_CROSS_ENTROPY, engine)(
        data, labels, ignore, scale, return_grad, losses, grad
    )
    if reduction == "none":
        loss = losses.reshape(logits.shape[:-1])[()]
    else:
        loss = _reduced(losses, reduction, counted, data.dtype)
    return (loss, grad.reshape(logits.shape)) if return_grad else loss


# --------------------------------------------------------------------------- declarations


def _backward_arguments(x, rng):
    """``(y, dy, x)``: ``y = stablemax(x)`` in ``x``'s dtype (the numpy engine)."""
    y = stablemax(x, backend="numpy")
    return (y, rng.standard_normal(x.shape).astype(x.dtype), x)


_PER_ROW = {"reduction": "none", "return_grad": True}

#: This module's ops have no CUDA kernel (``registry.CPU_ONLY_OPS``).
CPU_ONLY_OPS = ("stablemax", "log_stablemax", "stablemax_cross_entropy", "stablemax_backward")

#: This module's ops, for the registry (:mod:`softmax_numba.declaration`).
ENTRIES = (
    Entry(
        "stablemax",
        "-",
        stablemax,
        reference.stablemax,
        ("probability",),
        bounds=(bounds.STABLEMAX,),
        study={"alternative"},
    ),
    Entry(
        "log_stablemax",
        "-",
        log_stablemax,
        reference.log_stablemax,
        ("log",),
        bounds=(bounds.LOG_STABLEMAX,),
    ),
    Entry(
        "stablemax_cross_entropy",
        "-",
        stablemax_cross_entropy,
        reference.stablemax_cross_entropy,
        ("log", "gradient"),
        _PER_ROW,
        _PER_ROW,
        with_targets,
        bounds=(bounds.LOG_STABLEMAX, bounds.STABLEMAX_GRADIENT),
        scales=(bounds.relative, bounds.stablemax_gradient_scale),
    ),
    Entry(
        "stablemax_backward",
        "-",
        stablemax_backward,
        reference.stablemax_backward,
        ("vjp",),
        arguments=_backward_arguments,
        bytes_factor=4.0,
        bounds=(bounds.STABLEMAX_BACKWARD,),
        scales=(bounds.stablemax_vjp_scale,),
    ),
)
