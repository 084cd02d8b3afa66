r"""Sampling from logits: sample, filter_logits and top_logprobs (public wrappers).

The semantics, shared by every engine and by the sort-based oracle
(:func:`softmax_numba.reference.sampling_kept` and its neighbours), are written
once, in :func:`sample`'s docstring.  The kernels are
:mod:`softmax_numba.cpu.sampling`; the uniforms come from
:mod:`softmax_numba.philox`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import numpy.typing as npt

from softmax_numba import philox
from softmax_numba._api import lean_rows, run, split_chunks
from softmax_numba._interop import same_kind_out
from softmax_numba._rows import rows_of
from softmax_numba.cpu import sampling as kernels

_WHY_INVALID = {
    kernels.HAS_NAN: "holds a NaN",
    kernels.HAS_POSINF: "holds +inf",
    kernels.ALL_NEGINF: "has no entry above -inf",
}


class _RowParameters:
    """The filters of each row as the kernels take them (arrays of one value per
    row), checked: ``inv_t`` (1/T, 0 where greedy), ``greedy``, ``temperature``,
    ``top_k`` (``n`` when off), ``top_p`` (1 when off), ``log_min_p`` (``-inf`` when
    off; the logarithm is taken here, once, so that every engine compares with the
    same number).  Python scalars, the common case, are checked as such (a few
    microseconds); arrays with NumPy."""

    def __init__(self, count, n, batch, func, temperature, top_k, top_p, min_p):
        top_p = 1.0 if top_p is None else top_p
        min_p = 0.0 if min_p is None else min_p
        top_k = n if top_k is None else top_k
        scalars = (temperature, top_k, top_p, min_p)
        if all(type(v) in (int, float) for v in scalars) and type(top_k) is int:
            # NaN fails every comparison: the array check then says what is wrong
            if not (temperature >= 0 and top_k >= 1 and 0 < top_p <= 1 and 0 <= min_p <= 1):
                self._check(func, *(np.array([v]) for v in scalars))
            t = float(temperature)
            with np.errstate(divide="ignore", over="ignore"):
                inv_t = np.float64(1.0) / t
            greedy = not math.isfinite(inv_t)
            self.temperature = np.full(count, t)
            self.greedy = np.full(count, greedy)
            self.inv_t = np.full(count, 0.0 if greedy else inv_t)
            self.top_k = np.full(count, min(top_k, n), dtype=np.int64)
            self.top_p = np.full(count, float(top_p))
            self.log_min_p = np.full(count, math.log(min_p) if min_p > 0 else -math.inf)
            return
        t, k, p, q = (
            self._per_row(count, batch, func, name, value)
            for name, value in zip(("temperature", "top_k", "top_p", "min_p"), scalars, strict=True)
        )
        self._check(func, t, k, p, q)
        with np.errstate(divide="ignore", over="ignore"):
            inv_t = 1.0 / t.astype(np.float64)
        # a temperature so small that 1/T overflows scales every entry but the largest
        # to -inf: greedy
        self.temperature = t.astype(np.float64)
        self.greedy = ~np.isfinite(inv_t)
        self.inv_t = np.where(self.greedy, 0.0, inv_t)
        self.top_k = np.minimum(k, n).astype(np.int64)
        self.top_p = p.astype(np.float64)
        with np.errstate(divide="ignore"):
            self.log_min_p = np.log(q.astype(np.float64))

    @staticmethod
    def _check(func, t, k, p, q):
        """A ``TypeError`` or ``ValueError`` for a parameter out of its domain, naming
        the first row where it is."""
        for name, values in (("temperature", t), ("top_p", p), ("min_p", q)):
            if values.dtype.kind not in "iuf":
                raise TypeError(f"{func}(): {name} must be a real number, got dtype {values.dtype}")
        if k.dtype.kind not in "iu":
            raise TypeError(f"{func}(): top_k must be an integer, got dtype {k.dtype}")
        for name, values, good, domain in (
            ("temperature", t, t >= 0, ">= 0 (0 is greedy)"),
            ("top_k", k, k >= 1, ">= 1"),
            ("top_p", p, (p > 0) & (p <= 1), "in (0, 1]"),
            ("min_p", q, (q >= 0) & (q <= 1), "in [0, 1]"),
        ):
            if not good.all():
                row = int(np.argmin(good))
                where = f" (row {row})" if values.size > 1 else ""
                raise ValueError(f"{func}(): {name} must be {domain}, got {values[row]}{where}")

    @staticmethod
    def _per_row(count, batch, func, name, value):
        """``value`` (a scalar, or one per row: an array of the input's shape without
        the axis) as a ``(count,)`` array."""
        array = np.asarray(value)
        try:
            array = np.broadcast_to(array, batch)
        except ValueError:
            raise ValueError(
                f"{func}(): {name} must be a scalar or hold one value per row, an array of "
                f"shape {batch} (the logits' shape without the axis); got shape {array.shape}"
            ) from None
        return array.reshape(count)


def _check_status(status: np.ndarray, rows, func: str) -> None:
    """A ``ValueError`` naming the first row that cannot be sampled, and why."""
    if status.any():
        bad = np.flatnonzero(status)
        first = bad[0]
        where = (
            np.unravel_index(first, rows.reduced_shape(False)) if rows.reduced_shape(False) else ()
        )
        raise ValueError(
            f"{func}(): row {tuple(map(int, where))} of the logits {_WHY_INVALID[status[first]]} "
            f"({bad.size} such row{'s' if bad.size > 1 else ''}); every row needs an entry "
            "above -inf, and no NaN or +inf"
        )


class _LeanRows:
    """What the sampling wrappers read of :class:`~softmax_numba._rows.HostRows`, for
    a C-contiguous float32 or float64 array along its last axis (the lean path,
    :func:`~softmax_numba._api.lean_rows`: no NumPy call to set it up)."""

    def __init__(self, x: np.ndarray, data: np.ndarray, engine: str):
        self.data = data
        self.count, self.n = data.shape
        self.compute_dtype = x.dtype
        self._batch = x.shape[:-1]
        self._engine = engine

    def reduced_shape(self, keepdims: bool) -> tuple[int, ...]:
        return self._batch

    def engine(self, backend: str) -> str:
        return self._engine


def _rows(logits, axis, func, backend, *, lean=True):
    """The logits as ``(count, n)`` rows: the lean path when it applies (and
    ``lean``), else :func:`~softmax_numba._rows.rows_of`, with the check of an
    empty axis.  A GPU array is a ``DeviceRows``, whose engine is ``"cuda"``:
    ``_api.run`` launches the kernels of :mod:`softmax_numba.gpu.sampling`, the
    per-row parameters and the host outputs copied over and back by the launcher."""
    found = lean_rows(logits, axis, backend, func) if lean else None
    if found is not None:
        return _LeanRows(logits, *found)
    rows = rows_of(logits, axis, func)
    if rows.n == 0 and rows.count:
        raise ValueError(f"{func}(): the logits have no entry along axis {axis}")
    return rows


def _integer(value, name: str, func: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{func}(): {name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{func}(): {name} must be >= {low}, got {value}")
    return int(value)


@same_kind_out
def sample(
    logits: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    temperature=1.0,
    top_k=None,
    top_p=None,
    min_p=None,
    num_samples: int = 1,
    seed: int | None = None,
    offset: int = 0,
    return_logprobs: bool = False,
    backend: str = "auto",
):
    r"""Draw tokens from logits, after temperature, top-k, top-p and min-p, with no sort.

    Parameters
    ----------
    logits : array_like
        The logits; each row along ``axis`` is one distribution (float16, bfloat16,
        float32 and float64; integers and bools as float64).
    axis : int or None, default -1
        The axis along which each row is a distribution; ``None``: the flattened
        array is one row.
    temperature : float or array_like, default 1.0
        ``T > 0`` draws from ``softmax(x / T)``; ``T = 0`` is greedy: the largest
        entry, ties going to the lowest index (the filters are then moot), as is a
        subnormal ``T`` whose ``1/T`` overflows.  A scalar,
        or one value per row (an array of the logits' shape without ``axis``), as are
        the three filters: a batch may mix requests.
    top_k : int or array_like, optional
        Keep the ``top_k`` largest entries (``>= 1``; ``None``: all).
    top_p : float or array_like, optional
        Then keep the smallest set of the largest entries whose probability, under the
        distribution renormalized on what top-k kept, reaches ``top_p`` (in ``(0, 1]``;
        ``None`` or 1: all).
    min_p : float or array_like, optional
        Then drop the entries whose probability is below ``min_p`` times the largest
        (in ``[0, 1]``; ``None`` or 0: none).
    num_samples : int, default 1
        Draws per row, independent (with replacement).
    seed : int, optional
        The generator's key, an int in ``[0, 2**128)``; ``None`` draws a fresh one
        from the operating system, as NumPy does.
    offset : int, default 0
        The part of the counter a caller advances between calls with one seed (a
        decoding step, say), in ``[0, 2**128)``.
    return_logprobs : bool, default False
        Also return the log-probability of each drawn token under the distribution
        it was drawn from (the filtered, renormalized one; 0 for a greedy row).
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        ``"numpy"`` is the sort-based oracle
        (:func:`softmax_numba.reference.sample_rows`); ``"cuda"``, the choice of
        ``"auto"`` for a GPU array, runs a thread block per row
        (:mod:`softmax_numba.gpu.sampling`) with the same uniforms; its indices and
        log-probabilities come back to the host (torch tensors and CuPy arrays on the
        input's device).

    Returns
    -------
    indices : ndarray of int64
        The logits' shape without ``axis``, with a trailing axis of ``num_samples``
        when that is above 1.
    logprobs : ndarray
        Only with ``return_logprobs``: the same shape, float32 for float16, bfloat16
        and float32 logits, else float64.

    Raises
    ------
    ValueError
        For ``top_k < 1``, ``top_p`` outside ``(0, 1]``, ``min_p`` outside ``[0, 1]``,
        a negative or NaN temperature, a per-row array of the wrong shape,
        ``num_samples < 1``, a seed or offset out of range, and a row that holds a NaN
        or ``+inf`` or has no entry above ``-inf`` (the message names the row).

    See Also
    --------
    filter_logits : the logits with the filtered entries set to ``-inf``.
    top_logprobs : the k most likely entries and their log-probabilities.

    Notes
    -----
    Each row ``x`` is computed in float64: ``m = max(x)``, ``d_j = (x_j - m) / T``,
    ``w_j = exp(d_j)``.  The filters, in this order (each keeps a set ``{x_j >= t}``,
    and entries tied with ``t`` are all kept, as Hugging Face's warpers and vLLM's
    sampler keep them):

    1. scale by the temperature;
    2. top-k: ``t_k`` is the ``top_k``-th largest entry counted with multiplicity;
    3. top-p: ``t_p`` is the largest entry ``t`` with ``sum_{x_j >= t} w_j >= top_p
       S_k``, the sums over the top-k set, ``S_k`` its total (nucleus sampling [2]_);
    4. min-p: keep ``d_j >= log(min_p)``, that is ``w_j >= min_p`` [3]_;
    5. draw from what is left, renormalized: with ``K`` the kept set, ``S = sum_{j in
       K} w_j`` and ``u`` uniform in ``[0, 1)``, the token is the first ``j`` of ``K``
       (in index order) whose running sum of ``w`` exceeds ``u S``.

    The log-probability of the token is ``d_j - log(S)``, with ``S`` summed as ``1 +
    s`` and ``log1p(s)`` so that it is accurate for near-certain rows, as
    :func:`log_softmax` is.

    Error bound: the kept set is exact for top-k and min-p (comparisons of the
    entries and of ``d_j``) and for top-p up to the float64 rounding of its sums; the
    log-probability has :func:`log_softmax`'s bound ``(6 + sigma(n) + spread) u64``
    in the float64 computation, ``spread`` counting the rounding of ``1/T`` and of
    ``(x_j - m) / T``, then one rounding to the result dtype, ``0.5 u``.

    Thresholds are found without a sort: a bisection of the value range by
    vectorized passes of masked counts and sums, until a few hundred entries are
    left between the bounds, which are sorted and walked (the pivot searches of
    FlashInfer [4]_ and Qrita, on rows in a CPU's cache).  Expected O(n) per row, with
    one float64 scratch row per thread.

    Exactness and reproducibility: the kept set equals that of the sort-based oracle,
    ties included (``top_p``'s up to the float64 rounding of its sums, ``n 2^-53``
    relative).  A draw follows the kept distribution up to the resolution of ``u``,
    ``2^-53``, and the float64 rounding of the running sums.  ``u`` is Philox4x64-10
    [1]_, NumPy's :class:`numpy.random.Philox` bit for bit: row ``i`` (its index in
    the batch, C order over the other axes), draw ``s`` takes word ``s % 4`` of the
    block at counter ``(s // 4, i, offset mod 2^64, offset >> 64)`` and key ``(seed
    mod 2^64, seed >> 64)``, as ``u = (r >> 11) 2^-53``.  A row's draws thus depend
    on ``(seed, offset, i)`` and the row alone: not on the engine, the number of
    threads nor the other rows.

    References
    ----------
    .. [1] J. K. Salmon, M. A. Moraes, R. O. Dror and D. E. Shaw, "Parallel random
       numbers: as easy as 1, 2, 3", SC'11.
    .. [2] A. Holtzman, J. Buys, L. Du, M. Forbes and Y. Choi, "The curious case of
       neural text degeneration", ICLR 2020.
    .. [3] M. N. Nguyen et al., "Turning up the heat: min-p sampling for creative and
       coherent LLM outputs", arXiv:2407.01082, 2024.
    .. [4] Z. Ye et al., "FlashInfer: efficient and customizable attention engine for
       LLM inference serving", MLSys 2025 (sorting-free sampling).

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import sample
    >>> logits = np.array([[2.0, 1.0, 0.5, -1.0], [0.0, 0.0, 3.0, 0.0]])
    >>> sample(logits, temperature=0)
    array([0, 2])
    >>> sample(logits, top_k=1, seed=0)
    array([0, 2])
    >>> tokens, logprobs = sample(logits, top_k=2, seed=7, return_logprobs=True)
    >>> tokens.shape, logprobs.dtype
    ((2,), dtype('float64'))
    """
    func = "sample"
    rows = _rows(logits, axis, func, backend)
    params = _RowParameters(
        rows.count, rows.n, rows.reduced_shape(False), func, temperature, top_k, top_p, min_p
    )
    draws = _integer(num_samples, "num_samples", func, 1)
    key = np.array(philox.split128(philox.fresh_seed() if seed is None else seed, "seed", func))
    counter = np.array(philox.split128(offset, "offset", func))
    engine = rows.engine(backend)
    indices = np.empty((rows.count, draws), dtype=np.int64)
    logprobs = np.empty((rows.count, draws), dtype=rows.compute_dtype)
    scores = np.empty((rows.count, draws), dtype=np.float64)
    status = np.zeros(rows.count, dtype=np.int8)
    if rows.count:
        arguments = (
            rows.data,
            0,
            params.inv_t,
            params.greedy,
            params.top_k,
            params.top_p,
            params.log_min_p,
            key,
            counter,
            indices,
            scores,
            status,
        )
        if split_chunks(engine, rows.count, rows.n) > 1:
            kernels.sample_split(*arguments)  # a long row alone: its exp pass over the threads
        else:
            run(kernels._sample, engine, *arguments)
        _check_status(status, rows, func)
    logprobs[...] = scores
    shape = rows.reduced_shape(False) + ((draws,) if draws > 1 else ())
    indices = indices.reshape(shape)
    return (indices, logprobs.reshape(shape)) if return_logprobs else indices


@same_kind_out
def filter_logits(
    logits: npt.ArrayLike,
    /,
    axis: int | None = -1,
    *,
    top_k=None,
    top_p=None,
    min_p=None,
    temperature=1.0,
    out: np.ndarray | None = None,
    backend: str = "auto",
) -> np.ndarray:
    r"""The logits divided by the temperature, with every entry the filters drop set
    to ``-inf`` (Hugging Face's logits warpers, fused).

    Parameters
    ----------
    logits, axis, top_k, top_p, min_p
        As in :func:`sample`.
    temperature : float or array_like, default 1.0
        The kept entries are ``x / T``, divided in the computing dtype (``T = 1``:
        ``x`` itself).  ``T`` must be ``> 0`` here: a greedy pick has no logits.
    out : ndarray, optional
        Array of the logits' shape and result dtype to write into.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`sample`.

    Returns
    -------
    ndarray
        The logits' shape and floating dtype.  ``softmax`` of it is the distribution
        :func:`sample` draws from; its finite entries are the kept set.

    Notes
    -----
    .. math:: y_j = x_j / T \ (j \text{ kept}), \qquad y_j = -\infty \ (\text{otherwise}).

    The filters and their tie rule are :func:`sample`'s; the kept set is the same.

    Error bound: exact kept set; ``x / T`` is rounded once, ``0.5 u`` relative (the
    quotient NumPy gives for ``x / dtype(T)``, bit for bit).  It overflows to
    ``+-inf`` where ``|x| / T`` exceeds the largest float of the dtype, as ``x / T``
    does in NumPy and torch.

    References
    ----------
    .. [1] A. Fan, M. Lewis and Y. Dauphin, "Hierarchical neural story generation",
       ACL 2018 (top-k sampling).
    .. [2] A. Holtzman, J. Buys, L. Du, M. Forbes and Y. Choi, "The curious case of
       neural text degeneration", ICLR 2020 (top-p, nucleus sampling).

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import filter_logits
    >>> filter_logits(np.array([3.0, 1.0, 2.0, 2.0]), top_k=2)
    array([ 3., -inf,  2.,  2.])
    """
    func = "filter_logits"
    rows = _rows(logits, axis, func, backend, lean=False)
    params = _RowParameters(
        rows.count, rows.n, rows.reduced_shape(False), func, temperature, top_k, top_p, min_p
    )
    if params.greedy.any():
        raise ValueError(
            f"{func}(): temperature must be > 0 with a finite 1/temperature (a greedy "
            "pick has no logits; use sample(..., temperature=0))"
        )
    engine = rows.engine(backend)
    result = rows.new_rows(out)
    status = np.zeros(rows.count, dtype=np.int8)
    if rows.size:
        run(
            kernels._filter_logits,
            engine,
            rows.data,
            params.temperature.astype(rows.compute_dtype),
            params.inv_t,
            params.top_k,
            params.top_p,
            params.log_min_p,
            result,
            status,
        )
        _check_status(status, rows, func)
    return rows.restore(result, out)


@same_kind_out
def top_logprobs(
    logits: npt.ArrayLike, k: int, /, axis: int | None = -1, *, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    r"""The ``k`` most likely entries of each row and their log-probabilities.

    Parameters
    ----------
    logits : array_like
        As in :func:`sample`.
    k : int
        How many, in ``[1, n]``.
    axis : int or None, default -1
        The axis of the distribution (``None``: the flattened array).
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        As in :func:`sample`.

    Returns
    -------
    indices : ndarray of int64
        Shape: the logits' without ``axis``, then ``k``; the largest entry first,
        equal entries by increasing index.
    logprobs : ndarray
        ``log_softmax(logits)`` at those indices (float32 for float16, bfloat16 and
        float32 logits, else float64), as accurate as :func:`log_softmax`.

    Notes
    -----
    The ``k``-th largest entry is found as :func:`sample`'s top-k threshold, with no
    sort of the row; only the ``k`` picked entries are sorted.  The log-probabilities
    are ``log_softmax_j = (x_j - m) - log1p(s)``, ``s`` the sum of ``exp(x_i - m)``
    over all entries but the first maximum, in float64.

    Error bound: :func:`log_softmax`'s, ``(6 + sigma(n) + spread) u64`` in float64
    [1]_, then one rounding to the result dtype, ``0.5 u``.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import top_logprobs
    >>> idx, lp = top_logprobs(np.log(np.array([0.1, 0.6, 0.3])), 2)
    >>> idx, np.round(np.exp(lp), 6)
    (array([1, 2]), array([0.6, 0.3]))
    """
    func = "top_logprobs"
    rows = _rows(logits, axis, func, backend)
    k = _integer(k, "k", func, 1)
    if k > rows.n:
        raise ValueError(f"{func}(): k must be at most the axis length {rows.n}, got {k}")
    engine = rows.engine(backend)
    indices = np.empty((rows.count, k), dtype=np.int64)
    scores = np.empty((rows.count, k), dtype=np.float64)
    status = np.zeros(rows.count, dtype=np.int8)
    if rows.count:
        run(kernels._top_logprobs, engine, rows.data, indices, scores, status)
        _check_status(status, rows, func)
    shape = (*rows.reduced_shape(False), k)
    return indices.reshape(shape), scores.astype(rows.compute_dtype).reshape(shape)
