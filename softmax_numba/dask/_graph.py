"""The pieces of every Dask graph of :mod:`softmax_numba.dask`: the checks, the
per-chunk blocks (the Numba kernels of :mod:`softmax_numba.cpu.states`) and the
three steps, chunk states, their exact merge as a tree reduction, and each chunk
normalized from the merged state (the algebra of :mod:`softmax_numba.state_algebra`).
"""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np

from softmax_numba._api import check_choice, dtypes_for, normalized_axes
from softmax_numba.cpu import states as kernels

BACKENDS = ("auto", "cpu", "parallel")

# --------------------------------------------------------------------------- set-up


def engine_of(backend: str) -> str:
    """``"auto"`` runs the serial kernel in each task: Dask spreads the chunks."""
    if backend in ("numpy", "cuda"):
        raise NotImplementedError(
            f"backend={backend!r} is not available on Dask arrays; "
            f"use one of {', '.join(map(repr, BACKENDS))}"
        )
    check_choice("backend", backend, BACKENDS)
    return "cpu" if backend == "auto" else backend


def prepare(x, axis, func: str, multiple: bool = False):
    """``(x as a Dask array, normalized axis, compute dtype, result dtype)``, with the
    in-memory functions' checks (:func:`softmax_numba._api.dtypes_for`,
    :func:`softmax_numba._api.normalized_axes`; ``multiple``: whether the in-memory
    function takes a tuple of axes, which the Dask one does not yet)."""
    x = x if isinstance(x, da.Array) else da.asarray(x)
    compute, result = dtypes_for(np.dtype(x.dtype), func)
    if axis is None:
        if x.ndim > 1:
            raise NotImplementedError(
                f"{func}(): axis=None on a {x.ndim}-d Dask array is not supported; "
                "pass the axis to work along"
            )
        return x.reshape(1) if x.ndim == 0 else x, 0, compute, result
    axes = normalized_axes(axis, x.ndim, func, multiple)
    if len(axes) != 1:
        raise NotImplementedError(
            f"{func}(): a tuple of axes on a Dask array is not supported; pass one axis"
        )
    return x, axes[0], compute, result


def indices(ndim: int, axis: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Blockwise indices: the array's, the state's (its axis contracted: one block of
    length 2), and the rows' (the array's without the axis)."""
    full = tuple(range(ndim))
    state = tuple(ndim if i == axis else i for i in full)
    return full, state, tuple(i for i in full if i != axis)


# --------------------------------------------------------------------------- blocks


def block_rows(block: np.ndarray, axis: int, dtype) -> tuple[np.ndarray, tuple[int, ...]]:
    """The block as C-contiguous ``(rows, n)`` along ``axis``, and its moved shape."""
    moved = np.moveaxis(block, axis, -1)
    rows = int(np.prod(moved.shape[:-1], dtype=np.int64))
    return np.ascontiguousarray(moved.reshape(rows, moved.shape[-1]), dtype=dtype), moved.shape


def stack(m: np.ndarray, s: np.ndarray, lead: tuple[int, ...], axis: int) -> np.ndarray:
    """States ``(rows,)`` as an array whose ``axis`` has length 2: ``[m, s]``."""
    return np.moveaxis(np.stack([m, s], axis=-1).reshape(*lead, 2), -1, axis)


def unstack(state: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    flat = np.moveaxis(state, axis, -1).reshape(-1, 2)
    return np.ascontiguousarray(flat[:, 0]), np.ascontiguousarray(flat[:, 1])


def _chunk_state(block, axis, keepdims, engine, compute):
    """Step 1, one chunk: its ``(m, s)`` per row."""
    (axis,) = axis
    rows, moved = block_rows(block, axis, compute)
    m, s = np.empty(len(rows), compute), np.empty(len(rows), compute)
    getattr(kernels.STATES, engine)(rows, m, s)
    return stack(m, s, moved[:-1], axis)


def _merge_states(states, axis, keepdims, engine):
    """Step 2: states concatenated along the axis (``[m1, s1, m2, s2, ...]``) into one."""
    (axis,) = axis
    moved = np.moveaxis(states, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    ms, ss = np.ascontiguousarray(flat[:, 0::2]), np.ascontiguousarray(flat[:, 1::2])
    m, s = np.empty(len(flat), flat.dtype), np.empty(len(flat), flat.dtype)
    getattr(kernels.MERGE, engine)(ms, ss, m, s)
    return stack(m, s, moved.shape[:-1], axis)


def _normalize_block(block, state, axis, kernel, engine, compute, result):
    """Step 3, one chunk: ``kernel(x, m, s, out)`` on its rows.

    ``kernel`` is the name of the kernels in :mod:`softmax_numba.cpu.states`: the
    graph holds only plain values (Dask's ``sizeof`` of Numba objects imports
    ``numba.cuda``, which fails on the CUDA simulator).
    """
    kernel = getattr(kernels, kernel)
    rows, moved = block_rows(block, axis, compute)
    out = np.empty_like(rows)
    getattr(kernel, engine)(rows, *unstack(state, axis), out)
    return np.moveaxis(out.reshape(moved), -1, axis).astype(result, copy=False)


def lse_block(state, axis, keepdims, result):
    m, s = (np.take(state, [k], axis=axis) for k in (0, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = m + np.log1p(s)
    return (lse if keepdims else np.squeeze(lse, axis)).astype(result, copy=False)


# --------------------------------------------------------------------------- graphs


def states(x, axis: int, compute, engine: str, split_every=None):
    """Steps 1 and 2: the merged state, ``x``'s shape with ``axis`` of length 2."""
    return da.reduction(
        x,
        chunk=functools.partial(_chunk_state, engine=engine, compute=compute),
        combine=functools.partial(_merge_states, engine=engine),
        aggregate=functools.partial(_merge_states, engine=engine),
        axis=axis,
        keepdims=True,
        dtype=compute,
        split_every=split_every,
        concatenate=True,
        output_size=2,
        meta=np.empty((0,) * x.ndim, compute),
        name="softmax-state",
    )


def normalized(x, state, axis: int, kernel: str, engine: str, compute, result, name: str):
    full, state_index, _ = indices(x.ndim, axis)
    return da.blockwise(
        _normalize_block,
        full,
        x,
        full,
        state,
        state_index,
        axis=axis,
        kernel=kernel,
        engine=engine,
        compute=compute,
        result=result,
        concatenate=True,
        dtype=result,
        meta=np.empty((0,) * x.ndim, result),
        token=name,
    )


def masked(x, where, compute):
    """``x`` in the compute dtype, ``-inf`` where ``where`` is false; and the mask."""
    x = x.astype(compute)
    if where is None:
        return x, None
    mask = da.broadcast_to(da.asarray(where).astype(bool), x.shape).rechunk(x.chunks)
    return da.where(mask, x, -np.inf).astype(compute), mask


def restore(out, shape):
    return out.reshape(shape) if out.shape != shape else out


def _item(block):
    return np.asarray(block)[()]


def scalar(x):
    """``x``, whose 0-d result computes to a NumPy scalar, as the in-memory functions
    (and Dask's own reductions) return; arrays of more dimensions unchanged."""
    return x.map_blocks(_item, dtype=x.dtype) if x.ndim == 0 else x


def state_parts(state, axis: int) -> tuple[da.Array, da.Array]:
    """``m`` and ``log1p(s)`` of every row from the merged state."""
    m, s = (da.take(state, k, axis=axis) for k in (0, 1))
    return m, da.log1p(s)
