"""The shared wrapper of the ``*_backward`` functions (vector-Jacobian products)."""

from __future__ import annotations

import numpy as np

from softmax_numba._api import is_device_array, lean_out, lean_rows, run
from softmax_numba._rows import rows_of


def vjp(name, y, dy, axis, backend, out, kernel_pair, multiple=False):
    """Run a backward op ``dx = f(y, dy)`` row by row: ``y`` and ``dy`` must have the
    same shape (``multiple``: whether ``axis`` may be a tuple, as in the forward op)."""
    lean = lean_rows(y, axis, backend, name)
    if lean is not None and type(dy) is np.ndarray and dy.shape == y.shape:
        data, engine = lean
        if dy.dtype == y.dtype and dy.flags.c_contiguous:  # both as they are: no copies
            result = lean_out(out, y, data.shape, inputs=(dy,))
            if result is not None:
                getattr(kernel_pair, engine)(data, dy.reshape(data.shape), result)
                return result.reshape(y.shape) if out is None else out
    rows = rows_of(y, axis, name, multiple=multiple)
    dy = dy if is_device_array(dy) else np.asarray(dy)
    if tuple(dy.shape) != rows.shape:
        raise ValueError(f"{name}(): dy has shape {tuple(dy.shape)}, y has shape {rows.shape}")
    grad = rows.operand(dy, "dy")
    engine = rows.engine(backend)
    result = rows.new_rows(out, inputs=(grad,))
    run(kernel_pair, engine, rows.data, grad, result)
    return rows.restore(result, out)
