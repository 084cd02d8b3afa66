"""A GPU array seen as rows: the device path of ``softmax_numba._rows.rows_of``.

Rows are a view of the device array, so the axis (or the tuple of axes) must be
the last of a C-contiguous array (moving an axis would need a copy on the device); the result
stays on the device, in the input's dtype (float32 or float64; float16 and bfloat16 for
:data:`HALF_FUNCTIONS`, computed in float32).

bfloat16 on the device is a Numba device array of dtype ``ml_dtypes.bfloat16``: a torch
CUDA bfloat16 tensor arrives so (``softmax_numba._interop``) and its result goes back
as a bfloat16 tensor; the kernels read it as the ``uint16`` array of its bits.  CuPy
has no bfloat16 type: a CuPy ``uint16`` (or ``int16``) array is refused like any other
integer GPU array; its bits can be passed as
``numba.cuda.as_cuda_array(a).view(ml_dtypes.bfloat16)``, and the result, a Numba
bfloat16 device array, read back as ``cupy.asarray(result.view(numpy.uint16))``.
"""

from __future__ import annotations

import numpy as np

from softmax_numba._api import normalized_axes
from softmax_numba._rows import RowsBase
from softmax_numba.gpu import _runtime, buffers

#: The functions whose CUDA kernels read and write float16 and bfloat16 device arrays
#: (``_runtime.HALF_STORAGE``; cross-entropy with class-index targets).
HALF_FUNCTIONS = ("softmax", "log_softmax", "logsumexp", "cross_entropy")


class DeviceRows(RowsBase):
    """A GPU array as ``(count, n)`` rows along its last axis (the same methods as
    ``softmax_numba._rows.HostRows``).

    Parameters
    ----------
    x : device array
        A Numba device array or any object with ``__cuda_array_interface__``.
    axis : int or None
        The last axis, or ``None`` (the flattened array).
    func : str
        The public function's name, for error messages.
    """

    device = True

    def __init__(self, x, axis, func: str, *, multiple: bool = False):
        x = _runtime.as_device(x)
        dtype = np.dtype(x.dtype)
        half = _runtime.is_half(dtype) and func in HALF_FUNCTIONS
        if dtype not in (np.float32, np.float64) and not half:
            also = " (float16 and bfloat16 too)" if func in HALF_FUNCTIONS else ""
            bits = ""
            if dtype in (np.uint16, np.int16):
                bits = (
                    "; a 2-byte integer array is not read as bfloat16 (CuPy has no bfloat16): "
                    "view it as numba.cuda.as_cuda_array(a).view(ml_dtypes.bfloat16)"
                )
            raise TypeError(
                f"{func}() on a GPU array accepts float32 or float64{also}, got {dtype}{bits}"
            )
        self.func = func
        self.shape = tuple(x.shape)
        ndim = len(self.shape)
        axes = tuple(range(ndim)) if axis is None else normalized_axes(axis, ndim, func, multiple)
        lead = ndim - len(axes)
        if axes != tuple(range(lead, ndim)) or not x.is_c_contiguous():
            raise ValueError(
                f"{func}(): a GPU array is processed along the last axis (or a tuple of "
                "the last axes) of a C-contiguous array only; move the axes on the device first"
            )
        # float16 and bfloat16 are stored as they are and computed in float32 inside
        # the kernels.
        self.result_dtype = dtype
        self.compute_dtype = np.dtype(np.float32) if half else dtype
        self.flattened = axis is None and ndim != 1
        self.moved_shape = self.shape
        self._set_axes(axes if not self.flattened else (0,))
        self.n = int(np.prod(self.shape[lead:], dtype=np.int64))
        self.count = int(np.prod(self.shape[:lead], dtype=np.int64))
        if self.flattened:
            self.moved_shape = (self.count * self.n,)
        self.data = x.reshape(self.count, self.n)

    # ------------------------------------------------------------------ operands
    def operand(self, arr, name: str, dtype=None):
        """Another array of the input's shape as rows on the device: a device array
        of that shape is viewed, a host array broadcast to it and copied over."""
        if _runtime.is_device_array(arr):
            arr = _runtime.as_device(arr)
            if tuple(arr.shape) != self.shape or not arr.is_c_contiguous():
                raise ValueError(
                    f"{self.func}(): {name} on the GPU must be C-contiguous with shape {self.shape}"
                )
            want = self.compute_dtype if dtype is None else np.dtype(dtype)
            if np.dtype(arr.dtype) != want:
                raise TypeError(f"{self.func}(): {name} on the GPU must have dtype {want}")
            return arr.reshape(self.count, self.n)
        return _runtime.cuda().to_device(self.host_operand(arr, name, dtype))

    def to_host(self, buffer) -> np.ndarray:
        """``buffer`` copied to the host."""
        return buffer.copy_to_host()

    # ------------------------------------------------------------------ buffer ops
    # The host path's NumPy one-liners, as kernels on the device (``gpu.buffers``),
    # in float32 and float64.
    def _full_precision(self, option: str) -> None:
        if _runtime.is_half(self.result_dtype):
            raise TypeError(
                f"{self.func}(): {option} on a {self.result_dtype} GPU array is not "
                "supported; pass float32 (or a host array)"
            )

    def where(self, buffer, mask, fill):
        """``buffer`` where ``mask``, else ``fill`` (a new device array)."""
        self._full_precision("where=")
        return buffers.where(buffer, mask, fill)

    def fill_where_not(self, buffer, mask, fill) -> None:
        """``buffer[~mask] = fill``."""
        self._full_precision("where=")
        buffers.fill_where_not(buffer, mask, fill)

    def nan_where_negative(self, buffer, sign) -> None:
        """``buffer[sign < 0] = NaN``."""
        self._full_precision("b=")
        buffers.nan_where_negative(buffer, sign)

    def sign_of_logsumexp(self, lse):
        """The sign of each unweighted sum from its log: NaN, 0 for ``-inf``, else 1."""
        self._full_precision("return_sign=")
        return buffers.sign_of_logsumexp(lse)

    # ------------------------------------------------------------------ outputs
    def check_out(self, out, shape, dtype, name: str = "out") -> None:
        """Raise unless ``out`` is a GPU array of ``shape`` and ``dtype``."""
        if not _runtime.is_device_array(out):
            raise TypeError(f"{self.func}(): {name} must be a GPU array for GPU input")
        if tuple(out.shape) != shape or np.dtype(out.dtype) != dtype:
            raise ValueError(f"{self.func}(): {name} must have shape {shape} and dtype {dtype}")

    def empty(self, shape):
        """An uninitialized device buffer of ``shape`` in the input's dtype (the
        kernels store float16 and bfloat16 results in their own type)."""
        return _runtime.cuda().device_array(shape, self.result_dtype)

    def new_rows(self, out=None, *, inputs=()):
        """A ``(count, n)`` device buffer: a view of ``out`` if given."""
        if out is None:
            return self.empty((self.count, self.n))
        self.check_out(out, self.shape, self.result_dtype)
        return _runtime.as_device(out).reshape(self.count, self.n)

    def restore(self, buffer, out=None, *, length: int | None = None):
        """The result in the input's shape (``length`` along the axis for a pooling
        op); ``out``, when given, is the buffer or receives it."""
        shape = self.shape if length is None else self.pooled_shape(length)
        if out is None:
            return buffer.reshape(*shape)
        if length is not None:
            out.copy_to_device(buffer.reshape(*shape))
        return out

    def new_reduced(self, out=None, *, keepdims=False):
        """A ``(count,)`` device buffer for a reduction along the axis."""
        if out is not None:
            self.check_out(out, self.reduced_shape(keepdims), self.result_dtype)
        return self.empty(self.count)

    def restore_reduced(self, buffer, out=None, *, keepdims=False):
        """The ``(count,)`` result shaped as the input without (or with length-1) axis."""
        shape = self.reduced_shape(keepdims)
        return buffer.reshape(*shape) if shape else buffer
