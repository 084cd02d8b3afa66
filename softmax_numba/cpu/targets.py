"""Class-index targets checked in one compiled pass (the lean path of ``cross_entropy``).

The general path checks targets with a few NumPy reductions (``softmax_numba._targets``),
some microseconds each; this loop does it in one pass over the labels, at the cost of
one call.  It only says whether every label is valid: when one is not, the general
path runs and names it.
"""

from __future__ import annotations

from softmax_numba.cpu._compile import jit


@jit
def counted_class_indices(labels, n_classes, has_ignore, ignore):
    """The number of ``labels`` that count (all of them, or those not equal to
    ``ignore`` when ``has_ignore``) if each of those lies in ``[0, n_classes)``;
    ``-1`` otherwise."""
    count = 0
    for i in range(labels.size):
        t = labels[i]
        if has_ignore and t == ignore:
            continue
        if t < 0 or t >= n_classes:
            return -1
        count += 1
    return count
