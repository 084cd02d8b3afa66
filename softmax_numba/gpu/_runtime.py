"""Launching CUDA kernels: availability, kernel cache, transfers, launch shape.

``launch(kernels, *args)`` runs the CUDA kernel registered under the name of a
CPU kernel (the same arguments: 2-D rows, outputs included; ``kernels.outputs``
says which), or the variant of it for the row length (:func:`plan`).  Host (NumPy) arrays go
to the device and the outputs come back into them; device arrays are used as
they are.
"""

from __future__ import annotations

import dataclasses
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
    """A Numba device array viewing ``x`` (no copy); a Numba device array is itself
    (rebuilt from ``__cuda_array_interface__`` a bfloat16 one would lose its dtype:
    the interface has no name for it)."""
    wrap = getattr(cuda(), "as_cuda_array", None)
    return x if wrap is None or getattr(x, "__cuda_ndarray__", False) else wrap(x)


def is_bfloat16(dtype) -> bool:
    """Whether ``dtype`` is ``ml_dtypes.bfloat16``."""
    return dtype.kind == "V" and dtype.name == "bfloat16"


def is_half(dtype) -> bool:
    """Whether ``dtype`` is float16 or bfloat16: stored in 2 bytes, computed in float32."""
    return dtype == np.float16 or is_bfloat16(dtype)


def as_bits(array):
    """A bfloat16 device array as the ``uint16`` array of its bits (the kernels' view of
    bfloat16: ``softmax_numba.gpu._wide``); any other array as it is."""
    dtype = getattr(array, "dtype", None)
    if isinstance(dtype, np.dtype) and is_bfloat16(dtype):
        return array.view(np.uint16)
    return array


def simulated() -> bool:
    """Whether the kernels run on Numba's CUDA simulator."""
    from numba.core import config as numba_config

    return bool(numba_config.ENABLE_CUDASIM)


@functools.cache
def built(dtype_name: str) -> dict:
    """Every CUDA kernel for one compute dtype, compiled lazily on first launch."""
    import numba

    from softmax_numba.gpu import (
        _reduce,
        chunked_losses,
        cumulative,
        elementwise,
        losses,
        maxout,
        sampling,
        segment,
        softmax,
        sparse,
    )

    dtype = getattr(numba, dtype_name)
    red = _reduce.build(dtype)
    built = {}
    for family in (softmax, losses, elementwise, maxout, sparse, sampling, segment, cumulative):
        built.update(family.build(dtype, red))
    built.update(chunked_losses.build(dtype, red))
    return built


#: Threads in a warp.
WARP = 32
#: The name suffixes of a kernel's variants in :func:`built`, one per row-length
#: bucket (:func:`plan` picks one): a warp per row for short rows; a block per row
#: kept in shared memory; a row split over several blocks (a pass for the pieces'
#: states, then one to finish).
WARP_SUFFIX = "__warp_per_row"
SHARED_SUFFIX = "__row_in_shared"
SPLIT_STATE_SUFFIX = "__split_row_state"
SPLIT_SUFFIX = "__split_row"
VARIANT_SUFFIXES = (WARP_SUFFIX, SHARED_SUFFIX, SPLIT_STATE_SUFFIX, SPLIT_SUFFIX)


def base_name(name: str) -> str:
    """The CPU kernel's name of a CUDA kernel or of one of its variants."""
    for suffix in VARIANT_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


#: The kernels that take float16 and bfloat16 arrays (each entry read into the float32
#: kernel's type, the results rounded back to the input's type): 2 bytes a read and a
#: write.  A bfloat16 array reaches them as ``uint16`` (:func:`as_bits`).
HALF_STORAGE = frozenset(
    {
        "_softmax_naive",
        "_softmax_shifted",
        "_softmax_online",
        "_softmax_division_free",
        "_log_softmax",
        "_softmax_options",
        "_log_softmax_options",
        "_logsumexp",
        "_cross_entropy_index",
    }
)


@functools.cache
def _device_resident_blocks(threads: int) -> int | None:
    """Blocks of ``threads`` the current device runs at once (multiprocessors times
    the blocks each holds by its thread limit), or ``None`` where the device does not
    say (the simulator)."""
    device = cuda().get_current_device()
    try:
        sms = device.MULTIPROCESSOR_COUNT
        per_sm = device.MAX_THREADS_PER_MULTI_PROCESSOR // threads
    except AttributeError:
        return None
    return max(1, sms * max(1, per_sm))


def resident_blocks(threads: int) -> int:
    """``config.CUDA_RESIDENT_BLOCKS``, else what the device holds at once of blocks
    of ``threads`` (``config.CUDA_MAX_BLOCKS`` where the device does not say)."""
    if config.CUDA_RESIDENT_BLOCKS is not None:
        return max(1, config.CUDA_RESIDENT_BLOCKS)
    found = _device_resident_blocks(threads)
    return config.CUDA_MAX_BLOCKS if found is None else found


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one call runs: ``kernel[blocks, threads, 0, shared_bytes]``, after
    ``state_kernel`` (a split row's first pass, with ``pieces`` pieces a row)."""

    kernel: object
    blocks: int
    threads: int
    shared_bytes: int = 0
    state_kernel: object = None
    pieces: int = 1


def _split_pieces(rows: int, n: int, resident: int) -> int:
    """Pieces per row so that ``rows`` rows fill ``resident`` blocks, none shorter than
    ``config.CUDA_SPLIT_MIN_LENGTH``; 1 (no split) when the rows fill them already."""
    if rows >= resident or config.CUDA_SPLIT_MIN_LENGTH <= 0:
        return 1
    return max(1, min(-(-resident // rows), n // config.CUDA_SPLIT_MIN_LENGTH))


def plan(kernels: dict, name: str, shape, itemsize: int, threads: int) -> Plan:
    """The kernel for the CPU kernel ``name`` on rows of ``shape``, by row length:

    1. rows of at most ``config.CUDA_WARP_ROW_MAX_LENGTH``: the warp-per-row variant
       (``config.CUDA_WARP_ROWS_PER_BLOCK`` warps, a row each, per block);
    2. fewer rows than the device holds blocks, long enough to cut into pieces of
       ``config.CUDA_SPLIT_MIN_LENGTH``: the split-row variant;
    3. rows of at most ``config.CUDA_ROW_IN_SHARED_MAX_BYTES``: the block-per-row
       variant that keeps the row in shared memory;
    4. otherwise the block-per-row kernel, ``threads`` threads a block.

    A bucket applies where ``kernels`` has the variant.  The grid is at most the
    blocks the device holds at once (:func:`resident_blocks`), the kernels looping
    over the work (a grid-stride loop)."""
    rows, n = shape[0], shape[1] if len(shape) > 1 else 1
    resident = resident_blocks(threads)

    def blocks(units):
        return max(1, min(units, resident, config.CUDA_MAX_BLOCKS))

    warp_kernel = kernels.get(name + WARP_SUFFIX)
    if warp_kernel is not None and n <= config.CUDA_WARP_ROW_MAX_LENGTH:
        per_block = config.CUDA_WARP_ROWS_PER_BLOCK
        if not 1 <= per_block * WARP <= config.CUDA_MAX_THREADS_PER_BLOCK:
            raise ValueError(
                f"config.CUDA_WARP_ROWS_PER_BLOCK={per_block} must be in "
                f"1..{config.CUDA_MAX_THREADS_PER_BLOCK // WARP}"
            )
        return Plan(warp_kernel, blocks(-(-rows // per_block)), WARP * per_block)
    if name + SPLIT_SUFFIX in kernels:
        pieces = _split_pieces(rows, n, resident)
        if pieces > 1:
            return Plan(
                kernels[name + SPLIT_SUFFIX],
                blocks(rows * pieces),
                threads,
                state_kernel=kernels[name + SPLIT_STATE_SUFFIX],
                pieces=pieces,
            )
    shared_kernel = kernels.get(name + SHARED_SUFFIX)
    if shared_kernel is not None and n * itemsize <= config.CUDA_ROW_IN_SHARED_MAX_BYTES:
        return Plan(shared_kernel, blocks(rows), threads, shared_bytes=n * itemsize)
    return Plan(kernels[name], blocks(rows), threads)


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
    if is_half(dtype) and base_name(kernels.name) in HALF_STORAGE:
        dtype = np.dtype(np.float32)  # read and written in 2 bytes, computed in float32
    elif dtype not in (np.float32, np.float64):
        raise TypeError(
            f"the CUDA kernel {kernels.name} takes float32 or float64 arrays, got {dtype} "
            "(float16 and bfloat16 only for softmax, log_softmax, logsumexp and "
            "class-index cross_entropy)"
        )
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
    device_args = [as_bits(arg) for arg in device_args]
    how = plan(built(dtype.name), kernels.name, first.shape, dtype.itemsize, threads)
    if how.state_kernel is not None:
        parts = [numba_cuda.device_array((rows, how.pieces), dtype) for _ in range(3)]
        how.state_kernel[how.blocks, how.threads](device_args[0], *parts)
        device_args = [device_args[0], *parts, *device_args[1:]]
    how.kernel[how.blocks, how.threads, 0, how.shared_bytes](*device_args)
    for host, device in copy_back:
        device.copy_to_host(host)
