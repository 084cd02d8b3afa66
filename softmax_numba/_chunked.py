r"""Cross-entropy whose logits arrive a chunk of classes at a time: the running
state of each row, the loss it gives and the coefficients of the gradient.

The sweep behind :func:`softmax_numba.linear_cross_entropy` (the logits of a chunk
computed as ``h @ W_c.T``) and behind :func:`softmax_numba.cross_entropy` with the
Liger-Kernel options (z-loss, soft-capping, class weights, per-row log-sum-exp and
entropy).  With ``(m, s)`` the merged state of a row, ``gap = sum_j w_j (m - z_j)``,
``ent = sum_j exp(z_j - m) (m - z_j)`` (:mod:`softmax_numba.cpu.chunked_losses`), a
class index ``t``, smoothing ``eps`` and ``W = sum_j w_j`` over ``V`` classes:

.. math::

   \ell = w_t (1 - \varepsilon)\big((m - z_t) + \operatorname{log1p}(s)\big)
        + \frac{\varepsilon}{V}\big(\mathrm{gap} + W \operatorname{log1p}(s)\big)
        + \lambda\, \mathrm{lse}^2,
   \qquad \mathrm{lse} = m + \operatorname{log1p}(s),

a sum of non-negative terms but the last (which is the z-loss, PaLM, Chowdhery et
al. 2022), so that the cross-entropy keeps its error relative to itself whatever
the offset of the logits.  This is PyTorch's ``cross_entropy`` with ``weight=`` and
``label_smoothing=``; ``"mean"`` divides the cross-entropy by ``sum_i w_{t_i}`` over
the rows that count, as PyTorch does, and the z-loss by their number, as
Liger-Kernel does.  The gradient with respect to the (capped) logits is

.. math:: g_j = \big(w_t (1 - \varepsilon) + \tfrac{\varepsilon}{V} W
          + 2 \lambda\, \mathrm{lse}\big)\, p_j - \tfrac{\varepsilon}{V} w_j
          - w_t (1 - \varepsilon) [j = t],

scaled as the reduction, times ``1 - (z_j / c)^2`` under a cap ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softmax_numba import config
from softmax_numba._api import run
from softmax_numba._targets import counted
from softmax_numba.cpu import chunked_losses as kernels


@dataclass(frozen=True)
class LossOptions:
    """The options of a chunked cross-entropy, checked by the caller."""

    reduction: str = "mean"
    label_smoothing: float = 0.0
    ignore_index: int | None = None
    z_loss: float = 0.0
    softcap: float | None = None
    class_weights: np.ndarray | None = None

    @property
    def cap(self) -> float:
        """The kernels' cap: 0 for none."""
        return 0.0 if self.softcap is None else float(self.softcap)


def plan(rows: int, n_classes: int, itemsize: int, chunk_size: int | None) -> tuple[int, int]:
    """``(rows per block, classes per chunk)`` within ``config.CHUNKED_LOSS_BYTES``.

    Without ``chunk_size``, the whole vocabulary is one chunk when a block of
    ``config.CHUNKED_LOSS_MIN_ROWS`` rows (or all rows, if fewer) of it fits, so that
    the logits are computed once; else the chunk is what fits beside that many rows.
    """
    budget = max(1, config.CHUNKED_LOSS_BYTES // itemsize)
    least_rows = max(1, min(rows, config.CHUNKED_LOSS_MIN_ROWS))
    if chunk_size is None:
        chunk_size = n_classes if least_rows * n_classes <= budget else budget // least_rows
        chunk_size = max(1, min(n_classes, chunk_size))
    block = max(1, min(rows, budget // chunk_size))
    return block, chunk_size


class ChunkedRows:
    """The running state of ``len(labels)`` rows of ``n_classes`` logits, folded a
    block of rows and a chunk of classes at a time.

    Parameters
    ----------
    labels : ndarray of int64
        The class index of each row, checked (:func:`softmax_numba._targets.check_class_indices`).
    n_classes : int
    options : LossOptions
    dtype : dtype
        float32 or float64, the logits' and the states' dtype.
    engine : {"cpu", "parallel"}
    want_entropy : bool
        Keep the sums the entropy needs.
    """

    def __init__(self, labels, n_classes, options: LossOptions, dtype, engine, want_entropy):
        self.labels, self.n_classes, self.options = labels, n_classes, options
        self.dtype, self.engine, self.want_entropy = np.dtype(dtype), engine, want_entropy
        rows = labels.shape[0]
        self.m = np.full(rows, -np.inf, self.dtype)
        self.s = np.zeros(rows, self.dtype)
        self.gap = np.zeros(rows if options.label_smoothing else 0, self.dtype)
        self.entropy_sums = np.zeros(rows if want_entropy else 0, self.dtype)
        self.picked = np.zeros(rows, self.dtype)
        self.valid = counted(labels, options.ignore_index)
        weights = options.class_weights
        self.weights = np.empty(0, self.dtype) if weights is None else weights
        self._prefix = None if weights is None else np.concatenate(([0.0], np.cumsum(weights)))
        self.target_weights = (
            np.ones(rows, self.dtype)
            if weights is None
            else np.where(self.valid, weights[np.where(self.valid, labels, 0)], 0).astype(
                self.dtype
            )
        )
        self.count = int(np.count_nonzero(self.valid))
        self.weight_count = float(np.sum(self.target_weights[self.valid], dtype=np.float64))

    def weight_sum(self, start: int, stop: int) -> float:
        """``sum_j w_j`` over the classes ``[start, stop)``."""
        if self._prefix is None:
            return float(stop - start)
        return float(self._prefix[stop] - self._prefix[start])

    def fold(self, z: np.ndarray, rows: slice, start: int, *, alone: bool = False) -> None:
        """Fold the chunk ``z`` (rows ``rows``, classes ``start .. start + z.shape[1]``)
        into the states; with a cap, ``z`` is capped in place.  ``alone``: the states
        hold this chunk only (no earlier chunk was folded: a piece of a Dask sweep)."""
        stop = start + z.shape[1]
        o = self.options
        run(
            kernels.CHUNK_STATES,
            self.engine,
            z,
            o.cap,
            start,
            self.labels[rows],
            self.weights[start:stop],
            0.0 if alone else self.weight_sum(0, start),
            self.weight_sum(start, stop),
            bool(o.label_smoothing),
            self.want_entropy,
            self.m[rows],
            self.s[rows],
            self.gap[rows],
            self.entropy_sums[rows],
            self.picked[rows],
        )

    @property
    def parts(self) -> tuple[np.ndarray, ...]:
        """``(m, s, gap, entropy sums, picked)``: what a piece's states are made of."""
        return self.m, self.s, self.gap, self.entropy_sums, self.picked

    def merge(self, parts, weight_before: float, weight_piece: float) -> None:
        """Fold another piece's :attr:`parts` (classes of weights summing to
        ``weight_piece``) into these states (of ``weight_before``)."""
        run(
            kernels.MERGE_CHUNK_STATES,
            self.engine,
            *parts,
            weight_before,
            weight_piece,
            bool(self.options.label_smoothing),
            self.want_entropy,
            *self.parts,
        )

    def lse(self, rows: slice = slice(None)) -> np.ndarray:
        """``m + log1p(s)`` of the rows, once every chunk is folded."""
        return self.m[rows] + np.log1p(self.s[rows])

    def losses(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the cross-entropy and the z-loss ``lambda lse^2`` (0 where the row does
        not count)."""
        o, eps = self.options, self.options.label_smoothing
        with np.errstate(invalid="ignore", over="ignore"):
            log1p_s = np.log1p(self.s)
            ce = (self.target_weights * self.dtype.type(1.0 - eps)) * (
                (self.m - self.picked) + log1p_s
            )
            if eps:
                total = self.dtype.type(self.weight_sum(0, self.n_classes))
                ce += self.dtype.type(eps / self.n_classes) * (self.gap + total * log1p_s)
            lse = self.m + log1p_s
            z = self.dtype.type(o.z_loss) * lse * lse if o.z_loss else np.zeros_like(ce)
        return np.where(self.valid, ce, 0).astype(self.dtype), np.where(self.valid, z, 0)

    def entropy(self) -> np.ndarray:
        """``-sum_j p_j log p_j = log1p(s) + ent / (1 + s)`` per row."""
        with np.errstate(invalid="ignore"):
            return np.log1p(self.s) + self.entropy_sums / (self.dtype.type(1.0) + self.s)

    def scales(self) -> tuple[float, float]:
        """The factors of the cross-entropy and of the z-loss in the reduced loss (and so
        in the gradient): ``1 / sum_i w_{t_i}`` and ``1 / count`` for ``"mean"`` (0 when
        nothing counts), else 1."""
        if self.options.reduction != "mean":
            return 1.0, 1.0
        ce = 1.0 / self.weight_count if self.weight_count > 0 else 0.0
        return ce, 1.0 / self.count if self.count else 0.0

    def reduced(self, ce: np.ndarray, z: np.ndarray):
        """The loss of the reduction from the per-row parts (a 0-d array or one per row);
        a mean over no row (or over zero weights) is NaN."""
        reduction = self.options.reduction
        if reduction == "none":
            return (ce + z).astype(self.dtype)
        total_ce = np.sum(ce, dtype=self.dtype)
        total_z = np.sum(z, dtype=self.dtype)
        if reduction == "sum":
            return np.asarray(total_ce + total_z, self.dtype)
        if not self.count or self.weight_count <= 0:
            return np.asarray(np.nan, self.dtype)
        return np.asarray(total_ce / self.weight_count + total_z / self.count, self.dtype)

    def gradient_coefficients(self, rows: slice, upstream=None, scales=None):
        """``(a, b, c)`` of :data:`~softmax_numba.cpu.chunked_losses.CHUNK_GRAD` for the
        rows: the gradient of the reduced loss, times ``upstream`` (a number, or one
        per row for ``"none"``) when given; ``scales`` replaces :meth:`scales` (a
        mean over more rows than these, in Dask)."""
        o, eps = self.options, self.options.label_smoothing
        ce_scale, z_scale = self.scales() if scales is None else scales
        dtype, v = self.dtype, self.n_classes
        valid = self.valid[rows]
        wt = self.target_weights[rows].astype(np.float64)
        up = np.ones(valid.shape) if upstream is None else np.broadcast_to(upstream, valid.shape)
        up = np.where(valid, up, 0.0)
        b = up * ce_scale * (1.0 - eps) * wt
        c = up * ce_scale * eps / v
        a = b + c * self.weight_sum(0, v)
        if o.z_loss:
            with np.errstate(invalid="ignore"):
                a = a + np.where(valid, up * z_scale * 2.0 * o.z_loss * self.lse(rows), 0.0)
        return a.astype(dtype), b.astype(dtype), c.astype(dtype)

    def gradient_into(self, z: np.ndarray, rows: slice, start: int, coefficients, out) -> None:
        """The gradient on the chunk ``z`` (capped, rows ``rows``, classes from ``start``)
        into ``out`` (which may be ``z``)."""
        stop = start + z.shape[1]
        run(
            kernels.CHUNK_GRAD,
            self.engine,
            z,
            self.options.cap,
            start,
            self.labels[rows],
            self.weights[start:stop],
            *coefficients,
            self.m[rows],
            self.s[rows],
            out,
        )

    def soft_cap(self, z: np.ndarray) -> None:
        """Cap ``z`` in place (nothing without a cap)."""
        if self.options.softcap is not None:
            run(kernels.SOFT_CAP, self.engine, z, self.options.cap, z)
