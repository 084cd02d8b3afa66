r"""The two kernels of :func:`softmax_numba.linear_cross_entropy`'s gradient
filtering (Numba CPU), on one tile of ``rows x classes``.

With a threshold ``tau > 0`` the gradient of a tile is computed without its
target term, ``G_ij = (a_i p_ij - c_i w_j) slope_ij``, so that a tile whose entries
are all at most ``tau a_i`` (:func:`tile_within`) can skip both of its gradient
products (Wijmans et al., "Cut your losses in large-vocabulary language models",
ICLR 2025, section 4.3).  The target term ``-b_i slope_it [j = t_i]`` is one entry
per row: :func:`add_target_terms` adds it to ``dh`` and ``dW`` row by row, exactly,
whether the tile was skipped or not.
"""

from __future__ import annotations

from softmax_numba.cpu._compile import jit


@jit
def tile_within(g, limits):
    """Whether ``|g_ij| <= limits_i`` for every entry of the 2-D tile ``g`` (a NaN
    is never within)."""
    for i in range(g.shape[0]):
        gi, limit = g[i], limits[i]
        for j in range(gi.size):
            if not abs(gi[j]) <= limit:
                return False
    return True


@jit
def add_target_terms(dh, dW_chunk, h, W_chunk, targets, start, coefficients):
    """For each row ``i`` whose class ``t_i`` lies in ``[start, start + len(W_chunk))``:
    ``dh_i -= k_i W_{t_i}`` and ``dW_{t_i} -= k_i h_i``, ``k`` = ``coefficients`` (the
    target term of the gradient on the logits).  ``dh``, ``h`` are the tile's rows;
    ``dW_chunk``, ``W_chunk`` the chunk's classes.  Serial: two rows may share a
    target."""
    stop = start + W_chunk.shape[0]
    for i in range(h.shape[0]):
        t = targets[i]
        k = coefficients[i]
        if t < start or t >= stop or k == 0:
            continue
        w, dw, hi, dhi = W_chunk[t - start], dW_chunk[t - start], h[i], dh[i]
        for c in range(hi.size):
            dhi[c] -= k * w[c]
            dw[c] -= k * hi[c]
