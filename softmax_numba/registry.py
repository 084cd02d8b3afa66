"""The catalogue of (op, algorithm) entries that tests, benchmarks and the study share.

Anything registered here is automatically checked against the reference by the
test suite, benchmarked by ``make bench`` and swept by the study.  An entry knows
how to build its arguments from one logits array, how to call the public
function on any backend, how to call the NumPy oracle, and how large its error
may be: per output, the *scale* each entry's error is measured against
(:func:`relative`: the exact value itself, componentwise) and the *bound* on that
error in units of u, a function of the row length, the dtype and the input, from
the first-order analysis of the algorithm (Blanchard, Higham & Higham, "Accurately
computing the log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

import softmax_numba as sn
from softmax_numba import reference

#: The engines every entry runs on (``"cuda"`` joins when the CUDA engine lands).
BACKENDS = ("numpy", "cpu", "parallel")

#: How an output's error is scaled (see :func:`scaled_error`).
KINDS = ("probability", "log", "elementwise", "vjp", "gradient")

# --------------------------------------------------------------------------- bounds


def _rows_of(a) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(int(np.prod(a.shape[:-1], dtype=np.int64)), a.shape[-1] if a.ndim else 1)


def summation_bound(n: int) -> float:
    """Bound, in u, on the relative error of a sum of ``n`` non-negative terms in any
    of the package's summation orders (16-lane vectors unrolled four times, NumPy's
    pairwise blocks of eight accumulators, blocks of 256 merged in order, a CUDA
    block's tree): ``n / 8 + log2(n) + 4``."""
    return n / 8 + np.log2(max(n, 1)) + 4


def underflow_range(dtype) -> float:
    """``|t|`` beyond which ``exp(-|t|)`` underflows in the compute dtype: a term
    that far below the max adds nothing, so its error does not count."""
    return 746.0 if np.dtype(dtype) == np.float64 else 104.0


def spread(x) -> np.ndarray:
    """Per row, ``min(max_j |x_j - max(x)|, T)`` over the finite entries: the largest
    argument of ``exp`` in a shifted sum that matters, whose rounding (``u |x_j - m|``)
    becomes a relative error of its term (:func:`underflow_range`)."""
    rows = _rows_of(np.asarray(x, dtype=np.float64))
    finite = np.isfinite(rows)
    hi = np.max(np.where(finite, rows, -np.inf), axis=-1, initial=-np.inf)
    lo = np.min(np.where(finite, rows, np.inf), axis=-1, initial=np.inf)
    gap = np.where(np.isfinite(hi) & np.isfinite(lo), hi - lo, 0.0)
    return np.minimum(gap, underflow_range(np.asarray(x).dtype))


def _n(x) -> int:
    return np.asarray(x).shape[-1] if np.ndim(x) else 1


def constant(c: float):
    """A bound of ``c`` u for every row."""

    def bound(args, ref=None):
        return np.full(_rows_of(args[0]).shape[0], float(c))

    return bound


def shifted_bound(c: float, spreads: float = 1.0, sums: float = 1.0):
    """``c + sums * sigma(n) + spreads * spread(x)`` u: the bound of the formulas
    built on ``m = max(x)`` and ``s = sum_{j != k} exp(x_j - m)`` (``sigma``:
    :func:`summation_bound`).  ``log_softmax = (x_i - m) - log1p(s)`` and the loss
    ``(m - x_t) + log1p(s)`` add two terms of one sign: rounding ``x_i - m`` (u),
    ``exp`` (2 u), ``log1p`` (2 u) and the last operation (u) give ``c = 6``, and
    ``log1p``'s condition ``s / ((1 + s) log1p(s)) <= 1`` passes on the error of
    ``s``; softmax ``exp(x_i - m) / (1 + s)`` has ``c = 4`` and its own argument's
    rounding (``spreads = 2``)."""

    def bound(args):
        x = args[0]
        return c + sums * summation_bound(_n(x)) + spreads * spread(x)

    return bound


def logsumexp_bound(args, ref=None):
    """``u + (5 + sigma(n) + spread) u max(1, log1p(s) / |lse|)``: ``m + log1p(s)``
    cancels when ``m < 0 < log1p(s)`` (Blanchard, Higham & Higham 2021, Thm 2.2)."""
    x = args[0]
    base = 5 + summation_bound(_n(x)) + spread(x)
    if ref is None:
        return 1 + base
    rows = _rows_of(np.asarray(x, dtype=np.float64))
    m = np.max(np.where(np.isnan(rows), -np.inf, rows), axis=-1, initial=-np.inf)
    lse = np.asarray(ref, dtype=np.float64).reshape(m.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(np.isfinite(m) & (lse != 0), (lse - m) / np.abs(lse), 1.0)
    return 1 + base * np.maximum(np.nan_to_num(factor, nan=1.0), 1.0)


def division_free_bound(args, ref=None):
    """``exp(x_i - lse)``: ``(|lse| + spread + sigma(n) + 4) u`` (Blanchard, Higham &
    Higham 2021, Thm 3.3): the rounding of ``x_i - lse`` is ``u |lse|``."""
    x = args[0]
    rows = _rows_of(np.asarray(x, dtype=np.float64))
    hi = np.max(np.where(np.isfinite(rows), np.abs(rows), 0), axis=-1, initial=0)
    return hi + spread(x) + summation_bound(_n(x)) + 8


def _with_ref(bound):
    """Bounds that do not look at the exact result."""
    return lambda args, ref=None: bound(args)


def allowed_u(bound, args, ref, dtype) -> np.ndarray:
    """The per-row bound in units of the result dtype's u.  float16 and bfloat16
    are computed in float32 and rounded once: ``1 + bound_32 u_32 / u``."""
    dtype = np.dtype(dtype)
    b = np.asarray(bound(args, ref), dtype=np.float64)
    if dtype in (np.float32, np.float64):
        return b
    return 1 + b * 2.0**-24 / unit_roundoff(dtype)


def unit_roundoff(dtype) -> float:
    """``u`` of a floating dtype (bfloat16: 2^-8)."""
    dtype = np.dtype(dtype)
    return 2.0**-8 if dtype.name == "bfloat16" else float(np.finfo(dtype).eps) / 2


# --------------------------------------------------------------------------- scales


def relative(args, ref, index):
    """Each entry's error relative to its exact value (componentwise)."""
    return np.abs(np.asarray(ref[index], dtype=np.longdouble))


def sparse_scale(args, ref, index):
    """``max|x| + 1`` of the row: ``p_i = x_i - tau`` cancels, so its error is
    absolute, of order ``u`` times the size of ``x`` and ``tau``."""
    rows = _rows_of(np.abs(np.asarray(args[0], dtype=np.longdouble)))
    big = np.max(np.where(np.isfinite(rows), rows, 0), axis=-1, keepdims=True, initial=0) + 1
    return np.broadcast_to(big, rows.shape).reshape(np.shape(ref[index]))


def gradient_scale(smoothing: float = 0.0):
    """``sum(q) p_j + q_j``: the two terms the gradient ``sum(q) p - q`` subtracts,
    with ``p = softmax(x)`` in higher precision, ``q`` the (one-hot, or given)
    target smoothed as ``(1 - eps) q + eps / n``."""

    def scale(args, ref, index):
        x, target = (np.asarray(a) for a in args[:2])
        p = reference.softmax(x.astype(np.longdouble))
        if np.issubdtype(target.dtype, np.integer):
            q = (np.arange(x.shape[-1]) == target[..., None]).astype(np.longdouble)
        else:
            q = target.astype(np.longdouble)
        q = (1 - smoothing) * q + smoothing / x.shape[-1]
        return p * q.sum(axis=-1, keepdims=True) + q

    return scale


def softmax_vjp_scale(args, ref, index):
    """``|y_i| (|dy_i| + sum_j |y_j dy_j|)`` for ``dx = y (dy - <y, dy>)``."""
    y, dy = (np.abs(np.asarray(a, dtype=np.longdouble)) for a in args[:2])
    return y * (dy + np.sum(y * dy, axis=-1, keepdims=True))


def log_softmax_vjp_scale(args, ref, index):
    """``|dy_i| + exp(y_i) sum_j |dy_j|`` for ``dx = dy - exp(y) sum(dy)``."""
    y, dy = (np.asarray(a, dtype=np.longdouble) for a in args[:2])
    return np.abs(dy) + np.exp(y) * np.sum(np.abs(dy), axis=-1, keepdims=True)


def support_vjp_scale(args, ref, index):
    """``|dy_i| + mean_support |dy|`` (sparsemax's and entmax's backward ops)."""
    y, dy = (np.asarray(a, dtype=np.longdouble) for a in args[:2])
    support = y > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.sum(np.abs(dy) * support, -1, keepdims=True) / np.sum(support, -1, keepdims=True)
    return np.abs(dy) + np.nan_to_num(mean)


def componentwise_error(got, ref, scale) -> np.ndarray:
    """Per row, ``max_i |got_i - ref_i| / scale_i`` over the entries whose scale is at
    least the smallest normal number of ``got``'s dtype (below it, results are
    subnormal and not scored); divide by u for units of u.

    Where the reference is not finite in ``got``'s dtype (an exact value beyond the
    largest float rounds to an infinity), or finite but below that floor, the
    result must still match its kind: the same NaN or infinity, or a finite number.
    A row that does not is ``inf``.
    """
    dtype = np.asarray(got).dtype
    tiny = 2.0**-126 if dtype.name == "bfloat16" else float(np.finfo(dtype).tiny)
    big = 3.3895313892515355e38 if dtype.name == "bfloat16" else float(np.finfo(dtype).max)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.longdouble), np.shape(ref))
    got = _rows_of(np.asarray(got, dtype=np.longdouble))
    ref = _rows_of(np.asarray(ref, dtype=np.longdouble))
    # Round to the dtype's range (not precision): overflow is the correct result there.
    with np.errstate(invalid="ignore"):
        ref = np.where(np.abs(ref) > big, np.sign(ref) * np.inf, ref)
    scale = _rows_of(scale)
    if got.shape != ref.shape:
        raise ValueError(f"result shape {got.shape} != reference shape {ref.shape}")
    finite = np.isfinite(ref)
    matches = np.where(finite, np.isfinite(got), (got == ref) | (np.isnan(got) & np.isnan(ref)))
    scored = finite & np.isfinite(scale) & (scale >= tiny)
    with np.errstate(invalid="ignore"):
        ratio = np.where(
            scored, np.abs(got - np.where(finite, ref, 0)) / np.where(scored, scale, 1), 0
        )
    err = np.max(ratio, axis=-1, initial=0)
    return np.where(np.all(matches, axis=-1), err, np.inf).astype(np.float64)


def _just_x(x, rng):
    return (x,)


def _with_targets(x, rng):
    return (x, rng.integers(0, x.shape[-1], size=x.shape[:-1]))


def _with_distributions(x, rng):
    """Probability targets: a Dirichlet(1) row per row, rounded to ``x``'s dtype."""
    q = rng.dirichlet(np.ones(x.shape[-1]), size=x.shape[:-1])
    return (x, q.astype(x.dtype))


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
    bounds: tuple[Callable, ...] = ()
    scales: tuple[Callable, ...] = ()
    study: frozenset[str] = frozenset()

    def scale(self, index: int) -> Callable:
        return self.scales[index] if index < len(self.scales) else relative

    def errors(self, args, got, ref) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per output, ``(componentwise error in u, its bound in u)``, per row;
        ``got`` and ``ref`` as :func:`outputs` gives them."""
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


def _sum_bound(c: float):
    """``c + sigma(n)`` u: a formula with one sum of ``n`` terms (vjps, normalized maps)."""
    return _with_ref(shifted_bound(c, spreads=0.0))


def _softplus_bound(args, ref=None):
    """``(7 + min(|beta x|, T)) u`` per row (``beta = 1`` in the registry): rounding
    ``z = beta x`` is a relative error ``u |z|`` of ``exp(-|z|)``."""
    x = _rows_of(np.asarray(args[0], dtype=np.float64))
    big = np.max(np.where(np.isfinite(x), np.abs(x), 0), axis=-1, initial=0)
    return 7 + np.minimum(big, underflow_range(np.asarray(args[0]).dtype))


def _gaussian_bound(args, ref=None):
    """``exp(-a)``, ``a = x^2 / 2``: ``(3 + 2a) u``, ``a`` up to the underflow range."""
    x = _rows_of(np.asarray(args[0], dtype=np.float64))
    a = np.max(np.where(np.isfinite(x), x * x / 2, 0), axis=-1, initial=0)
    return 3 + 2 * np.minimum(a, underflow_range(np.asarray(args[0]).dtype))


def _gaussian_normalized_bound(args, ref=None):
    """``softmax(a)``, ``a = -x^2 / 2``: the softmax bound applied to ``a``, plus the
    rounding of ``a`` itself (``2 u |a|`` absolute, in every exponent: ``4 max|a|``).
    The map is that ill-conditioned: far from ``mu`` the exponent's error ``b u``
    exceeds 1, and the relative error of ``exp`` is ``expm1(b u)``, not ``b u``."""
    x = np.asarray(args[0])
    with np.errstate(over="ignore"):
        a = -(x.astype(np.float64) ** 2) / 2
    biggest = np.max(np.where(np.isfinite(a), -a, 0), axis=-1, initial=0).reshape(-1)
    first_order = shifted_bound(6.0, spreads=2.0)((a.astype(x.dtype),)) + 4 * biggest
    u = unit_roundoff(x.dtype)
    with np.errstate(over="ignore"):
        return np.expm1(first_order * u) / u


def _exp_like_normalized_bound(direct, exact_map):
    """A normalized sigmoid or softplus (``beta = 1``): ``direct`` on most rows; a
    row with ``sum(y)`` below the map's value at 0 (1/2, log 2) and an entry below
    the smallest normal number, which every engine rescales by its max
    (``softmax_numba.cpu.elementwise.underflowed``), gets the larger of ``direct``
    and the softmax bound plus the ratio's rounding (``(8 + sigma(n) + 2 spread)
    u``).  ``exact_map`` evaluates the map in extended precision, to find those rows
    (with a margin: the engines decide on rounded values)."""
    rescaled = shifted_bound(8.0, spreads=2.0)

    def bound(args, ref=None):
        x = np.asarray(args[0])
        with np.errstate(all="ignore"):
            y = exact_map(_rows_of(x).astype(np.longdouble))
        # the engines compute float16 and bfloat16 in float32
        tiny = np.finfo(np.float64 if x.dtype == np.float64 else np.float32).tiny
        finite = np.where(np.isnan(y), np.inf, y)
        lost = np.min(finite, axis=-1, initial=np.inf) < 2 * tiny
        either = (np.sum(finite, axis=-1) < 0.7) & lost
        ordinary = direct(args)
        return np.where(either, np.maximum(ordinary, rescaled(args)), ordinary)

    return bound


def _exact_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _exact_softplus(x):
    return np.logaddexp(0, x)


#: Per elementwise map: (bound without normalization, bound with it).
_ELEMENTWISE_BOUNDS = {
    "sigmoid": (constant(4), _exp_like_normalized_bound(_sum_bound(9), _exact_sigmoid)),
    "softplus": (
        _softplus_bound,
        _exp_like_normalized_bound(
            lambda a, r=None: _softplus_bound(a) + _sum_bound(2)(a), _exact_softplus
        ),
    ),
    "arctan": (constant(10), _sum_bound(12)),
    "gaussian": (_gaussian_bound, _gaussian_normalized_bound),
}

_SHIFTED = _with_ref(shifted_bound(6.0))
#: Smoothed or probability targets: ``sum_j q_j ((m - x_j) + log1p(s))``, a second
#: sum of ``n`` non-negative terms and the rounding of ``q_j``; the gradient as the
#: one-hot one's, plus ``q``'s rounding.
_LOSS_BOUNDS = (_with_ref(shifted_bound(9.0, sums=2.0)), _with_ref(shifted_bound(8.0, spreads=2.0)))
_SOFTMAX = _with_ref(shifted_bound(4.0, spreads=2.0))
_SPARSE = _with_ref(shifted_bound(16.0, spreads=0.0, sums=2.0))


def _entries() -> list[Entry]:
    # Every softmax algorithm is judged against the exact value, computed by the
    # shifted formula in higher precision (the naive one would overflow there too).
    softmax_bounds = {
        "naive": _SOFTMAX,
        "shifted": _SOFTMAX,
        "online": _SOFTMAX,
        "division_free": division_free_bound,
    }
    entries = [
        Entry(
            "softmax",
            alg,
            sn.softmax,
            reference.softmax,
            ("probability",),
            {"algorithm": alg},
            {"algorithm": "shifted"},
            bounds=(softmax_bounds[alg],),
        )
        for alg in ("naive", "shifted", "division_free", "online")
    ]
    entries += [
        Entry(
            "log_softmax", "-", sn.log_softmax, reference.log_softmax, ("log",), bounds=(_SHIFTED,)
        ),
        Entry(
            "logsumexp",
            "-",
            sn.logsumexp,
            reference.logsumexp,
            ("log",),
            bytes_factor=1.0,
            bounds=(logsumexp_bound,),
        ),
        Entry(
            "cross_entropy",
            "-",
            sn.cross_entropy,
            reference.cross_entropy,
            ("log", "gradient"),
            {"reduction": "none", "return_grad": True},
            {"reduction": "none", "return_grad": True},
            _with_targets,
            bounds=(_SHIFTED, _with_ref(shifted_bound(6.0, spreads=2.0))),
            scales=(relative, gradient_scale()),
        ),
        Entry(
            "cross_entropy",
            "smoothed",
            sn.cross_entropy,
            reference.cross_entropy,
            ("log", "gradient"),
            {"reduction": "none", "return_grad": True, "label_smoothing": 0.1},
            {"reduction": "none", "return_grad": True, "label_smoothing": 0.1},
            _with_targets,
            bounds=_LOSS_BOUNDS,
            scales=(relative, gradient_scale(0.1)),
        ),
        Entry(
            "cross_entropy",
            "probability",
            sn.cross_entropy,
            reference.cross_entropy,
            ("log", "gradient"),
            {"reduction": "none", "return_grad": True},
            {"reduction": "none", "return_grad": True},
            _with_distributions,
            bounds=_LOSS_BOUNDS,
            scales=(relative, gradient_scale()),
        ),
        Entry(
            "softmax_backward",
            "-",
            sn.softmax_backward,
            reference.softmax_backward,
            ("vjp",),
            arguments=_backward_of(sn.softmax),
            bytes_factor=3.0,
            bounds=(_sum_bound(3),),
            scales=(softmax_vjp_scale,),
        ),
        Entry(
            "log_softmax_backward",
            "-",
            sn.log_softmax_backward,
            reference.log_softmax_backward,
            ("vjp",),
            arguments=_backward_of(sn.log_softmax),
            bytes_factor=3.0,
            bounds=(_sum_bound(4),),
            scales=(log_softmax_vjp_scale,),
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
                    bounds=(_ELEMENTWISE_BOUNDS[name][normalize],),
                )
            )
    sparse = {"bounds": (_SPARSE,), "scales": (sparse_scale,)}
    entries += [
        Entry(
            "sparsemax",
            alg,
            sn.sparsemax,
            reference.sparsemax,
            ("probability",),
            {"algorithm": alg},
            **sparse,
        )
        for alg in ("pivot", "sort")
    ]
    entries += [
        Entry("entmax15", "-", sn.entmax15, reference.entmax15, ("probability",), **sparse),
        Entry(
            "entmax_bisect",
            "alpha=1.5",
            sn.entmax_bisect,
            reference.entmax15,
            ("probability",),
            {"alpha": 1.5},
            **sparse,
        ),
        Entry(
            "sparsemax_backward",
            "-",
            sn.sparsemax_backward,
            reference.sparsemax_backward,
            ("vjp",),
            arguments=_backward_of(sn.sparsemax),
            bytes_factor=3.0,
            bounds=(_sum_bound(4),),
            scales=(support_vjp_scale,),
        ),
        Entry(
            "entmax15_backward",
            "-",
            sn.entmax15_backward,
            reference.entmax15_backward,
            ("vjp",),
            arguments=_backward_of(sn.entmax15),
            bytes_factor=3.0,
            bounds=(_sum_bound(6),),
            scales=(_entmax_vjp_scale,),
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
            bounds=(constant(0),),
        ),
    ]
    return entries


def _entmax_vjp_scale(args, ref, index):
    """``g |dy| + g sum(g |dy|) / sum(g)``, ``g = sqrt(y)``: the terms of
    ``dx = g dy - g sum(g dy) / sum(g)``."""
    y, dy = (np.asarray(a, dtype=np.longdouble) for a in args[:2])
    g = np.sqrt(np.maximum(y, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.sum(g * np.abs(dy), -1, keepdims=True) / np.sum(g, -1, keepdims=True)
    return g * np.abs(dy) + g * np.nan_to_num(q)


#: The study's tags: ``family``, the softmax family of the accuracy and speed
#: sweeps; ``alternative``, the maps the article offers instead of softmax;
#: ``offsets``, the log-domain ops of the offset sweep; ``core``, the four headline
#: ops of the roofline and of the peer comparisons.
STUDY_TAGS = ("family", "alternative", "offsets", "core")

_CORE = frozenset({"family", "offsets", "core"})
_STUDY = {
    "softmax[naive]": frozenset({"family"}),
    "softmax[shifted]": _CORE,
    "softmax[division_free]": frozenset({"family"}),
    "softmax[online]": frozenset({"family"}),
    "log_softmax": _CORE,
    "logsumexp": _CORE,
    "cross_entropy": _CORE,
    "cross_entropy[smoothed]": frozenset({"offsets"}),
    "cross_entropy[probability]": frozenset({"offsets"}),
    **dict.fromkeys(
        (
            *(
                f"{m}{k}"
                for m in ("sigmoid", "softplus", "arctan", "gaussian")
                for k in ("", "[normalized]")
            ),
            "sparsemax[pivot]",
            "sparsemax[sort]",
            "entmax15",
            "entmax_bisect[alpha=1.5]",
            "maxout[pool=4]",
        ),
        frozenset({"alternative"}),
    ),
}


def _tagged_entries() -> tuple[Entry, ...]:
    """The entries with their study tags; a name or tag in :data:`_STUDY` that does
    not exist is an error, not a silently empty grid."""
    entries = _entries()
    unknown = set(_STUDY) - {e.name for e in entries}
    bad_tags = set().union(*_STUDY.values()) - set(STUDY_TAGS)
    if unknown or bad_tags:
        raise RuntimeError(f"study tags name unknown entries {unknown} or tags {bad_tags}")
    return tuple(replace(e, study=_STUDY.get(e.name, frozenset())) for e in entries)


ENTRIES: tuple[Entry, ...] = _tagged_entries()


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
