"""The path from a user's array to a kernel and back.

validate -> choose the compute dtype -> move the axis last and make a 2-D
C-contiguous ``(rows, n)`` array -> choose the engine -> (kernel) -> reshape,
move the axis back, cast to the result dtype, write into ``out=`` if given.

This module holds the checks and the engine choice; the rows and the way back are
``softmax_numba._rows`` (host) and ``softmax_numba.gpu._rows`` (device).
"""

from __future__ import annotations

import sys
from collections.abc import Collection

import numba
import numpy as np

from softmax_numba import config, reference_engine

BACKENDS = ("auto", "numpy", "cpu", "parallel", "cuda")
ACCEPTED_DTYPES = "float16, bfloat16 (from ml_dtypes), float32, float64, integer or bool"
_LOW_PRECISION = ("float16", "bfloat16")


def check_choice(name: str, value, choices: Collection) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def dtypes_for(dtype: np.dtype, func: str) -> tuple[np.dtype, np.dtype]:
    """``(compute dtype, result dtype)`` for an input dtype.

    float32 and float64 compute in their own precision; float16 and bfloat16 compute
    in float32 and return their own dtype; integers and bools are promoted to
    float64 (as scipy does).  Anything else is a ``TypeError``.
    """
    if dtype in (np.float32, np.float64):
        return dtype, dtype
    if dtype.name in _LOW_PRECISION:
        return np.dtype(np.float32), dtype
    if dtype.kind in "iub":
        return np.dtype(np.float64), np.dtype(np.float64)
    raise TypeError(f"{func}() accepts {ACCEPTED_DTYPES} arrays; got dtype {dtype}")


def normalized_axis(axis, ndim: int, func: str) -> int:
    """``axis`` as an index in ``[0, ndim)``: a ``TypeError`` unless it is an
    integer, an ``AxisError`` out of range or for a 0-d array."""
    if ndim == 0:
        raise np.exceptions.AxisError(
            f"{func}() needs an array with at least one dimension, got a 0-d array "
            "(pass axis=None to treat it as a vector of one element)"
        )
    if not isinstance(axis, int | np.integer):
        raise TypeError(f"{func}(): axis must be an int or None, got {axis!r}")
    return np.lib.array_utils.normalize_axis_index(int(axis), ndim)


def normalized_axes(axis, ndim: int, func: str, multiple: bool) -> tuple[int, ...]:
    """``axis`` (an int, or a tuple of ints when ``multiple``) as sorted indices in
    ``[0, ndim)``: a ``TypeError`` for a tuple where one axis is expected or for a
    non-integer entry, an ``AxisError`` out of range, a ``ValueError`` for a
    repeated axis, as NumPy's reductions.  ``axis=()`` names no axis: each entry
    is then a group of its own."""
    if multiple and not isinstance(axis, tuple | int | np.integer):
        raise TypeError(f"{func}(): axis must be an int, a tuple of ints or None, got {axis!r}")
    if not isinstance(axis, tuple):
        return (normalized_axis(axis, ndim, func),)
    if not multiple:
        raise TypeError(f"{func}(): axis must be an int or None, got the tuple {axis!r}")
    if not all(isinstance(a, int | np.integer) for a in axis):
        raise TypeError(f"{func}(): axis must be an int, a tuple of ints or None, got {axis!r}")
    try:
        return tuple(sorted(np.lib.array_utils.normalize_axis_tuple(axis, ndim)))
    except ValueError as error:
        if isinstance(error, np.exceptions.AxisError):
            raise
        raise ValueError(f"{func}(): axis {axis!r} repeats an axis") from None


def is_device_array(x) -> bool:
    """Whether ``x`` lives on a GPU (checked without importing CUDA support)."""
    if not hasattr(x, "__cuda_array_interface__") and "numba.cuda" not in sys.modules:
        return False
    from softmax_numba.gpu import _runtime

    return _runtime.is_device_array(x)


def parallel_min_elements(op: str | None) -> int:
    """The size from which ``backend="auto"`` runs ``op`` on the parallel engine
    (``config.PARALLEL_MIN_ELEMENTS_BY_OP``, measured per op, else
    ``config.PARALLEL_MIN_ELEMENTS``)."""
    return config.PARALLEL_MIN_ELEMENTS_BY_OP.get(op, config.PARALLEL_MIN_ELEMENTS)


def resolve_backend(backend: str, size: int, device: bool = False, op: str | None = None) -> str:
    """The engine that runs: ``"numpy"``, ``"cpu"``, ``"parallel"`` or ``"cuda"``.

    ``"auto"`` picks CUDA for arrays that live on a GPU, else the parallel engine for
    arrays of at least :func:`parallel_min_elements` of ``op`` when Numba has more
    than one thread, else the serial one.
    """
    check_choice("backend", backend, BACKENDS)
    if device and backend not in ("auto", "cuda"):
        raise TypeError(
            f"backend={backend!r} computes on the CPU but this array lives on a GPU; "
            "use backend='cuda' (or 'auto'), or copy the array to the host first"
        )
    if device:
        backend = "cuda"
    if backend == "cuda":
        from softmax_numba.gpu import _runtime

        _runtime.cuda()  # a clear error when numba-cuda or a GPU is missing
        return "cuda"
    if backend == "auto":
        parallel = size >= parallel_min_elements(op) and numba.get_num_threads() > 1
        return "parallel" if parallel else "cpu"
    return backend


_HOST_BACKENDS = ("auto", "cpu", "parallel")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def lean_rows(x, axis, backend: str, op: str | None = None) -> tuple[np.ndarray, str] | None:
    """``(rows, engine)`` when a call can go straight to a CPU kernel: ``x`` a
    non-empty C-contiguous float32/float64 ndarray taken along its last axis, on the
    ``"auto"``, ``"cpu"`` or ``"parallel"`` engine; ``rows`` is its ``(count, n)``
    view, ``engine`` the Numba engine that runs (``"auto"`` resolved by size for
    ``op``, the public function's name, as :func:`resolve_backend`).  ``None``
    otherwise, and for the parallel engine's long rows that are split across threads:
    the general path (``softmax_numba._rows``) then checks and decides.

    This is the lean path of every public function: a few attribute reads (about a
    microsecond), where the general path costs tens of microseconds in NumPy calls,
    as much as the whole kernel on an array of a few thousand entries.
    """
    if (
        type(x) is not np.ndarray
        or backend not in _HOST_BACKENDS
        or x.dtype not in _FLOATS
        or x.ndim == 0
        or type(axis) is not int  # a float or bool axis goes on to be refused
        or (axis != -1 and axis != x.ndim - 1)
        or x.size == 0
        or not x.flags.c_contiguous
    ):
        return None
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    if backend == "auto":
        if x.size < parallel_min_elements(op):
            return rows, "cpu"
        backend = resolve_backend(backend, x.size, op=op)
    if split_chunks(backend, rows.shape[0], n) > 1:
        return None
    return rows, backend


def lean_out(out, like: np.ndarray, shape: tuple[int, ...], inputs: tuple = (), *, whole=None):
    """The buffer a lean call writes: a new ``shape`` array of ``like``'s dtype, or
    ``out`` viewed as ``shape`` when it is a writeable C-contiguous ndarray of
    ``like``'s dtype and shape (or ``whole``, the result's shape, where it differs)
    that overlaps none of ``like`` and ``inputs`` but the one it is (in place).  ``None``
    when ``out`` needs the general path, which checks it and says what is wrong."""
    if out is None:
        return np.empty(shape, like.dtype)
    if (
        type(out) is np.ndarray
        and out.dtype == like.dtype
        and out.shape == (like.shape if whole is None else whole)
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        for array in (like, *inputs):
            if out is not array and np.may_share_memory(out, array):
                return None
        return out.reshape(shape)
    return None


def lean_map(op: str, x, axis, backend: str, out, kernels, *args, streaming: bool = False):
    """A row map (``kernels.<engine>(rows, result, *args)``) on the lean path
    (:func:`lean_rows`): the result in ``x``'s shape, ``out`` itself when given, or
    ``None`` when the call needs the general path.  ``streaming``: the kernel takes,
    last, whether to write with streaming stores (:func:`streams`)."""
    lean = lean_rows(x, axis, backend, op)
    if lean is None:
        return None
    rows, engine = lean
    result = lean_out(out, x, rows.shape)
    if result is None:
        return None
    if streaming:
        args = (*args, streams(engine, result.nbytes))
    getattr(kernels, engine)(rows, result, *args)
    return result.reshape(x.shape) if out is None else out


def run(kernels, engine: str, *args, cpu_extra: tuple = ()) -> None:
    """Run a kernel on the chosen engine: the serial or parallel Numba CPU kernel (with
    the arguments ``cpu_extra`` appended), or the numpy (``softmax_numba.reference_engine``)
    or CUDA kernel registered under the same name."""
    if engine == "cuda":
        from softmax_numba.gpu import _runtime

        _runtime.launch(kernels, *args)
    elif engine == "numpy":
        reference_engine.launch(kernels.name, *args)
    else:
        getattr(kernels, engine)(*args, *cpu_extra)


def streams(engine: str, nbytes: int) -> bool:
    """Whether a CPU kernel writing ``nbytes`` should use streaming stores (see
    :mod:`softmax_numba.cpu._stream`): from ``config.STREAM_MIN_BYTES`` on."""
    return engine in ("cpu", "parallel") and nbytes >= config.STREAM_MIN_BYTES


def split_chunks(engine: str, rows: int, n: int) -> int:
    """How many pieces the parallel engine cuts each row into (1: no split)."""
    threads = numba.get_num_threads()
    if engine != "parallel" or threads < 2 or rows >= threads or n < config.SPLIT_ROW_MIN_LENGTH:
        return 1
    return min(config.SPLIT_PIECES_PER_THREAD * threads, n // config.SPLIT_MIN_PIECE)
