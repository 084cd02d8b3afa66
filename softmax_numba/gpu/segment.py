"""Softmax, log-softmax, log-sum-exp and their backward ops on ragged segments (CUDA).

The twins of :mod:`softmax_numba.cpu.segment`'s kernels, by name and arguments
(without the CPU engines' ``piece`` and ``group``): ``x`` of shape ``(F, nnz)``,
segment ``j`` of row ``f`` its entries ``offsets[j]:offsets[j + 1]``.  A block per
segment and row, in a grid-stride loop over them: the segment's state from each
thread's online state merged across the block (``softmax_numba.gpu._reduce``), as the
block-per-row kernels of :mod:`softmax_numba.gpu.softmax` do for a row, then one pass
to write; a segment is read and written 16 bytes at a time between its scalar edges
(:mod:`softmax_numba.gpu._wide`), wherever it starts.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from softmax_numba import config
from softmax_numba.cpu.segment import LOG_SOFTMAX, LOGSUMEXP, SOFTMAX_BACKWARD
from softmax_numba.gpu import _runtime, _wide


def build(dtype, red) -> dict:
    # Device functions must be plain closure names for Numba to type them.
    row_state = red.row_state
    block_sum = red.block_sum
    softmax_scale = red.softmax_scale
    logsumexp = red.logsumexp
    exp_map, log_map = red.exp_map, red.log_map
    span = _wide.build().span
    zero = dtype(0.0)

    @cuda.jit
    def _segment_forward(x, offsets, op, out):
        segments = offsets.size - 1
        t, threads = cuda.threadIdx.x, cuda.blockDim.x
        for u in range(cuda.blockIdx.x, x.shape[0] * segments, cuda.gridDim.x):
            f = u // segments
            j = u - f * segments
            lo, hi = offsets[j], offsets[j + 1]
            xi = x[f, lo:hi]
            m, s, _nan = row_state(xi)
            if op == LOGSUMEXP:
                if t == 0:
                    out[f, j] = logsumexp(m, s)
                continue
            oi = out[f, lo:hi]
            part = span(xi, oi, oi, 0, xi.size)
            if op == LOG_SOFTMAX:
                log_map(xi, oi, part, t, threads, (m, math.log1p(s)))  # never x - lse
            else:
                exp_map(xi, oi, part, t, threads, (m, softmax_scale(m, s)))

    dot_fold, sum_fold = red.dot_fold, red.sum_fold
    softmax_vjp_map, log_softmax_vjp_map = red.softmax_vjp_map, red.log_softmax_vjp_map

    @cuda.jit
    def _segment_backward(y, dy, offsets, op, dx):
        segments = offsets.size - 1
        t, threads = cuda.threadIdx.x, cuda.blockDim.x
        for u in range(cuda.blockIdx.x, y.shape[0] * segments, cuda.gridDim.x):
            f = u // segments
            j = u - f * segments
            lo, hi = offsets[j], offsets[j + 1]
            yi, dyi, dxi = y[f, lo:hi], dy[f, lo:hi], dx[f, lo:hi]
            part = span(yi, dyi, dxi, 0, yi.size)
            if op == SOFTMAX_BACKWARD:
                total = dot_fold(yi, dyi, part, t, threads, zero, 0)
            else:
                total = sum_fold(dyi, part, t, threads, zero, 0)
            total = block_sum(total)
            if op == SOFTMAX_BACKWARD:
                softmax_vjp_map(yi, dyi, dxi, part, t, threads, total)
            else:
                log_softmax_vjp_map(yi, dyi, dxi, part, t, threads, total)

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
