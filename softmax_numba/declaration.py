"""The declaration of an op for the tests, the benchmarks and the study.

Each public module (``softmax_numba._softmax``, ``_losses``, ``_elementwise``,
``_sparse``, ``_maxout``) declares its computations beside its functions, as a
tuple ``ENTRIES`` of :class:`Entry`: the public function and its reference, how to
build its arguments from one logits array, per output the scale its error is
measured against and the bound on that error (:mod:`softmax_numba.bounds`), and
the study's tags.  :mod:`softmax_numba.registry` collects them; every test that
loops over the registry, ``make bench`` and the study's grids then take a new
entry with no other change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from softmax_numba.bounds import relative
from softmax_numba.error_metrics import allowed_u, componentwise_error, unit_roundoff

#: How an output's error is scaled (see :func:`softmax_numba.error_metrics.scaled_error`).
KINDS = ("probability", "log", "elementwise", "vjp", "gradient")

#: The study's tags: ``family``, the softmax family of the accuracy and speed
#: sweeps; ``alternative``, the maps the article offers instead of softmax;
#: ``offsets``, the log-domain ops of the offset sweep; ``core``, the four headline
#: ops of the roofline and of the peer comparisons.
STUDY_TAGS = ("family", "alternative", "offsets", "core")
#: The tags of the headline ops.
CORE = frozenset({"family", "offsets", "core"})

# --------------------------------------------------------------------------- arguments


def just_x(x, rng):
    return (x,)


def with_targets(x, rng):
    return (x, rng.integers(0, x.shape[-1], size=x.shape[:-1]))


def with_distributions(x, rng):
    """Probability targets: a Dirichlet(1) row per row, rounded to ``x``'s dtype."""
    q = rng.dirichlet(np.ones(x.shape[-1]), size=x.shape[:-1])
    return (x, q.astype(x.dtype))


def backward_of(forward):
    def arguments(x, rng):
        y = forward(x, backend="numpy")
        return (y, rng.standard_normal(x.shape).astype(x.dtype))

    return arguments


# --------------------------------------------------------------------------- entries


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
    bounds : tuple of callable
        Per output, ``bound(args, ref) -> per-row bound`` in units of u on the
        :func:`componentwise_error` against ``scales`` (``ref``: that output's exact
        value, for bounds that depend on it; they must accept ``None``).
    scales : tuple of callable
        Per output, ``scale(args, ref_outputs, index)``: what each entry's error is
        measured against (default :func:`relative`).
    study : frozenset of str
        The study's tags (:data:`STUDY_TAGS`): which grids, tables and peer
        comparisons take the entry.

    A tag, kind or output count that does not fit is a ``ValueError`` when the
    entry is declared, not a silently empty grid.
    """

    op: str
    algorithm: str
    function: Callable
    oracle: Callable
    kinds: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)
    oracle_kwargs: dict = field(default_factory=dict)
    arguments: Callable = just_x
    divisor: int = 1
    bytes_factor: float = 2.0
    bounds: tuple[Callable, ...] = ()
    scales: tuple[Callable, ...] = ()
    study: frozenset[str] = frozenset()

    def __post_init__(self):
        bad_tags = set(self.study) - set(STUDY_TAGS)
        bad_kinds = set(self.kinds) - set(KINDS)
        if bad_tags or bad_kinds:
            raise ValueError(f"{self.name}: unknown study tags {bad_tags} or kinds {bad_kinds}")
        if len(self.bounds) != len(self.kinds) or len(self.scales) > len(self.kinds):
            raise ValueError(f"{self.name}: a bound per output and at most a scale per output")
        object.__setattr__(self, "study", frozenset(self.study))

    def scale(self, index: int) -> Callable:
        return self.scales[index] if index < len(self.scales) else relative

    def errors(self, args, got, ref) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per output, ``(componentwise error in u, its bound in u)``, per row;
        ``got`` and ``ref`` as :func:`softmax_numba.registry.outputs` gives them."""
        pairs = []
        for index, (g, r) in enumerate(zip(got, ref, strict=True)):
            u = unit_roundoff(np.asarray(g).dtype)
            scale = self.scale(index)(args, ref, index)
            if np.ndim(g) < np.ndim(args[0]):  # one value per row (a loss, logsumexp)
                g, r, scale = (np.asarray(a)[..., None] for a in (g, r, scale))
            err = componentwise_error(g, r, scale) / u
            pairs.append((err, allowed_u(self.bounds[index], args, r, np.asarray(g).dtype)))
        return pairs

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
