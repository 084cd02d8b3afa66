"""An array seen as C-contiguous rows along an axis, and the way back.

:func:`rows_of` is the first line of every public function: it checks the input
once and chooses the path by where the data lives, :class:`HostRows` for NumPy
arrays (and anything ``np.asarray`` takes) or ``softmax_numba.gpu._rows.DeviceRows``
for GPU arrays, imported only then.  The two classes have the same methods, so a
wrapper asks for buffers and results without knowing which one it holds; neither
has a branch for the other.
"""

from __future__ import annotations

import numpy as np

from softmax_numba._api import dtypes_for, is_device_array, normalized_axes, resolve_backend


def rows_of(x, axis, func: str, *, multiple: bool = False):
    """``x`` as rows along ``axis``: a :class:`HostRows`, or a ``DeviceRows`` when
    ``x`` lives on a GPU.  ``func`` is the public function's name, for messages;
    ``multiple``: whether ``axis`` may be a tuple of axes, normalized together."""
    if is_device_array(x):
        from softmax_numba.gpu._rows import DeviceRows

        return DeviceRows(x, axis, func, multiple=multiple)
    return HostRows(np.asarray(x), axis, func, multiple=multiple)


def same_layout(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays view the same memory the same way (same start, strides)."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
    )


class RowsBase:
    """What both paths share: the shape bookkeeping of a reduction along the axis.

    Attributes (set by the subclasses): ``func``, ``shape`` (the input's),
    ``axes`` (the sorted axes a row runs along, one unless a tuple was asked for),
    ``axis`` (the one axis, ``None`` for a tuple), ``flattened`` (``axis=None`` on
    an array of more than one dimension), ``moved_shape`` (the input's shape with
    ``axes`` moved last), ``count`` (the number of rows), ``n`` (their length),
    ``data`` (the ``(count, n)`` rows in ``compute_dtype``), ``result_dtype``.
    """

    device = False

    @property
    def size(self) -> int:
        return self.count * self.n

    @property
    def trailing(self) -> tuple[int, ...]:
        """Where ``axes`` stand once moved last."""
        ndim = len(self.moved_shape)
        return tuple(range(ndim - len(self.axes), ndim))

    def _set_axes(self, axes: tuple[int, ...]) -> None:
        self.axes = axes
        self.axis = axes[0] if len(axes) == 1 else None

    def engine(self, backend: str) -> str:
        """The engine for these rows (see :func:`~softmax_numba._api.resolve_backend`)."""
        return resolve_backend(backend, self.size, device=self.device, op=self.func)

    def reduced_shape(self, keepdims: bool) -> tuple[int, ...]:
        """The input's shape without the axis (or with it of length 1)."""
        if self.flattened:
            return (1,) * len(self.shape) if keepdims else ()
        if keepdims:
            return tuple(1 if i in self.axes else d for i, d in enumerate(self.shape))
        return tuple(d for i, d in enumerate(self.shape) if i not in self.axes)

    def host_operand(self, arr, name: str, dtype=None) -> np.ndarray:
        """``arr`` broadcast to the input's shape as C-contiguous ``(count, n)`` host
        rows, in ``dtype`` (default: the compute dtype, after checking ``arr``'s)."""
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
        moved = arr.reshape(-1) if self.flattened else np.moveaxis(arr, self.axes, self.trailing)
        return np.ascontiguousarray(moved.reshape(self.count, self.n), dtype=dtype)

    def pooled_shape(self, length: int) -> tuple[int, ...]:
        """The input's shape with the axis of length ``length`` (maxout's groups)."""
        shape = list(self.shape)
        shape[self.axis] = length
        return tuple(shape)


class HostRows(RowsBase):
    """A host array as C-contiguous ``(count, n)`` rows along ``axis``.

    Parameters
    ----------
    x : ndarray
        The input.
    axis : int, tuple of int or None
        The axis the operation works along; a tuple (with ``multiple``) treats
        those axes as one, moved last with a single view (copied only when the
        layout needs it); ``None`` means the flattened array.
    func : str
        The public function's name, for error messages.
    multiple : bool
        Whether ``axis`` may be a tuple.
    """

    def __init__(self, x: np.ndarray, axis, func: str, *, multiple: bool = False):
        self.func = func
        self.shape = tuple(x.shape)
        self.compute_dtype, self.result_dtype = dtypes_for(x.dtype, func)
        if axis is None:
            x = x.reshape(-1)
            axis = 0
        self._set_axes(normalized_axes(axis, x.ndim, func, multiple))
        self.flattened = x.shape != self.shape or len(self.shape) == 0
        lead = x.ndim - len(self.axes)
        moved = np.moveaxis(x, self.axes, range(lead, x.ndim))
        self.moved_shape = moved.shape
        self.n = int(np.prod(moved.shape[lead:], dtype=np.int64))
        self.count = int(np.prod(moved.shape[:lead], dtype=np.int64))
        self.data = np.ascontiguousarray(
            moved.reshape(self.count, self.n), dtype=self.compute_dtype
        )

    # ------------------------------------------------------------------ operands
    def operand(self, arr, name: str, dtype=None) -> np.ndarray:
        """Another array of the input's shape (or broadcastable to it), as rows."""
        return self.host_operand(arr, name, dtype)

    def to_host(self, buffer) -> np.ndarray:
        """``buffer`` as a NumPy array (it already is one)."""
        return buffer

    # ------------------------------------------------------------------ buffer ops
    def where(self, buffer, mask, fill) -> np.ndarray:
        """``buffer`` where ``mask``, else ``fill``, in the compute dtype (a new array)."""
        return np.where(mask, buffer, fill).astype(self.compute_dtype, copy=False)

    def fill_where_not(self, buffer, mask, fill) -> None:
        """``buffer[~mask] = fill``."""
        buffer[~mask] = fill

    def nan_where_negative(self, buffer, sign) -> None:
        """``buffer[sign < 0] = NaN`` (a weighted sum's log without its sign)."""
        buffer[sign < 0] = np.nan

    def sign_of_logsumexp(self, lse) -> np.ndarray:
        """The sign of each unweighted sum from its log: NaN, 0 for ``-inf``, else 1."""
        return np.where(np.isnan(lse), np.nan, np.where(lse == -np.inf, 0.0, 1.0)).astype(lse.dtype)

    # ------------------------------------------------------------------ outputs
    def check_out(self, out, shape, dtype, name: str = "out") -> None:
        """Raise unless ``out`` is a writeable NumPy array of ``shape`` and ``dtype``
        (checked before any kernel runs: Numba refuses a read-only buffer with a long
        typing error); ``name`` is the argument's name in the message."""
        if not isinstance(out, np.ndarray):
            raise TypeError(
                f"{self.func}(): {name} must be a NumPy array, got {type(out).__name__}"
            )
        if out.shape != shape or out.dtype != dtype:
            raise ValueError(
                f"{self.func}(): {name} must have shape {shape} and dtype {dtype}; "
                f"got shape {out.shape} and dtype {out.dtype}"
            )
        if not out.flags.writeable:
            raise ValueError(
                f"{self.func}(): {name} must be writeable; got a read-only array "
                f"(pass a writeable array, or omit {name}= for a new one)"
            )

    def empty(self, shape) -> np.ndarray:
        """An uninitialized buffer of ``shape`` in the compute dtype."""
        return np.empty(shape, dtype=self.compute_dtype)

    def new_rows(self, out=None, *, inputs=()) -> np.ndarray:
        """A ``(count, n)`` buffer for the kernel: a view of ``out`` when it can be
        (the compute dtype, the axis contiguous, and no overlap with ``data`` or
        ``inputs`` other than the same layout)."""
        if out is not None:
            self.check_out(out, self.shape, self.result_dtype)
            if out.dtype == self.compute_dtype and not self.flattened:
                view = np.moveaxis(out, self.axes, self.trailing)
                if view.flags.c_contiguous:
                    buffer = view.reshape(self.count, self.n)
                    if not any(
                        np.may_share_memory(buffer, a) and not same_layout(buffer, a)
                        for a in (self.data, *inputs)
                    ):
                        return buffer
        return self.empty((self.count, self.n))

    def restore(self, buffer: np.ndarray, out=None, *, length: int | None = None) -> np.ndarray:
        """The ``(count, n)`` result (``(count, length)`` for a pooling op) in the
        input's shape and the result dtype, written into ``out`` if given."""
        moved_shape = self.moved_shape if length is None else (*self.moved_shape[:-1], length)
        shape = self.shape if length is None else self.pooled_shape(length)
        result = np.moveaxis(buffer.reshape(moved_shape), self.trailing, self.axes).reshape(shape)
        if out is None:
            return result.astype(self.result_dtype, copy=False)
        if not np.shares_memory(result, out) or not same_layout(result, out):
            np.copyto(out, result, casting="unsafe")
        return out

    def new_reduced(self, out=None, *, keepdims=False) -> np.ndarray:
        """A ``(count,)`` buffer for a reduction along the axis."""
        if out is not None:
            self.check_out(out, self.reduced_shape(keepdims), self.result_dtype)
        return self.empty(self.count)

    def restore_reduced(self, buffer: np.ndarray, out=None, *, keepdims=False) -> np.ndarray:
        """The ``(count,)`` result shaped as the input without (or with length-1) axis."""
        result = buffer.reshape(self.reduced_shape(keepdims)).astype(self.result_dtype, copy=False)
        if out is None:
            return result[()] if result.ndim == 0 else result
        np.copyto(out, result, casting="unsafe")
        return out
