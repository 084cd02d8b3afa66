"""The elementwise alternatives to softmax: sigmoid, softplus, arctan and Gaussian,
optionally normalized along the axis (public wrappers)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from softmax_numba import bounds, reference
from softmax_numba._api import lean_map, run
from softmax_numba._interop import same_kind_out
from softmax_numba._rows import rows_of
from softmax_numba.cpu import elementwise as kernels
from softmax_numba.declaration import Entry


def _elementwise(name, x, axis, normalize, backend, out, kernel_pair, *params):
    params = tuple(float(p) for p in params)
    result = lean_map(name, x, axis, backend, out, kernel_pair, *params, bool(normalize))
    if result is not None:
        return result
    rows = rows_of(x, axis, name, multiple=True)
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    run(kernel_pair, engine, rows.data, result, *params, bool(normalize))
    return rows.restore(result, out)


@same_kind_out
def sigmoid(
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    normalize: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Logistic function :math:`\sigma(x) = 1 / (1 + e^{-x})`, stable for large ``|x|``.

    Parameters
    ----------
    x : array_like
        Input (float16, bfloat16, float32, float64; integers and bools become
        float64; float16/bfloat16 are computed in float32).
    axis : int, tuple of int or None, default -1
        The axis (or axes, together) along which ``normalize=True`` divides by the
        sum.
    normalize : bool, default False
        Divide by the sum along ``axis`` (the one-vs-all route to a distribution
        over classes).  A row that sums to 0 then gives NaN.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`softmax`.
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into.

    Returns
    -------
    ndarray
        ``x``'s shape and floating dtype; NaN stays NaN.

    Notes
    -----
    With ``e = exp(-|x|)`` in ``[0, 1]``, so that ``exp`` never overflows,

    .. math:: \sigma(x) = 1 / (1 + e) \ (x \ge 0), \qquad e / (1 + e) \ (x < 0).

    For two classes, ``softmax([a, b])[0] == sigmoid(a - b)``.

    With ``normalize=True``, a row whose sum is below 1/2 and which holds an entry
    below the smallest normal number (so that ``sigma(x_j)`` lost digits to
    underflow, or all are 0 and the quotient 0/0) is computed as ``w / sum(w)``,
    ``w_j = e^{x_j - m} / (1 + e^{x_j})``, ``m = max(x)``: the same ratios, shifted
    by the max as in [2]_.

    Error bound (first order, relative to each entry, in units of the unit
    roundoff ``u`` of the computing dtype; the rounding model of Higham [1]_):
    ``4 u``; with ``normalize=True``, ``(9 + sigma(n)) u`` (``sigma(n)`` as in
    :func:`softmax`, the summation bound after [2]_), and on the rescaled rows
    ``(8 + sigma(n) + 2 min(max_j |x_j - m|, T)) u``.  Entries whose exact value
    is below the smallest normal number are not bounded.

    References
    ----------
    .. [1] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.
    .. [2] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import sigmoid
    >>> sigmoid(np.array([-2.0, 0.0, 2.0]))
    array([0.11920292, 0.5       , 0.88079708])
    >>> sigmoid(np.array([-800.0, 800.0]))  # no overflow
    array([0., 1.])
    """
    return _elementwise("sigmoid", x, axis, normalize, backend, out, kernels.SIGMOID)


@same_kind_out
def softplus(
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    beta: float = 1.0,
    normalize: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Softplus :math:`\log(1 + e^{\beta x}) / \beta`, stable for large ``|x|``.

    Parameters
    ----------
    x : array_like
        Input (float16, bfloat16, float32, float64; integers and bools become
        float64; float16/bfloat16 are computed in float32).
    beta : float, default 1.0
        The sharpness; must be positive.
    axis : int, tuple of int or None, default -1
        The axis (or axes, together) along which ``normalize=True`` divides by the
        sum.
    normalize : bool, default False
        Divide by the sum along ``axis`` (the one-vs-all route to a distribution
        over classes).  A row that sums to 0 then gives NaN.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`softmax`.
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into.

    Returns
    -------
    ndarray
        ``x``'s shape and floating dtype; NaN stays NaN.

    Raises
    ------
    ValueError
        ``beta`` is not positive.

    Notes
    -----
    Evaluated as

    .. math:: \max(x, 0) + \operatorname{log1p}(e^{-|\beta x|}) / \beta,

    which stays finite where ``beta x`` overflows.  Its outputs are positive but
    not normalized.  With ``normalize=True``, a sum that overflows is taken again
    over ``y / n``, and a row with ``beta sum(y) < log 2`` and an entry below the
    smallest normal number (lost to underflow) is computed as ``w / sum(w)``,
    ``w_j = e^{z_j - max(z)} log1p(e^{z_j}) / e^{z_j}``, ``z = beta x``: the same
    ratios, shifted by the max.

    Error bound (first order, relative to each entry, in units of the unit
    roundoff ``u``; the rounding model of Higham [1]_, the ``log1p(exp(.))``
    form of Mächler [2]_): ``(7 + min(|beta x|, T)) u``; with ``normalize=True``,
    ``(9 + sigma(n) + min(|beta x|, T)) u`` (``sigma(n)``, ``T`` as in
    :func:`softmax`), and on the rescaled rows ``(8 + sigma(n) + 2 min(max_j
    |z_j - max(z)|, T)) u``.

    References
    ----------
    .. [1] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.
    .. [2] M. Mächler, "Accurately computing ``log(1 - exp(-|a|))``, assessed by the
       Rmpfr package", CRAN vignette, 2012.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import softplus
    >>> softplus(np.array([-2.0, 0.0, 2.0]))
    array([0.12692801, 0.69314718, 2.12692801])
    >>> softplus(np.array([1e308]), beta=10.0)  # beta x overflows, the result does not
    array([1.e+308])
    """
    if not beta > 0:
        raise ValueError(f"softplus(): beta must be positive, got {beta}")
    return _elementwise("softplus", x, axis, normalize, backend, out, kernels.SOFTPLUS, beta)


@same_kind_out
def arctan(
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    normalize: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""ArcTan squashing :math:`1/2 + \arctan(x)/\pi` onto ``(0, 1)``.

    Parameters
    ----------
    x : array_like
        Input (float16, bfloat16, float32, float64; integers and bools become
        float64; float16/bfloat16 are computed in float32).
    axis : int, tuple of int or None, default -1
        The axis (or axes, together) along which ``normalize=True`` divides by the
        sum.
    normalize : bool, default False
        Divide by the sum along ``axis`` (the one-vs-all route to a distribution
        over classes).  A row that sums to 0 then gives NaN.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`softmax`.
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into.

    Returns
    -------
    ndarray
        ``x``'s shape and floating dtype; NaN stays NaN.

    Notes
    -----
    Evaluated as

    .. math:: 1/2 + \arctan(x)/\pi \ (x \ge 0), \qquad -\arctan(1/x)/\pi \ (x < 0):

    the same value without the cancellation of ``1/2 - 0.4999...``, so the left
    tail keeps its relative accuracy.

    Error bound (first order, relative to each entry, in units of the unit
    roundoff ``u``; the rounding model of Higham [1]_): ``10 u``, for an ``atan``
    within 2.1 ulp in float32 (Cephes ``atanf`` [2]_) and 0.76 ulp in float64
    (fdlibm ``s_atan.c``); with ``normalize=True``, ``(12 + sigma(n)) u``
    (``sigma(n)`` as in :func:`softmax`).

    References
    ----------
    .. [1] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.
    .. [2] S. L. Moshier, "Methods and Programs for Mathematical Functions",
       Ellis Horwood, 1989 (the Cephes library).

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import arctan
    >>> arctan(np.array([-2.0, 0.0, 2.0]))
    array([0.14758362, 0.5       , 0.85241638])
    >>> arctan(np.array([-1e30]))  # 1/(pi 1e30), not 0
    array([3.18309886e-31])
    """
    return _elementwise("arctan", x, axis, normalize, backend, out, kernels.ARCTAN)


@same_kind_out
def gaussian(
    x: npt.ArrayLike,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    mu: float = 0.0,
    sigma: float = 1.0,
    normalize: bool = False,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Gaussian bump :math:`\exp(-(x - \mu)^2 / (2\sigma^2))`.

    Parameters
    ----------
    x : array_like
        Input (float16, bfloat16, float32, float64; integers and bools become
        float64; float16/bfloat16 are computed in float32).
    mu : float, default 0.0
        The centre.
    sigma : float, default 1.0
        The width; must be positive.
    axis : int, tuple of int or None, default -1
        The axis (or axes, together) along which ``normalize=True`` divides by the
        sum.
    normalize : bool, default False
        Divide by the sum along ``axis`` (the one-vs-all route to a distribution
        over classes).  A row that sums to 0 then gives NaN.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`softmax`.
    out : ndarray, optional
        Array of ``x``'s shape and result dtype to write into.

    Returns
    -------
    ndarray
        ``x``'s shape and floating dtype; NaN stays NaN.

    Raises
    ------
    ValueError
        ``sigma`` is not positive.

    Notes
    -----
    ``exp(a)`` with the exponent

    .. math:: a = -(x - \mu)^2 / (2\sigma^2),

    one pass.  With ``normalize=True`` it is ``softmax(a)``, computed with the
    max-shift (a read-only pass for the entry nearest ``mu``), so a row far from
    ``mu`` still gives a distribution.

    Error bound (first order, relative to each entry, in units of the unit
    roundoff ``u``, for ``mu`` and ``sigma`` representable in the computing dtype):
    ``(3 + 6 |a|) u``, the ``|a| u`` terms being the conditioning of ``exp`` at
    the rounded exponent (``x - mu``, which enters squared, ``-1/(2 sigma^2)``
    and the two products round); ``(3 + 2 |a|) u`` where ``x - mu`` and
    ``-1/(2 sigma^2)`` are exact (``mu = 0``, ``sigma`` a power of 2).  With
    ``normalize=True``: the bound of :func:`softmax` applied to ``a``, ``(4 +
    sigma(n) + 2 spread(a)) u`` (after the analysis of Blanchard, Higham & Higham
    [1]_), plus ``6 (|a_i| + max_j |a_j|) u`` for rounding the exponents.  Entries
    whose exact value is below the smallest normal number are not bounded.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import gaussian
    >>> gaussian(np.array([-2.0, 0.0, 2.0]))
    array([0.13533528, 1.        , 0.13533528])
    >>> np.round(gaussian(np.array([99.0, 100.0]), mu=100.0, normalize=True), 6)
    array([0.377541, 0.622459])
    """
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
        mu,
        sigma,
    )


# --------------------------------------------------------------------------- declarations

#: This module's ops, for the registry (:mod:`softmax_numba.declaration`).
ENTRIES = tuple(
    Entry(
        function.__name__,
        "normalized" if normalize else "-",
        function,
        getattr(reference, function.__name__),
        ("elementwise",),
        {"normalize": normalize},
        {"normalize": normalize},
        bounds=(bounds.ELEMENTWISE[function.__name__][normalize],),
        study={"alternative"},
    )
    for function in (sigmoid, softplus, arctan, gaussian)
    for normalize in (False, True)
)
