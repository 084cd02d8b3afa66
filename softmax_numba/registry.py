"""The catalogue of (op, algorithm) entries that tests, benchmarks and the study share.

The entries are declared beside their public functions (the ``ENTRIES`` of each
module in :data:`DECLARING_MODULES`; :class:`softmax_numba.declaration.Entry`) and
collected here.  Anything registered is checked against the reference by the test
suite on every engine of :data:`BACKENDS`, benchmarked by ``make bench`` and swept
by the study where its tags say so.  Errors are measured by
:mod:`softmax_numba.error_metrics` against the bounds of :mod:`softmax_numba.bounds`.
"""

from __future__ import annotations

import importlib

import numpy as np

from softmax_numba.declaration import KINDS, STUDY_TAGS, Entry

__all__ = [
    "BACKENDS",
    "COMPOSITES",
    "CPU_ONLY_OPS",
    "DECLARING_MODULES",
    "ENTRIES",
    "KINDS",
    "SEGMENTED",
    "SELECTIONS",
    "STUDY_TAGS",
    "Entry",
    "entries",
    "oracle_args",
    "outputs",
    "tagged",
]

#: The engines every entry runs on (``"cuda"`` joins when the CUDA engine lands).
BACKENDS = ("numpy", "cpu", "parallel")

#: The modules whose ``ENTRIES`` make the registry, in its order.
DECLARING_MODULES = (
    "softmax_numba._softmax",
    "softmax_numba._losses",
    "softmax_numba._elementwise",
    "softmax_numba._sparse",
    "softmax_numba._maxout",
    "softmax_numba._cumulative",
    "softmax_numba._stablemax",
)

#: Public functions that compose a registered op with something else and so have no
#: entry of their own: their inputs are not one logits array.
#: ``linear_cross_entropy`` is ``cross_entropy`` of ``h @ W.T + bias``, tested against
#: that materialized form (``tests/test_linear_cross_entropy.py``).
COMPOSITES = ("linear_cross_entropy",)

#: Public functions that pick entries (a token, a kept set, the k largest) rather
#: than map values within an error bound: tested against the sort-based oracle of
#: :mod:`softmax_numba.reference` (``tests/test_sampling.py``).
SELECTIONS = ("sample", "filter_logits", "top_logprobs")

#: Public functions over ragged segments: ``(values, offsets)``, where an entry
#: (:class:`~softmax_numba.declaration.Entry`) describes one logits array along an axis
#: (its arguments, oracle and bounds are per row along ``axis``, which these ops do not
#: take).  Each segment is a row of a registered op (softmax, log_softmax, logsumexp
#: and their backward ops) with its bound; tested against the oracle of
#: :mod:`softmax_numba.reference` segment by segment (``tests/test_segment.py``).
SEGMENTED = (
    "segment_softmax",
    "segment_log_softmax",
    "segment_logsumexp",
    "segment_softmax_backward",
    "segment_log_softmax_backward",
)


def _collect() -> tuple[Entry, ...]:
    """Every declared entry; two with one name are an error."""
    found = tuple(e for m in DECLARING_MODULES for e in importlib.import_module(m).ENTRIES)
    names = [e.name for e in found]
    if repeated := {n for n in names if names.count(n) > 1}:
        raise RuntimeError(f"entries declared twice: {sorted(repeated)}")
    return found


ENTRIES: tuple[Entry, ...] = _collect()

#: Registered ops with no CUDA kernel (each declaring module's ``CPU_ONLY_OPS``):
#: their wrappers refuse ``backend="cuda"`` and GPU arrays.
CPU_ONLY_OPS: tuple[str, ...] = tuple(
    op for m in DECLARING_MODULES for op in getattr(importlib.import_module(m), "CPU_ONLY_OPS", ())
)


def tagged(tag: str) -> tuple[str, ...]:
    """The names of the entries with the study tag ``tag``, in registry order."""
    if tag not in STUDY_TAGS:
        raise ValueError(f"unknown study tag {tag!r}; expected one of {STUDY_TAGS}")
    return tuple(e.name for e in ENTRIES if tag in e.study)


def entries(op: str | None = None) -> list[Entry]:
    """The registered entries, all or those of one op."""
    found = [e for e in ENTRIES if op is None or e.op == op]
    if not found:
        raise KeyError(f"no registered op {op!r}; known: {sorted({e.op for e in ENTRIES})}")
    return found


def oracle_args(args) -> tuple:
    """The arguments converted exactly to the oracle's precision: float64 for
    float16, bfloat16 and float32, ``np.longdouble`` for float64; others unchanged."""

    def up(a):
        a = np.asarray(a)
        if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
            return a.astype(np.longdouble if a.dtype == np.float64 else np.float64)
        return a

    return tuple(up(a) for a in args)


def outputs(result) -> tuple[np.ndarray, ...]:
    """A function's result as a tuple of arrays (``cross_entropy`` returns two)."""
    return tuple(result) if isinstance(result, tuple) else (result,)
