"""Plain NumPy reference of every operation: the oracle of the tests.

Written to be obviously correct rather than fast; works for any NumPy floating
dtype, including ``np.longdouble`` (the tests evaluate float64 inputs in extended
precision).  The same functions serve ``backend="numpy"``.  Inputs are assumed to
be validated by the public wrappers (shapes, dtypes, parameters).
"""

from __future__ import annotations

import numpy as np


def _quiet():
    return np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")


def _finite_shift(m):
    """The maximum to subtract, with non-finite maxima replaced by 0 (as scipy)."""
    return np.where(np.isfinite(m), m, 0)


def state(x, axis=-1):
    """The state ``(m, s)`` of every row along ``axis`` (kept with length 1).

    ``m = x_k = max(x)`` over the numbers and ``s = sum_{i != k} exp(x_i - m)``, ``k``
    the first maximum; ``s`` is NaN if the row holds a NaN, and 0 for ``m = +-inf``
    (an empty or all ``-inf`` row, or a ``+inf`` entry).  From it, accurate relative
    to the result whatever the offset of ``x`` (Blanchard, Higham & Higham 2021,
    Alg. 2.2): ``logsumexp = m + log1p(s)``, ``log_softmax_i = (x_i - m) -
    log1p(s)``, ``-log_softmax_i = (m - x_i) + log1p(s)``.
    """
    z = np.moveaxis(np.asarray(x), axis, -1)
    nan = np.isnan(z).any(axis=-1, keepdims=True)
    numbers = np.where(np.isnan(z), -np.inf, z)
    m = np.max(numbers, axis=-1, keepdims=True, initial=-np.inf)
    with _quiet():
        if z.shape[-1]:
            k = np.argmax(numbers, axis=-1)[..., None]
            e = np.exp(z - m)
            np.put_along_axis(e, k, 0, axis=-1)
            s = np.sum(e, axis=-1, keepdims=True)
        else:
            s = np.zeros_like(m)
    s = np.where(np.isfinite(m), s, 0)
    s = np.where(nan, np.nan, s).astype(m.dtype, copy=False)
    return np.moveaxis(m, -1, axis), np.moveaxis(s, -1, axis)


def logsumexp(x, axis=-1, b=None, keepdims=False, return_sign=False):
    """``log(sum_i b_i exp(x_i))`` with scipy's semantics, ``axis=-1`` by default;
    ``m + log1p(s)`` from :func:`state` without weights, ``a`` and ``b`` broadcast
    against each other with them."""
    x = np.asarray(x)
    with _quiet():
        if b is None:
            m, s = state(x, axis)
            out = m + np.log1p(s)
            sign = np.where(np.isnan(out), np.nan, np.where(out == -np.inf, 0, 1))
            sign = sign.astype(out.dtype)
        else:
            x, b = np.broadcast_arrays(x, np.asarray(b, dtype=x.dtype))
            nonzero = b != 0
            m = np.max(x, axis=axis, keepdims=True, initial=-np.inf, where=nonzero)
            shift = _finite_shift(m)
            s = np.sum(np.where(nonzero, b * np.exp(x - shift), 0), axis=axis, keepdims=True)
            sign = np.sign(s)
            out = np.log(np.abs(s)) + shift
            if not return_sign:
                out = np.where(s < 0, np.nan, out)
    if not keepdims:
        out = np.squeeze(out, axis=axis)
        sign = np.squeeze(sign, axis=axis)
    return (out, sign) if return_sign else out


def _masked(x, where):
    return x if where is None else np.where(where, x, -np.inf).astype(x.dtype, copy=False)


def _tempered(x, axis, temperature, sink):
    """``x / T`` (rounded in ``x``'s dtype, as the engines do) with the sink logit
    ``c`` (broadcast to one per row) appended along ``axis``: the row ``[x / T, c]``
    whose softmax, without its last entry, is softmax with a temperature and a
    sink.  ``x`` itself when both are ``None``."""
    if temperature is not None:
        with _quiet():
            x = x / x.dtype.type(temperature)
    if sink is None:
        return x
    z = np.moveaxis(x, axis, -1)
    c = np.broadcast_to(np.asarray(sink).astype(x.dtype), z.shape[:-1])[..., None]
    return np.moveaxis(np.concatenate([z, c], axis=-1), -1, axis)


def _without_sink(y, axis, sink):
    """``y`` without the sink's entry that :func:`_tempered` appended."""
    return y if sink is None else np.moveaxis(np.moveaxis(y, axis, -1)[..., :-1], -1, axis)


def softmax(x, axis=-1, algorithm="shifted", where=None, temperature=None, sink=None):
    """Softmax by one of the named algorithms (``"online"`` is computed as
    ``"shifted"``: the two are the same formula evaluated in a different order), of
    ``x / temperature`` beside the sink logit ``sink`` (:func:`_tempered`)."""
    x = np.asarray(x)
    p = _softmax(_tempered(_masked(x, where), axis, temperature, sink), axis, algorithm)
    p = _without_sink(p, axis, sink)
    return p if where is None else np.where(where, p, 0).astype(p.dtype, copy=False)


def _softmax(z, axis, algorithm):
    with _quiet():
        if algorithm == "naive":
            e = np.exp(z)
            p = e / np.sum(e, axis=axis, keepdims=True)
        elif algorithm in ("shifted", "online"):
            e = np.exp(z - np.max(z, axis=axis, keepdims=True, initial=-np.inf))
            p = e / np.sum(e, axis=axis, keepdims=True)
        elif algorithm == "division_free":
            lse = logsumexp(z, axis=axis, keepdims=True)
            p = np.exp(z - np.where(lse == np.inf, np.nan, lse))
        else:
            raise ValueError(f"unknown softmax algorithm {algorithm!r}")
    return p


def log_softmax(x, axis=-1, where=None, temperature=None, sink=None):
    """``(z_i - m) - log1p(s)`` from :func:`state` of ``z = [x / temperature, sink]``
    (:func:`_tempered`); masked entries give ``-inf``."""
    x = np.asarray(x)
    z = _tempered(_masked(x, where), axis, temperature, sink)
    m, s = state(z, axis)
    with _quiet():
        y = _without_sink((z - m) - np.log1p(s), axis, sink)
    return y if where is None else np.where(where, y, -np.inf).astype(y.dtype, copy=False)


def softmax_backward(y, dy, axis=-1):
    """``y * (dy - sum(y * dy))``."""
    return y * (dy - np.sum(y * dy, axis=axis, keepdims=True))


def log_softmax_backward(y, dy, axis=-1):
    """``dy - exp(y) * sum(dy)``."""
    return dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True)


def cross_entropy(
    logits,
    target,
    axis=-1,
    reduction="mean",
    label_smoothing=0.0,
    ignore_index=None,
    return_grad=False,
    temperature=None,
):
    """``-sum_j q_j log_softmax(x)_j`` per row with PyTorch's conventions.

    ``q = (1 - eps) * target + eps / C``; class-index targets are one-hot, rows whose
    target is ``ignore_index`` give zero loss and gradient and are left out of the
    mean.  The gradient of each row's loss is ``sum(q) * softmax(x) - q``.  With a
    temperature ``T``, ``x / T`` replaces ``x`` and the gradient is divided by ``T``.
    """
    z = np.moveaxis(_tempered(np.asarray(logits), axis, temperature, None), axis, -1)
    n_classes = z.shape[-1]
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.floating):
        q = np.moveaxis(target, axis, -1).astype(z.dtype)
        valid = np.ones(z.shape[:-1], dtype=bool)
    else:
        valid = (
            np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
        )
        onehot = np.arange(n_classes) == np.where(valid, target, 0)[..., None]
        q = (onehot & valid[..., None]).astype(z.dtype)
    if label_smoothing:
        q = (1 - label_smoothing) * q + valid[..., None] * (label_smoothing / n_classes)
    m, s = state(z)
    half = z.dtype.type(0.5)
    with _quiet():
        # -log_softmax_j = (m - x_j) + log1p(s), halved so that m - x_j cannot overflow.
        nll_half = (m * half - z * half) + np.log1p(s) * half
        losses = 2 * np.sum(np.where(q == 0, 0, q * nll_half), axis=-1)
        grad = softmax(z, axis=-1) * np.sum(q, axis=-1, keepdims=True) - q
    grad = np.where(valid[..., None], grad, 0)
    if reduction == "mean":
        count = np.count_nonzero(valid)
        with _quiet():  # no row counts: the loss is NaN (0 / 0), the gradient zeros
            loss, grad = np.sum(losses) / count, grad / max(count, 1)
    elif reduction == "sum":
        loss = np.sum(losses)
    else:
        loss = losses
    loss = np.asarray(loss, dtype=z.dtype)
    if temperature is not None:
        grad = grad / z.dtype.type(temperature)
    if return_grad:
        return loss, np.moveaxis(grad.astype(z.dtype), -1, axis)
    return loss


def cross_entropy_options(
    logits,
    target,
    reduction="mean",
    label_smoothing=0.0,
    ignore_index=None,
    z_loss=0.0,
    softcap=None,
    class_weights=None,
):
    """Cross-entropy with the Liger-Kernel options, written out: ``(loss, grad, lse,
    entropy)`` for logits ``(rows, V)`` and class indices ``(rows,)`` or probabilities
    ``(rows, V)`` (floating), in the logits' dtype (pass float64 or longdouble).

    ``y = softcap tanh(z / softcap)``; per row ``q_j = (1 - eps) w_t [j = t] + (eps / V)
    w_j``, ``loss = -sum_j q_j log softmax(y)_j + z_loss lse(y)^2``; ``"mean"`` divides
    the first term by ``sum_i w_{t_i}`` and the second by the number of rows, over the
    rows whose target is not ``ignore_index``.  A probability target ``P`` gives ``q_j
    = w_j ((1 - eps) P_j + eps / V)`` and ``"mean"`` divides both terms by the number
    of rows (PyTorch's ``weight=`` and ``label_smoothing=`` with probabilities).
    ``grad`` is ``d loss / d z``.
    """
    z = np.asarray(logits)
    dtype, (rows, n) = z.dtype, z.shape
    labels = np.asarray(target)
    if np.issubdtype(labels.dtype, np.floating):
        return _probability_options(z, labels, reduction, label_smoothing, z_loss, softcap,
                                    class_weights)  # fmt: skip
    valid = np.ones(rows, bool) if ignore_index is None else labels != ignore_index
    w = np.ones(n, dtype) if class_weights is None else np.asarray(class_weights, dtype)
    y = z if softcap is None else softcap * np.tanh(z / softcap)
    m, s = state(y)
    lse = (m + np.log1p(s))[:, 0]
    # -log p_j as (m - y_j) + log1p(s), a sum of two terms >= 0 (never y_j - lse).
    logp = -((m - y) + np.log1p(s))
    p = np.exp(y - m) / (1 + s)
    eps = dtype.type(label_smoothing)
    safe = np.where(valid, labels, 0)
    q = (eps / n) * np.broadcast_to(w, (rows, n)).copy()
    q[np.arange(rows), safe] += (1 - eps) * w[safe]
    q[~valid] = 0
    with _quiet():
        ce = -np.sum(np.where(q == 0, 0, q * logp), axis=-1)
    zl = np.where(valid, z_loss * lse * lse, 0)
    entropy = -np.sum(np.where(p > 0, p * logp, 0), axis=-1)
    grad_ce = np.sum(q, axis=-1, keepdims=True) * p - q
    grad_z = np.where(valid, 2 * z_loss * lse, 0)[:, None] * p
    if reduction == "mean":
        count, total = np.count_nonzero(valid), np.sum(w[safe][valid])
        with _quiet():
            loss = np.sum(ce) / total + np.sum(zl) / count
        grad = grad_ce / total + grad_z / count if count and total else np.zeros_like(p)
    else:
        loss = np.sum(ce + zl) if reduction == "sum" else ce + zl
        grad = grad_ce + grad_z
    if softcap is not None:
        grad = grad * (1 - (y / softcap) ** 2)
    return np.asarray(loss, dtype), grad.astype(dtype), lse, entropy


def _probability_options(z, target, reduction, label_smoothing, z_loss, softcap, class_weights):
    """:func:`cross_entropy_options` of probability targets ``(rows, V)``: ``q_j = w_j
    ((1 - eps) P_j + eps / V)`` (a ``q_j = 0`` adds 0, as ``xlogy``), every row counts."""
    dtype, (rows, n) = z.dtype, z.shape
    w = np.ones(n, dtype) if class_weights is None else np.asarray(class_weights, dtype)
    y = z if softcap is None else softcap * np.tanh(z / softcap)
    m, s = state(y)
    lse = (m + np.log1p(s))[:, 0]
    with _quiet():
        logp = -((m - y) + np.log1p(s))  # a sum of two terms >= 0, never y_j - lse
        p = softmax(y)  # NaN across a row with a +inf logit, as the kernels' softmax
        eps = dtype.type(label_smoothing)
        q = w * ((1 - eps) * np.asarray(target).astype(dtype) + eps / n)
        ce = -np.sum(np.where(q == 0, 0, q * logp), axis=-1)
        zl = z_loss * lse * lse if z_loss else np.zeros_like(lse)
        entropy = -np.sum(np.where(p > 0, p * logp, 0), axis=-1)
        slope = 2 * z_loss * lse[:, None] if z_loss else 0  # of z_loss lse^2
        grad = (np.sum(q, axis=-1, keepdims=True) + slope) * p - q
    if reduction == "mean":
        with _quiet():
            loss = np.sum(ce + zl) / rows
        grad = grad / rows if rows else grad
    else:
        loss = np.sum(ce + zl) if reduction == "sum" else ce + zl
    if softcap is not None:
        grad = grad * (1 - (y / softcap) ** 2)
    return np.asarray(loss, dtype), grad.astype(dtype), lse, entropy


def _normalized(y, axis, normalize, rescaled=None, limit=0.5, total_scale=1):
    """``y / sum(y)`` along ``axis`` (if ``normalize``).  A sum that overflowed is
    taken again over ``y / n`` (softplus near the largest float).  A row with
    ``total_scale * sum(y) < limit`` and an entry below the smallest normal number
    is ``w / sum(w)``
    with ``w = rescaled()``, the same ratios shifted by the row's max so that none
    underflows early (``softmax_numba.cpu.elementwise.underflowed``)."""
    if not normalize:
        return y
    with _quiet():
        total = np.sum(y, axis=axis, keepdims=True)
        w = y.dtype.type(1 / max(y.shape[axis], 1))
        scaled = np.sum(y * w, axis=axis, keepdims=True)
        result = np.where(total == np.inf, (y * w) / scaled, y / total)
        if rescaled is None:
            return result
        tiny = np.finfo(y.dtype).tiny
        redo = (total * total_scale < limit) & np.any(y < tiny, axis=axis, keepdims=True)
        if np.any(redo):
            w = rescaled()
            result = np.where(redo, w / np.sum(w, axis=axis, keepdims=True), result)
        return result


def _shift(z, axis):
    return np.exp(z - np.max(z, axis=axis, keepdims=True, initial=-np.inf))


def sigmoid(x, axis=-1, normalize=False):
    """``1 / (1 + exp(-x))``, evaluated as ``e / (1 + e)`` with ``e = exp(-|x|)`` for
    ``x < 0`` so that nothing overflows."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    # sigmoid(x) = e^x / (1 + e^x): shifted, e^{x - m} / (1 + e^x)
    return _normalized(y, axis, normalize, lambda: _shift(x, axis) / (1 + np.exp(x)))


def softplus(x, beta=1.0, axis=-1, normalize=False):
    """``log1p(exp(beta x)) / beta = max(x, 0) + log1p(exp(-|z|)) / beta``, ``z = beta x``
    (finite where ``beta x`` overflows)."""
    x = np.asarray(x)
    with _quiet():
        z = x * x.dtype.type(beta)
        y = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(z))) / x.dtype.type(beta)

    def rescaled():  # beta softplus = e^z g(z), g(z) = log1p(e^z) / e^z from t = e^-|z|
        t = np.exp(-np.abs(z))
        small = np.where(t == 0, 1, np.log1p(t) / np.where(t == 0, 1, t))
        return _shift(z, axis) * np.where(z > 0, (z + np.log1p(t)) * t, small)

    return _normalized(y, axis, normalize, rescaled, limit=np.log(2), total_scale=beta)


def arctan(x, axis=-1, normalize=False):
    """``1/2 + arctan(x) / pi``, as ``-arctan(1/x) / pi`` for ``x < 0`` (no cancellation)."""
    x = np.asarray(x)
    pi = x.dtype.type(np.pi)
    with _quiet():
        y = np.where(x < 0, -np.arctan(1 / x) / pi, x.dtype.type(0.5) + np.arctan(x) / pi)
    return _normalized(y, axis, normalize)


def gaussian(x, mu=0.0, sigma=1.0, axis=-1, normalize=False):
    """``exp(a)``, ``a = -(x - mu)^2 / (2 sigma^2)``; normalized, ``softmax(a)``."""
    x = np.asarray(x)
    d = x - x.dtype.type(mu)
    a = -(d * d) / x.dtype.type(2 * sigma * sigma)
    return softmax(a, axis=axis) if normalize else np.exp(a)


def _poison_nonfinite_rows(p, z):
    """Rows with a NaN, a ``+inf`` or nothing above ``-inf`` are undefined: NaN."""
    bad = np.isnan(z).any(-1) | (np.max(z, axis=-1, initial=-np.inf) == np.inf)
    bad |= ~(z > -np.inf).any(-1)
    return np.where(bad[..., None], np.nan, p)


def sparsemax(x, axis=-1, return_support_size=False):
    """Euclidean projection onto the simplex by sorting (Martins & Astudillo 2016,
    Algorithm 1): ``p = max(x - tau, 0)`` with ``k(x) = max{k : 1 + k x_(k) >
    sum_{j<=k} x_(j)}`` and ``tau = (sum_{j<=k(x)} x_(j) - 1) / k(x)``, on ``x - max x``
    (shift-invariant; a sum of raw entries overflows near the largest float)."""
    z = np.moveaxis(np.asarray(x), axis, -1)
    n = z.shape[-1]
    with _quiet():
        top = np.max(np.where(np.isnan(z), -np.inf, z), axis=-1, keepdims=True, initial=-np.inf)
        top = np.where(np.isfinite(top), top, 0)
        zs = -np.sort(-(z - top), axis=-1)
        cs = np.cumsum(zs, axis=-1)
        k = np.arange(1, n + 1, dtype=z.dtype)
        support = np.sum(1 + k * zs > cs, axis=-1)
        idx = np.maximum(support, 1)[..., None] - 1
        tau = (np.take_along_axis(cs, idx, axis=-1) - 1) / np.maximum(support, 1)[..., None]
        tau = tau + top
        p = _poison_nonfinite_rows(np.maximum(z - tau, 0), z).astype(z.dtype, copy=False)
    p = np.moveaxis(p, -1, axis)
    return (p, np.count_nonzero(p > 0, axis=axis)) if return_support_size else p


def sparsemax_backward(y, dy, axis=-1):
    """``dx = s * (dy - mean_{s}(dy))`` with ``s`` the support of ``y``."""
    s = y > 0
    with _quiet():
        mean = np.sum(dy * s, axis=axis, keepdims=True) / np.sum(s, axis=axis, keepdims=True)
    return np.where(s, dy - mean, 0).astype(dy.dtype, copy=False)


def entmax15(x, axis=-1):
    """Exact 1.5-entmax by sorting (Peters, Niculae & Martins 2019, Algorithm 2):
    ``p = max(x/2 - tau, 0)^2`` with ``tau`` the root of ``sum p = 1``."""
    z = np.moveaxis(np.asarray(x), axis, -1)
    n = z.shape[-1]
    with _quiet():
        z = z / 2 - np.max(z / 2, axis=-1, keepdims=True, initial=-np.inf)
        zs = -np.sort(-z, axis=-1)
        k = np.arange(1, n + 1, dtype=z.dtype)
        mean = np.cumsum(zs, axis=-1) / k
        mean_sq = np.cumsum(zs * zs, axis=-1) / k
        delta = (1 - k * (mean_sq - mean * mean)) / k
        tau = mean - np.sqrt(np.maximum(delta, 0))
        support = np.sum(tau <= zs, axis=-1)
        tau_star = np.take_along_axis(tau, np.maximum(support, 1)[..., None] - 1, axis=-1)
        p = np.maximum(z - tau_star, 0) ** 2
        p = _poison_nonfinite_rows(p, np.moveaxis(np.asarray(x), axis, -1)).astype(z.dtype)
    return np.moveaxis(p, -1, axis)


def entmax_bisect(x, alpha=1.5, n_iter=50, axis=-1):
    """alpha-entmax by bisection on the threshold (Peters, Niculae & Martins 2019,
    Algorithm 1): ``p_i = max(y_i - tau, 0)^(1/(alpha - 1))`` on ``y = (alpha - 1)
    (x - max x)``, with ``tau`` in ``[-1, -n^(1 - alpha)]`` (``n``: the entries
    above ``-inf``), then ``p / sum(p)``."""
    z = np.moveaxis(np.asarray(x), axis, -1)
    dt = z.dtype.type
    a1 = dt(alpha - 1)
    with _quiet():
        top = np.max(z, axis=-1, keepdims=True, initial=-np.inf)
        y = (z - top) * a1
        n = np.maximum(np.count_nonzero(z > -np.inf, axis=-1, keepdims=True), 1)
        tau_lo = np.full_like(top, -1)
        width = dt(1) - n.astype(z.dtype) ** (-a1)
        for _ in range(n_iter):
            width = width / 2
            tau_mid = tau_lo + width
            p = np.maximum(y - tau_mid, 0) ** (1 / a1)
            tau_lo = np.where(np.sum(p, axis=-1, keepdims=True) >= 1, tau_mid, tau_lo)
        p = np.maximum(y - tau_lo, 0) ** (1 / a1)
        p = p / np.sum(p, axis=-1, keepdims=True)
        p = _poison_nonfinite_rows(p, z).astype(z.dtype, copy=False)
    return np.moveaxis(p, -1, axis)


def entmax15_backward(y, dy, axis=-1):
    """``dx = g * dy - g * sum(g * dy) / sum(g)`` with ``g = sqrt(y)``."""
    g = np.sqrt(y)
    gdy = g * dy
    with _quiet():
        q = np.sum(gdy, axis=axis, keepdims=True) / np.sum(g, axis=axis, keepdims=True)
    return gdy - q * g


def maxout(x, pool_size, axis=-1):
    """Maximum over consecutive groups of ``pool_size`` entries along ``axis``."""
    z = np.moveaxis(np.asarray(x), axis, -1)
    grouped = z.reshape(*z.shape[:-1], z.shape[-1] // pool_size, pool_size)
    return np.moveaxis(np.max(grouped, axis=-1), -1, axis)


# ------------------------------------------------------------------------ stablemax
# StableMax (Prieto, Barsbey, Mediano & Birdal, "Grokking at the edge of numerical
# stability", ICLR 2025): s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0.


def stablemax_ratios(z):
    """``(m, r)`` of rows ``z`` (classes last): ``m`` the max over the numbers and
    ``r_j = s(z_j) / s(m)`` in ``(0, 1]``, without forming ``s(m)``: ``(1 + z_j) /
    (1 + m)`` for ``z_j >= 0``, ``1 / ((1 - z_j)(1 + m))`` for ``z_j < 0 <= m``,
    ``(1 - m) / (1 - z_j)`` for ``m < 0``.  0 for ``-inf`` (``m`` finite), NaN for NaN,
    for ``+inf`` and for every entry of a row with no number above ``-inf``."""
    z = np.asarray(z)
    one = z.dtype.type(1)
    m = np.max(np.where(np.isnan(z), -np.inf, z), axis=-1, keepdims=True, initial=-np.inf)
    m = m.astype(z.dtype, copy=False)
    with _quiet():
        positive = m >= 0
        c = np.where(positive, one + m, one - m)
        nonneg = z >= 0
        num = np.where(nonneg, one + z, np.where(positive, one, c))
        den = np.where(nonneg, c, (one - z) * np.where(positive, c, one))
        return m, (num / den).astype(z.dtype, copy=False)


def stablemax_state(z):
    """``(m, t)`` with ``t = sum_{j != k} r_j`` (:func:`stablemax_ratios`), one
    maximum ``k`` left out: the other maxima count 1 each, exactly (so that a
    ``+inf`` row has a finite ``t``, an all ``-inf`` row ``t = n - 1``)."""
    m, r = stablemax_ratios(z)
    top = z == m
    ties = np.maximum(np.sum(top, axis=-1, keepdims=True) - 1, 0).astype(r.dtype)
    with _quiet():
        t = np.sum(np.where(top, 0, r), axis=-1, keepdims=True) + ties
    return m, t.astype(r.dtype, copy=False)


def stablemax(x, axis=-1):
    """``s(x_i) / sum_j s(x_j)`` as ``r_i / sum_j r_j`` (:func:`stablemax_ratios`):
    nothing overflows; a row with a NaN, a ``+inf`` or no number above ``-inf`` is NaN."""
    z = np.moveaxis(np.asarray(x), axis, -1)
    _, r = stablemax_ratios(z)
    with _quiet():
        p = r / np.sum(r, axis=-1, keepdims=True)
    return np.moveaxis(p.astype(z.dtype, copy=False), -1, axis)


def log_stablemax(x, axis=-1):
    """``-(L_i + log1p(t))`` with ``L_i = -log r_i >= 0`` from logarithms of exact
    quantities (``log1p((m - x_i) / (1 + x_i))``, ``log1p(-x_i) + log1p(m)``,
    ``log1p((m - x_i) / (1 - m))``) and ``t`` of :func:`stablemax_state`: two terms of
    one sign, no log of a rounded ratio.  A ``+inf`` row gives NaN at its ``+inf``
    entries and ``-inf`` elsewhere (as ``scipy.special.log_softmax``)."""
    z = np.moveaxis(np.asarray(x), axis, -1)
    one = z.dtype.type(1)
    m, t = stablemax_state(z)
    with _quiet():
        positive = m >= 0
        inner = positive & (z < 0)
        d = np.where(inner, -z, (m - z) / np.where(positive, one + z, one - m))
        log1p_m = np.log1p(np.where(positive, m, 0))
        loss = np.log1p(d) + np.where(inner, log1p_m, 0)
        y = -(loss + np.log1p(t))
    return np.moveaxis(y.astype(z.dtype, copy=False), -1, axis)


def stablemax_backward(y, dy, x, axis=-1):
    """``y (dy - sum(y dy)) / (1 + |x|)``: ``s'(x) / s(x) = 1 / (1 + |x|)``."""
    return y * (dy - np.sum(y * dy, axis=axis, keepdims=True)) / (1 + np.abs(x))


def stablemax_cross_entropy(
    logits, target, axis=-1, reduction="mean", ignore_index=None, return_grad=False
):
    """``-log_stablemax(x)_t`` per row, class-index targets, PyTorch's reductions and
    ``ignore_index``; the gradient of a row's loss is ``(p - onehot(t)) / (1 + |x|)``,
    ``p = stablemax(x)``."""
    z = np.moveaxis(np.asarray(logits), axis, -1)
    target = np.asarray(target)
    valid = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    safe = np.where(valid, target, 0)
    if z.shape[-1]:
        picked = np.take_along_axis(log_stablemax(z), safe[..., None], axis=-1)[..., 0]
    else:
        picked = np.zeros(z.shape[:-1], z.dtype)
    losses = np.where(valid, -picked, 0).astype(z.dtype, copy=False)
    onehot = np.arange(z.shape[-1]) == safe[..., None]
    with _quiet():
        grad = (stablemax(z) - onehot) / (1 + np.abs(z))
    grad = np.where(valid[..., None], grad, 0)
    if reduction == "mean":
        count = np.count_nonzero(valid)
        with _quiet():
            loss, grad = np.sum(losses) / count, grad / max(count, 1)
    else:
        loss = np.sum(losses) if reduction == "sum" else losses
    loss = np.asarray(loss, dtype=z.dtype)
    if return_grad:
        return loss, np.moveaxis(grad.astype(z.dtype), -1, axis)
    return loss


# ------------------------------------------------------------------------ logcumsumexp
#: How far the prefix maximum may rise above the reference of the terms
#: ``exp(x_i - R)`` before :func:`logcumsumexp` starts a new reference (the CPU
#: engine's ``RESCALE_SPAN``): the terms stay below ``e^50``.
_CUMULATIVE_SPAN = 50.0


def prefix_sum(a):
    """Inclusive prefix sums along the last axis, within ``2 u`` of exact for terms of
    one sign at any length: a log-depth scan (Hillis & Steele 1986) whose additions
    are Knuth's two-sum, their rounding errors summed along beside the sums.  (A
    recursive ``np.cumsum`` is ``(k - 1) u`` from exact at entry ``k``.)"""
    s = np.array(a, copy=True)
    e = np.zeros_like(s)
    d = 1
    with _quiet():
        while d < s.shape[-1]:
            hi, lo = s[..., d:], s[..., :-d]
            t = hi + lo
            b = t - hi
            err = (hi - (t - b)) + (lo - b)
            e[..., d:] = e[..., d:] + e[..., :-d] + err
            s[..., d:] = t
            d *= 2
        return s + e


def exp_difference(a, b):
    """``exp(a - b)`` with the rounding of ``a - b`` corrected: ``a - b = d + e``
    exactly (Knuth's two-sum), ``exp(a - b) = exp(d) (1 + e)`` to first order; ``e``
    is 0 where ``d`` is not finite.  ``exp(d)`` alone is ``u |a - b|`` from exact."""
    with _quiet():
        d = a - b
        virtual = d - a
        e = (a - (d - virtual)) + (-b - virtual)
        t = np.exp(d)
        return t + t * np.where(np.isfinite(e), e, 0).astype(t.dtype)


def _logcumsumexp_numbers(z):
    """:func:`logcumsumexp` of one row with no NaN and no ``+inf``.

    Per stretch of the row whose prefix maximum stays within :data:`_CUMULATIVE_SPAN`
    of its reference ``R`` (the stretch's first maximum): ``m_k`` the prefix maximum,
    ``E_k = exp(m_k - R)``, and the sum of the terms ``exp(x_i - R)`` but the current
    maximum's as two prefix sums of one sign (:func:`prefix_sum`): the entries that
    are not a rise of the maximum, and the earlier maxima (a rise ``j`` adds the
    maximum before it), plus what the stretches before carry in.  Then ``s_k`` is
    that sum over ``E_k`` and ``y_k = m_k + log1p(s_k)``: no sum ever holds the
    current maximum's own term, so nothing cancels."""
    n = z.size
    y = np.full(n, -np.inf, dtype=z.dtype)
    m = np.maximum.accumulate(z)
    rise = z > np.concatenate([[-np.inf], m[:-1]]).astype(z.dtype)
    start = int(np.argmax(rise)) if rise.any() else n
    carried = z.dtype.type(0)
    while start < n:
        R = z[start]
        stop = min(int(np.searchsorted(m, R + z.dtype.type(_CUMULATIVE_SPAN), "right")), n)
        zs, ms, rs = z[start:stop], m[start:stop], rise[start:stop]
        t = exp_difference(zs, R)
        others = prefix_sum(np.where(rs, 0, t).astype(z.dtype))
        earlier = np.concatenate([[0], prefix_sum(t[rs])]).astype(z.dtype)  # before each rise
        s = (others + (carried + earlier[np.cumsum(rs) - 1])) / exp_difference(ms, R)
        y[start:stop] = ms + np.log1p(s)
        if stop < n:  # the stretch's total, relative to the next reference
            carried = (1 + s[-1]) * exp_difference(ms[-1], z[stop])
        start = stop
    return y


def logcumsumexp(x, axis=-1, reverse=False):
    """``y_k = log sum_{i <= k} exp(x_i)`` along ``axis`` (``reverse``: ``i >= k``),
    ``m_k + log1p(s_k)`` from the prefix's state, in ``x``'s dtype.

    Non-finite entries as ``np.logaddexp.accumulate``: NaN from the first NaN on,
    ``+inf`` from the first ``+inf`` on (until a NaN), ``-inf`` while only ``-inf``
    has been seen.  The error of the terms' prefix sums is ``2 u`` at any length
    (:func:`prefix_sum`); the oracle of the tests computes it in float64 for
    float32 input and in ``np.longdouble`` for float64 input."""
    x = np.asarray(x)
    z = np.moveaxis(x, axis, -1)
    if reverse:
        z = z[..., ::-1]
    rows = z.reshape(-1, z.shape[-1]) if z.size else z.reshape(-1, max(z.shape[-1], 1))[:0]
    out = np.empty(rows.shape, dtype=x.dtype)
    with _quiet():
        for i, row in enumerate(rows):
            nan = np.isnan(row)
            inf = row == np.inf
            end = int(np.argmax(nan | inf)) if (nan | inf).any() else row.size
            out[i, :end] = _logcumsumexp_numbers(row[:end])
            out[i, end:] = np.where(np.logical_or.accumulate(nan)[end:], np.nan, np.inf)
    y = out.reshape(z.shape)
    if reverse:
        y = y[..., ::-1]
    return np.moveaxis(y, -1, axis)


# ------------------------------------------------------------------------ sampling
# The sort-based oracle of ``sample``, ``filter_logits`` and ``top_logprobs``: the
# rows are float64 ``(rows, n)`` and every per-row parameter is already normalized by
# the wrapper (one value per row, "off" spelled as its neutral value).


def _per_row(rows, top_k, top_p, log_min_p, inv_temperature):
    """The filters as one value per row: ``top_k`` as int64, the others as float64."""
    return (
        np.broadcast_to(np.asarray(top_k, np.int64), (rows,)),
        *(
            np.broadcast_to(np.asarray(a, np.float64), (rows,))
            for a in (top_p, log_min_p, inv_temperature)
        ),
    )


def _sampling_row(x, top_k, top_p, log_min_p, inv_temperature):
    """The terms ``d = (x - m) invT``, ``w = exp(d)`` and the kept mask of one row."""
    n = x.shape[0]
    m = np.max(x)
    with _quiet():
        d = (x - m) * inv_temperature
        w = np.exp(d)
    # Largest first; equal values in index order (a stable sort of -x).
    order = np.argsort(-x, kind="stable")
    xs, ws = x[order], w[order]
    # 1. top-k: the k-th largest value counted with multiplicity; all its ties stay.
    t_k = xs[min(int(top_k), n) - 1]
    # 2. top-p over the top-k set, which is a prefix of the sorted row.  The mass of a
    # level t, sum over {x_j >= t} of w_j, is the running sum at the last entry equal
    # to t (ties are summed as one group).
    if top_p < 1.0:
        in_k = xs >= t_k
        running = np.cumsum(np.where(in_k, ws, 0.0))
        last_of_level = np.searchsorted(-xs, -xs, side="right") - 1
        mass = running[last_of_level]
        s_k = running[-1]
        # the largest level reaching p S_k (it exists: the last level's mass is S_k)
        first = int(np.argmax(in_k & (mass >= top_p * s_k)))
        t_p = xs[first]
    else:
        t_p = -np.inf  # top_p == 1 keeps every entry, those of zero weight included
    # 3. min-p: w_j >= min_p max(w) = min_p, in the log domain.
    kept = (x >= max(t_k, t_p)) & (d >= log_min_p)
    return d, w, kept


def sampling_kept(x, top_k, top_p, log_min_p, inv_temperature):
    r"""The set of entries that top-k, top-p and min-p keep, found by sorting each row.

    With ``m = max(x)``, ``d_j = (x_j - m) invT``, ``w_j = exp(d_j)`` (``invT =
    1/T``) and the row sorted largest first (stable, so ties stay in index order):

    1. top-k (Fan, Lewis & Dauphin 2018, "Hierarchical Neural Story Generation",
       ACL): ``t_k`` is the ``k``-th largest value of ``x`` counted with multiplicity;
       ``x_j >= t_k`` is kept, so every tie of the ``k``-th value stays (as Hugging
       Face's ``TopKLogitsWarper`` and vLLM's sampler).  ``k = n`` keeps all.
    2. top-p, "nucleus" sampling (Holtzman, Buys, Du, Forbes & Choi 2020, "The
       Curious Case of Neural Text Degeneration", ICLR): over the top-k set, whose
       weight is ``S_k = sum_{x_j >= t_k} w_j``,

       .. math:: t_p = \max\{t \in x : t \ge t_k,\ \sum_{x_j \ge t} w_j \ge p S_k\},

       the smallest set of the largest entries whose probability reaches ``p``,
       every tie of ``t_p`` included: the sums are running sums over the sorted row,
       read at the last entry of each group of equal values.  ``p = 1`` keeps all.
    3. min-p (Nguyen, Baker, Neo, Roush, Kirsch & Shwartz-Ziv 2024, "Turning Up the
       Heat: Min-p Sampling for Creative and Coherent LLM Outputs"): ``p_j >= min_p
       max_i p_i``, written ``d_j >= log(min_p)`` (``log(0) = -inf`` keeps all;
       ``min_p = 1`` keeps the entries equal to the max).

    ``K = {j : x_j >= max(t_k, t_p), d_j >= log(min_p)}``; it holds the max.  All in
    float64; the sums are sequential, so a threshold decided within their rounding
    (relative ``n u``) of ``p S_k`` may differ from another order's.

    Parameters
    ----------
    x : ndarray, shape (rows, n)
        float64 logits; every row has a finite max and no NaN or ``+inf``.
    top_k : ndarray of int64, shape (rows,)
        ``k >= 1`` per row; ``n`` (or more) for "off".
    top_p : ndarray of float64, shape (rows,)
        ``p`` in ``(0, 1]`` per row; ``1.0`` for "off".
    log_min_p : ndarray of float64, shape (rows,)
        ``math.log(min_p)`` per row; ``-inf`` for "off".
    inv_temperature : ndarray of float64, shape (rows,)
        ``1 / T``, finite and positive.

    Returns
    -------
    ndarray of bool, shape (rows, n)
        ``True`` where the entry is kept.
    """
    x = np.asarray(x, dtype=np.float64)
    top_k, top_p, log_min_p, inv_temperature = _per_row(
        x.shape[0], top_k, top_p, log_min_p, inv_temperature
    )
    kept = np.zeros(x.shape, dtype=bool)
    for r in range(x.shape[0]):
        kept[r] = _sampling_row(x[r], top_k[r], top_p[r], log_min_p[r], inv_temperature[r])[2]
    return kept


def sample_rows(x, top_k, top_p, log_min_p, inv_temperature, greedy, uniforms):
    r"""Draw from each row's kept, renormalized distribution with the given uniforms.

    With ``K`` the kept set of :func:`sampling_kept` and ``S = sum_{j in K} w_j``, a
    uniform ``u`` in ``[0, 1)`` gives the first ``j`` of ``K``, in index order, with

    .. math:: \sum_{i \in K,\ i \le j} w_i > u S,

    the inversion of the kept distribution's distribution function (the last ``j`` of
    ``K`` if none, a rounding guard; with ``S`` the last running sum as here, ``u S <
    S`` and the guard never acts).  The draw is exact up to the spacing of ``u``
    (``2^-53``) and the rounding of the running sums (relative ``n u``).  Its
    log-probability under the same distribution is

    .. math:: d_j - \log S = d_j - \operatorname{log1p}(s),\quad
              s = \sum_{i \in K,\ i \ne k} w_i,

    ``k`` the first maximum (``w_k = 1``), accurate relative to the result as
    log_softmax (Blanchard, Higham & Higham 2021, Alg. 2.2): ``log(S)`` would lose
    ``u / s`` when ``s`` is small.  A greedy row (``T = 0``) gives its first maximum
    and log-probability 0, the filters aside.

    Parameters
    ----------
    x, top_k, top_p, log_min_p, inv_temperature
        As in :func:`sampling_kept` (``inv_temperature`` is not read on greedy rows).
    greedy : ndarray of bool, shape (rows,)
        The rows whose temperature is 0.
    uniforms : ndarray of float64, shape (rows, draws)
        The uniforms of each row's draws (``softmax_numba.philox.uniforms``).

    Returns
    -------
    indices : ndarray of int64, shape (rows, draws)
    logprobs : ndarray of float64, shape (rows, draws)
    """
    x = np.asarray(x, dtype=np.float64)
    uniforms = np.asarray(uniforms, dtype=np.float64)
    rows, draws = uniforms.shape
    top_k, top_p, log_min_p, inv_temperature = _per_row(
        rows, top_k, top_p, log_min_p, inv_temperature
    )
    greedy = np.broadcast_to(np.asarray(greedy, bool), (rows,))
    indices = np.zeros((rows, draws), dtype=np.int64)
    logprobs = np.zeros((rows, draws), dtype=np.float64)
    for r in range(rows):
        if greedy[r]:
            indices[r] = np.argmax(x[r])  # the first maximum
            continue
        d, w, kept = _sampling_row(x[r], top_k[r], top_p[r], log_min_p[r], inv_temperature[r])
        members = np.flatnonzero(kept)
        running = np.cumsum(w[members])
        position = np.searchsorted(running, uniforms[r] * running[-1], side="right")
        j = members[np.minimum(position, members.size - 1)]
        k = np.argmax(x[r])
        s = np.sum(w[members[members != k]])
        indices[r] = j
        logprobs[r] = d[j] - np.log1p(s)
    return indices, logprobs


def filtered_logits(x, top_k, top_p, log_min_p, temperature, inv_temperature=None):
    """The logits that :func:`sampling_kept` keeps, divided by the temperature, and
    ``-inf`` elsewhere, as Hugging Face's logits warpers return them (temperature,
    then top-k, top-p and min-p).

    Parameters
    ----------
    x, top_k, top_p, log_min_p
        As in :func:`sampling_kept`.
    temperature : ndarray of float64, shape (rows,)
        ``T > 0``, the divisor of the kept entries (float64 division).
    inv_temperature : ndarray of float64, shape (rows,), optional
        The ``invT`` of the kept set; ``1 / temperature`` if not given.  Pass the
        float64 ``1 / T`` of the caller's ``T`` when ``temperature`` holds it rounded
        to a narrower dtype: ``1 / float32(0.7)`` is not ``1 / 0.7``, and min-p's
        comparison ``d_j >= log(min_p)`` may tell them apart.

    Returns
    -------
    ndarray of float64, shape (rows, n)
        ``x_j / T`` on the kept set (``x`` itself where ``T = 1``; it may overflow to
        ``+-inf`` where ``T < 1``), ``-inf`` elsewhere.
    """
    x = np.asarray(x, dtype=np.float64)
    temperature = np.broadcast_to(np.asarray(temperature, np.float64), (x.shape[0],))
    if inv_temperature is None:
        inv_temperature = 1.0 / temperature
    kept = sampling_kept(x, top_k, top_p, log_min_p, inv_temperature)
    with _quiet():
        return np.where(kept, x / temperature[:, None], -np.inf)


def top_logprobs_rows(x, k):
    """The ``k`` largest entries of each row, largest first (ties: the lower index
    first), and their log-probabilities ``log_softmax(x)`` (:func:`log_softmax`).

    Parameters
    ----------
    x : ndarray, shape (rows, n)
        Logits (computed in their own dtype, float64 or wider).
    k : int
        ``1 <= k <= n``.

    Returns
    -------
    indices : ndarray of int64, shape (rows, k)
    logprobs : ndarray, shape (rows, k)
    """
    x = np.asarray(x)
    indices = np.argsort(-x, axis=-1, kind="stable")[:, :k].astype(np.int64)
    return indices, np.take_along_axis(log_softmax(x), indices, axis=-1)


# --------------------------------------------------------------------------- segments
# Ragged rows: ``values`` of shape ``(nnz, ...)``, segment ``j`` its entries
# ``offsets[j]:offsets[j + 1]`` (CSR row pointers), each trailing position apart.


def _segment_rows(values, offsets):
    """``(rows, ids, starts, nonempty)``: ``values`` as C-contiguous ``(F, nnz)`` rows (so
    that NumPy's sums along a segment are pairwise), the segment of every entry, the
    starts of the nonempty segments and their mask."""
    v = np.asarray(values)
    o = np.asarray(offsets, dtype=np.int64)
    rows = np.ascontiguousarray(v.reshape(v.shape[0], int(np.prod(v.shape[1:]))).T)
    lengths = np.diff(o)
    nonempty = lengths > 0
    return rows, np.repeat(np.arange(lengths.size), lengths), o[:-1][nonempty], nonempty


def _per_segment(ufunc, rows, starts, nonempty, empty):
    """``ufunc.reduceat`` over each segment of every row, ``empty`` for an empty one
    (``reduceat`` alone would give the next entry there)."""
    out = np.full((rows.shape[0], nonempty.size), empty, dtype=rows.dtype)
    if starts.size:
        out[:, nonempty] = ufunc.reduceat(rows, starts, axis=1)
    return out


def _as_entries(rows, shape):
    """``(F, n)`` rows back in the layout ``(n,) + shape[1:]``."""
    return np.ascontiguousarray(rows.T).reshape((rows.shape[1], *shape[1:]))


def segment_state(values, offsets):
    """The state ``(m, s)`` of every segment (:func:`state` of each), as ``(F, S)`` arrays:
    ``m`` the max over its numbers, ``s = sum_{i != k} exp(x_i - m)`` without one
    maximum (its first); NaN with a NaN, 0 for ``m = +-inf``."""
    rows, ids, starts, nonempty = _segment_rows(values, offsets)
    nan = _per_segment(np.logical_or, np.isnan(rows), starts, nonempty, False)
    numbers = np.where(np.isnan(rows), -np.inf, rows)
    m = _per_segment(np.maximum, numbers, starts, nonempty, -np.inf)
    top = numbers == m[:, ids]
    position = np.where(top, np.arange(rows.shape[1]), rows.shape[1])
    first = _per_segment(np.minimum, position, starts, nonempty, rows.shape[1])
    with _quiet():
        e = np.exp(rows - m[:, ids])
    f, j = np.nonzero(first < rows.shape[1])
    e[f, first[f, j]] = 0
    s = _per_segment(np.add, e, starts, nonempty, 0)
    s = np.where(np.isfinite(m), s, 0)
    return m, np.where(nan, np.nan, s).astype(rows.dtype, copy=False)


def segment_softmax(values, offsets):
    """``exp(x_i - m) / (1 + s)`` over each segment (:func:`segment_state`); NaN for a
    segment with a NaN, a ``+inf`` or only ``-inf``."""
    rows, ids, _, _ = _segment_rows(values, offsets)
    m, s = segment_state(values, offsets)
    with _quiet():
        scale = np.where(m == np.inf, np.nan, 1 / (1 + s))
        p = np.exp(rows - m[:, ids]) * scale[:, ids]
    return _as_entries(p.astype(rows.dtype, copy=False), np.shape(values))


def segment_log_softmax(values, offsets):
    """``(x_i - m) - log1p(s)`` over each segment (:func:`segment_state`)."""
    rows, ids, _, _ = _segment_rows(values, offsets)
    m, s = segment_state(values, offsets)
    with _quiet():
        y = (rows - m[:, ids]) - np.log1p(s)[:, ids]
    return _as_entries(y.astype(rows.dtype, copy=False), np.shape(values))


def segment_logsumexp(values, offsets):
    """``m + log1p(s)`` of each segment, shape ``(S,) + values.shape[1:]``; ``-inf``
    for an empty one."""
    m, s = segment_state(values, offsets)
    with _quiet():
        return _as_entries(m + np.log1p(s), np.shape(values))


def segment_softmax_backward(y, dy, offsets):
    """``y_i (dy_i - sum_k y_k dy_k)`` over each segment."""
    rows, ids, starts, nonempty = _segment_rows(y, offsets)
    grad = _segment_rows(dy, offsets)[0]
    dot = _per_segment(np.add, rows * grad, starts, nonempty, 0)
    return _as_entries(rows * (grad - dot[:, ids]), np.shape(y))


def segment_log_softmax_backward(y, dy, offsets):
    """``dy_i - exp(y_i) sum_k dy_k`` over each segment."""
    rows, ids, starts, nonempty = _segment_rows(y, offsets)
    grad = _segment_rows(dy, offsets)[0]
    total = _per_segment(np.add, grad, starts, nonempty, 0)
    with _quiet():
        return _as_entries(grad - np.exp(rows) * total[:, ids], np.shape(y))
