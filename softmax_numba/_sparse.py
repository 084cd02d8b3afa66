"""sparsemax and alpha-entmax with their backward ops (public wrappers)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import reference
from softmax_numba._api import Rows, as_array, check_choice, run, vjp
from softmax_numba.cpu import sparse as kernels

SPARSEMAX_ALGORITHMS = ("auto", "pivot", "sort")

_UNDEFINED = """A row with a NaN, a ``+inf`` or no entry above ``-inf`` gives NaN;
    ``-inf`` entries otherwise give 0."""


def sparsemax(
    x: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    algorithm: str = "auto",
    return_support_size: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    (
        r"""sparsemax: the Euclidean projection of ``x`` onto the probability simplex.

    :math:`p = \max(x - \tau, 0)` with ``tau`` such that ``sum(p) = 1`` (Martins &
    Astudillo, "From softmax to sparsemax", ICML 2016, eq. (2)).

    Parameters
    ----------
    x : array_like
        Input (dtypes as in :func:`softmax`).
    axis : int or None, default -1
    algorithm : {"auto", "pivot", "sort"}
        ``"sort"``: sort the row, Martins & Astudillo Algorithm 1, O(n log n).
        ``"pivot"``: randomized-pivot selection of the threshold, Duchi et al.,
        "Efficient projections onto the l1-ball", ICML 2008, Fig. 2: expected
        O(n), no sort.  ``"auto"`` is ``"pivot"``.
    return_support_size : bool
        Also return the number of nonzero entries per row (int64, the shape of
        ``x`` without ``axis``).
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
    out : ndarray, optional

    Returns
    -------
    p : ndarray
        Shape and floating dtype of ``x``.  """
        + _UNDEFINED
        + r"""
    support : ndarray
        Only with ``return_support_size``.
    """
    )
    check_choice("algorithm", algorithm, SPARSEMAX_ALGORITHMS)
    rows = Rows(as_array(x, "sparsemax"), axis, "sparsemax")
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    support = np.empty(rows.rows, dtype=np.int64)
    if engine == "numpy":
        result[...], support[...] = reference.sparsemax(rows.data, return_support_size=True)
    else:
        kernel = kernels.SPARSEMAX["pivot" if algorithm == "auto" else algorithm]
        run(kernel, engine, rows.data, result, support)
    p = rows.restore(result, out)
    if not return_support_size:
        return p
    sizes = support.reshape(rows.moved_shape[:-1])
    return p, (sizes if not rows.flattened else sizes.reshape(()))


def entmax15(
    x: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    algorithm: str = "auto",
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    (
        r"""1.5-entmax, exactly (Peters, Niculae & Martins, "Sparse sequence-to-sequence
    models", ACL 2019).

    :math:`p = \max(x/2 - \tau, 0)^2` with ``tau`` such that ``sum(p) = 1``;
    sparse like sparsemax, smooth like softmax on its support.  Given the support
    (its size ``k``, sum ``s1`` and sum of squares ``s2`` of ``z = (x - max x)/2``),
    ``tau = s1/k - sqrt(max((1 - (s2 - s1^2/k)) / k, 0))`` (their Algorithm 2).

    Parameters
    ----------
    x, axis, backend, out
        As in :func:`sparsemax`.
    algorithm : {"auto", "pivot", "sort"}
        How the support is found: ``"pivot"`` by randomized-pivot selection
        (expected O(n), as sparsemax's; the default), ``"sort"`` by sorting
        (O(n log n), their Algorithm 2).

    Returns
    -------
    ndarray
        """
        + _UNDEFINED
    )
    check_choice("algorithm", algorithm, SPARSEMAX_ALGORITHMS)
    rows = Rows(as_array(x, "entmax15"), axis, "entmax15")
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    if engine == "numpy":
        result[...] = reference.entmax15(rows.data)
    else:
        kernel = kernels.ENTMAX15["pivot" if algorithm == "auto" else algorithm]
        run(kernel, engine, rows.data, result)
    return rows.restore(result, out)


def entmax_bisect(
    x: npt.ArrayLike,
    /,
    *,
    alpha: float = 1.5,
    n_iter: int = 50,
    axis: int | None = -1,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    (
        r"""alpha-entmax for any ``alpha > 1`` by bisection on the threshold.

    :math:`p_i = \max((\alpha - 1) x_i - \tau, 0)^{1/(\alpha - 1)}`, with ``tau``
    bisected in ``[max - 1, max - n^{1 - alpha}]`` for ``n_iter`` steps and ``p``
    finally divided by its sum (Peters, Niculae & Martins 2019, Algorithm 1).
    ``alpha = 2`` is sparsemax; ``alpha -> 1`` tends to softmax.  Each step reads
    the row once.

    Parameters
    ----------
    x : array_like
    alpha : float > 1
    n_iter : int, default 50
        Bisection steps; the bracket shrinks to ``2^-n_iter`` of its width.
    axis, backend, out
        As in :func:`sparsemax`.

    Returns
    -------
    ndarray
        """
        + _UNDEFINED
    )
    if not alpha > 1:
        raise ValueError(f"entmax_bisect(): alpha must be > 1 (alpha = 1 is softmax), got {alpha}")
    if not isinstance(n_iter, int | np.integer) or n_iter < 1:
        raise ValueError(f"entmax_bisect(): n_iter must be a positive integer, got {n_iter!r}")
    rows = Rows(as_array(x, "entmax_bisect"), axis, "entmax_bisect")
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    if engine == "numpy":
        result[...] = reference.entmax_bisect(rows.data, alpha=alpha, n_iter=int(n_iter))
    else:
        run(kernels.ENTMAX_BISECT, engine, rows.data, float(alpha), int(n_iter), result)
    return rows.restore(result, out)


def sparsemax_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of sparsemax: :math:`dx_i = s_i (dy_i - \bar{dy}_S)`,
    with ``S`` the support of ``y`` and the mean taken over it (Martins & Astudillo
    2016, eq. (14)).

    Parameters
    ----------
    y : array_like
        The forward output ``sparsemax(x, axis=axis)``.
    dy : array_like
        The upstream gradient, same shape.
    axis, backend, out
        As in :func:`sparsemax`.
    """
    return vjp(
        "sparsemax_backward",
        y,
        dy,
        axis,
        backend,
        out,
        kernels.SPARSEMAX_BACKWARD,
        reference.sparsemax_backward,
    )


def entmax15_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of 1.5-entmax: with :math:`g = \sqrt{y}`,
    :math:`dx = g \odot dy - g \, \langle g, dy\rangle / \sum g` (Peters et al.
    2019, Prop. 2).

    Parameters
    ----------
    y : array_like
        The forward output ``entmax15(x, axis=axis)``.
    dy : array_like
        The upstream gradient, same shape.
    axis, backend, out
        As in :func:`sparsemax`.
    """
    return vjp(
        "entmax15_backward",
        y,
        dy,
        axis,
        backend,
        out,
        kernels.ENTMAX15_BACKWARD,
        reference.entmax15_backward,
    )
