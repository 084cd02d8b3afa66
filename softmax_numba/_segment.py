"""Softmax, log-softmax and log-sum-exp over ragged segments, and their backward ops.

``values`` has shape ``(nnz, ...)``; segment ``j`` is ``values[offsets[j]:offsets[j +
1]]`` (``offsets``: CSR row pointers, as ``scipy.sparse`` and torch_scatter's
``segment_csr``), and each trailing position (a head of graph attention) is
normalized apart.  The kernels (:mod:`softmax_numba.cpu.segment`,
:mod:`softmax_numba.gpu.segment`) take ``(F, nnz)`` C-contiguous rows, one per
trailing position, so that a segment is a contiguous piece of a row: a 1-D
``values`` is such a row as it is, others are transposed into it (and back).

These ops take ``(values, offsets)``, not one logits array along an axis, so they are
declared apart from the registry's entries (``softmax_numba.registry.SEGMENTED``) and
tested against their oracle in ``tests/test_segment.py``.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
import numpy.typing as npt

from softmax_numba import config
from softmax_numba._api import dtypes_for, is_device_array, resolve_backend, run
from softmax_numba._interop import same_kind_out
from softmax_numba.cpu import segment as kernels

# --------------------------------------------------------------------------- checks


def _checked_values(values, func: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 0:
        raise ValueError(
            f"{func}(): values must have at least one dimension (the entries, along which "
            "the segments run), got a 0-d array"
        )
    return values


def checked_offsets(offsets, nnz: int, func: str) -> np.ndarray:
    """``offsets`` as a writeable C-contiguous int64 host array, once checked: integers,
    1-D, ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == nnz``; a one-line
    ``TypeError`` or ``ValueError`` otherwise."""
    if type(offsets) is not np.ndarray and is_device_array(offsets):
        from softmax_numba.gpu import _runtime

        offsets = _runtime.as_device(offsets).copy_to_host()
    o = np.asarray(offsets)
    if o.dtype.kind not in "iu":
        raise TypeError(
            f"{func}(): offsets must be integers (CSR row pointers), got dtype {o.dtype}"
        )
    if o.ndim != 1 or o.size == 0:
        raise ValueError(
            f"{func}(): offsets must be a 1-D array of S + 1 row pointers, got shape {o.shape}"
        )
    if o[0] != 0:
        raise ValueError(f"{func}(): offsets[0] must be 0, got {o[0]}")
    drops = o[1:] < o[:-1]
    if drops.any():
        k = int(np.argmax(drops))
        raise ValueError(
            f"{func}(): offsets must be non-decreasing, but offsets[{k}] = {o[k]} > "
            f"offsets[{k + 1}] = {o[k + 1]}"
        )
    if o[-1] != nnz:
        raise ValueError(
            f"{func}(): offsets[-1] must be the number of entries, values.shape[0] = {nnz}, "
            f"got {o[-1]}"
        )
    if o.dtype != np.int64 or not o.flags.c_contiguous or not o.flags.writeable:
        o = np.array(o, dtype=np.int64)
    return o


def _check_out(out, shape, dtype, func: str) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{func}(): out must be a NumPy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"{func}(): out must have shape {shape} and dtype {dtype}; "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError(f"{func}(): out must be writeable; got a read-only array")


# --------------------------------------------------------------------------- layout


def _features(shape) -> int:
    return int(np.prod(shape[1:], dtype=np.int64))


def _numba_transposes(engine: str, array: np.ndarray, dtype) -> bool:
    """Whether ``array`` (C-contiguous, of the compute ``dtype``) is transposed by the
    CPU engines' own kernel (:func:`softmax_numba.cpu.segment.transpose_into`) rather
    than by NumPy."""
    return engine in ("cpu", "parallel") and array.dtype == dtype and array.flags.c_contiguous


def _host_rows(values: np.ndarray, dtype, engine: str) -> np.ndarray:
    """``(nnz, ...)`` as C-contiguous ``(F, nnz)`` rows in ``dtype`` (a view for a
    C-contiguous array of that dtype with one feature)."""
    nnz, features = values.shape[0], _features(values.shape)
    if values.dtype == dtype and values.flags.c_contiguous and features == 1:
        return values.reshape(1, nnz)
    if _numba_transposes(engine, values, dtype):
        rows = np.empty((features, nnz), dtype)
        kernels.transpose_into(values.reshape(nnz, features), rows)
        return rows
    return np.ascontiguousarray(values.reshape(nnz, features).T, dtype)


def _writes_into(out, rows: int, dtype, inputs) -> bool:
    """Whether the kernel can write its ``(rows, n)`` result into ``out`` itself: one row,
    ``out`` C-contiguous in the compute dtype, overlapping no input but the one it is
    (in place)."""
    return (
        out is not None
        and rows == 1
        and out.dtype == dtype
        and out.flags.c_contiguous
        and not any(
            np.may_share_memory(out, a) and out.ctypes.data != a.ctypes.data for a in inputs
        )
    )


def _restore(buffer: np.ndarray, shape, dtype, out, direct: bool, engine: str):
    """The ``(F, n)`` result as ``(n,) + shape[1:]`` in ``dtype``, written into ``out``
    if given (unless the kernel wrote there: ``direct``)."""
    if direct:
        return out
    target = np.empty(shape, dtype) if out is None else out
    if buffer.shape[0] > 1 and _numba_transposes(engine, target, buffer.dtype):
        kernels.transpose_into(buffer, target.reshape(buffer.shape[1], buffer.shape[0]))
        return target
    entries = buffer.T.reshape(shape)
    if out is None:
        return np.ascontiguousarray(entries, dtype=dtype)
    np.copyto(out, entries, casting="unsafe")
    return out


def _pieces(engine: str, rows: int, nnz: int, segments: int) -> tuple[int, int]:
    """``(piece, group)`` of the CPU kernels (:func:`softmax_numba.cpu.segment.segment_plan`):
    the chunk length ``config.SEGMENT_PIECE_LENGTH`` (the same on both engines, so
    that their results are the same), and the work gathered into a piece of whole
    segments: about ``config.SPLIT_PIECES_PER_THREAD`` pieces per thread on the
    parallel engine, at most a chunk's worth."""
    piece = config.SEGMENT_PIECE_LENGTH
    if piece < config.SUM_BLOCK:  # see config.SEGMENT_PIECE_LENGTH
        raise ValueError(
            f"config.SEGMENT_PIECE_LENGTH={piece} must be at least config.SUM_BLOCK "
            f"({config.SUM_BLOCK})"
        )
    if engine != "parallel":
        return piece, piece
    shares = config.SPLIT_PIECES_PER_THREAD * numba.get_num_threads()
    return piece, max(1, min(piece, -(-rows * (nnz + segments) // shares)))


# --------------------------------------------------------------------------- paths


@contextlib.contextmanager
def _threads_of(engine: str):
    """The serial engine on one thread: its kernels are the parallel ones
    (:func:`softmax_numba.cpu.segment.one_kernel`, ``transpose_into``)."""
    if engine != "cpu":
        yield
        return
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


def _segment_call(func, kernel, arrays, offsets, op, reduce, backend, out):
    """Check, lay out and run one segment op: ``arrays`` are its inputs of shape ``(nnz,
    ...)`` (``values``, or ``y`` and ``dy``), ``reduce`` whether it gives one value per
    segment (log-sum-exp) rather than one per entry."""
    if any(type(a) is not np.ndarray and is_device_array(a) for a in arrays):
        return _device_call(func, kernel, arrays, offsets, op, reduce, backend, out)
    arrays = [_checked_values(a, func) for a in arrays]
    first = arrays[0]
    for name, other in zip(("dy",), arrays[1:], strict=False):
        if other.shape != first.shape:
            raise ValueError(f"{func}(): {name} has shape {other.shape}, y has shape {first.shape}")
        dtypes_for(other.dtype, func)
    compute, result = dtypes_for(first.dtype, func)
    nnz = first.shape[0]
    o = checked_offsets(offsets, nnz, func)
    segments = o.size - 1
    n = segments if reduce else nnz
    shape = (n, *first.shape[1:])
    if out is not None:
        _check_out(out, shape, result, func)
    engine = resolve_backend(backend, first.size, op=func)
    with _threads_of(engine):
        rows = [_host_rows(a, compute, engine) for a in arrays]
        features = rows[0].shape[0]
        direct = _writes_into(out, features, compute, arrays)
        buffer = out.reshape(1, n) if direct else np.empty((features, n), compute)
        if engine == "cuda":
            from softmax_numba.gpu import segment as gpu

            gpu.launch(kernel, segments, *rows, o, op, buffer)
        else:
            extra = _pieces(engine, features, nnz, segments)
            run(kernel, engine, *rows, o, op, buffer, cpu_extra=extra)
        return _restore(buffer, shape, result, out, direct, engine)


def _device_call(func, kernel, arrays, offsets, op, reduce, backend, out):
    """:func:`_segment_call` for GPU arrays: float32 or float64, C-contiguous; the result
    stays on the device."""
    from softmax_numba.gpu import _runtime, buffers
    from softmax_numba.gpu import segment as gpu

    numba_cuda = _runtime.cuda()
    first = arrays[0]
    resolve_backend(backend, first.size, device=True, op=func)
    arrays = [
        _runtime.as_device(a)
        if _runtime.is_device_array(a)
        else numba_cuda.to_device(np.ascontiguousarray(a))
        for a in arrays
    ]
    first = arrays[0]
    dtype = np.dtype(first.dtype)
    for a in arrays:
        if np.dtype(a.dtype) != dtype or dtype not in (np.float32, np.float64):
            raise TypeError(
                f"{func}() on a GPU array accepts float32 or float64 arrays of one dtype, "
                f"got {np.dtype(a.dtype)}"
            )
        if tuple(a.shape) != tuple(first.shape) or not a.is_c_contiguous() or not a.shape:
            raise ValueError(
                f"{func}(): GPU arrays must be C-contiguous, of one shape (nnz, ...), "
                f"got shape {tuple(a.shape)}"
            )
    nnz, features = first.shape[0], _features(first.shape)
    o = checked_offsets(offsets, nnz, func)
    segments = o.size - 1
    n = segments if reduce else nnz
    shape = (n, *first.shape[1:])
    if out is not None:
        if not _runtime.is_device_array(out):
            raise TypeError(f"{func}(): out must be a GPU array for GPU input")
        out = _runtime.as_device(out)
        if tuple(out.shape) != shape or np.dtype(out.dtype) != dtype:
            raise ValueError(f"{func}(): out must have shape {shape} and dtype {dtype}")
    if features == 1:
        rows = [a.reshape(1, nnz) for a in arrays]
        result = out if out is not None else numba_cuda.device_array(shape, dtype)
        buffer = result.reshape(1, n)
    else:
        rows = [buffers.transpose(a.reshape(nnz, features)) for a in arrays]
        buffer = numba_cuda.device_array((features, n), dtype)
    gpu.launch(kernel, segments, *rows, numba_cuda.to_device(o), op, buffer)
    if features == 1:
        return result
    result = out if out is not None else numba_cuda.device_array(shape, dtype)
    buffers.transpose(buffer, result.reshape(n, features))
    return result


# --------------------------------------------------------------------------- public


@same_kind_out
def segment_softmax(
    values: npt.ArrayLike,
    offsets: npt.ArrayLike,
    /,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Softmax over each ragged segment: :math:`p_i = e^{x_i} / \sum_{k \in S_j} e^{x_k}`
    for the entries :math:`i` of segment :math:`S_j`.

    Parameters
    ----------
    values : array_like, shape (nnz, ...)
        Logits, the entries of every segment one after another along axis 0; each
        trailing position (a head of graph attention, shape ``(E, heads)``) is
        normalized apart.  float16, bfloat16, float32 or float64 (integers and bools
        are promoted to float64); float16/bfloat16 are computed in float32.
    offsets : array_like of int, shape (S + 1,)
        CSR row pointers: segment ``j`` is ``values[offsets[j]:offsets[j + 1]]``, so
        ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == nnz`` (as
        ``scipy.sparse.csr_array.indptr``, torch_scatter's ``segment_csr`` and the
        ``ptr`` of ``torch_geometric.utils.softmax``); anything else, float offsets
        included, is a ``ValueError`` or ``TypeError`` before any kernel runs.
    backend : {"auto", "numpy", "cpu", "parallel", "cuda"}
        The engine; ``"auto"`` picks CUDA for GPU arrays, else the parallel engine
        from ``config.PARALLEL_MIN_ELEMENTS`` entries on, else the serial one.
    out : ndarray, optional
        Written in place (``values``' shape and result dtype) and returned.

    Returns
    -------
    ndarray
        ``values``' shape and floating dtype.  An empty segment has no entries; a
        segment with a NaN, a ``+inf`` or only ``-inf`` entries is NaN (as
        ``scipy.special.softmax`` on it); ``-inf`` entries otherwise give 0.

    See Also
    --------
    segment_log_softmax, segment_logsumexp, segment_softmax_backward, softmax

    Notes
    -----
    Each segment is a row of :func:`softmax`: with ``m = x_k = max`` over the
    segment and ``s = sum_{i != k} exp(x_i - m)``,

    .. math:: p_i = e^{x_i - m} / (1 + s),

    the shifted algorithm of [1]_ on a segment of at most
    ``config.SEGMENT_PIECE_LENGTH`` entries, the exact merge of its chunks' online
    states ([2]_) on a longer one.  The parallel engine cuts the work into pieces of
    bounded size (runs of short segments, chunks of long ones), so that one huge
    segment among many tiny ones is spread over every thread; the chunks depend on
    ``config.SEGMENT_PIECE_LENGTH`` only, and the serial engine runs the same kernel
    on one thread: both CPU engines give the same bits.
    The CUDA engine takes a block per segment.  A ``values`` with trailing axes is
    transposed to one row per trailing position (a copy in and out).

    Error bound, per segment of ``n`` entries: softmax's, ``(4 + sigma(n) + 2
    spread) u`` relative to each ``p_i`` (``u``, ``sigma(n)`` and ``spread`` over the
    segment as in :func:`softmax`).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import segment_softmax
    >>> values = np.array([1.0, 2.0, 3.0, 1000.0, 1000.0])
    >>> offsets = np.array([0, 3, 3, 5])  # three segments, the second one empty
    >>> segment_softmax(values, offsets)
    array([0.09003057, 0.24472847, 0.66524096, 0.5       , 0.5       ])
    """
    return _segment_call(
        "segment_softmax", kernels.SEGMENT_FORWARD, (values,), offsets, kernels.SOFTMAX,
        False, backend, out,
    )  # fmt: skip


@same_kind_out
def segment_log_softmax(
    values: npt.ArrayLike,
    offsets: npt.ArrayLike,
    /,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Log-softmax over each ragged segment: :math:`x_i - \log \sum_{k \in S_j} e^{x_k}`.

    Parameters
    ----------
    values, offsets, backend, out
        As in :func:`segment_softmax`.

    Returns
    -------
    ndarray
        ``values``' shape and floating dtype.  A segment with a NaN is NaN, one with
        a ``+inf`` is NaN there and ``-inf`` elsewhere, one of only ``-inf`` is NaN
        (as ``scipy.special.log_softmax`` on it).

    See Also
    --------
    segment_softmax, segment_logsumexp, segment_log_softmax_backward, log_softmax

    Notes
    -----
    Each segment is a row of :func:`log_softmax`:

    .. math:: \log p_i = (x_i - m) - \operatorname{log1p}(s),

    from the segment's state ``(m, s)`` (its online state [2]_, in chunks merged
    exactly beyond ``config.SEGMENT_PIECE_LENGTH`` entries): two terms of one sign,
    so the error is relative to each result whatever the offset of the segment's
    logits ([1]_); never ``x_i - logsumexp``.  Pieces and engines as in
    :func:`segment_softmax`.

    Error bound, per segment of ``n`` entries: log-softmax's, ``(6 + sigma(n) +
    spread) u`` relative to each entry (as in :func:`softmax`).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import segment_log_softmax
    >>> values = np.array([1e4, 1e4 + 1.0, 5.0])
    >>> segment_log_softmax(values, np.array([0, 2, 3]))  # no cancellation of 1e4
    array([-1.31326169, -0.31326169,  0.        ])
    """
    return _segment_call(
        "segment_log_softmax", kernels.SEGMENT_FORWARD, (values,), offsets,
        kernels.LOG_SOFTMAX, False, backend, out,
    )  # fmt: skip


@same_kind_out
def segment_logsumexp(
    values: npt.ArrayLike,
    offsets: npt.ArrayLike,
    /,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Log-sum-exp of each ragged segment: :math:`\log \sum_{k \in S_j} e^{x_k}`.

    Parameters
    ----------
    values, offsets, backend
        As in :func:`segment_softmax`.
    out : ndarray, optional
        Written in place (shape ``(S,) + values.shape[1:]``) and returned.

    Returns
    -------
    ndarray
        Shape ``(S,) + values.shape[1:]``, ``values``' floating dtype.  An empty
        segment gives ``-inf``; otherwise scipy's rules: NaN with a NaN, ``+inf``
        with a ``+inf``, ``-inf`` for only ``-inf`` entries.

    See Also
    --------
    segment_softmax, logsumexp

    Notes
    -----
    Each segment's :func:`logsumexp`, from its state ``(m, s)`` as in
    :func:`segment_log_softmax`:

    .. math:: \mathrm{lse}_j = m + \operatorname{log1p}(s).

    Error bound, per segment of ``n`` entries (relative to the result, in the form
    of [1]_, Thm 2.2; ``sigma(n)`` and ``spread`` as in :func:`softmax`):
    ``u + (5 + sigma(n) + spread) u max(1, log1p(s) / |lse|)``.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import segment_logsumexp
    >>> values = np.array([1.0, 2.0, 3.0, 1000.0, 1000.0])
    >>> segment_logsumexp(values, np.array([0, 3, 3, 5]))
    array([   3.40760596,          -inf, 1000.69314718])
    """
    return _segment_call(
        "segment_logsumexp", kernels.SEGMENT_FORWARD, (values,), offsets, kernels.LOGSUMEXP,
        True, backend, out,
    )  # fmt: skip


@same_kind_out
def segment_softmax_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    offsets: npt.ArrayLike,
    /,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of :func:`segment_softmax`: :math:`dx_i = y_i (dy_i -
    \sum_{k \in S_j} y_k dy_k)` for the entries :math:`i` of segment :math:`S_j`.

    Parameters
    ----------
    y : array_like, shape (nnz, ...)
        The forward output ``segment_softmax(values, offsets)``.
    dy : array_like
        The upstream gradient, ``y``'s shape.
    offsets, backend, out
        As in :func:`segment_softmax`.

    Returns
    -------
    ndarray
        ``dx``, the shape and floating dtype of ``y``.

    See Also
    --------
    segment_softmax, softmax_backward

    Notes
    -----
    :func:`softmax_backward` on each segment,

    .. math:: dx_i = y_i \Bigl(dy_i - \sum_{k \in S_j} y_k\, dy_k\Bigr),

    the dot product summed a block of ``config.SUM_BLOCK`` at a time, the blocks' sums
    (and a long segment's chunks' sums) added with a compensated addition.

    Error bound (first order, per segment of ``n`` entries, ``sigma(n)`` as in
    :func:`softmax`): ``(3 + sigma(n)) u`` relative to ``|y_i| (|dy_i| + sum_k |y_k
    dy_k|)``, not to ``|dx_i|``, which may cancel ([2]_, Sec. 3.1, with the
    summation of [1]_).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import segment_softmax, segment_softmax_backward
    >>> offsets = np.array([0, 3, 5])
    >>> y = segment_softmax(np.array([1.0, 2.0, 3.0, 0.0, 0.0]), offsets)
    >>> np.round(segment_softmax_backward(y, np.array([1.0, 0.0, 0.0, 1.0, 0.0]), offsets), 6)
    array([ 0.081925, -0.022033, -0.059892,  0.25    , -0.25    ])
    """
    return _segment_call(
        "segment_softmax_backward", kernels.SEGMENT_BACKWARD, (y, dy), offsets,
        kernels.SOFTMAX_BACKWARD, False, backend, out,
    )  # fmt: skip


@same_kind_out
def segment_log_softmax_backward(
    y: npt.ArrayLike,
    dy: npt.ArrayLike,
    offsets: npt.ArrayLike,
    /,
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of :func:`segment_log_softmax`: :math:`dx_i = dy_i -
    e^{y_i} \sum_{k \in S_j} dy_k`.

    Parameters
    ----------
    y : array_like, shape (nnz, ...)
        The forward output ``segment_log_softmax(values, offsets)``.
    dy : array_like
        The upstream gradient, ``y``'s shape.
    offsets, backend, out
        As in :func:`segment_softmax`.

    Returns
    -------
    ndarray
        ``dx``, the shape and floating dtype of ``y``.

    See Also
    --------
    segment_log_softmax, log_softmax_backward

    Notes
    -----
    :func:`log_softmax_backward` on each segment,

    .. math:: dx_i = dy_i - e^{y_i} \sum_{k \in S_j} dy_k,

    its sum as in :func:`segment_softmax_backward`.

    Error bound (first order, per segment of ``n`` entries): ``(4 + sigma(n)) u``
    relative to ``|dy_i| + exp(y_i) sum_k |dy_k|``, the terms it subtracts ([2]_,
    with the summation of [1]_).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
       SIAM, 2002.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_numba import segment_log_softmax, segment_log_softmax_backward
    >>> offsets = np.array([0, 3, 5])
    >>> y = segment_log_softmax(np.array([1.0, 2.0, 3.0, 0.0, 0.0]), offsets)
    >>> dy = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    >>> np.round(segment_log_softmax_backward(y, dy, offsets), 6)
    array([ 0.909969, -0.244728, -0.665241,  0.      ,  0.      ])
    """
    return _segment_call(
        "segment_log_softmax_backward", kernels.SEGMENT_BACKWARD, (y, dy), offsets,
        kernels.LOG_SOFTMAX_BACKWARD, False, backend, out,
    )  # fmt: skip
