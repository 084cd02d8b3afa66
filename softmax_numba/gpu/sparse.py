"""sparsemax and entmax as CUDA kernels: a per-row threshold search with no sort.

The threshold ``tau`` solves ``f(tau) = sum_i g(x_i - tau) = 1`` with ``g`` nonzero
only on the support ``x_i > tau``.  Bisection brackets it (each step one block
reduction); then, for sparsemax and 1.5-entmax, the exact ``tau`` of the support
``{x_i > tau_lo}`` is solved in closed form and the support refined until it no
longer changes (Michelot's iteration, which converges from below in finitely many
steps).  The result equals the sort-based one up to rounding.
"""

from __future__ import annotations

import math

from numba import cuda

from softmax_numba import config

BRACKET_STEPS = config.BRACKET_STEPS  # baked in (see softmax_numba.config)
MAX_REFINEMENTS = config.MAX_REFINEMENTS


def build(dtype, red) -> dict:
    # Device functions must be plain closure names for Numba to type them.
    block_sum = red.block_sum
    row_state = red.row_state
    one, zero, half = dtype(1.0), dtype(0.0), dtype(0.5)

    @cuda.jit(device=True, inline="always")
    def undefined(xi, oi):
        """NaN-fill rows with a NaN, a +inf or nothing above -inf; True if so."""
        m, _d, nan = row_state(xi)
        if nan or math.isinf(m):
            for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
                oi[j] = dtype(math.nan)
            return True, m
        return False, m

    @cuda.jit(device=True, inline="always")
    def power_sum(xi, shift, scale, tau, power):
        """``sum_j max(z_j - tau, 0)^power`` with ``z = (x - shift) * scale``."""
        s = zero
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            d = max((xi[j] - shift) * scale - tau, zero)
            s += d * d if power == 2 else (d if power == 1 else d**power)
        return block_sum(s)

    @cuda.jit(device=True, inline="always")
    def bisect(xi, shift, scale, power, steps):
        """``tau`` in ``[-1, 0]`` bracketed from below: ``sum max(z - tau, 0)^power >= 1``
        with ``z = (x - max) * scale``, whose largest entry is 0."""
        tau = -one
        width = one
        for _ in range(steps):
            width *= half
            if power_sum(xi, shift, scale, tau + width, power) >= one:
                tau = tau + width
        return tau

    @cuda.jit(device=True, inline="always")
    def support_moments(xi, shift, scale, tau):
        """Size, sum and sum of squares of ``z = (x - shift) * scale`` above ``tau``."""
        k, s1, s2 = zero, zero, zero
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            z = (xi[j] - shift) * scale
            if z > tau:
                k += one
                s1 += z
                s2 += z * z
        return block_sum(k), block_sum(s1), block_sum(s2)

    @cuda.jit(device=True, inline="always")
    def write_clipped(xi, oi, shift, scale, tau, power):
        count = zero
        for j in range(cuda.threadIdx.x, xi.size, cuda.blockDim.x):
            d = max((xi[j] - shift) * scale - tau, zero)
            oi[j] = d * d if power == 2 else d
            count += one if d > 0 else zero
        return block_sum(count)

    @cuda.jit
    def _sparsemax(x, out, support):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            bad, m = undefined(x[i], out[i])
            if bad:
                if cuda.threadIdx.x == 0:
                    support[i] = 0
                continue
            tau = bisect(x[i], m, one, 1, BRACKET_STEPS)
            for _ in range(MAX_REFINEMENTS):  # tau_{k+1} = (sum_S z - 1) / |S|
                k, s1, _s2 = support_moments(x[i], m, one, tau)
                new = (s1 - one) / k
                if new <= tau:
                    break
                tau = new
            count = write_clipped(x[i], out[i], m, one, tau, 1)
            if cuda.threadIdx.x == 0:
                support[i] = int(count)

    @cuda.jit
    def _entmax15(x, out):
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            bad, m = undefined(x[i], out[i])
            if bad:
                continue
            # z = (x - max) / 2: tau solves sum_S (z - tau)^2 = 1 on the support S.
            tau = bisect(x[i], m, half, 2, BRACKET_STEPS)
            for _ in range(MAX_REFINEMENTS):
                k, s1, s2 = support_moments(x[i], m, half, tau)
                mean = s1 / k
                delta = (one - (s2 - k * mean * mean)) / k
                new = mean - math.sqrt(max(delta, zero))
                if new <= tau:
                    break
                tau = new
            write_clipped(x[i], out[i], m, half, tau, 2)

    @cuda.jit
    def _entmax_bisect(x, alpha, n_iter, out):
        a1 = dtype(alpha - 1.0)
        inv = one / a1
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            bad, m = undefined(x[i], out[i])
            if bad:
                continue
            # n counts the entries above -inf (appended -inf leave the bracket as is).
            finite = zero
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                if x[i, j] > -math.inf:
                    finite += one
            n = block_sum(finite)
            tau = -one  # on z = (x - max) (alpha - 1), whose largest entry is 0
            width = one - n ** (-a1)
            for _ in range(n_iter):
                width *= half
                if power_sum(x[i], m, a1, tau + width, inv) >= one:
                    tau = tau + width
            s = zero
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                d = max((x[i, j] - m) * a1 - tau, zero)
                d = d * d if inv == 2 else d**inv
                out[i, j] = d
                s += d
            r = one / block_sum(s)
            for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
                out[i, j] *= r

    @cuda.jit
    def _sparsemax_backward(y, dy, dx):
        for i in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
            total, count = zero, zero
            for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
                if y[i, j] > 0:
                    total += dy[i, j]
                    count += one
            mean = block_sum(total) / block_sum(count)
            for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
                dx[i, j] = dy[i, j] - mean if y[i, j] > 0 else zero

    @cuda.jit
    def _entmax15_backward(y, dy, dx):
        for i in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
            sg, sgd = zero, zero
            for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
                g = math.sqrt(y[i, j])
                sg += g
                sgd += g * dy[i, j]
            q = block_sum(sgd) / block_sum(sg)
            for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
                dx[i, j] = math.sqrt(y[i, j]) * (dy[i, j] - q)

    return {
        "_sparsemax_sort": _sparsemax,  # no sort on the GPU: both map to the threshold search
        "_sparsemax_pivot": _sparsemax,
        "_entmax15_sort": _entmax15,  # as sparsemax: one threshold search for both
        "_entmax15_pivot": _entmax15,
        "_entmax_bisect": _entmax_bisect,
        "_sparsemax_backward": _sparsemax_backward,
        "_entmax15_backward": _entmax15_backward,
    }
