r"""Cross-entropy over chunks of the classes as CUDA kernels: the twins of
:mod:`softmax_numba.cpu.chunked_losses` (``_chunk_states``, ``_merge_chunk_states``,
``_chunk_grad``, ``_soft_cap``, and for probability targets ``_probability_chunk_states``
and ``_probability_chunk_grad``) and of :mod:`softmax_numba.cpu.linear_tiles`
(``tile_within``, ``add_target_terms``, for :func:`softmax_numba.linear_cross_entropy`'s
gradient filtering).

The six chunk kernels take the CPU kernels' arguments and are registered under their
names (:func:`build`, called by ``softmax_numba.gpu._runtime.built``), so that
``softmax_numba._api.run(kernels.CHUNK_STATES, "cuda", ...)`` launches them as it
launches every CUDA twin (``_runtime.launch``: host arrays go over and the outputs come
back; device arrays, Numba's or anything with ``__cuda_array_interface__``, are used in
place).  float32 and float64, computed in their own type.

- ``_chunk_states``: a block per row (a grid-stride loop over the rows).  With a cap
  ``c > 0`` each logit is replaced by ``c tanh(z / c)`` in place, then a barrier; the
  chunk's state ``(m_c, s_c)`` is each thread's online state merged across the block
  (``softmax_numba.gpu._reduce.row_state``, the merge of
  :mod:`softmax_numba.state_algebra`); ``gap_c = sum_j w_j (m_c - z_j)`` and ``ent_c =
  sum_j exp(z_j - m_c) (m_c - z_j)`` (a ``-inf`` logit adds 0) are each thread's sum
  added across the block (``block_sum``).  Thread 0 takes the target's logit and folds
  the chunk into the running state of its row as the CPU's ``fold_piece``: ``(m, s) =
  merge((m, s), (m_c, s_c))``, ``gap += (m - m_old) W_before`` and ``gap_c + (m - m_c)
  W_chunk``, ``ent`` rescaled by ``exp(m_old - m)`` after ``ent + (m - m_old)(1 + s)``.
- ``_merge_chunk_states``: a thread per row, the same fold of another piece's states.
- ``_chunk_grad``: a block per row, ``g_j = (a p_j - c w_j - b [j = t]) (1 - (z_j /
  cap)^2)``, ``p_j = exp(z_j - m) / (1 + s)``; the thread that writes ``g_t`` reads
  ``z_t`` (``grad`` may be ``z``), a row of coefficients ``a = b = c = 0`` is zeroed.
- ``_soft_cap``: a block per row, ``out_j = c tanh(z_j / c)`` (``out`` may be ``z``).
- ``_probability_chunk_states``: ``_chunk_states`` for a probability target ``q`` (row
  ``i`` of ``q`` holds all ``V = n_classes`` classes; ``weights``: the chunk's): class
  ``j`` weighs ``r_j = w_j ((1 - eps) q_j + eps / V)``, and one pass (``z`` and ``q``
  side by side) sums ``gap_c = sum_j r_j (m_c - z_j)`` (a class of ``r_j = 0`` adds 0,
  not ``0 * inf``), the mass ``R_c = sum_j r_j`` and the entropy's terms; thread 0
  folds the chunk with the running mass ``mass_out`` as the weight before it (``gap +=
  (m - m_old) R``), then adds ``R_c`` to it.
- ``_probability_chunk_grad``: a block per row, ``g_j = (a p_j - c r_j) (1 - (z_j /
  cap)^2)``; a row of ``a = c = 0`` is zeroed; ``grad`` may be ``z``, not ``q``.

Every pass reads and writes a row through :mod:`softmax_numba.gpu._wide` (16 bytes at
a time where the rows line up), each thread the same entries in every pass over one
partition.

**Accuracy.**  The operations are the CPU kernels' but for the order of the sums (a
thread's entries, then the block's tree: ``bounds.summation_bound`` under
``bounds.summation_order("cuda")``, ``sigma(n) = n / 8 + log2(n) + 4`` u for ``n``
classes) and CUDA's ``exp`` and ``tanh`` (within 2 ulp).  With ``sigma`` the chunk's sum
bound, ``spread`` the largest ``m - z_j`` that matters and ``K`` chunks folded, first
order, relative to each quantity (every one a sum of non-negative terms, so
independent of the offset of ``z``): ``m`` and the target's logit exact (of the capped
logits); with ``E = 4`` (``exp`` within 2 ulp), ``s`` within ``(E + spread + sigma) +
(E + 2 + spread)(K - 1)`` u (the terms' ``exp`` and arguments, the sum, then per merge
a rescaling and a sum); ``gap`` within ``(2 + sigma) + 5 (K - 1)`` u; the entropy sum
within ``(E + 2 + spread + sigma)`` u plus, per merge, ``E + 4 + spread`` and the error
of ``s``; the gradient entry within ``(17 + spread) u (|a| p_j + |c| w_j + |b| [j =
t])`` (``tests/test_chunked_losses_cuda.py`` states each term).  For probability
targets (:func:`softmax_numba.bounds.probability_options_bounds`' terms): ``r_j``
within 4 u (``1 - eps``, ``eps / V``, a product, a sum, the weight's product), so
``gap`` within ``(6 + sigma) + 4 (K - 1)`` u and the mass ``R`` within ``(4 + sigma) +
(K - 1)`` u; ``s`` and the entropy sum as above; the gradient entry within ``(19 +
spread) u (|a| p_j + |c| r_j)`` (the bound of ``_chunk_grad`` with ``r_j``'s 4 u for
the target term's 2).  Soft-capping rounds
within 6 u of ``c tanh(z / c)`` (``bounds.CAP_ROUNDING`` with ``tanh`` in 2 ulp).

**Gradient filtering** (:mod:`softmax_numba.cpu.linear_tiles`; Wijmans et al., "Cut
your losses in large-vocabulary language models", ICLR 2025, sec. 4.3): CUDA kernels
cannot return a bool, so :func:`tile_within_into` clears a 1-element ``int32`` device
flag the caller set to 1 when some ``|g_ij| > limits_i`` (or is NaN), and
:func:`tile_within` returns the flag (one copy back).  :func:`add_target_terms` gives
each thread one column of ``h`` and ``W`` and walks the rows in their order, so two
rows with the same target update ``dW_t`` in the CPU kernel's order, with no atomics:
deterministic, the CPU's result up to the contraction of ``dh -= k w`` into an FMA.

References: Milakov & Gimelshein, "Online normalizer calculation for softmax",
arXiv:1805.02867 (2018); Blanchard, Higham & Higham, "Accurately computing the
log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4) (2021); Wijmans et al.
(2025), above.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from softmax_numba import config, state_algebra
from softmax_numba.gpu import _runtime, _wide


def build(dtype, red) -> dict:
    """The six chunk kernels for one Numba float type, by their CPU kernels' names."""
    # Device functions must be plain closure names for Numba to type them.
    row_state = red.row_state
    block_sum = red.block_sum
    softmax_scale = red.softmax_scale
    w = _wide.build()
    span, whole = w.span, w.whole
    one, zero = dtype(1.0), dtype(0.0)
    jit = cuda.jit(device=True, inline="always")

    @jit
    def cast(like, value):
        return dtype(value)

    merge = state_algebra.build(jit, jit, math.exp, math.log1p, cast).merge

    # ------------------------------------------------------------------ row passes
    @jit
    def capped(j, v, cap):
        return cap * math.tanh(v / cap)

    @jit
    def entropy_term(d):
        """``exp(-d) d`` for ``d = m - z_j``; a ``-inf`` logit adds its limit, 0 (not
        ``0 * inf``)."""
        return math.exp(-d) * d if d < math.inf else zero

    @jit
    def sums_step(acc, j, v, params):
        """The gap's and the entropy's terms (those wanted) in one pass."""
        gap, ent = acc
        m, want_gap, want_entropy = params
        if want_gap:
            gap += m - v
        if want_entropy:
            ent += entropy_term(m - v)
        return gap, ent

    @jit
    def weighted_sums_step(acc, j, v, weight, params):
        gap, ent = acc
        m, want_gap, want_entropy = params
        if want_gap:
            gap += weight * (m - v)
        if want_entropy:
            ent += entropy_term(m - v)
        return gap, ent

    cap_map = _wide.mapping(capped)
    sums_fold = _wide.fold(sums_step)
    weighted_sums = _wide.fold2(weighted_sums_step)

    # ------------------------------------------------------------------ the fold
    @jit
    def lifted_gap(gap, m_old, m, weight_sum):
        """``sum_j w_j (m - z_j)`` from ``gap`` of the same classes at ``m_old <= m``."""
        if weight_sum > 0 and m > m_old:
            return gap + (m - m_old) * weight_sum
        return gap

    @jit
    def rescaled_entropy(ent, s, m_old, m):
        """``sum_j exp(z_j - m) (m - z_j)`` from ``ent``, the same sum at ``m_old <= m``
        over a piece of state ``(m_old, s)``; an empty or all ``-inf`` piece adds 0."""
        if m_old == -math.inf:
            return zero
        if m_old == m:
            return ent
        d = m - m_old
        return math.exp(-d) * (ent + d * (one + s))

    @jit
    def fold_piece(i, mp, sp, gp, ep, before, piece, want_gap, want_entropy, outs):
        """The CPU's ``fold_piece``: the piece's state ``(mp, sp)``, gap and entropy sum
        into row ``i`` of ``outs = (m, s, gap, entropy)``; ``before`` and ``piece``: the
        sums of the class weights of the running states and of the piece."""
        m_out, s_out, gap_out, entropy_out = outs
        m_old, s_old = m_out[i], s_out[i]
        m, s = merge(m_old, s_old, mp, sp)
        if want_gap:
            g = lifted_gap(gap_out[i], m_old, m, before)
            gap_out[i] = g + lifted_gap(gp, mp, m, piece)
        if want_entropy:
            e = rescaled_entropy(entropy_out[i], s_old, m_old, m)
            entropy_out[i] = e + rescaled_entropy(ep, sp, mp, m)
        m_out[i] = m
        s_out[i] = s

    @cuda.jit
    def _chunk_states(
        z,
        cap,
        start,
        target,
        weights,
        weight_before,
        weight_chunk,
        want_gap,
        want_entropy,
        m_out,
        s_out,
        gap_out,
        entropy_out,
        picked_out,
    ):
        n = z.shape[1]
        thread, threads = cuda.threadIdx.x, cuda.blockDim.x
        c = dtype(cap)
        before, piece = dtype(weight_before), dtype(weight_chunk)
        weighted = weights.size > 0
        outs = (m_out, s_out, gap_out, entropy_out)
        for i in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
            zi = z[i]
            if cap > 0:
                cap_map(zi, zi, whole(zi), thread, threads, c)
                cuda.syncthreads()  # the passes below read other threads' entries
            mc, sc, _nan = row_state(zi)
            gc = ec = zero
            if want_gap or want_entropy:
                params = (mc, want_gap, want_entropy)
                if weighted and want_gap:
                    part = span(zi, weights, weights, 0, n)
                    gc, ec = weighted_sums(zi, weights, part, thread, threads, (gc, ec), params)
                else:
                    gc, ec = sums_fold(zi, whole(zi), thread, threads, (gc, ec), params)
                if want_gap:
                    gc = block_sum(gc)
                if want_entropy:
                    ec = block_sum(ec)
            if thread == 0:
                t = target[i] - start
                if t >= 0 and t < n:
                    picked_out[i] = zi[t]
                fold_piece(i, mc, sc, gc, ec, before, piece, want_gap, want_entropy, outs)

    @cuda.jit
    def _merge_chunk_states(
        m,
        s,
        gap,
        entropy,
        picked,
        weight_before,
        weight_piece,
        want_gap,
        want_entropy,
        m_out,
        s_out,
        gap_out,
        entropy_out,
        picked_out,
    ):
        before, piece = dtype(weight_before), dtype(weight_piece)
        outs = (m_out, s_out, gap_out, entropy_out)
        for i in range(cuda.grid(1), m_out.shape[0], cuda.gridsize(1)):
            gp = gap[i] if want_gap else zero
            ep = entropy[i] if want_entropy else zero
            fold_piece(i, m[i], s[i], gp, ep, before, piece, want_gap, want_entropy, outs)
            picked_out[i] += picked[i]

    @cuda.jit
    def _soft_cap(z, cap, out):
        thread, threads = cuda.threadIdx.x, cuda.blockDim.x
        c = dtype(cap)
        for i in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
            zi, oi = z[i], out[i]
            cap_map(zi, oi, span(zi, oi, oi, 0, zi.size), thread, threads, c)

    # ------------------------------------------------------------------ the gradient
    @jit
    def slope_at(v, inv_cap, is_capped):
        """``1 - (z / c)^2`` at the capped ``z`` (1 without a cap): the CPU's ``cap_slope``."""
        if is_capped:
            return one - (v * inv_cap) * (v * inv_cap)
        return one

    @jit
    def gradient(j, v, params):
        m, r, c, inv_cap, is_capped, t, b = params
        slope = slope_at(v, inv_cap, is_capped)
        g = (math.exp(v - m) * r - c) * slope
        if j == t:  # the CPU's gi[t] -= b * slope_t, after the entry is written
            g -= b * slope
        return g

    @jit
    def weighted_gradient(j, v, weight, params):
        m, r, c, inv_cap, is_capped, t, b = params
        slope = slope_at(v, inv_cap, is_capped)
        g = (math.exp(v - m) * r - c * weight) * slope
        if j == t:
            g -= b * slope
        return g

    @jit
    def nothing(j, value):
        return value

    gradient_map = _wide.mapping(gradient)
    weighted_gradient_map = _wide.mapping2(weighted_gradient)
    fill = _wide.generate(nothing)

    @cuda.jit
    def _chunk_grad(z, cap, start, target, weights, p_coef, t_coef, w_coef, m, s, grad):
        n = z.shape[1]
        thread, threads = cuda.threadIdx.x, cuda.blockDim.x
        weighted = weights.size > 0
        is_capped = cap > 0
        inv_cap = dtype(1.0 / cap) if is_capped else zero
        for i in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
            zi, gi = z[i], grad[i]
            a, b, c = p_coef[i], t_coef[i], w_coef[i]
            if a == 0 and b == 0 and c == 0:
                fill(gi, span(gi, gi, gi, 0, n), thread, threads, zero)
                continue
            r = a * softmax_scale(m[i], s[i])
            params = (m[i], r, c, inv_cap, is_capped, target[i] - start, b)
            if weighted:
                part = span(zi, weights, gi, 0, n)
                weighted_gradient_map(zi, weights, gi, part, thread, threads, params)
            else:
                gradient_map(zi, gi, span(zi, gi, gi, 0, n), thread, threads, params)

    # ------------------------------------------------------------------ probability targets
    @jit
    def target_weight(j, q, params):
        """``r_j = w_j (keep q_j + floor)`` (``w = 1`` without weights): the CPU's."""
        keep, floor, weights, weighted = params[0], params[1], params[2], params[3]
        r = keep * q + floor
        if weighted:
            r = weights[j] * r
        return r

    @jit
    def target_sums_step(acc, j, v, q, params):
        """The gap ``sum_j r_j (m - z_j)`` (a class of ``r_j = 0`` adds 0, not ``0 *
        inf``), the mass ``sum_j r_j`` and the entropy's terms (when wanted), in one pass."""
        gap, mass, ent = acc
        m, want_entropy = params[4], params[5]
        r = target_weight(j, q, params)
        if r != 0:
            gap += r * (m - v)
        mass += r
        if want_entropy:
            ent += entropy_term(m - v)
        return gap, mass, ent

    @jit
    def target_gradient(j, v, q, params):
        """``(exp(z_j - m) r - c r_j) slope_j``: the CPU's operations, in its order."""
        m, r, c, inv_cap, is_capped = params[4], params[5], params[6], params[7], params[8]
        return (math.exp(v - m) * r - c * target_weight(j, q, params)) * slope_at(
            v, inv_cap, is_capped
        )

    target_sums = _wide.fold2(target_sums_step)
    target_gradient_map = _wide.mapping2(target_gradient)

    @cuda.jit
    def _probability_chunk_states(
        z,
        cap,
        start,
        q,
        weights,
        smoothing,
        n_classes,
        want_entropy,
        m_out,
        s_out,
        gap_out,
        entropy_out,
        mass_out,
    ):
        n = z.shape[1]
        thread, threads = cuda.threadIdx.x, cuda.blockDim.x
        c = dtype(cap)
        keep, floor = dtype(1.0 - smoothing), dtype(smoothing / n_classes)
        weighted = weights.size > 0
        outs = (m_out, s_out, gap_out, entropy_out)
        for i in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
            zi, qi = z[i], q[i, start : start + n]
            if cap > 0:
                cap_map(zi, zi, whole(zi), thread, threads, c)
                cuda.syncthreads()  # the passes below read other threads' entries
            mc, sc, _nan = row_state(zi)
            params = (keep, floor, weights, weighted, mc, want_entropy)
            part = span(zi, qi, qi, 0, n)
            gc, rc, ec = target_sums(zi, qi, part, thread, threads, (zero, zero, zero), params)
            gc = block_sum(gc)
            rc = block_sum(rc)
            if want_entropy:
                ec = block_sum(ec)
            if thread == 0:
                fold_piece(i, mc, sc, gc, ec, mass_out[i], rc, True, want_entropy, outs)
                mass_out[i] += rc

    @cuda.jit
    def _probability_chunk_grad(
        z, cap, start, q, weights, smoothing, n_classes, p_coef, w_coef, m, s, grad
    ):
        n = z.shape[1]
        thread, threads = cuda.threadIdx.x, cuda.blockDim.x
        keep, floor = dtype(1.0 - smoothing), dtype(smoothing / n_classes)
        weighted = weights.size > 0
        is_capped = cap > 0
        inv_cap = dtype(1.0 / cap) if is_capped else zero
        for i in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
            zi, gi, qi = z[i], grad[i], q[i, start : start + n]
            a, c = p_coef[i], w_coef[i]
            if a == 0 and c == 0:
                fill(gi, span(gi, gi, gi, 0, n), thread, threads, zero)
                continue
            r = a * softmax_scale(m[i], s[i])
            params = (keep, floor, weights, weighted, m[i], r, c, inv_cap, is_capped)
            target_gradient_map(zi, qi, gi, span(zi, qi, gi, 0, n), thread, threads, params)

    return {
        "_chunk_states": _chunk_states,
        "_merge_chunk_states": _merge_chunk_states,
        "_chunk_grad": _chunk_grad,
        "_soft_cap": _soft_cap,
        "_probability_chunk_states": _probability_chunk_states,
        "_probability_chunk_grad": _probability_chunk_grad,
    }


# --------------------------------------------------------------------- gradient filtering
# Plain kernels, compiled per argument types on first launch (as ``gpu.buffers``).


@cuda.jit
def _tile_within(g, limits, within):
    """``within[0] = 0`` unless ``|g_ij| <= limits_i`` for every entry (a NaN never is);
    a block per row."""
    thread, threads = cuda.threadIdx.x, cuda.blockDim.x
    for i in range(cuda.blockIdx.x, g.shape[0], cuda.gridDim.x):
        if within[0] == 0:  # another block found one already (a benign race)
            return
        limit = limits[i]
        for j in range(thread, g.shape[1], threads):
            if not abs(g[i, j]) <= limit:
                within[0] = 0
                break


@cuda.jit
def _add_target_terms(dh, dW_chunk, h, W_chunk, targets, start, coefficients):
    """``dh_i -= k_i W_{t_i}``, ``dW_{t_i} -= k_i h_i`` for the rows whose target is in
    the chunk: a thread per column, the rows in order (no two threads write one entry)."""
    stop = start + W_chunk.shape[0]
    for col in range(cuda.grid(1), h.shape[1], cuda.gridsize(1)):
        for i in range(h.shape[0]):
            t = targets[i]
            k = coefficients[i]
            if t < start or t >= stop or k == 0:
                continue
            dh[i, col] -= k * W_chunk[t - start, col]
            dW_chunk[t - start, col] -= k * h[i, col]


def _float_dtype(array, name: str) -> np.dtype:
    dtype = np.dtype(array.dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"the CUDA kernel {name} takes float32 or float64 arrays, got {dtype}")
    return dtype


def _on_device(args, outputs):
    """``args`` on the device (host arrays copied over), and the ``(host, device)``
    pairs of the outputs to copy back."""
    numba_cuda = _runtime.cuda()
    device_args, copy_back = [], []
    for position, arg in enumerate(args):
        if isinstance(arg, np.ndarray):
            on_device = numba_cuda.to_device(np.ascontiguousarray(arg))
            device_args.append(on_device)
            if position in outputs and arg.size:
                copy_back.append((arg, on_device))
        else:
            device_args.append(arg)
    return device_args, copy_back


def _threads() -> int:
    threads = config.CUDA_THREADS_PER_BLOCK
    if not 1 <= threads <= config.CUDA_MAX_THREADS_PER_BLOCK:
        raise ValueError(
            f"config.CUDA_THREADS_PER_BLOCK={threads} must be in "
            f"1..{config.CUDA_MAX_THREADS_PER_BLOCK}"
        )
    return threads


def tile_within_into(g, limits, within) -> None:
    """Clear ``within[0]`` (a 1-element ``int32`` device array the caller set to 1)
    unless ``|g_ij| <= limits_i`` for every entry of the 2-D tile ``g``; no
    synchronization.  ``g`` and ``limits`` (one per row) on the device or the host."""
    _float_dtype(g, "tile_within")
    if g.shape[0] == 0 or g.shape[1] == 0:
        return
    threads = _threads()
    (g, limits, within), _ = _on_device((g, limits, within), ())
    blocks = max(1, min(g.shape[0], _runtime.resident_blocks(threads), config.CUDA_MAX_BLOCKS))
    _tile_within[blocks, threads](g, limits, within)


def tile_within(g, limits) -> bool:
    """Whether ``|g_ij| <= limits_i`` for every entry of the 2-D tile ``g`` (a NaN is
    never within): :func:`softmax_numba.cpu.linear_tiles.tile_within` on the device
    (the answer is copied back: one synchronization)."""
    within = _runtime.cuda().to_device(np.ones(1, np.int32))
    tile_within_into(g, limits, within)
    return bool(within.copy_to_host()[0])


def add_target_terms(dh, dW_chunk, h, W_chunk, targets, start, coefficients) -> None:
    """:func:`softmax_numba.cpu.linear_tiles.add_target_terms` on the device: for each
    row ``i`` whose class ``t_i`` lies in ``[start, start + len(W_chunk))``, ``dh_i -=
    k_i W_{t_i}`` and ``dW_{t_i} -= k_i h_i`` (``k = coefficients``), in place; host
    arrays are copied over and ``dh``, ``dW_chunk`` back."""
    _float_dtype(dh, "add_target_terms")
    if h.shape[0] == 0 or h.shape[1] == 0 or W_chunk.shape[0] == 0:
        return
    threads = _threads()
    args = (dh, dW_chunk, h, W_chunk, targets, int(start), coefficients)
    device_args, copy_back = _on_device(args, (0, 1))
    columns = h.shape[1]
    blocks = max(1, min(-(-columns // threads), config.CUDA_MAX_BLOCKS))
    _add_target_terms[blocks, threads](*device_args)
    for host, device in copy_back:
        device.copy_to_host(host)
