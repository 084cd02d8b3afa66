"""Softmax collapse as the logits grow, with softmax and with StableMax (claim 16).

Prieto, Barsbey, Mediano & Birdal ("Grokking at the edge of numerical stability",
ICLR 2025) observe that, once a model fits its training data, gradient descent
keeps lowering the loss by scaling the logits along their direction (their "naive
loss minimization"), until the softmax of the target class rounds to exactly 1 in
floating point: that sample's gradient at its target is then exactly 0 and learning
from it stops ("softmax collapse").  StableMax's ``s(x)`` grows linearly rather
than exponentially, which delays it.

Here each row's logits are ``scale * z`` for a fixed direction ``z`` and the target
its largest entry (a fitted sample), over a geometric grid of scales, in float32 and
float64, through the fused kernels ``cross_entropy`` and ``stablemax_cross_entropy``
(``reduction="none"``).  Per (dataset, dtype, map, scale), the fraction of rows

- ``target_grad_zero``: whose gradient at the target is exactly 0 (the collapse);
- ``p_target_one``: whose forward probability of the target (``softmax`` or
  ``stablemax``) is exactly 1;
- ``row_grad_zero``: whose whole gradient row is exactly 0 (the other classes'
  entries too: they vanish only where their terms underflow);
- ``loss_zero``: whose loss is exactly 0 (the fused losses are ``log1p`` of the
  other terms, 0 only where those underflow; a ``log`` of the rounded sum, as
  ``x_t - logsumexp(x)``, is 0 as soon as ``p_t`` rounds to 1).

Two directions ``z``: ``mnist``, the 2500 MNIST pre-softmax vectors of Blanchard,
Higham & Higham (a trained network; almost every row has a second positive logit,
so StableMax's ``p_t`` tends to ``z_t / sum_{z_j > 0} z_j < 1`` and never collapses),
and ``margin_113``, 113 classes (the paper's modular addition modulo 113) whose
target logit is ``1 + |N(0, 1)|`` and every other ``-|N(0, 1)|`` (every wrong class
below 0, the case where StableMax does collapse, its terms falling like ``1 /
scale^2``).  :mod:`experiments.report.claims` judges claim 16 from this table.
"""

from __future__ import annotations

import numpy as np

import softmax_numba as sn
from experiments.measure.bhh import load_logits

COLUMNS = [
    "dataset",
    "dtype",
    "map",
    "scale",
    "rows",
    "n",
    "target_grad_zero",
    "p_target_one",
    "row_grad_zero",
    "loss_zero",
]
DTYPES = ("float32", "float64")
#: The logit scales: 10^0 to 10^12, ``PER_DECADE`` per decade (``QUICK_PER_DECADE`` with
#: ``--quick``).
DECADES = 12
PER_DECADE, QUICK_PER_DECADE = 8, 2
#: Rows of the synthetic direction (all 2500 MNIST rows are taken).
MARGIN_ROWS, QUICK_MARGIN_ROWS = 2048, 256

#: The two maps: (forward, fused loss).
MAPS = {
    "softmax": (sn.softmax, sn.cross_entropy),
    "stablemax": (sn.stablemax, sn.stablemax_cross_entropy),
}


def directions(quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (z, target)``: the logit directions and each row's target (its max)."""
    mnist = load_logits()
    rng = np.random.default_rng(16)
    rows = QUICK_MARGIN_ROWS if quick else MARGIN_ROWS
    margin = -np.abs(rng.standard_normal((rows, 113)))
    target = rng.integers(0, 113, rows)
    margin[np.arange(rows), target] = 1 + np.abs(rng.standard_normal(rows))
    return {
        "mnist": (mnist, np.argmax(mnist, axis=1)),
        "margin_113": (margin, target),
    }


def scales(quick: bool) -> np.ndarray:
    per = QUICK_PER_DECADE if quick else PER_DECADE
    return 10.0 ** (np.arange(DECADES * per + 1) / per)


def measure(z: np.ndarray, target: np.ndarray, scale: float, dtype: str, name: str) -> dict:
    """The four fractions for logits ``scale * z`` rounded to ``dtype``."""
    forward, loss_of = MAPS[name]
    x = (z * scale).astype(dtype)
    rows = np.arange(len(x))
    with np.errstate(all="ignore"):
        loss, grad = loss_of(x, target, reduction="none", return_grad=True, backend="cpu")
        p = forward(x, backend="cpu")
    return {
        "target_grad_zero": float(np.mean(grad[rows, target] == 0)),
        "p_target_one": float(np.mean(p[rows, target] == 1)),
        "row_grad_zero": float(np.mean(np.all(grad == 0, axis=1))),
        "loss_zero": float(np.mean(loss == 0)),
    }


def rows(quick: bool = False) -> list[dict]:
    """The table: every dataset, dtype, map and scale (a few seconds; quick: fewer
    scales and synthetic rows)."""
    out = []
    for dataset, (z, target) in directions(quick).items():
        for dtype in DTYPES:
            for name in MAPS:
                for scale in scales(quick):
                    cell = {"dataset": dataset, "dtype": dtype, "map": name, "scale": scale}
                    cell |= {"rows": z.shape[0], "n": z.shape[1]}
                    out.append(cell | measure(z, target, scale, dtype, name))
    return out
