r"""The sweep of :func:`softmax_numba.linear_cross_entropy` over tiles of a block of
tokens by a chunk of the vocabulary, within ``config.LINEAR_CE_WORKSPACE_BYTES``.

Two orders, chosen by :func:`plan_tiles`:

- **one chunk** (float32 and float64, when a block of at least
  ``config.LINEAR_CE_ONE_CHUNK_MIN_ROWS`` tokens of the whole vocabulary fits the
  workspace): per block, the logits ``z = h_b W^T`` once, the states, the gradient
  written over ``z``, then ``dh_b = G W`` and ``dW += G^T h_b``: three products;
- **tiles**: first the forward pass over every tile (the row states,
  :class:`softmax_numba._chunked.ChunkedRows`), then the gradient chunk by chunk of
  the vocabulary: per tile the logits again, ``G``, ``dh_b += G W_c`` and ``dW_c +=
  G^T h_b``: four products, each with a long inner dimension (``d``, the chunk, the
  block), and ``dW_c`` finished before the next chunk starts.

bfloat16 and float16 inputs run the tiles' order on float32 copies of one block of
``h`` and one chunk of ``W`` at a time; ``dW_c`` is summed in float32 over the blocks
and rounded once, ``dh`` is summed in one float32 array of ``h``'s shape (it grows
with the tokens, never with the vocabulary) and rounded at the end.

With ``grad_threshold = tau > 0``, a tile's gradient is computed without its
target term; when every entry is at most ``tau a_i`` (``a_i`` the coefficient of
``p_ij`` in row ``i``) its two gradient products are skipped, and the target terms
are added row by row (:mod:`softmax_numba.cpu.linear_tiles`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softmax_numba import config
from softmax_numba._chunked import ChunkedRows
from softmax_numba.cpu.linear_tiles import add_target_terms, tile_within


@dataclass(frozen=True)
class Tiles:
    """The tiling of a sweep: ``block`` tokens by ``chunk`` classes; ``one_chunk``:
    the whole vocabulary in one chunk, its logits computed once."""

    block: int
    chunk: int
    one_chunk: bool


def plan_tiles(
    rows: int, n_classes: int, d: int, itemsize: int, widened: bool, scratch: bool,
    chunk_size: int | None = None,
) -> Tiles:  # fmt: skip
    """The tiles within ``config.LINEAR_CE_WORKSPACE_BYTES`` of ``itemsize``-byte
    values (the compute dtype).

    The workspace holds a tile of logits (``block * chunk``), and with ``widened``
    (low-precision inputs) a block of ``h`` and two chunks of ``W``'s shape in float32
    (``(block + 2 chunk) d``); with ``scratch`` (sums without BLAS ``gemm``) a quarter
    of it is kept for the sums.  Without ``chunk_size``: one chunk of the whole
    vocabulary when ``config.LINEAR_CE_ONE_CHUNK_MIN_ROWS`` tokens (or all of them)
    fit, else square tiles (the longest inner dimensions for the three products)."""
    budget = max(1, config.LINEAR_CE_WORKSPACE_BYTES // itemsize)
    if scratch:
        budget = max(1, budget * 3 // 4)
    width = d if widened else 0  # the float32 copies, per token and per class

    def block_for(chunk: int) -> int:
        room = budget - 2 * width * chunk
        return max(1, min(rows, room // (chunk + width)))

    if chunk_size is not None:
        return Tiles(block_for(chunk_size), chunk_size, False)
    least = min(rows, config.LINEAR_CE_ONE_CHUNK_MIN_ROWS)
    if not widened and max(1, least) * n_classes <= budget:
        return Tiles(max(1, min(rows, budget // n_classes)), n_classes, True)
    # Square tiles: x^2 + 3 width x <= budget (a block and two chunks of width d).
    side = int((np.sqrt(9.0 * width * width + 4.0 * budget) - 3.0 * width) / 2.0)
    chunk = max(1, min(n_classes, side))
    return Tiles(block_for(chunk), chunk, False)


class Sweep:
    """One call's sweep: the arrays, their products (:mod:`softmax_numba._linear_products`)
    and the workspace.

    Parameters
    ----------
    h, W, bias : ndarray
        ``(N, d)``, ``(V, d)``, ``(V,)`` or None; float32/float64, or bfloat16/float16
        (``compute`` is then float32).
    state : ChunkedRows
        The rows' states (in ``compute``).
    products : NumpyProducts or TorchProducts
    tiles : Tiles
    grad_threshold : float
        ``tau`` of the gradient filtering; 0 computes the gradient exactly.
    """

    def __init__(self, h, W, bias, state: ChunkedRows, products, tiles: Tiles, grad_threshold):
        self.h, self.W, self.state, self.products, self.tiles = h, W, state, products, tiles
        self.compute = state.dtype
        self.widened = h.dtype != self.compute
        self.bias = None if bias is None else bias.astype(self.compute, copy=False)
        self.bias_dtype = None if bias is None else bias.dtype
        self.tau = float(grad_threshold)
        rows, d = h.shape
        n_classes = W.shape[0]
        block, chunk = tiles.block, tiles.chunk
        self.blocks = [slice(r, min(rows, r + block)) for r in range(0, rows, block)]
        self.chunks = [slice(c, min(n_classes, c + chunk)) for c in range(0, n_classes, chunk)]
        self.logits = np.empty(block * chunk, self.compute)
        width = d if self.widened else 0
        self.h32 = np.empty(block * width, self.compute)
        self.W32 = np.empty(chunk * width, self.compute)
        self.dW32 = np.empty(chunk * width, self.compute)
        scratch = 0
        if products.needs_scratch:
            scratch = max(d, config.LINEAR_CE_WORKSPACE_BYTES // 4 // self.compute.itemsize)
        self.scratch = np.empty(scratch, self.compute)

    # ------------------------------------------------------------------ operands
    def _widened(self, buffer, a):
        """``a`` itself, or (low precision) its float32 copy in ``buffer``."""
        if not self.widened:
            return a
        out = buffer[: a.size].reshape(a.shape)
        self.products.convert(out, a)
        return out

    def _tile_logits(self, h_b, W_c, classes: slice):
        """``h_b @ W_c.T + bias_c`` into the logits buffer."""
        z = self.logits[: h_b.shape[0] * W_c.shape[0]].reshape(h_b.shape[0], W_c.shape[0])
        self.products.product(z, h_b, W_c.T)
        if self.bias is not None:
            z += self.bias[classes]
        return z

    # ------------------------------------------------------------------ passes
    def forward(self) -> None:
        """Fold every tile into the states."""
        for part in self.blocks:
            h_b = self._widened(self.h32, self.h[part])
            for classes in self.chunks:
                W_c = self._widened(self.W32, self.W[classes])
                self.state.fold(self._tile_logits(h_b, W_c, classes), part, classes.start)

    def gradients(self, upstream=None):
        """``(dh, dW, dbias)`` of the reduced loss (times ``upstream``, one value per
        row, when given), the states folded already unless :attr:`tiles` is one
        chunk (whose sweep folds and differentiates each block at once)."""
        h, W, compute = self.h, self.W, self.compute
        dh = np.zeros(h.shape, compute) if self.widened else np.empty_like(h)
        dW = np.empty_like(W)
        dbias = None if self.bias is None else np.zeros(W.shape[0], compute)
        upstream = None if upstream is None else np.reshape(upstream, -1)
        if self.tiles.one_chunk:
            self._one_chunk(dh, dW, dbias, upstream)
        else:
            coefficients = self.state.gradient_coefficients(slice(None), upstream)
            self._tiled(dh, dW, dbias, coefficients)
        if self.widened:
            out = np.empty_like(h)
            self.products.convert(out, dh)
            dh = out
        if dbias is not None:
            dbias = dbias.astype(self.bias_dtype, copy=False)
        return dh, dW, dbias

    def _coefficients(self, coefficients, where: slice, part: slice):
        """The ``(a, b, c)`` of the rows ``part`` (at ``where`` in ``coefficients``);
        with filtering, ``b = 0`` (the target term goes row by row) and the target
        terms' coefficients ``b * slope``."""
        a, b, c = (x[where] for x in coefficients)
        if not self.tau:
            return (a, b, c), None
        return (a, np.zeros_like(b), c), b * self._target_slopes(part)

    def _target_slopes(self, part: slice):
        """``1 - (z_t / cap)^2`` at each row's (capped) target logit; 1 without a cap."""
        cap = self.state.options.softcap
        if cap is None:
            return np.ones(part.stop - part.start, self.compute)
        scaled = self.state.picked[part] / self.compute.type(cap)
        return (1 - scaled * scaled).astype(self.compute)

    def _tile_gradient(self, z, part: slice, start: int, rows_coefficients, *, capped=False):
        """``G`` over ``z`` in place (``z`` capped first unless ``capped``: folding caps
        it); True when filtering lets the tile skip its products (every ``|G_ij| <= tau
        a_i``)."""
        if not capped:
            self.state.soft_cap(z)
        self.state.gradient_into(z, part, start, rows_coefficients, z)
        if not self.tau:
            return False
        limits = np.abs(rows_coefficients[0]) * self.compute.type(self.tau)
        return tile_within(z, limits.astype(self.compute))

    def _one_chunk(self, dh, dW, dbias, upstream) -> None:
        """The one-chunk order: per block, three products on logits computed once
        (the block's states folded first: its coefficients need its ``lse``)."""
        whole = slice(0, self.W.shape[0])
        dW_written = False
        for part in self.blocks:
            z = self._tile_logits(self.h[part], self.W, whole)
            self.state.fold(z, part, 0)
            rows_upstream = None if upstream is None else upstream[part]
            block_coefficients = self.state.gradient_coefficients(part, rows_upstream)
            rows_coefficients, targets = self._coefficients(block_coefficients, slice(None), part)
            skip = self._tile_gradient(z, part, 0, rows_coefficients, capped=True)
            if skip:
                dh[part] = 0
            else:
                self.products.product(dh[part], z, self.W)
                self._add_to(dW, z.T, self.h[part], dW_written)
                dW_written = True
                if dbias is not None:
                    dbias += z.sum(axis=0)
            if targets is not None:
                if not dW_written:
                    dW[...] = 0
                    dW_written = True
                self._targets(dh[part], dW, self.h[part], self.W, part, 0, targets, dbias)
        if not dW_written:
            dW[...] = 0

    def _tiled(self, dh, dW, dbias, coefficients) -> None:
        """The tiles' order: the gradient a chunk of the vocabulary at a time."""
        dh_written = np.zeros(len(self.blocks), bool) if not self.widened else None
        for classes in self.chunks:
            W_c = self._widened(self.W32, self.W[classes])
            dW_c = self.dW32[: W_c.size].reshape(W_c.shape) if self.widened else dW[classes]
            dW_written = False
            for k, part in enumerate(self.blocks):
                h_b = self._widened(self.h32, self.h[part])
                rows_coefficients, targets = self._coefficients(coefficients, part, part)
                z = self._tile_logits(h_b, W_c, classes)
                if not self._tile_gradient(z, part, classes.start, rows_coefficients):
                    first_dh = dh_written is not None and not dh_written[k]
                    self._add_to(dh[part], z, W_c, not first_dh)
                    if dh_written is not None:
                        dh_written[k] = True
                    self._add_to(dW_c, z.T, h_b, dW_written)
                    dW_written = True
                    if dbias is not None:
                        dbias[classes] += z.sum(axis=0)
                if targets is not None:
                    if dh_written is not None and not dh_written[k]:
                        dh[part] = 0
                        dh_written[k] = True
                    if not dW_written:
                        dW_c[...] = 0
                        dW_written = True
                    self._targets(dh[part], dW_c, h_b, W_c, part, classes.start, targets, dbias)
            if not dW_written:
                dW_c[...] = 0
            if self.widened:
                self.products.convert(dW[classes], dW_c)
        if dh_written is not None:
            for k in np.flatnonzero(~dh_written):
                dh[self.blocks[k]] = 0

    def _add_to(self, out, a, b, written: bool) -> None:
        """``out += a @ b``, or ``out = a @ b`` when ``out`` is not written yet."""
        if written:
            self.products.accumulate(out, a, b, self.scratch)
        else:
            self.products.product(out, a, b)

    def _targets(self, dh_b, dW_c, h_b, W_c, part: slice, start: int, k, dbias) -> None:
        """The target terms of the rows ``part`` whose class is in the chunk."""
        labels = self.state.labels[part]
        add_target_terms(dh_b, dW_c, h_b, W_c, labels, start, k.astype(self.compute))
        if dbias is not None:
            inside = (labels >= start) & (labels < start + W_c.shape[0]) & (k != 0)
            np.subtract.at(dbias, labels[inside], k[inside])
