"""The elementwise alternatives (optionally normalized along the row) as CUDA
kernels; one block per row so that normalizing costs one block reduction."""

from __future__ import annotations

import math

import numpy as np
from numba import cuda


def build(dtype, red) -> dict:
    # Device functions must be plain closure names for Numba to type them.
    block_max = red.block_max
    block_sum = red.block_sum
    one, zero, half = dtype(1.0), dtype(0.0), dtype(0.5)

    # the smallest normal number: an entry below it may have lost its digits
    tiny = dtype(np.finfo(str(dtype)).tiny)

    @cuda.jit(device=True, inline="always")
    def row_sum(yi):
        s = zero
        for j in range(cuda.threadIdx.x, yi.size, cuda.blockDim.x):
            s += yi[j]
        return block_sum(s)

    @cuda.jit(device=True, inline="always")
    def divide_by_sum(yi, s):
        """``y / s``; a sum that overflowed is taken again over ``y / n``."""
        if s == math.inf:
            w = one / dtype(yi.size)
            t = zero
            for j in range(cuda.threadIdx.x, yi.size, cuda.blockDim.x):
                t += yi[j] * w
            t = block_sum(t)
            for j in range(cuda.threadIdx.x, yi.size, cuda.blockDim.x):
                yi[j] = yi[j] * w / t
        else:
            r = one / s
            for j in range(cuda.threadIdx.x, yi.size, cuda.blockDim.x):
                yi[j] *= r

    @cuda.jit(device=True, inline="always")
    def normalize_row(yi):
        divide_by_sum(yi, row_sum(yi))

    @cuda.jit(device=True, inline="always")
    def ratio(z, softplus):
        """``y / e^z``: ``1 / (1 + e^z)`` for sigmoid, ``log1p(e^z) / e^z`` for softplus
        (see ``softmax_numba.cpu.elementwise.softplus_ratio``)."""
        if not softplus:
            return one / (one + math.exp(z))
        t = math.exp(-abs(z))
        if z > zero:
            return (z + math.log1p(t)) * t
        return one if t == zero else math.log1p(t) / t

    @cuda.jit(device=True, inline="always")
    def normalize_exp_like_row(xi, beta, yi, softplus):
        """Normalize ``y = sigmoid(x)`` or ``log1p(e^{beta x}) / beta``; a row with
        ``beta sum(y)`` below the map's value at 0 and an entry below the smallest
        normal number is rescaled by its max, ``w_j = e^{z_j - max(z)} ratio(z_j)``,
        ``z = beta x`` (``softmax_numba.cpu.elementwise.underflowed``).  Only such a
        row pays the extra passes."""
        s = row_sum(yi)  # the same value in every thread: the branches are uniform
        limit = dtype(math.log(2.0)) if softplus else half  # the map at 0 (see cpu)
        lost = zero
        if s * beta < limit:
            for j in range(cuda.threadIdx.x, yi.size, cuda.blockDim.x):
                if yi[j] < tiny:
                    lost = one
            lost = block_max(lost)
        if lost > zero:
            top = dtype(-math.inf)
            for j in range(cuda.threadIdx.x, yi.size, cuda.blockDim.x):
                top = max(top, xi[j] * beta)
            top = block_max(top)
            t = zero
            for j in range(cuda.threadIdx.x, yi.size, cuda.blockDim.x):
                z = xi[j] * beta
                w = math.exp(z - top) * ratio(z, softplus)
                yi[j] = w
                t += w
            r = one / block_sum(t)
            for j in range(cuda.threadIdx.x, yi.size, cuda.blockDim.x):
                yi[j] *= r
        else:
            divide_by_sum(yi, s)

    @cuda.jit
    def _sigmoid(x, out, normalize):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                v = x[i, j]
                e = math.exp(-abs(v))
                out[i, j] = one / (one + e) if v >= 0 else e / (one + e)
            if normalize:
                normalize_exp_like_row(x[i], one, out[i], False)

    @cuda.jit
    def _softplus(x, out, beta, normalize):
        b = dtype(beta)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                z = x[i, j] * b
                out[i, j] = max(x[i, j], zero) + math.log1p(math.exp(-abs(z))) / b
            if normalize:
                normalize_exp_like_row(x[i], b, out[i], True)

    @cuda.jit
    def _arctan(x, out, normalize):
        pi = dtype(math.pi)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                v = x[i, j]
                out[i, j] = -math.atan(one / v) / pi if v < 0 else half + math.atan(v) / pi
            if normalize:
                normalize_row(out[i])

    @cuda.jit
    def _gaussian(x, out, mu, sigma, normalize):
        c = dtype(mu)
        k = dtype(-0.5 / (sigma * sigma))
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            shift = zero
            if normalize:  # softmax of the exponents: shift by their maximum
                m = dtype(-math.inf)
                for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                    d = x[i, j] - c
                    m = max(m, k * d * d)
                shift = block_max(m)
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                d = x[i, j] - c
                out[i, j] = math.exp(k * d * d - shift)
            if normalize:
                normalize_row(out[i])

    return {"_sigmoid": _sigmoid, "_softplus": _softplus, "_arctan": _arctan,
            "_gaussian": _gaussian}  # fmt: skip
