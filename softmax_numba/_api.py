"""The path from a user's array to a kernel and back.

validate -> choose the compute dtype -> move the axis last and make a 2-D
C-contiguous ``(rows, n)`` array -> choose the engine -> (kernel) -> reshape,
move the axis back, cast to the result dtype, write into ``out=`` if given.
"""

from __future__ import annotations

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


def as_array(x, func: str) -> np.ndarray:
    """``np.asarray(x)`` with a ``TypeError`` for dtypes the package cannot compute in."""
    x = np.asarray(x)
    dtypes_for(x.dtype, func)
    return x


def resolve_backend(backend: str, size: int) -> str:
    """The engine that runs: ``"numpy"``, ``"cpu"`` or ``"parallel"``.

    ``"auto"`` picks the parallel engine for arrays of at least
    ``config.PARALLEL_MIN_ELEMENTS`` elements when Numba has more than one thread.
    """
    check_choice("backend", backend, BACKENDS)
    if backend == "cuda":
        raise NotImplementedError(
            "backend='cuda' is not available in this version of softmax_numba; "
            "use backend='cpu', 'parallel', 'numpy' or 'auto'"
        )
    if backend == "auto":
        parallel = size >= config.PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1
        return "parallel" if parallel else "cpu"
    return backend


def split_chunks(engine: str, rows: int, n: int) -> int:
    """How many pieces the parallel engine cuts each row into (1: no split)."""
    threads = numba.get_num_threads()
    if engine != "parallel" or threads < 2 or rows >= threads or n < config.SPLIT_ROW_MIN_LENGTH:
        return 1
    return min(4 * threads, n // 1024)


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

    def __init__(self, x: np.ndarray, axis: int | None, func: str):
        self.func = func
        self.shape = x.shape
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

    @property
    def size(self) -> int:
        return self.rows * self.n

    # ------------------------------------------------------------------ operands
    def operand(self, arr, name: str, dtype=None) -> np.ndarray:
        """Another array of the input's shape (or broadcastable to it), as rows."""
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
        return np.ascontiguousarray(moved, dtype=dtype)

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

    def _check_out(self, out, shape, dtype) -> None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{self.func}(): out must be a NumPy array, got {type(out).__name__}")
        if out.shape != shape or out.dtype != dtype:
            raise ValueError(
                f"{self.func}(): out must have shape {shape} and dtype {dtype}; "
                f"got shape {out.shape} and dtype {out.dtype}"
            )

    def new_rows(self, out=None, *, inputs=()) -> np.ndarray:
        """A ``(rows, n)`` buffer for the kernel: a view of ``out`` when it can be."""
        if out is not None:
            self._check_out(out, self.shape, self.result_dtype)
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
        result = np.moveaxis(buffer.reshape(self.moved_shape), -1, self.axis).reshape(self.shape)
        if out is None:
            return result.astype(self.result_dtype, copy=False)
        if not np.shares_memory(result, out) or not _same_layout(result, out):
            np.copyto(out, result, casting="unsafe")
        return out

    def new_reduced(self, out=None, *, keepdims=False) -> np.ndarray:
        """A ``(rows,)`` buffer for a reduction along the axis."""
        if out is not None:
            self._check_out(out, self._reduced_shape(keepdims), self.result_dtype)
        return np.empty(self.rows, dtype=self.compute_dtype)

    def restore_reduced(self, buffer: np.ndarray, out=None, *, keepdims=False) -> np.ndarray:
        """The ``(rows,)`` result shaped as the input without (or with length-1) axis."""
        result = buffer.reshape(self._reduced_shape(keepdims)).astype(self.result_dtype, copy=False)
        if out is None:
            return result[()] if result.ndim == 0 else result
        np.copyto(out, result, casting="unsafe")
        return out


def vjp(name, y, dy, axis, backend, out, kernel_pair, reference_fn):
    """Run a backward op ``dx = f(y, dy)`` row by row (the shared wrapper of the
    ``*_backward`` functions): ``y`` and ``dy`` must have the same shape."""
    rows = Rows(as_array(y, name), axis, name)
    dy = np.asarray(dy)
    if dy.shape != rows.shape:
        raise ValueError(f"{name}(): dy has shape {dy.shape}, y has shape {rows.shape}")
    grad = rows.operand(dy, "dy")
    engine = resolve_backend(backend, rows.size)
    result = rows.new_rows(out, inputs=(grad,))
    if engine == "numpy":
        result[...] = reference_fn(rows.data, grad)
    else:
        getattr(kernel_pair, engine)(rows.data, grad, result)
    return rows.restore(result, out)
