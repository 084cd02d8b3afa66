"""The path from a user's array to a kernel and back.

validate -> choose the compute dtype -> move the axis last and make a 2-D
C-contiguous ``(rows, n)`` array -> choose the engine -> (kernel) -> reshape,
move the axis back, cast to the result dtype, write into ``out=`` if given.
"""

from __future__ import annotations

import sys
from collections.abc import Collection

import numba
import numpy as np

from softmax_numba import config

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


def is_device_array(x) -> bool:
    """Whether ``x`` lives on a GPU (checked without importing CUDA support)."""
    if not hasattr(x, "__cuda_array_interface__") and "numba.cuda" not in sys.modules:
        return False
    from softmax_numba.gpu import _runtime

    return _runtime.is_device_array(x)


def as_array(x, func: str):
    """``np.asarray(x)`` with a ``TypeError`` for dtypes the package cannot compute in;
    device arrays stay on the device (as Numba device arrays, without a copy)."""
    if is_device_array(x):
        from softmax_numba.gpu import _runtime

        x = _runtime.as_device(x)
        if np.dtype(x.dtype) not in (np.float32, np.float64):
            raise TypeError(f"{func}() on a GPU array accepts float32 or float64, got {x.dtype}")
        return x
    x = np.asarray(x)
    dtypes_for(x.dtype, func)
    return x


def resolve_backend(backend: str, size: int, device: bool = False) -> str:
    """The engine that runs: ``"numpy"``, ``"cpu"``, ``"parallel"`` or ``"cuda"``.

    ``"auto"`` picks CUDA for arrays that live on a GPU, else the parallel engine for
    arrays of at least ``config.PARALLEL_MIN_ELEMENTS`` elements when Numba has more
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
        parallel = size >= config.PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1
        return "parallel" if parallel else "cpu"
    return backend


_SERIAL_BACKENDS = ("auto", "cpu")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def small_rows(x, axis, backend: str) -> np.ndarray | None:
    """The ``(rows, n)`` view of ``x`` when a call can skip :class:`Rows` and go to the
    serial kernel at once: a non-empty C-contiguous float32/float64 ndarray along
    its last axis, smaller than ``config.PARALLEL_MIN_ELEMENTS``, on the serial or
    automatic engine.  ``None`` otherwise (then the general path decides).

    The general path costs tens of microseconds in NumPy calls, which is all the
    time a small softmax takes; this check costs about one.
    """
    if (
        type(x) is not np.ndarray
        or backend not in _SERIAL_BACKENDS
        or x.dtype not in _FLOATS
        or x.ndim == 0
        or (axis != -1 and axis != x.ndim - 1)
        or not 0 < x.size < config.PARALLEL_MIN_ELEMENTS
        or not x.flags.c_contiguous
    ):
        return None
    return x.reshape(-1, x.shape[-1])


def run(kernels, engine: str, *args, cpu_extra: tuple = ()) -> None:
    """Run a kernel on the chosen engine: the serial or parallel Numba CPU kernel (with
    the arguments ``cpu_extra`` appended), or the CUDA kernel registered under the same
    name."""
    if engine == "cuda":
        from softmax_numba.gpu import _runtime

        _runtime.launch(kernels.name, *args)
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


def _same_layout(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
    )


class Rows:
    """An array seen as C-contiguous rows along ``axis``, and the way back.

    Parameters
    ----------
    x : ndarray
        The validated input.
    axis : int or None
        The axis the operation works along; ``None`` means the flattened array.
    func : str
        The public function's name, for error messages.
    """

    def __init__(self, x, axis: int | None, func: str):
        self.func = func
        self.shape = tuple(x.shape)
        self.device = is_device_array(x)
        if self.device:
            self._init_device(x, axis)
            return
        self.compute_dtype, self.result_dtype = dtypes_for(x.dtype, func)
        if axis is None:
            x = x.reshape(-1)
            axis = 0
        elif x.ndim == 0:
            raise np.exceptions.AxisError(
                f"{func}() needs an array with at least one dimension, got a 0-d array "
                "(pass axis=None to treat it as a vector of one element)"
            )
        if not isinstance(axis, int | np.integer):
            raise TypeError(f"{func}(): axis must be an int or None, got {axis!r}")
        self.axis = np.lib.array_utils.normalize_axis_index(int(axis), x.ndim)
        self.flattened = x.shape != self.shape or len(self.shape) == 0
        moved = np.moveaxis(x, self.axis, -1)
        self.moved_shape = moved.shape
        self.n = moved.shape[-1]
        self.rows = int(np.prod(moved.shape[:-1], dtype=np.int64))
        self.data = np.ascontiguousarray(moved.reshape(self.rows, self.n), dtype=self.compute_dtype)

    def _init_device(self, x, axis) -> None:
        """A GPU array: rows are a view of it, so the axis must be the last one of a
        C-contiguous array (moving axes would need a copy on the device)."""
        ndim = len(self.shape)
        last = axis is None or (
            isinstance(axis, int | np.integer) and ndim and int(axis) in (-1, ndim - 1)
        )
        if not last or not x.is_c_contiguous():
            raise ValueError(
                f"{self.func}(): a GPU array is processed along the last axis of a "
                "C-contiguous array only; move the axis on the device first"
            )
        self.compute_dtype = self.result_dtype = np.dtype(x.dtype)
        self.axis, self.flattened = max(ndim - 1, 0), axis is None and ndim != 1
        self.n = int(np.prod(self.shape, dtype=np.int64)) if axis is None else self.shape[-1]
        self.rows = int(np.prod(self.shape, dtype=np.int64)) // max(self.n, 1)
        self.moved_shape = (self.rows, self.n) if axis is None else self.shape
        self.data = x.reshape(self.rows, self.n)

    @staticmethod
    def _runtime():
        from softmax_numba.gpu import _runtime

        return _runtime

    def _cuda(self):
        return self._runtime().cuda()

    @property
    def size(self) -> int:
        return self.rows * self.n

    def engine(self, backend: str) -> str:
        """The engine for this array (see :func:`resolve_backend`)."""
        return resolve_backend(backend, self.size, device=self.device)

    # ------------------------------------------------------------------ operands
    def operand(self, arr, name: str, dtype=None):
        """Another array of the input's shape (or broadcastable to it), as rows; on the
        device when the input is."""
        if self.device and is_device_array(arr):
            arr = self._runtime().as_device(arr)
            if tuple(arr.shape) != self.shape or not arr.is_c_contiguous():
                raise ValueError(
                    f"{self.func}(): {name} on the GPU must be C-contiguous with shape {self.shape}"
                )
            return arr.reshape(self.rows, self.n)
        arr = np.asarray(arr)
        if dtype is None:
            dtypes_for(arr.dtype, self.func)
            dtype = self.compute_dtype
        try:
            arr = np.broadcast_to(arr, self.shape)
        except ValueError:
            raise ValueError(
                f"{self.func}(): {name} has shape {arr.shape}, which does not broadcast "
                f"to the input's shape {self.shape}"
            ) from None
        if self.flattened:
            arr = arr.reshape(-1)
        moved = np.moveaxis(arr, self.axis, -1).reshape(self.rows, self.n)
        rows = np.ascontiguousarray(moved, dtype=dtype)
        return self._cuda().to_device(rows) if self.device else rows

    # ------------------------------------------------------------------ outputs
    def _reduced_shape(self, keepdims: bool) -> tuple[int, ...]:
        if self.flattened:
            return (1,) * len(self.shape) if keepdims else ()
        shape = list(self.shape)
        if keepdims:
            shape[self.axis] = 1
        else:
            del shape[self.axis]
        return tuple(shape)

    def check_out(self, out, shape, dtype, name: str = "out") -> None:
        """Raise unless ``out`` is an array of ``shape`` and ``dtype`` where the data
        is (host or GPU); ``name`` is the argument's name in the message."""
        if self.device:
            if not is_device_array(out):
                raise TypeError(f"{self.func}(): {name} must be a GPU array for GPU input")
            if tuple(out.shape) != shape or np.dtype(out.dtype) != dtype:
                raise ValueError(f"{self.func}(): {name} must have shape {shape} and dtype {dtype}")
            return
        if not isinstance(out, np.ndarray):
            raise TypeError(
                f"{self.func}(): {name} must be a NumPy array, got {type(out).__name__}"
            )
        if out.shape != shape or out.dtype != dtype:
            raise ValueError(
                f"{self.func}(): {name} must have shape {shape} and dtype {dtype}; "
                f"got shape {out.shape} and dtype {out.dtype}"
            )

    def new_rows(self, out=None, *, inputs=()) -> np.ndarray:
        """A ``(rows, n)`` buffer for the kernel: a view of ``out`` when it can be."""
        if self.device:
            if out is None:
                return self._cuda().device_array((self.rows, self.n), self.compute_dtype)
            self.check_out(out, self.shape, self.result_dtype)
            return self._runtime().as_device(out).reshape(self.rows, self.n)
        if out is not None:
            self.check_out(out, self.shape, self.result_dtype)
            if out.dtype == self.compute_dtype and not self.flattened:
                view = np.moveaxis(out, self.axis, -1)
                if view.flags.c_contiguous:
                    buffer = view.reshape(self.rows, self.n)
                    if not any(
                        np.may_share_memory(buffer, a) and not _same_layout(buffer, a)
                        for a in (self.data, *inputs)
                    ):
                        return buffer
        return np.empty((self.rows, self.n), dtype=self.compute_dtype)

    def restore(self, buffer: np.ndarray, out=None) -> np.ndarray:
        """The ``(rows, n)`` result in the input's shape and the result dtype."""
        if self.device:
            return out if out is not None else buffer.reshape(*self.shape)
        result = np.moveaxis(buffer.reshape(self.moved_shape), -1, self.axis).reshape(self.shape)
        if out is None:
            return result.astype(self.result_dtype, copy=False)
        if not np.shares_memory(result, out) or not _same_layout(result, out):
            np.copyto(out, result, casting="unsafe")
        return out

    def new_reduced(self, out=None, *, keepdims=False) -> np.ndarray:
        """A ``(rows,)`` buffer for a reduction along the axis."""
        if out is not None:
            self.check_out(out, self._reduced_shape(keepdims), self.result_dtype)
        if self.device:
            return self._cuda().device_array(self.rows, self.compute_dtype)
        return np.empty(self.rows, dtype=self.compute_dtype)

    def restore_reduced(self, buffer: np.ndarray, out=None, *, keepdims=False) -> np.ndarray:
        """The ``(rows,)`` result shaped as the input without (or with length-1) axis."""
        if self.device:
            shape = self._reduced_shape(keepdims)
            return buffer.reshape(*shape) if shape else buffer
        result = buffer.reshape(self._reduced_shape(keepdims)).astype(self.result_dtype, copy=False)
        if out is None:
            return result[()] if result.ndim == 0 else result
        np.copyto(out, result, casting="unsafe")
        return out


def vjp(name, y, dy, axis, backend, out, kernel_pair, reference_fn):
    """Run a backward op ``dx = f(y, dy)`` row by row (the shared wrapper of the
    ``*_backward`` functions): ``y`` and ``dy`` must have the same shape."""
    rows = Rows(as_array(y, name), axis, name)
    dy = dy if is_device_array(dy) else np.asarray(dy)
    if tuple(dy.shape) != rows.shape:
        raise ValueError(f"{name}(): dy has shape {tuple(dy.shape)}, y has shape {rows.shape}")
    grad = rows.operand(dy, "dy")
    engine = rows.engine(backend)
    result = rows.new_rows(out, inputs=(grad,))
    if engine == "numpy":
        result[...] = reference_fn(rows.data, grad)
    else:
        run(kernel_pair, engine, rows.data, grad, result)
    return rows.restore(result, out)
