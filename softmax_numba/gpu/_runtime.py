"""Launching CUDA kernels: availability, kernel cache, transfers, launch shape.

``launch(name, *args)`` runs the CUDA kernel registered under the name of a CPU
kernel (the same arguments: 2-D rows, outputs included).  Host (NumPy) arrays go
to the device and the outputs come back into them; device arrays are used as
they are.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from softmax_numba import config

#: Positions of the output arrays of each kernel (copied back for host arrays).
OUTPUTS = {
    "_softmax_naive": (1,), "_softmax_shifted": (1,), "_softmax_online": (1,),
    "_softmax_division_free": (1,), "_log_softmax": (1,), "_logsumexp": (1,),
    "_logsumexp_weighted": (2, 3), "_softmax_backward": (2,), "_log_softmax_backward": (2,),
    "_cross_entropy_index": (6, 7), "_cross_entropy_probability": (5, 6),
    "_sigmoid": (1,), "_softplus": (1,), "_arctan": (1,), "_gaussian": (1,), "_maxout": (2,),
    "_sparsemax_sort": (1, 2), "_sparsemax_pivot": (1, 2),
    "_entmax15_sort": (1,), "_entmax15_pivot": (1,),
    "_entmax_bisect": (3,), "_sparsemax_backward": (2,), "_entmax15_backward": (2,),
}  # fmt: skip


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
def kernels(dtype_name: str) -> dict:
    """Every CUDA kernel for one compute dtype, compiled lazily on first launch."""
    import numba

    from softmax_numba.gpu import _reduce, elementwise, losses, maxout, softmax, sparse

    dtype = getattr(numba, dtype_name)
    red = _reduce.build(dtype)
    built = {}
    for family in (softmax, losses, elementwise, maxout, sparse):
        built.update(family.build(dtype, red))
    return built


def _blocks(rows: int) -> int:
    return max(1, min(rows, config.CUDA_MAX_BLOCKS))


def launch(name: str, *args) -> None:
    """Run the CUDA kernel ``name`` on ``args`` (the CPU kernel's arguments)."""
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
            if position in OUTPUTS[name] and arg.size:
                copy_back.append((arg, on_device))
        else:
            device_args.append(arg)
    kernels(dtype.name)[name][_blocks(rows), threads](*device_args)
    for host, device in copy_back:
        device.copy_to_host(host)
