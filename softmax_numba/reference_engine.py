"""The numpy engine (``backend="numpy"``): the oracle of :mod:`softmax_numba.reference`
under the names and signatures of the CPU kernels.

Each function here takes the arguments of the CPU kernel of the same name, rows in
and output buffers to fill, so that :func:`softmax_numba._api.run` dispatches to
this engine as it does to the Numba and CUDA ones (:func:`launch`, by the kernel's
name); the wrappers hold no branch for it.  The values are the reference's,
computed in the rows' dtype.
"""

from __future__ import annotations

import numpy as np

from softmax_numba import philox, reference


def _softmax(algorithm: str):
    def kernel(x, out):
        out[...] = reference.softmax(x, algorithm=algorithm)

    return kernel


def _log_softmax(x, out):
    out[...] = reference.log_softmax(x)


def _softmax_options(x, out, temperature, sink):
    out[...] = reference.softmax(x, temperature=temperature, sink=sink)


def _log_softmax_options(x, out, temperature, sink):
    out[...] = reference.log_softmax(x, temperature=temperature, sink=sink)


def _divided(x, out, temperature):
    with np.errstate(over="ignore"):  # as the kernels: an overflow is inf
        out[...] = x / x.dtype.type(temperature)


def _logsumexp(x, out):
    out[...] = reference.logsumexp(x)


def _logcumsumexp(x, out, m0, s0, reverse):
    """The carried state ``(m0, s0)`` (``m0 = -inf``: none) as an entry before the row,
    ``m0 + log1p(s0)``."""
    if np.all(m0 == -np.inf) and not np.isnan(s0).any():
        out[...] = reference.logcumsumexp(x, reverse=reverse)
        return
    with np.errstate(invalid="ignore"):
        first = np.broadcast_to((m0 + np.log1p(s0))[:, None], (x.shape[0], 1)).astype(x.dtype)
    z = np.concatenate([x, first], axis=1) if reverse else np.concatenate([first, x], axis=1)
    y = reference.logcumsumexp(z, reverse=reverse)
    out[...] = y[:, :-1] if reverse else y[:, 1:]


def _logsumexp_weighted(x, b, out, sign):
    out[...], sign[...] = reference.logsumexp(x, b=b, return_sign=True)


def _softmax_backward(y, dy, dx):
    dx[...] = reference.softmax_backward(y, dy)


def _log_softmax_backward(y, dy, dx):
    dx[...] = reference.log_softmax_backward(y, dy)


def _cross_entropy_index(x, target, ignore_index, smoothing, scale, return_grad, losses, grad):
    """Class-index targets (the wrapper passes ``ignore_index = -1`` for "none
    ignored", which no validated index equals) or, from
    :func:`_cross_entropy_probability`, probabilities with ``ignore_index=None``."""
    loss, g = reference.cross_entropy(
        x,
        target,
        reduction="none",
        label_smoothing=smoothing,
        ignore_index=ignore_index,
        return_grad=True,
    )
    losses[...] = loss
    if return_grad:
        grad[...] = g * g.dtype.type(scale)


def _cross_entropy_probability(x, q, smoothing, scale, return_grad, losses, grad):
    _cross_entropy_index(x, q, None, smoothing, scale, return_grad, losses, grad)


def _sigmoid(x, out, normalize):
    out[...] = reference.sigmoid(x, normalize=normalize)


def _softplus(x, out, beta, normalize):
    out[...] = reference.softplus(x, beta, normalize=normalize)


def _arctan(x, out, normalize):
    out[...] = reference.arctan(x, normalize=normalize)


def _gaussian(x, out, mu, sigma, normalize):
    out[...] = reference.gaussian(x, mu, sigma, normalize=normalize)


def _maxout(x, pool_size, out):
    out[...] = reference.maxout(x, pool_size)


def _sparsemax(x, out, support):
    out[...], support[...] = reference.sparsemax(x, return_support_size=True)


def _entmax15(x, out):
    out[...] = reference.entmax15(x)


def _entmax_bisect(x, alpha, n_iter, out):
    out[...] = reference.entmax_bisect(x, alpha=alpha, n_iter=n_iter)


def _sparsemax_backward(y, dy, dx):
    dx[...] = reference.sparsemax_backward(y, dy)


def _entmax15_backward(y, dy, dx):
    dx[...] = reference.entmax15_backward(y, dy)


def _stablemax(x, out):
    out[...] = reference.stablemax(x)


def _log_stablemax(x, out):
    out[...] = reference.log_stablemax(x)


def _stablemax_backward(y, dy, x, dx):
    dx[...] = reference.stablemax_backward(y, dy, x)


def _stablemax_cross_entropy(x, target, ignore, scale, return_grad, losses, grad):
    """As :func:`_cross_entropy_index` (``ignore = -1``: none ignored)."""
    loss, g = reference.stablemax_cross_entropy(
        x, target, reduction="none", ignore_index=ignore, return_grad=True
    )
    losses[...] = loss
    if return_grad:
        grad[...] = g * g.dtype.type(scale)


def _sampling_status(x, status) -> np.ndarray:
    """The CPU kernels' row status (:mod:`softmax_numba.cpu.sampling`) into
    ``status``; returns the mask of the rows that can be sampled."""
    from softmax_numba.cpu import sampling

    status[...] = sampling.VALID
    status[(x == -np.inf).all(axis=1)] = sampling.ALL_NEGINF
    status[(x == np.inf).any(axis=1)] = sampling.HAS_POSINF
    status[np.isnan(x).any(axis=1)] = sampling.HAS_NAN
    return status == sampling.VALID


def _sample(
    x, first_row, inv_t, greedy, top_k, top_p, log_min_p, key, offset, out, logprob_out, status
):
    valid = _sampling_status(x, status)
    rows = first_row + np.flatnonzero(valid)
    u = philox.uniforms(key, offset, rows, out.shape[1])
    out[valid], logprob_out[valid] = reference.sample_rows(
        x[valid].astype(np.float64),
        top_k[valid],
        top_p[valid],
        log_min_p[valid],
        inv_t[valid],
        greedy[valid],
        u,
    )


def _filter_logits(x, temperature, inv_t, top_k, top_p, log_min_p, out, status):
    valid = _sampling_status(x, status)
    out[~valid] = np.nan
    out[valid] = reference.filtered_logits(
        x[valid], top_k[valid], top_p[valid], log_min_p[valid], temperature[valid], inv_t[valid]
    )


def _top_logprobs(x, out, logprob_out, status):
    valid = _sampling_status(x, status)
    out[~valid], logprob_out[~valid] = -1, np.nan
    out[valid], logprob_out[valid] = reference.top_logprobs_rows(
        x[valid].astype(np.float64), out.shape[1]
    )


def _segment_forward(x, offsets, op, out):
    """``x`` and ``out`` as ``(F, n)`` rows (``softmax_numba.cpu.segment``)."""
    from softmax_numba.cpu import segment

    forward = {
        segment.SOFTMAX: reference.segment_softmax,
        segment.LOG_SOFTMAX: reference.segment_log_softmax,
        segment.LOGSUMEXP: reference.segment_logsumexp,
    }[op]
    out[...] = forward(x.T, offsets).T


def _segment_backward(y, dy, offsets, op, dx):
    from softmax_numba.cpu import segment

    backward = {
        segment.SOFTMAX_BACKWARD: reference.segment_softmax_backward,
        segment.LOG_SOFTMAX_BACKWARD: reference.segment_log_softmax_backward,
    }[op]
    dx[...] = backward(y.T, dy.T, offsets).T


#: Every kernel of the engine, by the CPU kernel's name.
KERNELS = {
    **{f"_softmax_{a}": _softmax(a) for a in ("naive", "shifted", "division_free", "online")},
    "_log_softmax": _log_softmax,
    "_softmax_options": _softmax_options,
    "_log_softmax_options": _log_softmax_options,
    "_divided": _divided,
    "_logsumexp": _logsumexp,
    "_logcumsumexp": _logcumsumexp,
    "_logsumexp_weighted": _logsumexp_weighted,
    "_softmax_backward": _softmax_backward,
    "_log_softmax_backward": _log_softmax_backward,
    "_cross_entropy_index": _cross_entropy_index,
    "_cross_entropy_probability": _cross_entropy_probability,
    "_sigmoid": _sigmoid,
    "_softplus": _softplus,
    "_arctan": _arctan,
    "_gaussian": _gaussian,
    "_maxout": _maxout,
    "_sparsemax_sort": _sparsemax,
    "_sparsemax_pivot": _sparsemax,
    "_entmax15_sort": _entmax15,
    "_entmax15_pivot": _entmax15,
    "_entmax_bisect": _entmax_bisect,
    "_sparsemax_backward": _sparsemax_backward,
    "_entmax15_backward": _entmax15_backward,
    "_stablemax": _stablemax,
    "_log_stablemax": _log_stablemax,
    "_stablemax_backward": _stablemax_backward,
    "_stablemax_cross_entropy": _stablemax_cross_entropy,
    "_sample": _sample,
    "_filter_logits": _filter_logits,
    "_top_logprobs": _top_logprobs,
    "_segment_forward": _segment_forward,
    "_segment_backward": _segment_backward,
}


def launch(name: str, *args) -> None:
    """Run the numpy kernel ``name`` on ``args`` (the CPU kernel's arguments)."""
    KERNELS[name](*args)
