"""maxout: the max over consecutive groups of ``pool_size`` entries of each row
(Numba CPU)."""

from __future__ import annotations

from numba import prange

from softmax_numba.cpu._compile import engines, jit


@jit
def maxout_groups(xi, pool_size, yi):
    """``yi_g = max(xi[g*pool_size : (g+1)*pool_size])``, a group at a time; a NaN in a
    group gives NaN (``v > y or v != v`` takes a NaN and then keeps it).

    Inlined where ``pool_size`` is a constant, LLVM unrolls the group and vectorizes
    over groups with interleaved loads (wide loads and lane shuffles), five times
    faster than :func:`maxout_positions`; with a stride known only at run time it
    would need a gather."""
    for g in range(yi.size):
        y = xi[g * pool_size]
        for j in range(1, pool_size):
            v = xi[g * pool_size + j]
            y = v if (v > y or v != v) else y
        yi[g] = y


@jit
def maxout_positions(xi, pool_size, yi):
    """As :func:`maxout_groups` for any ``pool_size``: a pass over the groups for each
    position in the pool, so that consecutive groups fill vector lanes."""
    for g in range(yi.size):
        yi[g] = xi[g * pool_size]
    for j in range(1, pool_size):
        for g in range(yi.size):
            v = xi[g * pool_size + j]
            y = yi[g]
            yi[g] = v if (v > y or v != v) else y


def _maxout(x, pool_size, out):
    """``out_g = max(x[g*pool_size : (g+1)*pool_size])`` row by row; the common pool
    sizes 2, 3 and 4 each get a branch in which the size is a constant."""
    for i in prange(x.shape[0]):
        xi, yi = x[i], out[i]
        if pool_size == 2:
            maxout_groups(xi, 2, yi)
        elif pool_size == 3:
            maxout_groups(xi, 3, yi)
        elif pool_size == 4:
            maxout_groups(xi, 4, yi)
        else:
            maxout_positions(xi, pool_size, yi)


MAXOUT = engines(_maxout)
