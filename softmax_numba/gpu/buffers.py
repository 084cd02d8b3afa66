"""Elementwise kernels on device buffers: what the host path does with NumPy on its
rows (``where=`` masks, the sign and NaN of a weighted log-sum-exp), for
``softmax_numba.gpu._rows.DeviceRows``.

Each takes C-contiguous device arrays viewed as 1-D and runs a grid-stride loop
over their entries; Numba compiles one per argument types on first launch.
"""

from __future__ import annotations

import math

from numba import cuda

from softmax_numba import config

#: Threads per block of these kernels (any value works; they are memory-bound).
THREADS = 256


@cuda.jit
def _where(x, mask, fill, out):
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[k] = x[k] if mask[k] else fill


@cuda.jit
def _fill_where_not(out, mask, fill):
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        if not mask[k]:
            out[k] = fill


@cuda.jit
def _nan_where_negative(out, sign):
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        if sign[k] < 0:
            out[k] = math.nan


@cuda.jit
def _sign_of_logsumexp(lse, sign):
    """The sign of an unweighted sum from its log: NaN, 0 for ``-inf``, else 1."""
    for k in range(cuda.grid(1), lse.size, cuda.gridsize(1)):
        v = lse[k]
        sign[k] = v if v != v else (0.0 if v == -math.inf else 1.0)


@cuda.jit
def _transpose(src, dst):
    """``dst[j, i] = src[i, j]`` (the ragged-row ops' ``(nnz, F)`` entries as ``(F, nnz)``
    rows, and back)."""
    cols = src.shape[1]
    for k in range(cuda.grid(1), src.size, cuda.gridsize(1)):
        i = k // cols
        j = k - i * cols
        dst[j, i] = src[i, j]


def _launch(kernel, size: int, *args) -> None:
    if size == 0:
        return
    blocks = max(1, min(-(-size // THREADS), config.CUDA_MAX_BLOCKS))
    kernel[blocks, THREADS](*args)


def _flat(a):
    return a.reshape(a.size)


def where(x, mask, fill):
    """``x`` where ``mask``, else ``fill``: a new device array of ``x``'s shape."""
    out = cuda.device_array(x.shape, x.dtype)
    _launch(_where, x.size, _flat(x), _flat(mask), x.dtype.type(fill), _flat(out))
    return out


def fill_where_not(out, mask, fill) -> None:
    """``out[~mask] = fill``, in place."""
    _launch(_fill_where_not, out.size, _flat(out), _flat(mask), out.dtype.type(fill))


def nan_where_negative(out, sign) -> None:
    """``out[sign < 0] = NaN``, in place."""
    _launch(_nan_where_negative, out.size, _flat(out), _flat(sign))


def sign_of_logsumexp(lse):
    """A new device array: the sign of each sum whose log is ``lse``."""
    sign = cuda.device_array(lse.shape, lse.dtype)
    _launch(_sign_of_logsumexp, lse.size, _flat(lse), _flat(sign))
    return sign


def transpose(src, dst=None):
    """``src.T`` of a 2-D C-contiguous device array, into ``dst`` (C-contiguous, of the
    transposed shape) or a new device array."""
    if dst is None:
        dst = cuda.device_array((src.shape[1], src.shape[0]), src.dtype)
    _launch(_transpose, src.size, src, dst)
    return dst
