"""The path of softmax and log-softmax with ``temperature=`` and ``sink=``.

Both options run one kernel per engine (``softmax_numba.cpu.softmax_options``, its
CUDA and numpy twins), which divides by the temperature in its max pass and adds the
sink to the row's state: the result is softmax of the row ``[x / T, c]`` without
its last entry, with no array of ``x``'s size made on the way.
"""

from __future__ import annotations

import math

import numpy as np

from softmax_numba._api import is_device_array, lean_map, run
from softmax_numba._rows import rows_of


def checked_temperature(func: str, temperature) -> float:
    """``temperature`` as a float, 1.0 for ``None``: a ``TypeError`` unless it is a
    real number, a ``ValueError`` unless it is finite and positive."""
    if temperature is None:
        return 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float | np.number):
        raise TypeError(
            f"{func}(): temperature must be a real number, got {type(temperature).__name__}"
        )
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"{func}(): temperature must be finite and > 0, got {temperature}")
    return t


def sink_rows(func: str, sink, reduced_shape: tuple[int, ...], count: int, dtype) -> np.ndarray:
    """The sink logit of each of the ``count`` rows, in the compute ``dtype``: ``-inf``
    (no sink) for ``None``, else ``sink`` (a number, or an array broadcast to the
    input's shape without the axis: one value per row)."""
    if sink is None:
        return np.full(count, -np.inf, dtype=dtype)
    if is_device_array(sink):
        from numba import cuda

        sink = cuda.as_cuda_array(sink).copy_to_host()
    sink = np.asarray(sink)
    if sink.dtype.kind not in "iuf" and sink.dtype.name != "bfloat16":
        raise TypeError(f"{func}(): sink must be a real number or array, got dtype {sink.dtype}")
    try:
        values = np.broadcast_to(sink, reduced_shape)
    except ValueError:
        raise ValueError(
            f"{func}(): sink has shape {sink.shape}; it must be a number or broadcast to "
            f"{reduced_shape}, the input's shape without the axis (one value per row)"
        ) from None
    return np.ascontiguousarray(values.reshape(count), dtype=dtype)


def masked_rows(rows, where):
    """The rows with masked-out entries set to ``-inf``, and the mask as rows (on the
    device for GPU rows)."""
    if where is None:
        return rows.data, None
    mask = rows.operand(where, "where", dtype=bool)
    return rows.where(rows.data, mask, -np.inf), mask


def options_map(func, x, axis, where, backend, out, kernel, temperature, sink, excluded):
    """``kernel(rows, result, T, sinks)`` on the chosen engine: the lean path when it
    can be taken, else the rows of :func:`~softmax_numba._rows.rows_of`, with the
    ``where`` mask (excluded entries set to ``excluded``)."""
    t = checked_temperature(func, temperature)
    if where is None and type(x) is np.ndarray and x.ndim and x.dtype.kind == "f":
        sinks = sink_rows(func, sink, x.shape[:-1], math.prod(x.shape[:-1]), x.dtype)
        result = lean_map(func, x, axis, backend, out, kernel, t, sinks)
        if result is not None:
            return result
    rows = rows_of(x, axis, func, multiple=True)
    engine = rows.engine(backend)
    data, mask = masked_rows(rows, where)
    result = rows.new_rows(out)
    sinks = sink_rows(func, sink, rows.reduced_shape(False), rows.count, rows.compute_dtype)
    run(kernel, engine, data, result, t, sinks)
    if mask is not None:
        rows.fill_where_not(result, mask, excluded)
    return rows.restore(result, out)


def sink_gradient(func: str, dx, axis) -> np.ndarray:
    """The gradient with respect to a sink from ``dx``: ``-sum_j dx_j`` along ``axis``."""
    if not isinstance(dx, np.ndarray):
        raise NotImplementedError(
            f"{func}(): return_sink_grad takes NumPy arrays; for GPU arrays use "
            "softmax_numba.torch, whose sink= is learnable"
        )
    return -np.sum(dx, axis=axis)
