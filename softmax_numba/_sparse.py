"""sparsemax and alpha-entmax with their backward ops (public wrappers)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import bounds, reference
from softmax_numba._api import check_choice, lean_map, lean_out, lean_rows, run
from softmax_numba._backward import vjp
from softmax_numba._interop import same_kind_out
from softmax_numba._rows import rows_of
from softmax_numba.cpu import sparse as kernels
from softmax_numba.declaration import Entry, backward_of

SPARSEMAX_ALGORITHMS = ("auto", "pivot", "sort")


def _lean_count(x) -> int:
    """The number of rows of ``x`` along its last axis (the support sizes' buffer of
    the lean path; any number will do when the lean path is not taken)."""
    return x.size // x.shape[-1] if type(x) is np.ndarray and x.ndim and x.shape[-1] else 0


@same_kind_out
def sparsemax(
    x: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    algorithm: str = "auto",
    return_support_size: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""sparsemax: the Euclidean projection of ``x`` onto the probability simplex.

    Parameters
    ----------
    x : array_like
        Input (dtypes as in :func:`softmax`).
    axis : int or None, default -1
        The axis to project along; ``None`` projects the flattened array.
    algorithm : {"auto", "pivot", "sort"}
        ``"sort"``: sort the row, Martins & Astudillo [1]_ Algorithm 1,
        O(n log n).  ``"pivot"``: randomized-pivot selection of the threshold,
        Duchi et al. [2]_ Fig. 2: expected O(n), no sort.  ``"auto"`` is
        ``"pivot"``.  With ``backend="cuda"`` both run one kernel, which sorts
        nothing: a bisection of the threshold, then its exact value on the support.
    return_support_size : bool
        Also return the number of nonzero entries per row (int64, the shape of
        ``x`` without ``axis``).
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`softmax`.
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into.

    Returns
    -------
    p : ndarray
        Shape and floating dtype of ``x``.  A row with a NaN, a ``+inf`` or no
        entry above ``-inf`` gives NaN; ``-inf`` entries otherwise give 0.
    support : ndarray
        Only with ``return_support_size``.

    See Also
    --------
    sparsemax_backward, entmax15, entmax_bisect

    Notes
    -----
    .. math:: p = \operatorname{argmin}_{q \in \Delta} \|q - x\|^2 = \max(x - \tau, 0),

    with ``tau`` such that ``sum(p) = 1`` ([1]_, eq. (2)): on the support ``S``,
    ``tau = (sum_{j in S} x_j - 1) / |S|``.

    Error bound (first order): the errors are absolute, of order ``(sigma(n) + 4)
    u (max|x| + 1)``, not relative to ``p_i``, since ``p_i = x_i - tau``
    cancels; ``u`` is the unit roundoff of the computing dtype and ``sigma(n)``
    bounds the relative error of a sum of ``n`` positive terms (as in
    :func:`softmax`).

    References
    ----------
    .. [1] A. F. T. Martins and R. F. Astudillo, "From softmax to sparsemax: a sparse
       model of attention and multi-label classification", ICML 2016.
    .. [2] J. Duchi, S. Shalev-Shwartz, Y. Singer and T. Chandra, "Efficient
       projections onto the l1-ball for learning in high dimensions", ICML 2008.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import sparsemax
    >>> p, k = sparsemax(np.array([0.5, 1.0, 1.2]), return_support_size=True)
    >>> np.round(p, 6), int(k)
    (array([0. , 0.4, 0.6]), 2)
    """
    check_choice("algorithm", algorithm, SPARSEMAX_ALGORITHMS)
    kernel = kernels.SPARSEMAX["pivot" if algorithm == "auto" else algorithm]
    if not return_support_size:
        lean = lean_map(
            "sparsemax", x, axis, backend, out, kernel, np.empty(_lean_count(x), np.int64)
        )
        if lean is not None:
            return lean
    rows = rows_of(x, axis, "sparsemax")
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    support = np.empty(rows.count, dtype=np.int64)
    run(kernel, engine, rows.data, result, support)
    p = rows.restore(result, out)
    if not return_support_size:
        return p
    sizes = support.reshape(rows.moved_shape[:-1])
    return p, (sizes if not rows.flattened else sizes.reshape(()))


@same_kind_out
def entmax15(
    x: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    algorithm: str = "auto",
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""1.5-entmax, exactly (Peters, Niculae & Martins [1]_).

    Parameters
    ----------
    x, axis, backend, out
        As in :func:`sparsemax`.
    algorithm : {"auto", "pivot", "sort"}
        How the support is found: ``"pivot"`` by randomized-pivot selection
        (expected O(n), as sparsemax's after [2]_; the default), ``"sort"`` by sorting
        (O(n log n), [1]_ Algorithm 2).  With ``backend="cuda"`` both run one
        threshold search with no sort, as :func:`sparsemax`'s.

    Returns
    -------
    ndarray
        Shape and floating dtype of ``x``.  A row with a NaN, a ``+inf`` or no
        entry above ``-inf`` gives NaN; ``-inf`` entries otherwise give 0.

    See Also
    --------
    entmax15_backward, entmax_bisect, sparsemax

    Notes
    -----
    .. math:: p = \max(x/2 - \tau, 0)^2, \quad \textstyle\sum_i p_i = 1:

    sparse like sparsemax, smooth like softmax on its support.  Given the support
    (its size ``k``, sum ``s1`` and sum of squares ``s2`` of ``z = (x - max x)/2``),
    ``tau = s1/k - sqrt(max((1 - (s2 - s1^2/k)) / k, 0))`` ([1]_, Algorithm 2).

    Error bound (first order): the errors are absolute, of order ``(sigma(n) + 4)
    u (max|x| + 1)``, not relative to ``p_i``, since ``x_i/2 - tau`` cancels;
    ``u`` is the unit roundoff of the computing dtype and ``sigma(n)`` bounds the
    relative error of a sum of ``n`` positive terms (as in :func:`softmax`).

    References
    ----------
    .. [1] B. Peters, V. Niculae and A. F. T. Martins, "Sparse sequence-to-sequence
       models", ACL 2019.
    .. [2] J. Duchi, S. Shalev-Shwartz, Y. Singer and T. Chandra, "Efficient
       projections onto the l1-ball for learning in high dimensions", ICML 2008.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import entmax15
    >>> np.round(entmax15(np.array([0.5, 1.0, 1.2])), 6)
    array([0.128358, 0.369994, 0.501648])
    >>> np.round(entmax15(np.array([-1.0, 1.0, 1.2])), 6)  # sparse
    array([0.      , 0.429466, 0.570534])
    """
    check_choice("algorithm", algorithm, SPARSEMAX_ALGORITHMS)
    kernel = kernels.ENTMAX15["pivot" if algorithm == "auto" else algorithm]
    if (lean := lean_map("entmax15", x, axis, backend, out, kernel)) is not None:
        return lean
    rows = rows_of(x, axis, "entmax15")
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    run(kernel, engine, rows.data, result)
    return rows.restore(result, out)


@same_kind_out
def entmax_bisect(
    x: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    alpha: float = 1.5,
    n_iter: int = 50,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""alpha-entmax for any ``alpha > 1`` by bisection on the threshold.

    Parameters
    ----------
    x : array_like
        Input (dtypes as in :func:`softmax`).
    alpha : float > 1, default 1.5
        ``alpha = 2`` is sparsemax; ``alpha -> 1`` tends to softmax.  Keyword-only:
        the second positional argument is ``axis``, as in every function here (the
        ``entmax`` package's ``entmax_bisect(X, alpha)`` takes ``alpha`` there).
    n_iter : int, default 50
        Bisection steps; the bracket shrinks to ``2^-n_iter`` of its width.
    axis, backend, out
        As in :func:`sparsemax`.

    Returns
    -------
    ndarray
        Shape and floating dtype of ``x``.  A row with a NaN, a ``+inf`` or no
        entry above ``-inf`` gives NaN; ``-inf`` entries otherwise give 0.

    Raises
    ------
    ValueError
        ``alpha <= 1`` or ``n_iter`` not a positive integer.

    See Also
    --------
    entmax15, sparsemax

    Notes
    -----
    .. math:: p_i = \max((\alpha - 1) x_i - \tau, 0)^{1/(\alpha - 1)},

    with ``tau`` bisected in ``[max - 1, max - n^{1 - alpha}]`` (of the scaled
    ``(alpha - 1) x``) for ``n_iter`` steps and ``p`` finally divided by its sum
    ([1]_, Algorithm 1).  Each step reads the row once.

    Error bound (first order): the errors are absolute, of order ``(sigma(n) + 4)
    u (max|x| + 1)`` from rounding, since ``(alpha - 1) x_i - tau`` cancels, plus
    the bisection's error, which halves with each of the ``n_iter`` steps until
    rounding dominates; ``u`` is the unit roundoff of the computing dtype and
    ``sigma(n)`` bounds the relative error of a sum of ``n`` positive terms (as in
    :func:`softmax`).

    References
    ----------
    .. [1] B. Peters, V. Niculae and A. F. T. Martins, "Sparse sequence-to-sequence
       models", ACL 2019.
    .. [2] A. F. T. Martins and R. F. Astudillo, "From softmax to sparsemax: a sparse
       model of attention and multi-label classification", ICML 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import entmax_bisect
    >>> np.round(entmax_bisect(np.array([0.5, 1.0, 1.2])), 6)  # entmax15's
    array([0.128358, 0.369994, 0.501648])
    >>> np.round(entmax_bisect(np.array([0.5, 1.0, 1.2]), alpha=2.0), 6)  # sparsemax's
    array([0. , 0.4, 0.6])
    """
    if not alpha > 1:
        raise ValueError(f"entmax_bisect(): alpha must be > 1 (alpha = 1 is softmax), got {alpha}")
    if not isinstance(n_iter, int | np.integer) or n_iter < 1:
        raise ValueError(f"entmax_bisect(): n_iter must be a positive integer, got {n_iter!r}")
    lean = lean_rows(x, axis, backend, "entmax_bisect")
    if lean is not None and (result := lean_out(out, x, lean[0].shape)) is not None:
        data, engine = lean
        getattr(kernels.ENTMAX_BISECT, engine)(data, float(alpha), int(n_iter), result)
        return result.reshape(x.shape) if out is None else out
    rows = rows_of(x, axis, "entmax_bisect")
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    run(kernels.ENTMAX_BISECT, engine, rows.data, float(alpha), int(n_iter), result)
    return rows.restore(result, out)


@same_kind_out
def sparsemax_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of sparsemax: :math:`dx_i = s_i (dy_i - \bar{dy}_S)`.

    Parameters
    ----------
    y : array_like
        The forward output ``sparsemax(x, axis=axis)``.
    dy : array_like
        The upstream gradient, same shape.
    axis, backend, out
        As in :func:`sparsemax`.

    Returns
    -------
    ndarray
        ``dx``, the shape and floating dtype of ``y``.

    Notes
    -----
    .. math:: dx_i = s_i \Big(dy_i - \frac{1}{|S|} \sum_{j \in S} dy_j\Big),

    with ``S`` the support of ``y`` (``y > 0``) and ``s_i = 1`` on it, 0 elsewhere
    (Martins & Astudillo [1]_, eq. (14)).

    Error bound (first order): ``(2 + sigma(k)) u`` relative to ``|dy_i| +
    mean_{j in S} |dy_j|`` on the support, ``k = |S|``; exactly 0 off it.  ``u``
    is the unit roundoff of the computing dtype and ``sigma(k) = k/8 + log2(k) +
    4`` bounds the relative error of a sum of ``k`` positive terms (as in
    :func:`softmax`; the summation bound of Higham [2]_).

    References
    ----------
    .. [1] A. F. T. Martins and R. F. Astudillo, "From softmax to sparsemax: a sparse
       model of attention and multi-label classification", ICML 2016.
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import sparsemax, sparsemax_backward
    >>> y = sparsemax(np.array([0.5, 1.0, 1.2]))
    >>> sparsemax_backward(y, np.array([1.0, 2.0, 4.0]))
    array([ 0., -1.,  1.])
    """
    return vjp(
        "sparsemax_backward",
        y,
        dy,
        axis,
        backend,
        out,
        kernels.SPARSEMAX_BACKWARD,
    )


@same_kind_out
def entmax15_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of 1.5-entmax, :math:`g = \sqrt{y}`:
    :math:`dx = g \odot (dy - \langle g, dy\rangle / \sum g)`.

    Parameters
    ----------
    y : array_like
        The forward output ``entmax15(x, axis=axis)``.
    dy : array_like
        The upstream gradient, same shape.
    axis, backend, out
        As in :func:`sparsemax`.

    Returns
    -------
    ndarray
        ``dx``, the shape and floating dtype of ``y``.

    Notes
    -----
    .. math:: g = \sqrt{y}, \qquad dx_i = g_i \Big(dy_i - \frac{\sum_j g_j dy_j}{\sum_j g_j}\Big)

    (Peters, Niculae & Martins [1]_, Prop. 2); ``g`` is 0 off the support, so is
    ``dx``.

    Error bound (first order): ``(6 + 2 sigma(n)) u`` relative to ``g_i (|dy_i| +
    sum_j g_j |dy_j| / sum_j g_j)``; ``u`` is the unit roundoff of the computing
    dtype and ``sigma(n)`` bounds the relative error of a sum
    of ``n`` positive terms (as in :func:`softmax`; the summation bound of
    Higham [2]_).

    References
    ----------
    .. [1] B. Peters, V. Niculae and A. F. T. Martins, "Sparse sequence-to-sequence
       models", ACL 2019.
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import entmax15, entmax15_backward
    >>> y = entmax15(np.array([0.5, 1.0, 1.2]))
    >>> np.round(entmax15_backward(y, np.array([1.0, 0.0, 0.0])), 6)
    array([ 0.281631, -0.13012 , -0.151511])
    """
    return vjp(
        "entmax15_backward",
        y,
        dy,
        axis,
        backend,
        out,
        kernels.ENTMAX15_BACKWARD,
    )


# --------------------------------------------------------------------------- declarations

_SPARSE = {"bounds": (bounds.SPARSE,), "scales": (bounds.sparse_scale,)}

#: This module's ops, for the registry (:mod:`softmax_numba.declaration`).
ENTRIES = (
    *(
        Entry(
            "sparsemax",
            alg,
            sparsemax,
            reference.sparsemax,
            ("probability",),
            {"algorithm": alg},
            **_SPARSE,
            study={"alternative"},
        )
        for alg in ("pivot", "sort")
    ),
    Entry(
        "entmax15",
        "-",
        entmax15,
        reference.entmax15,
        ("probability",),
        **_SPARSE,
        study={"alternative"},
    ),
    Entry(
        "entmax_bisect",
        "alpha=1.5",
        entmax_bisect,
        reference.entmax15,
        ("probability",),
        {"alpha": 1.5},
        **_SPARSE,
        study={"alternative"},
    ),
    Entry(
        "sparsemax_backward",
        "-",
        sparsemax_backward,
        reference.sparsemax_backward,
        ("vjp",),
        arguments=backward_of(sparsemax),
        bytes_factor=3.0,
        bounds=(bounds.sum_bound(4),),
        scales=(bounds.support_vjp_scale,),
    ),
    Entry(
        "entmax15_backward",
        "-",
        entmax15_backward,
        reference.entmax15_backward,
        ("vjp",),
        arguments=backward_of(entmax15),
        bytes_factor=3.0,
        bounds=(bounds.sum_bound(6),),
        scales=(bounds.entmax_vjp_scale,),
    ),
)
