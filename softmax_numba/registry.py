"""The catalogue of (op, algorithm) entries that tests, benchmarks and the study share.

Anything registered here is automatically checked against the reference by the
test suite, benchmarked by ``make bench`` and swept by the study.  An entry knows
how to build its arguments from one logits array, how to call the public
function on any backend, and how to call the NumPy oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import softmax_numba as sn
from softmax_numba import reference

#: The engines every entry runs on (``"cuda"`` joins when the CUDA engine lands).
BACKENDS = ("numpy", "cpu", "parallel")

#: How an output's error is scaled (see :func:`scaled_error`).
KINDS = ("probability", "log", "elementwise", "vjp", "gradient")


def _just_x(x, rng):
    return (x,)


def _with_targets(x, rng):
    return (x, rng.integers(0, x.shape[-1], size=x.shape[:-1]))


def _backward_of(forward):
    def arguments(x, rng):
        y = forward(x, backend="numpy")
        return (y, rng.standard_normal(x.shape).astype(x.dtype))

    return arguments


@dataclass(frozen=True)
class Entry:
    """One registered computation.

    Attributes
    ----------
    op, algorithm : str
        The public function's name and the algorithm it runs (``"-"`` if none).
    function, oracle : callable
        The public function and its NumPy reference; both take the arguments that
        ``arguments(x, rng)`` builds, the oracle in higher precision.
    kinds : tuple of str
        One of :data:`KINDS` per returned array: how its error is scaled.
    kwargs, oracle_kwargs : dict
        Extra keyword arguments of each.
    arguments : callable
        ``(x, rng) -> tuple`` of positional arguments from a logits array ``x``.
    divisor : int
        Row lengths must be multiples of it (maxout needs ``pool_size`` to divide).
    bytes_factor : float
        Arrays of ``x``'s size read plus written, for GB/s.
    """

    op: str
    algorithm: str
    function: Callable
    oracle: Callable
    kinds: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)
    oracle_kwargs: dict = field(default_factory=dict)
    arguments: Callable = _just_x
    divisor: int = 1
    bytes_factor: float = 2.0

    @property
    def name(self) -> str:
        return self.op if self.algorithm == "-" else f"{self.op}[{self.algorithm}]"

    def accepts(self, n: int) -> bool:
        """Whether rows of length ``n`` are valid input."""
        return n % self.divisor == 0

    def run(self, args, *, backend: str = "auto", axis: int = -1):
        return self.function(*args, axis=axis, backend=backend, **self.kwargs)

    def reference(self, args, *, axis: int = -1):
        return self.oracle(*args, axis=axis, **self.oracle_kwargs)


def _entries() -> list[Entry]:
    # Every softmax algorithm is judged against the exact value, computed by the
    # shifted formula in higher precision (the naive one would overflow there too).
    entries = [
        Entry(
            "softmax",
            alg,
            sn.softmax,
            reference.softmax,
            ("probability",),
            {"algorithm": alg},
            {"algorithm": "shifted"},
        )
        for alg in ("naive", "shifted", "division_free", "online")
    ]
    entries += [
        Entry("log_softmax", "-", sn.log_softmax, reference.log_softmax, ("log",)),
        Entry("logsumexp", "-", sn.logsumexp, reference.logsumexp, ("log",), bytes_factor=1.0),
        Entry(
            "cross_entropy",
            "-",
            sn.cross_entropy,
            reference.cross_entropy,
            ("log", "gradient"),
            {"reduction": "none", "return_grad": True},
            {"reduction": "none", "return_grad": True},
            _with_targets,
        ),
        Entry(
            "softmax_backward",
            "-",
            sn.softmax_backward,
            reference.softmax_backward,
            ("vjp",),
            arguments=_backward_of(sn.softmax),
            bytes_factor=3.0,
        ),
        Entry(
            "log_softmax_backward",
            "-",
            sn.log_softmax_backward,
            reference.log_softmax_backward,
            ("vjp",),
            arguments=_backward_of(sn.log_softmax),
            bytes_factor=3.0,
        ),
    ]
    for name in ("sigmoid", "softplus", "arctan", "gaussian"):
        for normalize in (False, True):
            entries.append(
                Entry(
                    name,
                    "normalized" if normalize else "-",
                    getattr(sn, name),
                    getattr(reference, name),
                    ("elementwise",),
                    {"normalize": normalize},
                    {"normalize": normalize},
                )
            )
    entries += [
        Entry(
            "sparsemax",
            alg,
            sn.sparsemax,
            reference.sparsemax,
            ("probability",),
            {"algorithm": alg},
        )
        for alg in ("pivot", "sort")
    ]
    entries += [
        Entry("entmax15", "-", sn.entmax15, reference.entmax15, ("probability",)),
        Entry(
            "entmax_bisect",
            "alpha=1.5",
            sn.entmax_bisect,
            reference.entmax15,
            ("probability",),
            {"alpha": 1.5},
        ),
        Entry(
            "sparsemax_backward",
            "-",
            sn.sparsemax_backward,
            reference.sparsemax_backward,
            ("vjp",),
            arguments=_backward_of(sn.sparsemax),
            bytes_factor=3.0,
        ),
        Entry(
            "entmax15_backward",
            "-",
            sn.entmax15_backward,
            reference.entmax15_backward,
            ("vjp",),
            arguments=_backward_of(sn.entmax15),
            bytes_factor=3.0,
        ),
        Entry(
            "maxout",
            "pool=4",
            sn.maxout,
            reference.maxout,
            ("elementwise",),
            {"pool_size": 4},
            {"pool_size": 4},
            divisor=4,
            bytes_factor=1.25,
        ),
    ]
    return entries


ENTRIES: tuple[Entry, ...] = tuple(_entries())


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


def scaled_error(kind: str, got, ref, args) -> np.ndarray:
    """Per-row error ``max_i |got_i - ref_i| / scale`` of a result computed along the
    last axis of ``args[0]``; divide by the unit roundoff to get units of u.

    ``scale`` is the row's largest finite ``|ref_i|``, raised to

    - ``"log"``: the row's largest finite ``|x_i|`` (``x = args[0]``), since a
      log-space result carries an absolute error of order ``u max|x|``;
    - ``"gradient"``: 1, the size of the terms of ``softmax - target``;
    - ``"vjp"``: the row's ``sum |dy_i|`` (``dy = args[1]``), the size of the terms
      that a vector-Jacobian product cancels;

    and never below the smallest normal number of ``got``'s dtype (results that
    underflow may lose their subnormal digits).  Where the reference is not finite
    the result must match it exactly (NaN for NaN, the same infinity), else the
    row's error is inf.
    """
    x = np.asarray(args[0])
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    dtype = np.asarray(got).dtype
    # bfloat16 (ml_dtypes) has float32's exponent range, and no np.finfo.
    tiny = 2.0**-126 if dtype.name == "bfloat16" else float(np.finfo(dtype).tiny)
    got = np.asarray(got, dtype=np.longdouble)
    ref = np.asarray(ref, dtype=np.longdouble)
    if got.shape != ref.shape:
        raise ValueError(f"result shape {got.shape} != reference shape {ref.shape}")
    if got.size == 0:
        return np.zeros(rows)
    got, ref = got.reshape(rows, -1), ref.reshape(rows, -1)
    finite = np.isfinite(ref)
    matches = np.where(finite, True, (got == ref) | (np.isnan(got) & np.isnan(ref)))
    diff = np.abs(np.where(finite, got - np.where(finite, ref, 0), 0))
    scale = np.max(np.where(finite, np.abs(ref), 0), axis=-1)
    if kind in ("log", "vjp"):
        a = np.abs(np.asarray(args[0] if kind == "log" else args[1], dtype=np.longdouble))
        a = np.where(np.isfinite(a), a, 0).reshape(rows, -1)
        scale = np.maximum(scale, np.max(a, -1, initial=0) if kind == "log" else np.sum(a, -1))
    if kind == "gradient":
        scale = np.maximum(scale, 1)
    with np.errstate(invalid="ignore"):
        err = np.max(diff, axis=-1) / np.maximum(scale, tiny)
    return np.where(np.all(matches, axis=-1), err, np.inf).astype(np.float64)
