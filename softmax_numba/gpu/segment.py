"""Softmax, log-softmax, log-sum-exp and their backward ops on ragged segments (CUDA).

The twins of :mod:`softmax_numba.cpu.segment`'s kernels, by name and arguments
(without the CPU engines' ``piece`` and ``group``): ``x`` of shape ``(F, nnz)``,
segment ``j`` of row ``f`` its entries ``offsets[j]:offsets[j + 1]``.  A block per
segment and row, in a grid-stride loop over them: the segment's state from each
thread's online state merged across the block (``softmax_numba.gpu._reduce``), as the
block-per-row kernels of :mod:`softmax_numba.gpu.softmax` do for a row, then one pass
to write.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from softmax_numba import config
from softmax_numba.cpu.segment import LOG_SOFTMAX, LOGSUMEXP, SOFTMAX_BACKWARD
from softmax_numba.gpu import _runtime


def build(dtype, red) -> dict:
    # Device functions must be plain closure names for Numba to type them.
    row_state = red.row_state
    block_sum = red.block_sum
    softmax_scale = red.softmax_scale
    log_probability = red.log_probability
    logsumexp = red.logsumexp
    zero = dtype(0.0)

    @cuda.jit
    def _segment_forward(x, offsets, op, out):
        segments = offsets.size - 1
        for u in range(cuda.blockIdx.x, x.shape[0] * segments, cuda.gridDim.x):
            f = u // segments
            j = u - f * segments
            lo = offsets[j]
            xi = x[f, lo : offsets[j + 1]]
            m, s, _nan = row_state(xi)
            if op == LOGSUMEXP:
                if cuda.threadIdx.x == 0:
                    out[f, j] = logsumexp(m, s)
            elif op == LOG_SOFTMAX:
                log1p_s = math.log1p(s)
                for t in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
                    out[f, lo + t] = log_probability(dtype(xi[t]), m, log1p_s)  # never x - lse
            else:
                r = softmax_scale(m, s)
                for t in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
                    out[f, lo + t] = math.exp(dtype(xi[t]) - m) * r

    @cuda.jit
    def _segment_backward(y, dy, offsets, op, dx):
        segments = offsets.size - 1
        for u in range(cuda.blockIdx.x, y.shape[0] * segments, cuda.gridDim.x):
            f = u // segments
            j = u - f * segments
            lo, hi = offsets[j], offsets[j + 1]
            total = zero
            for i in range(lo + cuda.threadIdx.x, hi, cuda.blockDim.x):
                total += y[f, i] * dy[f, i] if op == SOFTMAX_BACKWARD else dy[f, i]
            total = block_sum(total)
            for i in range(lo + cuda.threadIdx.x, hi, cuda.blockDim.x):
                if op == SOFTMAX_BACKWARD:
                    dx[f, i] = y[f, i] * (dy[f, i] - total)
                else:
                    dx[f, i] = dy[f, i] - math.exp(y[f, i]) * total

    return {"_segment_forward": _segment_forward, "_segment_backward": _segment_backward}


def launch(kernels, segments: int, *args) -> None:
    """Run the CUDA twin of the CPU kernels ``kernels`` (a
    ``softmax_numba.cpu._compile.Engines``) on ``args``, their arguments without
    ``piece`` and ``group``: a block per segment (of ``segments``) and row, at most the
    blocks the device holds at once.  Host arrays go to the device and the outputs come
    back into them."""
    numba_cuda = _runtime.cuda()
    threads = config.CUDA_THREADS_PER_BLOCK
    if not 1 <= threads <= config.CUDA_MAX_THREADS_PER_BLOCK:
        raise ValueError(
            f"config.CUDA_THREADS_PER_BLOCK={threads} must be in "
            f"1..{config.CUDA_MAX_THREADS_PER_BLOCK}"
        )
    dtype = np.dtype(args[0].dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"the CUDA kernel {kernels.name} takes float32 or float64, got {dtype}")
    units = args[0].shape[0] * segments
    if units == 0:
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
    blocks = max(1, min(units, _runtime.resident_blocks(threads), config.CUDA_MAX_BLOCKS))
    _runtime.built(dtype.name)[kernels.name][blocks, threads](*device_args)
    for host, device in copy_back:
        device.copy_to_host(host)
