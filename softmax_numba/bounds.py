"""Error bounds, in units of u, and the scales each output's error is measured against.

A bound is ``bound(args, ref=None) -> per-row bound in u`` on the componentwise
error (:func:`softmax_numba.error_metrics.componentwise_error`) of one output,
from the first-order analysis of its algorithm (Blanchard, Higham & Higham,
"Accurately computing the log-sum-exp and softmax functions", IMA J. Numer. Anal.
41(4), 2021; Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
SIAM, 2002).  A scale is ``scale(args, ref_outputs, index)``: what each entry's
error is relative to (:func:`relative`, the exact value itself, unless the output
cancels).  The op declarations (``ENTRIES`` of each public module) pick theirs here.
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np

from softmax_numba import config, reference
from softmax_numba.error_metrics import as_rows, unit_roundoff


def plain_summation_bound(n: int) -> float:
    """Bound, in u, on the relative error of one sum of ``n`` non-negative terms in
    any of the package's orders without blocks (vector lanes unrolled, at least 8
    accumulators; NumPy's pairwise blocks of eight accumulators; a CUDA block's
    threads and tree): ``n / 8 + log2(n) + 4``."""
    return n / 8 + np.log2(max(n, 1)) + 4


def summation_bound(n: int) -> float:
    """Bound, in u, on the relative error of a sum of ``n`` non-negative terms along a
    row, in every order of the numpy, cpu and parallel engines: ``sigma(n)``.

    - The CPU kernels sum a block of ``B = config.SUM_BLOCK`` terms in the vectorized
      loop (:func:`plain_summation_bound` of ``min(n, B)``) and add the blocks' sums
      with a compensated (two-sum) addition, within ``2 u`` of their exact sum
      (``softmax_numba.cpu.softmax.add_compensated``): beyond ``B`` the bound no
      longer grows with ``n``.
    - The online state (``softmax[online]``, the pieces of a row split over threads)
      folds blocks of ``config.ONLINE_BLOCK``: each block's term ``(1 + s_b)
      e^{m_b - r}`` rounds its sum (``u``), ``exp`` (``2 u``) and the product (``u``);
      the compensated sum adds ``2 u``; a term is rescaled by ``exp`` and a product
      at most twice while it matters and once at the end (``3 x 3 u``): 15 u above
      the block's own sum.
    - NumPy's pairwise sum: ``16 + 3 + ceil(log2(n / 128))`` u, below either.

    The CUDA engine sums a row in its threads' order: its bound is
    :func:`plain_summation_bound` of the whole row (:func:`summation_order`).
    """
    if _ORDER.get() == "cuda":
        return plain_summation_bound(n)
    block = config.SUM_BLOCK
    bound = plain_summation_bound(min(n, block)) + (2 if n > block else 0)
    if n > config.ONLINE_BLOCK:
        bound = max(bound, plain_summation_bound(config.ONLINE_BLOCK) + 15)
    return bound


#: The engine whose summation order :func:`summation_bound` describes.
_ORDER: contextvars.ContextVar[str] = contextvars.ContextVar("summation_order", default="cpu")


@contextlib.contextmanager
def summation_order(engine: str | None):
    """Within the block, :func:`summation_bound` (and so every bound built on it)
    describes ``engine``'s order of summation: ``"cuda"`` sums a row in its threads'
    order, with no blocks; any other engine (or ``None``) as the CPU engines."""
    token = _ORDER.set(engine or "cpu")
    try:
        yield
    finally:
        _ORDER.reset(token)


def underflow_range(dtype) -> float:
    """``|t|`` beyond which ``exp(-|t|)`` underflows in the compute dtype: a term
    that far below the max adds nothing, so its error does not count."""
    return 746.0 if np.dtype(dtype) == np.float64 else 104.0


def spread(x) -> np.ndarray:
    """Per row, ``min(max_j |x_j - max(x)|, T)`` over the finite entries: the largest
    argument of ``exp`` in a shifted sum that matters, whose rounding (``u |x_j - m|``)
    becomes a relative error of its term (:func:`underflow_range`)."""
    rows = as_rows(np.asarray(x, dtype=np.float64))
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
        return np.full(as_rows(args[0]).shape[0], float(c))

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
    rows = as_rows(np.asarray(x, dtype=np.float64))
    m = np.max(np.where(np.isnan(rows), -np.inf, rows), axis=-1, initial=-np.inf)
    lse = np.asarray(ref, dtype=np.float64).reshape(m.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(np.isfinite(m) & (lse != 0), (lse - m) / np.abs(lse), 1.0)
    return 1 + base * np.maximum(np.nan_to_num(factor, nan=1.0), 1.0)


#: The bound in u of ``logcumsumexp``'s serial scan, relative to ``max(|y_k|,
#: log1p(s_k))`` (:func:`cumulative_scale`).  ``s_k`` is a compensated running sum
#: (2 u with its last rounding) of terms ``exp(x_i - r)`` relative to a reference
#: ``r``, each ``exp`` of a difference with the difference's rounding corrected
#: (two-sum: ``exp(d) (1 + e)``, 3 u), each term rescaled at most twice while it is
#: above ``e^-50`` of ``s_k`` (4 u each: the corrected ``exp`` and a product), divided
#: by ``E = exp(m_k - r)`` (3 u, its reciprocal u, the product u): 21 u with
#: ``log1p`` (2 u; its condition ``s / ((1 + s) log1p(s)) <= 1``) and the last sum
#: (u).  No term depends on the offset of ``x``, on its spread, or on ``k``.
CUMULATIVE_SCAN = 21.0
#: What a carried state adds (a split row's pieces, Dask's chunks): the piece's sum
#: folded into the carry (``1 + s``, the corrected ``exp``, a product: 5 u), the
#: carry settled (``E`` 3 u, its reciprocal, the product and a sum: 6 u), and two
#: more rescalings (8 u): the piece's scan and the scan after the carry each rescale
#: a term at most twice while it matters, and their references differ.
CUMULATIVE_CARRY = 19.0
#: What each merge of the CUDA engine's tree adds: ``s_1 + (1 + s_2) exp(m_2 - m_1)``,
#: the sum, the corrected ``exp``, the product and the sum (6 u).
CUMULATIVE_MERGE = 6.0


def logcumsumexp_entry_bound(x) -> np.ndarray:
    """Per entry of the rows of ``x``, the bound in u of ``logcumsumexp`` relative to
    ``max(|y_k|, log1p(s_k))`` (:func:`cumulative_scale`): ``CUMULATIVE_SCAN +
    CUMULATIVE_CARRY`` (40 u) on every engine but CUDA, whose block scan of states adds
    ``CUMULATIVE_MERGE`` per level of its tree (``log2(config.CUDA_THREADS_PER_BLOCK)``)
    and for the merge with the carry of the blocks of entries before."""
    bound = CUMULATIVE_SCAN + CUMULATIVE_CARRY
    if _ORDER.get() == "cuda":
        levels = np.ceil(np.log2(max(config.CUDA_THREADS_PER_BLOCK, 2)))
        bound += CUMULATIVE_MERGE * (levels + 1)
    return np.full(as_rows(x).shape, bound)


def logcumsumexp_bound(args, ref=None):
    """Per row, the largest :func:`logcumsumexp_entry_bound` of its entries."""
    return np.max(logcumsumexp_entry_bound(args[0]), axis=-1, initial=0.0)


def cumulative_scale(args, ref, index):
    """``max(|y_k|, log1p(s_k))``, ``log1p(s_k) = y_k - m_k`` with ``m_k`` the prefix
    maximum: the error of ``m_k + log1p(s_k)`` relative to ``y_k``, or to the term
    ``log1p(s_k)`` where ``m_k < 0`` cancels it; the same as relative to ``y_k`` with
    the factor ``max(1, log1p(s_k) / |y_k|)`` of :func:`logsumexp_bound`."""
    y = np.asarray(ref[index], dtype=np.longdouble)
    x = as_rows(np.asarray(args[0], dtype=np.longdouble)).reshape(y.shape)
    with np.errstate(invalid="ignore"):
        m = np.fmax.accumulate(x, axis=-1)
        term = np.where(np.isfinite(m) & np.isfinite(y), y - m, 0)
    return np.maximum(np.abs(y), term)


def division_free_bound(args, ref=None):
    """``exp(x_i - lse)``: ``(|lse| + spread + sigma(n) + 4) u`` (Blanchard, Higham &
    Higham 2021, Thm 3.3): the rounding of ``x_i - lse`` is ``u |lse|``."""
    x = args[0]
    rows = as_rows(np.asarray(x, dtype=np.float64))
    hi = np.max(np.where(np.isfinite(rows), np.abs(rows), 0), axis=-1, initial=0)
    return hi + spread(x) + summation_bound(_n(x)) + 8


#: Per kind of output, what rounding ``y_i = x_i / T`` adds to a bound, in u, as
#: ``(per max_j |y_j|, per spread(y), constant)``: each quotient's own rounding is
#: ``u |y_i|``; the rounding of ``T`` itself scales every ``y_j`` alike, so it only
#: moves the differences ``y_i - y_j`` by ``u |y_i - y_j|``.  Softmax:
#: ``|d log p_i| <= u (|y_i| + max_j |y_j|) + 2 u spread``.  A log-probability (and a
#: loss): the error of ``(y_i - M) - log1p(S)`` over ``|log p_i| >= max(M - y_i,
#: log1p(S)) >= 0.56`` for ``i`` not the max, ``2 u max|y| (1 / 0.56 + 1)``.
TEMPERATURE_TERMS = {"probability": (2.0, 2.0, 1.0), "log": (6.0, 1.0, 1.0)}


def options_bound(base, extra: float, kind: str, *, temperature=None, sink=None):
    """Softmax, log-softmax or the loss with ``temperature`` and ``sink`` (as the
    registry passes them): ``base`` on the row ``[x / T, c]``, plus ``extra`` u for
    adding the sink, plus, with a temperature, :data:`TEMPERATURE_TERMS` of
    ``kind``."""

    def bound(args, ref=None):
        x = np.asarray(args[0])
        y = as_rows(x.astype(np.float64) / (temperature or 1.0))
        big = np.max(np.where(np.isfinite(y), np.abs(y), 0), axis=-1, initial=0)
        rounding = 0.0
        if temperature is not None:
            per_big, per_spread, constant = TEMPERATURE_TERMS[kind]
            rounding = per_big * big + per_spread * spread(y) + constant
        if sink is not None:
            y = np.concatenate([y, np.full((y.shape[0], 1), float(sink))], axis=1)
        compute = np.float64 if x.dtype == np.float64 else np.float32
        return base((y.astype(compute),)) + extra + rounding

    return bound


def with_ref(bound):
    """Bounds that do not look at the exact result."""
    return lambda args, ref=None: bound(args)


# --------------------------------------------------------------------------- scales


def relative(args, ref, index):
    """Each entry's error relative to its exact value (componentwise)."""
    return np.abs(np.asarray(ref[index], dtype=np.longdouble))


def sparse_scale(args, ref, index):
    """``max|x| + 1`` of the row: ``p_i = x_i - tau`` cancels, so its error is
    absolute, of order ``u`` times the size of ``x`` and ``tau``."""
    rows = as_rows(np.abs(np.asarray(args[0], dtype=np.longdouble)))
    big = np.max(np.where(np.isfinite(rows), rows, 0), axis=-1, keepdims=True, initial=0) + 1
    return np.broadcast_to(big, rows.shape).reshape(np.shape(ref[index]))


def gradient_scale(smoothing: float = 0.0, temperature: float | None = None):
    """``sum(q) p_j + q_j``: the two terms the gradient ``sum(q) p - q`` subtracts,
    with ``p = softmax(x)`` in higher precision, ``q`` the (one-hot, or given)
    target smoothed as ``(1 - eps) q + eps / n``; with a temperature ``T``, ``p =
    softmax(x / T)`` and the terms divided by ``T``."""

    def scale(args, ref, index):
        x, target = (np.asarray(a) for a in args[:2])
        t = np.longdouble(1.0 if temperature is None else temperature)
        p = reference.softmax(x.astype(np.longdouble) / t)
        if np.issubdtype(target.dtype, np.integer):
            q = (np.arange(x.shape[-1]) == target[..., None]).astype(np.longdouble)
        else:
            q = target.astype(np.longdouble)
        q = (1 - smoothing) * q + smoothing / x.shape[-1]
        return (p * q.sum(axis=-1, keepdims=True) + q) / t

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


def sum_bound(c: float):
    """``c + sigma(n)`` u: a formula with one sum of ``n`` terms (vjps, normalized maps)."""
    return with_ref(shifted_bound(c, spreads=0.0))


def softplus_bound(args, ref=None):
    """``(7 + min(|beta x|, T)) u`` per row (``beta = 1`` in the registry): rounding
    ``z = beta x`` is a relative error ``u |z|`` of ``exp(-|z|)``."""
    x = as_rows(np.asarray(args[0], dtype=np.float64))
    big = np.max(np.where(np.isfinite(x), np.abs(x), 0), axis=-1, initial=0)
    return 7 + np.minimum(big, underflow_range(np.asarray(args[0]).dtype))


def gaussian_bound(args, ref=None):
    """``exp(-a)``, ``a = x^2 / 2``: ``(3 + 2a) u``, ``a`` up to the underflow range."""
    x = as_rows(np.asarray(args[0], dtype=np.float64))
    a = np.max(np.where(np.isfinite(x), x * x / 2, 0), axis=-1, initial=0)
    return 3 + 2 * np.minimum(a, underflow_range(np.asarray(args[0]).dtype))


def gaussian_normalized_bound(args, ref=None):
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


def exp_like_normalized_bound(direct, exact_map):
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
            y = exact_map(as_rows(x).astype(np.longdouble))
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


#: Per elementwise map: (bound without normalization, bound with it).  Sigmoid
#: ``e / (1 + e)``, ``e = exp(-|x|)``: the error of ``e`` over ``1 + e``, and two
#: roundings; NumPy's float32 ``exp`` is up to 3.6 u from exact (the numpy engine
#: reached 4.2 u on rows of 2^18), so 6 u.
ELEMENTWISE = {
    "sigmoid": (constant(6), exp_like_normalized_bound(sum_bound(9), _exact_sigmoid)),
    "softplus": (
        softplus_bound,
        exp_like_normalized_bound(
            lambda a, r=None: softplus_bound(a) + sum_bound(2)(a), _exact_softplus
        ),
    ),
    "arctan": (constant(10), sum_bound(12)),
    "gaussian": (gaussian_bound, gaussian_normalized_bound),
}

LOG_DOMAIN = with_ref(shifted_bound(6.0))
#: Smoothed or probability targets: ``sum_j q_j ((m - x_j) + log1p(s))``, a second
#: sum of ``n`` non-negative terms and the rounding of ``q_j``; the gradient as the
#: one-hot one's, plus ``q``'s rounding.
SOFT_TARGET_LOSS = (
    with_ref(shifted_bound(9.0, sums=2.0)),
    with_ref(shifted_bound(8.0, spreads=2.0)),
)
SOFTMAX = with_ref(shifted_bound(4.0, spreads=2.0))
SPARSE = with_ref(shifted_bound(16.0, spreads=0.0, sums=2.0))

# ------------------------------------------------------------- probability targets, options
#: The rounding of a soft-capped logit ``y = c tanh(x / c)``, in u relative to ``|y|``:
#: the quotient (u; ``tanh``'s slope <= 1 passes it on at most as it is), ``tanh``
#: (libm, within an ulp: 2 u) and the product (u).
CAP_ROUNDING = 4.0


def _probability_terms(args, options: dict) -> dict:
    """What the bounds of :func:`probability_options_bounds` are made of, per row of
    ``args = (x, P)`` in extended precision from the same rounded input (the class
    weights rounded to the compute dtype): the capped logits ``y``, ``p =
    softmax(y)``, ``r_j = w_j ((1 - eps) P_j + eps / V)``, ``R = sum_j r_j``, ``lse``,
    ``log1p(s)``, the cross-entropy ``ce``, ``sigma(V)``, the spread of ``y`` and
    ``max |y|``."""
    x, target = (np.asarray(a) for a in args[:2])
    compute = np.float64 if x.dtype == np.float64 else np.float32
    y = as_rows(x.astype(np.longdouble))
    v = y.shape[-1]
    cap, eps = options.get("softcap"), options.get("label_smoothing", 0.0)
    weights = options.get("class_weights")
    w = 1 if weights is None else np.asarray(weights).astype(compute).astype(np.longdouble)
    if cap is not None:
        y = cap * np.tanh(y / cap)
    m, s = reference.state(y)
    log1p_s = np.log1p(s)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.exp(y - m) / (1 + s)
        r = w * ((1 - eps) * as_rows(target.astype(np.longdouble)) + np.longdouble(eps) / v)
        ce = np.sum(np.where(r == 0, 0, r * ((m - y) + log1p_s)), axis=-1)
    finite = np.where(np.isfinite(y), np.abs(y), 0)
    return {
        "y": y, "p": p, "r": r, "R": r.sum(axis=-1), "lse": (m + log1p_s)[:, 0],
        "log1p_s": log1p_s[:, 0], "ce": ce, "sigma": summation_bound(v),
        "spread": spread(y.astype(compute)), "big": np.max(finite, axis=-1, initial=0),
    }  # fmt: skip


def probability_options_bounds(chunks: int = 1, **options):
    r"""``(loss bound, gradient bound)`` of ``cross_entropy(x, P, reduction="none",
    return_grad=True, **options)`` for a probability target ``P`` with the options
    ``label_smoothing``, ``z_loss`` (``lambda``), ``softcap`` (``c``) and
    ``class_weights`` (:mod:`softmax_numba._chunked_probability`), first order, per
    row, in u (``sigma = sigma(V)`` of :func:`summation_bound`, ``spread`` of the capped
    logits ``y`` as :func:`spread`; ``kappa`` = :data:`CAP_ROUNDING` with a cap, else 0).

    - The loss ``ell = ce + lambda lse^2``, ``ce = gap + R log1p(s)``, relative to
      ``ell``: ``r_j`` is within 4 u (``1 - eps``, ``eps / V``, a product, a sum and the
      weight's product), a term ``r_j (m - y_j)`` 6 u, their sum ``gap`` ``6 + sigma``;
      ``R`` ``4 + sigma``; ``log1p(s)`` ``4 + sigma + spread`` (the terms' ``exp`` and
      arguments, the sum, ``log1p``; its condition <= 1); the product, the sum of the
      two and the z-loss's sum: ``(11 + 2 sigma + spread) ce``.  ``lse = m + log1p(s)``
      is within ``u |lse| + (4 + sigma + spread) u log1p(s)``; ``lambda lse^2`` adds
      ``lambda (6 lse^2 + 2 (4 + sigma + spread) |lse| log1p(s))``.  A cap rounds each
      ``y_j`` within ``kappa u |y_j|``, which moves the loss by ``kappa sum_j ((R + 2
      lambda |lse|) p_j + r_j) |y_j|``.  Every term but the last two is relative to a
      non-negative part of the loss: nothing depends on the offset of the logits.
    - The gradient ``(a p_j - r_j) slope_j``, ``a = R + 2 lambda lse``, relative to
      ``A p_j + r_j`` with ``A = R + 2 lambda max(|lse|, log1p(s))``
      (:func:`probability_options_gradient_scale`): ``a`` within ``6 + sigma + spread``
      of ``A`` (``R``, ``lse``, the cast), ``p_j`` within ``6 + sigma + 2 spread``
      (``exp`` and its argument's rounding, ``s``, ``1 + s``, the reciprocal), two
      products; ``r_j`` and its product 6 u; the difference and the slope's product:
      ``16 + 2 sigma + 3 spread``, plus ``2 kappa max|y|`` (a capped logit's rounding
      moves ``p_j`` and ``lse``).  The slope ``1 - (y_j / c)^2`` is within ``(2 kappa
      + 5) u (y_j / c)^2`` of itself; as ``slope_j + (y_j / c)^2 = 1``, the bound
      relative to ``A p_j + r_j`` (not times the slope) stays the larger of the two.

    A sweep of ``K = chunks`` chunks of classes (the state of
    :mod:`softmax_numba._chunked_probability` folded chunk by chunk) adds ``4 (K - 1)``
    to both: each merge rescales the earlier terms of ``s`` (``exp``, a product: 3 u)
    and adds (u); the gap's lifts ``(m - m_old) R`` are terms like the gap's, added in
    sequence (2 u per chunk).

    For the reductions, ``"sum"`` and ``"mean"`` add the sum of the rows' losses (NumPy's
    pairwise sum) and divide (``"mean"``): the gradient is scaled before its products.
    """
    lam = options.get("z_loss", 0.0)
    merges = 4.0 * (chunks - 1)
    kappa = CAP_ROUNDING if options.get("softcap") is not None else 0.0

    def loss_bound(args, ref=None):
        t = _probability_terms(args, options)
        lse, log1p_s, sigma = np.abs(t["lse"]), t["log1p_s"], t["sigma"]
        with np.errstate(invalid="ignore", over="ignore"):
            error = (11 + merges + 2 * sigma + t["spread"]) * t["ce"]
            error = error + lam * (6 * lse**2 + 2 * (4 + sigma + t["spread"]) * lse * log1p_s)
            if kappa:
                mass = (t["R"] + 2 * lam * lse)[:, None]
                error = error + kappa * np.sum((mass * t["p"] + t["r"]) * np.abs(t["y"]), axis=-1)
            loss = t["ce"] + lam * lse**2 if ref is None else np.abs(as_rows(ref)).reshape(-1)
            return np.where(loss > 0, error / np.where(loss > 0, loss, 1), 0.0).astype(float)

    def gradient_bound(args, ref=None):
        t = _probability_terms(args, options)
        return 16 + merges + 2 * t["sigma"] + 3 * t["spread"] + 2 * kappa * t["big"].astype(float)

    return loss_bound, gradient_bound


def probability_options_gradient_scale(**options):
    """``A max(p_j, tiny / (1 + s)) + r_j``, ``A = R + 2 lambda max(|lse|, log1p(s))``:
    the terms of the gradient ``(R + 2 lambda lse) p_j - r_j`` of
    :func:`probability_options_bounds` (per row, ``reduction="none"``), without the
    cap's slope.  ``tiny`` is the smallest normal number of the compute dtype: below
    it ``exp(y_j - m)`` is subnormal and within half the smallest subnormal number
    (``2^-150 < u tiny / 16`` in float32) of itself, not ``2 u`` relative, an error
    that ``A`` (``2 lambda |lse|`` with the z-loss) scales up to a normal number."""

    def scale(args, ref, index):
        t = _probability_terms(args, options)
        lam = options.get("z_loss", 0.0)
        big = np.maximum(np.abs(t["lse"]), t["log1p_s"])
        dtype = np.float64 if np.asarray(args[0]).dtype == np.float64 else np.float32
        floor = np.finfo(dtype).tiny * t["p"].max(axis=-1, keepdims=True)  # tiny / (1 + s)
        with np.errstate(invalid="ignore"):
            total = (t["R"] + 2 * lam * big)[:, None] * np.fmax(t["p"], floor) + t["r"]
        return total.reshape(np.shape(ref[index]))

    return scale


def entmax_vjp_scale(args, ref, index):
    """``g |dy| + g sum(g |dy|) / sum(g)``, ``g = sqrt(y)``: the terms of
    ``dx = g dy - g sum(g dy) / sum(g)``."""
    y, dy = (np.asarray(a, dtype=np.longdouble) for a in args[:2])
    g = np.sqrt(np.maximum(y, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.sum(g * np.abs(dy), -1, keepdims=True) / np.sum(g, -1, keepdims=True)
    return g * np.abs(dy) + g * np.nan_to_num(q)


# --------------------------------------------------------------------------- stablemax
# r_j = s(x_j) / s(m): a numerator and a denominator of one or two roundings each and a
# division (two roundings under ``arcp``), 4 u; the shared 1 + m (or 1 - m) cancels.
#: ``r_i / sum_j r_j``: ``r_i`` (4 u), the sum (4 u from its terms, ``sigma(n)``), and
#: the reciprocal and product that scale the row (2 u).
STABLEMAX = sum_bound(10)
#: ``-(L_i + log1p(t))``: ``L_i`` (``d_i`` 4 u, ``log1p`` 2 u; or two ``log1p`` and a
#: sum), ``log1p(t)`` (``t``: 4 u + ``sigma(n)``, ``log1p``'s condition <= 1, 2 u),
#: the sum of the two (u); nothing cancels.  The stablemax cross-entropy's loss too.
LOG_STABLEMAX = sum_bound(7)
#: The loss's gradient ``(r_j k - [j = t] sc) / (1 + |x_j|)``, ``k = sc / (1 + t)``:
#: ``k`` (``1 + t``: 5 u + ``sigma(n)``, division 2 u, ``sc`` u), ``r_j`` (4 u), the
#: product, the subtraction, ``1 + |x_j|`` and the division (5 u).
STABLEMAX_GRADIENT = sum_bound(16)
#: ``y (dy - <y, dy>) / (1 + |x|)``: softmax_backward's ``3 + sigma(n)``, then
#: ``1 + |x|`` and the division.
STABLEMAX_BACKWARD = sum_bound(6)


def stablemax_gradient_scale(args, ref, index):
    """``(p_j + [j = t]) / (1 + |x_j|)``, ``p = stablemax(x)`` in higher precision: the
    two terms of the gradient ``(p - onehot(t)) / (1 + |x|)``."""
    x, target = np.asarray(args[0]), np.asarray(args[1])
    z = x.astype(np.longdouble)
    p = reference.stablemax(z)
    q = (np.arange(x.shape[-1]) == target[..., None]).astype(np.longdouble)
    with np.errstate(invalid="ignore"):
        return (p + q) / (1 + np.abs(z))


def stablemax_vjp_scale(args, ref, index):
    """``|y_i| (|dy_i| + sum_j |y_j dy_j|) / (1 + |x_i|)`` for ``dx = y (dy - <y, dy>)
    / (1 + |x|)``, ``args = (y, dy, x)``."""
    y, dy, x = (np.abs(np.asarray(a, dtype=np.longdouble)) for a in args[:3])
    return y * (dy + np.sum(y * dy, axis=-1, keepdims=True)) / (1 + x)


#: The study's tags: ``family``, the softmax family of the accuracy and speed
#: sweeps; ``alternative``, the maps the article offers instead of softmax;
