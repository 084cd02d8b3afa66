"""maxout (public wrapper): the max over groups of ``pool_size`` entries along an axis."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import bounds, reference
from softmax_numba._api import lean_out, lean_rows, run
from softmax_numba._interop import same_kind_out
from softmax_numba._rows import rows_of
from softmax_numba.cpu import maxout as kernels
from softmax_numba.declaration import Entry


@same_kind_out
def maxout(
    x: npt.ArrayLike,
    /,
    axis: int = -1,
    *,
    pool_size: int,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Maxout (Goodfellow et al. [1]_): the maximum over consecutive groups.

    Parameters
    ----------
    x : array_like
        Input (dtypes as in :func:`softmax`).
    pool_size : int
        Group length ``k``, a positive divisor of the axis length.
    axis : int, default -1
        The axis to pool along (``None`` is a ``TypeError``).
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`softmax`.
    out : ndarray, optional
        Array of the output shape and the result dtype.

    Returns
    -------
    ndarray
        ``x``'s shape with ``axis`` of length ``n / k``, ``x``'s floating dtype.
        A NaN in a group makes that group's maximum NaN (as ``np.max``).

    Raises
    ------
    ValueError
        ``pool_size`` is not a positive integer dividing the axis length.

    Notes
    -----
    .. math:: y_g = \max_{0 \le j < k} x_{gk + j}

    along ``axis``, whose length ``n`` shrinks to ``n / k`` (``k = pool_size``).
    One read of ``x``, one write of ``y``.

    Error bound: none needed, the result is exact (a maximum rounds nothing, so
    its error is 0).

    References
    ----------
    .. [1] I. J. Goodfellow, D. Warde-Farley, M. Mirza, A. Courville and
       Y. Bengio, "Maxout networks", ICML 2013.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import maxout
    >>> maxout(np.array([[1.0, 5.0, 2.0, 3.0]]), pool_size=2)
    array([[5., 3.]])
    """
    if axis is None:
        raise TypeError("maxout(): axis must be an int")
    lean = lean_rows(x, axis, backend, "maxout")
    if (
        lean is not None
        and type(pool_size) is int
        and 0 < pool_size
        and not lean[0].shape[1] % pool_size
    ):
        data, engine = lean
        groups = data.shape[1] // pool_size
        pooled = (*x.shape[:-1], groups)
        result = lean_out(out, x, (data.shape[0], groups), whole=pooled)
        if result is not None:
            getattr(kernels.MAXOUT, engine)(data, pool_size, result)
            return result.reshape(pooled) if out is None else out
    rows = rows_of(x, axis, "maxout")
    if not isinstance(pool_size, int | np.integer) or pool_size < 1:
        raise ValueError(f"maxout(): pool_size must be a positive integer, got {pool_size!r}")
    if rows.n % pool_size:
        raise ValueError(
            f"maxout(): pool_size={pool_size} does not divide the length {rows.n} of axis "
            f"{rows.axis}"
        )
    engine = rows.engine(backend)
    groups = rows.n // pool_size
    if out is not None:
        rows.check_out(out, rows.pooled_shape(groups), rows.result_dtype)
    result = rows.empty((rows.count, groups))
    run(kernels.MAXOUT, engine, rows.data, int(pool_size), result)
    return rows.restore(result, out, length=groups)


# --------------------------------------------------------------------------- declarations

#: This module's ops, for the registry (:mod:`softmax_numba.declaration`).
ENTRIES = (
    Entry(
        "maxout",
        "pool=4",
        maxout,
        reference.maxout,
        ("elementwise",),
        {"pool_size": 4},
        {"pool_size": 4},
        divisor=4,
        bytes_factor=1.25,
        bounds=(bounds.constant(0),),
        study={"alternative"},
    ),
)
