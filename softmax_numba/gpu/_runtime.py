"""Launching CUDA kernels: availability, kernel cache, transfers, launch shape.

``launch(kernels, *args)`` runs the CUDA kernel registered under the name of a
CPU kernel (the same arguments: 2-D rows, outputs included; ``kernels.outputs``
says which).  Host (NumPy) arrays go
to the device and the outputs come back into them; device arrays are used as
they are.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from softmax_numba import config


def cuda():
    """``numba.cuda``, or an error that says what is missing."""
    try:
        from numba import cuda as numba_cuda
    except ImportError:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "backend='cuda' needs the numba-cuda package: pip install 'softmax_numba[cuda]'"
        ) from None
    if not numba_cuda.is_available():
        raise RuntimeError(
            "backend='cuda' needs an NVIDIA GPU with a working driver, and none was found "
            "(to run the kernels on the CPU for testing, set NUMBA_ENABLE_CUDASIM=1 before "
            "numba is imported)"
        )
    return numba_cuda


def is_device_array(x) -> bool:
    """Whether ``x`` lives on a GPU: a Numba device array or any object with
    ``__cuda_array_interface__`` (CuPy, PyTorch CUDA tensors)."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    numba_cuda = sys.modules.get("numba.cuda")
    if numba_cuda is None:
        return False
    check = getattr(numba_cuda, "is_cuda_array", None)
    if check is None:  # the CUDA simulator has no is_cuda_array; its arrays are fakes
        return type(x).__name__ == "FakeCUDAArray"
    return check(x)


def as_device(x):
    """A Numba device array viewing ``x`` (no copy)."""
    wrap = getattr(cuda(), "as_cuda_array", None)
    return x if wrap is None else wrap(x)


def simulated() -> bool:
    """Whether the kernels run on Numba's CUDA simulator."""
    from numba.core import config as numba_config

    return bool(numba_config.ENABLE_CUDASIM)


@functools.cache
def built(dtype_name: str) -> dict:
    """Every CUDA kernel for one compute dtype, compiled lazily on first launch."""
    import numba

    from softmax_numba.gpu import _reduce, elementwise, losses, maxout, softmax, sparse

    dtype = getattr(numba, dtype_name)
    red = _reduce.build(dtype)
    built = {}
    for family in (softmax, losses, elementwise, maxout, sparse):
        built.update(family.build(dtype, red))
    return built


#: Threads in a warp.
WARP = 32
#: The name suffix of a kernel's warp-per-row variant in :func:`built`
#: (:func:`_launch_shape` picks it for short rows).
WARP_SUFFIX = "__warp_per_row"


def _blocks(rows: int) -> int:
    return max(1, min(rows, config.CUDA_MAX_BLOCKS))


def _launch_shape(kernels: dict, name: str, shape, threads: int):
    """``(kernel, blocks, threads)``: the warp-per-row variant of ``name`` for rows of
    at most ``config.CUDA_WARP_ROW_MAX_LENGTH`` entries, where there is one
    (``config.CUDA_WARP_ROWS_PER_BLOCK`` warps, a row each, per block), else the
    block-per-row kernel with ``threads`` threads."""
    rows, n = shape[0], shape[1] if len(shape) > 1 else 1
    warp_kernel = kernels.get(name + WARP_SUFFIX)
    if warp_kernel is not None and n <= config.CUDA_WARP_ROW_MAX_LENGTH:
        per_block = config.CUDA_WARP_ROWS_PER_BLOCK
        if not 1 <= per_block * WARP <= config.CUDA_MAX_THREADS_PER_BLOCK:
            raise ValueError(
                f"config.CUDA_WARP_ROWS_PER_BLOCK={per_block} must be in "
                f"1..{config.CUDA_MAX_THREADS_PER_BLOCK // WARP}"
            )
        return warp_kernel, _blocks(-(-rows // per_block)), WARP * per_block
    return kernels[name], _blocks(rows), threads


def launch(kernels, *args) -> None:
    """Run the CUDA kernel of the CPU kernels ``kernels`` (a
    ``softmax_numba.cpu._compile.Engines``) on ``args``, their arguments."""
    numba_cuda = cuda()
    threads = config.CUDA_THREADS_PER_BLOCK
    if not 1 <= threads <= config.CUDA_MAX_THREADS_PER_BLOCK:
        raise ValueError(
            f"config.CUDA_THREADS_PER_BLOCK={threads} must be in "
            f"1..{config.CUDA_MAX_THREADS_PER_BLOCK}"
        )
    first = args[0]
    dtype = np.dtype(first.dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"the CUDA kernels compute in float32 or float64, got {dtype}")
    rows = first.shape[0]
    if rows == 0:
        return
    device_args, copy_back = [], []
    for position, arg in enumerate(args):
        if isinstance(arg, np.ndarray):
            on_device = numba_cuda.to_device(np.ascontiguousarray(arg))
            device_args.append(on_device)
            if position in kernels.outputs and arg.size:
                copy_back.append((arg, on_device))
        else:
            device_args.append(arg)
    kernel, blocks, threads = _launch_shape(built(dtype.name), kernels.name, first.shape, threads)
    kernel[blocks, threads](*device_args)
    for host, device in copy_back:
        device.copy_to_host(host)
