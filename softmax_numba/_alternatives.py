"""The elementwise alternatives to softmax and maxout (public wrappers)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import reference
from softmax_numba._api import Rows, as_array, is_device_array, run
from softmax_numba.cpu import elementwise as kernels

_NORMALIZE_DOC = """
    Parameters
    ----------
    x : array_like
        Input (float16, bfloat16, float32, float64; integers and bools become float64).
    axis : int or None, default -1
        The axis along which ``normalize=True`` divides by the sum.
    normalize : bool, default False
        Divide by the sum along ``axis`` (the one-vs-all route to a distribution
        over classes).  A row that sums to 0 then gives NaN.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into.

    Returns
    -------
    ndarray
        ``x``'s shape and floating dtype; NaN stays NaN.
"""


def _elementwise(name, x, axis, normalize, backend, out, kernel_pair, reference_fn, *params):
    rows = Rows(as_array(x, name), axis, name)
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    params = tuple(float(p) for p in params)
    if engine == "numpy":
        result[...] = reference_fn(rows.data, *params, normalize=normalize)
    else:
        run(kernel_pair, engine, rows.data, result, *params, bool(normalize))
    return rows.restore(result, out)


def sigmoid(
    x: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    normalize: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    return _elementwise(
        "sigmoid", x, axis, normalize, backend, out, kernels.SIGMOID, reference.sigmoid
    )


sigmoid.__doc__ = (
    r"""Logistic function :math:`\sigma(x) = 1 / (1 + e^{-x})`, stable for large ``|x|``.

    Evaluated as ``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` for ``x < 0``
    with ``e = exp(-|x|)``, so ``exp`` never overflows.  For two classes,
    ``softmax([a, b])[0] == sigmoid(a - b)``.
"""
    + _NORMALIZE_DOC
)


def softplus(
    x: npt.ArrayLike,
    /,
    *,
    beta: float = 1.0,
    axis: int | None = -1,
    normalize: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    if not beta > 0:
        raise ValueError(f"softplus(): beta must be positive, got {beta}")
    return _elementwise(
        "softplus", x, axis, normalize, backend, out, kernels.SOFTPLUS, reference.softplus, beta
    )


softplus.__doc__ = (
    r"""Softplus :math:`\log(1 + e^{\beta x}) / \beta`, stable for large ``|x|``.

    Evaluated as ``(max(z, 0) + log1p(exp(-|z|))) / beta`` with ``z = beta x``;
    ``beta`` must be positive.  Its outputs are positive but not normalized.
"""
    + _NORMALIZE_DOC
)


def arctan(
    x: npt.ArrayLike,
    /,
    *,
    axis: int | None = -1,
    normalize: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    return _elementwise(
        "arctan", x, axis, normalize, backend, out, kernels.ARCTAN, reference.arctan
    )


arctan.__doc__ = (
    r"""ArcTan squashing :math:`1/2 + \arctan(x)/\pi` onto ``(0, 1)``.

    Evaluated as ``-arctan(1/x) / pi`` for ``x < 0``: the same value without the
    cancellation of ``1/2 - 0.4999...``, so the left tail keeps its relative accuracy.
"""
    + _NORMALIZE_DOC
)


def gaussian(
    x: npt.ArrayLike,
    /,
    *,
    mu: float = 0.0,
    sigma: float = 1.0,
    axis: int | None = -1,
    normalize: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    if not sigma > 0:
        raise ValueError(f"gaussian(): sigma must be positive, got {sigma}")
    return _elementwise(
        "gaussian",
        x,
        axis,
        normalize,
        backend,
        out,
        kernels.GAUSSIAN,
        reference.gaussian,
        mu,
        sigma,
    )


gaussian.__doc__ = (
    r"""Gaussian bump :math:`\exp(-(x - \mu)^2 / (2\sigma^2))`; ``sigma`` must be positive.

    With ``normalize=True`` it is ``softmax(-(x - mu)^2 / (2 sigma^2))``, computed
    with the max-shift, so a row far from ``mu`` still gives a distribution.
"""
    + _NORMALIZE_DOC
)


def maxout(
    x: npt.ArrayLike,
    /,
    *,
    pool_size: int,
    axis: int = -1,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Maxout (Goodfellow et al. 2013): the maximum over consecutive groups.

    :math:`y_g = \max_{0 \le j < k} x_{gk + j}` along ``axis``, whose length ``n``
    shrinks to ``n / k`` (``k = pool_size``).  One read of ``x``, one write of ``y``.

    Parameters
    ----------
    x : array_like
        Input (dtypes as in :func:`softmax`).
    pool_size : int
        Group length ``k``, a positive divisor of the axis length.
    axis : int, default -1
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
    out : ndarray, optional
        Array of the output shape and the result dtype.

    Returns
    -------
    ndarray
        A NaN in a group makes that group's maximum NaN (as ``np.max``).

    Raises
    ------
    ValueError
        ``pool_size`` is not a positive integer dividing the axis length.
    """
    if axis is None:
        raise TypeError("maxout(): axis must be an int")
    rows = Rows(as_array(x, "maxout"), axis, "maxout")
    if not isinstance(pool_size, int | np.integer) or pool_size < 1:
        raise ValueError(f"maxout(): pool_size must be a positive integer, got {pool_size!r}")
    if rows.n % pool_size:
        raise ValueError(
            f"maxout(): pool_size={pool_size} does not divide the length {rows.n} of axis "
            f"{rows.axis}"
        )
    engine = rows.engine(backend)
    groups = rows.n // pool_size
    shape = list(rows.shape)
    shape[rows.axis] = groups
    if out is not None and (
        rows.device != is_device_array(out)
        or tuple(out.shape) != tuple(shape)
        or np.dtype(out.dtype) != rows.result_dtype
    ):
        raise ValueError(
            f"maxout(): out must be an array of shape {tuple(shape)} and dtype {rows.result_dtype}"
        )
    if rows.device:  # the pooled axis is the last one: a reshape, no copy
        result = rows._cuda().device_array((rows.rows, groups), rows.compute_dtype)
        run(kernels.MAXOUT, engine, rows.data, int(pool_size), result)
        if out is None:
            return result.reshape(*shape)
        out.copy_to_device(result.reshape(*shape))
        return out
    if engine == "numpy":
        result = reference.maxout(rows.data, int(pool_size))
    else:
        result = np.empty((rows.rows, groups), dtype=rows.compute_dtype)
        run(kernels.MAXOUT, engine, rows.data, int(pool_size), result)
    moved = result.reshape(*rows.moved_shape[:-1], groups)
    y = np.moveaxis(moved, -1, rows.axis).astype(rows.result_dtype, copy=False)
    if out is None:
        return y
    np.copyto(out, y)
    return out
