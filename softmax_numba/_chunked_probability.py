r"""Cross-entropy with probability targets over chunks of classes: the running
state of each row, the loss it gives and the coefficients of the gradient.

The twin of :class:`softmax_numba._chunked.ChunkedRows` (which takes class indices)
for a target ``P`` of the logits' shape, behind :func:`softmax_numba.cross_entropy`
with the Liger-Kernel options (z-loss, soft-capping, class weights, per-row
log-sum-exp and entropy).  Each class ``j`` of a row weighs

.. math:: r_j = w_j \big((1 - \varepsilon) P_j + \varepsilon / V\big) \ge 0,

PyTorch's ``cross_entropy`` with ``weight=`` and ``label_smoothing=`` for
probabilities (``w = 1`` without weights).  With ``(m, s)`` the merged state of a
row, ``gap = sum_j r_j (m - z_j)`` and ``R = sum_j r_j``
(:mod:`softmax_numba.cpu.chunked_losses`),

.. math::

   \ell = \mathrm{gap} + R \operatorname{log1p}(s) + \lambda\, \mathrm{lse}^2,
   \qquad \mathrm{lse} = m + \operatorname{log1p}(s),

a sum of non-negative terms (Blanchard, Higham & Higham 2021: the cross-entropy
keeps its error relative to itself whatever the offset of the logits, where
``R lse - sum_j r_j z_j`` would lose ``u R |lse|``).  Every row counts: ``"mean"``
divides the cross-entropy and the z-loss by the number of rows, as PyTorch does
for probabilities (not by the weights).  The gradient with respect to the (capped)
logits is

.. math:: g_j = (R + 2 \lambda\, \mathrm{lse})\, p_j - r_j,

scaled as the reduction, times ``1 - (z_j / c)^2`` under a cap ``c``.
"""

from __future__ import annotations

import numpy as np

from softmax_numba._api import run
from softmax_numba._chunked import LossOptions
from softmax_numba.cpu import chunked_losses as kernels


class ChunkedProbabilityRows:
    """The running state of the rows of a probability target, folded a block of rows
    and a chunk of classes at a time; the methods of
    :class:`~softmax_numba._chunked.ChunkedRows` that a sweep calls, with the same
    signatures (``fold``, ``lse``, ``losses``, ``entropy``, ``scales``, ``reduced``,
    ``gradient_coefficients``, ``gradient_into``, ``soft_cap``).  No ``merge``: pieces
    folded apart (Dask) are not supported.

    Parameters
    ----------
    target : ndarray, shape (rows, n_classes)
        The probabilities, C-contiguous in ``dtype``, checked ``>= 0``
        (:func:`softmax_numba._targets.check_probabilities`); not written.
    n_classes : int
    options : LossOptions
        ``ignore_index`` must be ``None`` (it applies to class indices only).
    dtype : dtype
        float32 or float64, the logits', the target's and the states' dtype.
    engine : {"cpu", "parallel"}
    want_entropy : bool
        Keep the sums the entropy needs.
    """

    def __init__(self, target, n_classes, options: LossOptions, dtype, engine, want_entropy):
        self.dtype = np.dtype(dtype)
        if target.dtype != self.dtype or target.shape[1:] != (n_classes,):
            raise ValueError(f"target must be (rows, {n_classes}) of {self.dtype}")
        target = target.view()
        target.flags.writeable = False  # one signature of the kernels, as the wrapper's
        self.target, self.n_classes, self.options = target, n_classes, options
        self.engine, self.want_entropy = engine, want_entropy
        rows = target.shape[0]
        self.m = np.full(rows, -np.inf, self.dtype)
        self.s = np.zeros(rows, self.dtype)
        self.gap = np.zeros(rows, self.dtype)
        self.mass = np.zeros(rows, self.dtype)
        self.entropy_sums = np.zeros(rows if want_entropy else 0, self.dtype)
        weights = options.class_weights
        self.weights = np.empty(0, self.dtype) if weights is None else weights
        self.count = rows

    def fold(self, z: np.ndarray, rows: slice, start: int, *, alone: bool = False) -> None:
        """Fold the chunk ``z`` (rows ``rows``, classes ``start .. start + z.shape[1]``)
        into the states; with a cap, ``z`` is capped in place.  ``alone`` is accepted
        for the signature of :meth:`ChunkedRows.fold`: each row's mass of the classes
        folded so far is part of its state, so nothing depends on it."""
        o = self.options
        run(
            kernels.PROBABILITY_CHUNK_STATES,
            self.engine,
            z,
            o.cap,
            start,
            self.target[rows],
            self.weights[start : start + z.shape[1]],
            float(o.label_smoothing),
            self.n_classes,
            self.want_entropy,
            self.m[rows],
            self.s[rows],
            self.gap[rows],
            self.entropy_sums[rows],
            self.mass[rows],
        )

    def lse(self, rows: slice = slice(None)) -> np.ndarray:
        """``m + log1p(s)`` of the rows, once every chunk is folded."""
        return self.m[rows] + np.log1p(self.s[rows])

    def losses(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the cross-entropy ``gap + R log1p(s)`` and the z-loss ``lambda
        lse^2``."""
        lam = self.options.z_loss
        with np.errstate(invalid="ignore", over="ignore"):
            log1p_s = np.log1p(self.s)
            ce = self.gap + self.mass * log1p_s
            lse = self.m + log1p_s
            z = self.dtype.type(lam) * lse * lse if lam else np.zeros_like(ce)
        return ce, z

    def entropy(self) -> np.ndarray:
        """``-sum_j p_j log p_j = log1p(s) + ent / (1 + s)`` per row."""
        with np.errstate(invalid="ignore"):
            return np.log1p(self.s) + self.entropy_sums / (self.dtype.type(1.0) + self.s)

    def scales(self) -> tuple[float, float]:
        """The factors of the cross-entropy and of the z-loss in the reduced loss (and
        so in the gradient): ``1 / rows`` for both with ``"mean"`` (0 without rows),
        else 1."""
        if self.options.reduction != "mean":
            return 1.0, 1.0
        scale = 1.0 / self.count if self.count else 0.0
        return scale, scale

    def reduced(self, ce: np.ndarray, z: np.ndarray):
        """The loss of the reduction from the per-row parts; a mean over no row is
        NaN."""
        reduction = self.options.reduction
        if reduction == "none":
            return (ce + z).astype(self.dtype)
        total = np.sum(ce, dtype=self.dtype) + np.sum(z, dtype=self.dtype)
        if reduction == "sum":
            return np.asarray(total, self.dtype)
        if not self.count:
            return np.asarray(np.nan, self.dtype)
        return np.asarray(total / self.count, self.dtype)

    def gradient_coefficients(self, rows: slice, upstream=None, scales=None):
        """``(a, c)`` of
        :data:`~softmax_numba.cpu.chunked_losses.PROBABILITY_CHUNK_GRAD` for the rows:
        ``a = up (ce_scale R + z_scale 2 lambda lse)``, ``c = up ce_scale``, the
        gradient of the reduced loss times ``upstream`` (a number, or one per row for
        ``"none"``) when given; ``scales`` replaces :meth:`scales`."""
        ce_scale, z_scale = self.scales() if scales is None else scales
        mass = self.mass[rows].astype(np.float64)
        up = np.broadcast_to(1.0 if upstream is None else upstream, mass.shape)
        a = up * ce_scale * mass
        if self.options.z_loss:
            with np.errstate(invalid="ignore"):
                a = a + up * z_scale * 2.0 * self.options.z_loss * self.lse(rows)
        c = up * ce_scale
        return a.astype(self.dtype), np.asarray(c, self.dtype)

    def gradient_into(self, z: np.ndarray, rows: slice, start: int, coefficients, out) -> None:
        """The gradient on the chunk ``z`` (capped, rows ``rows``, classes from
        ``start``) into ``out`` (which may be ``z``, not the target)."""
        o = self.options
        run(
            kernels.PROBABILITY_CHUNK_GRAD,
            self.engine,
            z,
            o.cap,
            start,
            self.target[rows],
            self.weights[start : start + z.shape[1]],
            float(o.label_smoothing),
            self.n_classes,
            *coefficients,
            self.m[rows],
            self.s[rows],
            out,
        )

    def soft_cap(self, z: np.ndarray) -> None:
        """Cap ``z`` in place (nothing without a cap)."""
        if self.options.softcap is not None:
            run(kernels.SOFT_CAP, self.engine, z, self.options.cap, z)
