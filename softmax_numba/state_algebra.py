r"""The state ``(m, s)`` of a row of logits and its algebra: one source for every engine.

The state of a row ``x`` is ``m = x_k = max(x)`` and ``s = sum_{i != k} exp(x_i -
m)`` (``k`` one maximum; ties count ``exp(0) = 1`` each but for one).  Every
log-domain result of the package is formed from it, as a sum of terms of one sign
and so accurate relative to the result whatever the offset of ``x`` (Blanchard,
Higham & Higham, "Accurately computing the log-sum-exp and softmax functions", IMA
J. Numer. Anal. 41(4), 2021, Alg. 2.2-2.3):

- ``logsumexp = m + log1p(s)``;
- ``softmax_i = exp(x_i - m) / (1 + s)``;
- ``log_softmax_i = (x_i - m) - log1p(s)``, and the loss ``(m - x_t) + log1p(s)``.

Two states of two pieces of a row merge exactly, up to the rounding of each
operation: with ``m_1 >= m_2``,

.. math:: m = m_1, \quad s = s_1 + (1 + s_2)\, e^{m_2 - m_1}

(Milakov & Gimelshein, "Online normalizer calculation for softmax",
arXiv:1805.02867, 2018, eq. (4), written for ``s = d - 1`` so that a sum far below
``u``, a near-certain row, is kept rather than rounded into ``d = 1``).  Adding one
entry ``v`` is the merge with the state ``(v, 0)``.

The rules for non-finite entries, which every engine follows:

- ``m`` is the maximum over the numbers, never NaN; an empty or all ``-inf`` piece
  has ``m = -inf`` and adds nothing to a merge;
- a NaN anywhere makes ``s`` NaN (through ``exp(NaN - m)``, or flagged apart by an
  engine that reduces the NaN test separately), so it poisons every result;
- beside a ``+inf`` maximum every other piece adds nothing but its NaN;
- a *settled* state, the one every result is formed from, has ``s = 0`` for ``m =
  +-inf`` (or NaN, with a NaN): then ``m + log1p(s)`` is scipy's log-sum-exp (``+inf``
  for a ``+inf`` entry, ``-inf`` for an all ``-inf`` row) with no special case, and
  :func:`softmax_scale` is NaN for a ``+inf`` max, as scipy's softmax.

The functions are written once here and compiled by each engine with its own
decorator and elementary functions (:func:`build`): the CPU engines in
:mod:`softmax_numba.cpu.softmax` (and through it :mod:`softmax_numba.cpu.states`,
the split rows and Dask), the CUDA engine in :mod:`softmax_numba.gpu._reduce`.  The
numpy engine's vectorized form is :func:`softmax_numba.reference.state`.
"""

from __future__ import annotations

import math
from types import SimpleNamespace


def build(helper, ordered, exp, log1p, cast) -> SimpleNamespace:
    """The algebra compiled for one engine.

    Parameters
    ----------
    helper : decorator
        Compiles a helper for the engine's kernels (the CPU's ``jit``, CUDA's
        ``cuda.jit(device=True)``).
    ordered : decorator
        The same for the formulas whose order of operations is their accuracy
        (``(x - m) - log1p(s)``): on the CPU, ``jit(reassociate=False)``.
    exp, log1p : callable
        The engine's elementary functions, callable from compiled code.
    cast : callable
        ``cast(like, value)``: ``value`` in the floating type of ``like``, so that a
        float32 state stays float32 (the CPU's ``in_dtype_of``).

    Returns
    -------
    SimpleNamespace
        ``merge(m1, s1, m2, s2)``, ``add(m, s, v)``, ``softmax_scale(m, s)``,
        ``logsumexp(m, s)``, ``log_probability(x, m, log1p_s)`` and ``surprisal(x,
        m, log1p_s)``.
    """

    @helper
    def merge(m1, s1, m2, s2):
        """The state of the union of two pieces from theirs (the merge above); an
        empty or all ``-inf`` piece, or any piece beside a ``+inf`` max, adds
        nothing but its NaN."""
        if m2 > m1:
            m1, s1, m2, s2 = m2, s2, m1, s1
        if m2 == -math.inf or m1 == math.inf:
            return m1, s1 + s2 * cast(s1, 0.0)
        return m1, s1 + (cast(s1, 1.0) + s2) * exp(m2 - m1)

    @helper
    def add(m, s, v):
        """The state ``(m, s)`` with one more entry ``v``: ``merge(m, s, v, 0)``."""
        return merge(m, s, v, cast(s, 0.0))

    @helper
    def softmax_scale(m, s):
        """``1 / (1 + s)``, the factor of ``exp(x_i - m)``; NaN for a ``+inf`` max."""
        if m == math.inf:
            return cast(s, math.nan)
        return cast(s, 1.0) / (cast(s, 1.0) + s)

    @helper
    def logsumexp(m, s):
        """``m + log1p(s)`` of a settled state."""
        return m + log1p(s)

    @ordered
    def log_probability(x, m, log1p_s):
        """``(x - m) - log1p(s)``, in this order: both terms are ``<= 0``, so the result
        is accurate relative to itself (``x - (m + log1p(s))`` would lose ``u |m|``)."""
        return (x - m) - log1p_s

    @ordered
    def surprisal(x, m, log1p_s):
        """``-log softmax = (m - x) + log1p(s)``, a sum of two terms ``>= 0``."""
        return (m - x) + log1p_s

    return SimpleNamespace(
        merge=merge,
        add=add,
        softmax_scale=softmax_scale,
        logsumexp=logsumexp,
        log_probability=log_probability,
        surprisal=surprisal,
    )
