"""cross_entropy with probability targets and the Liger-Kernel options (z-loss,
soft-cap, class weights, per-row lse and entropy): the chunked sweep of
:mod:`softmax_numba._chunked_probability` on the cpu and parallel engines, the oracle
on the numpy engine.

Errors are componentwise, in units of u, against
:func:`softmax_numba.reference.cross_entropy_options` evaluated in float64 (float32
input) or long double (float64 input) from the same rounded input, within
:func:`softmax_numba.bounds.probability_options_bounds`; PyTorch's
``F.cross_entropy(weight=, label_smoothing=)`` and autograd of the same loss written
in torch operations agree within our bound plus torch's own rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import softmax_numba as sn
from softmax_numba import bounds, reference
from softmax_numba._chunked import LossOptions
from softmax_numba._chunked_probability import ChunkedProbabilityRows
from softmax_numba.error_metrics import componentwise_error, unit_roundoff

OPTIONS = {
    "smoothed": {"label_smoothing": 0.1},
    "weighted": {"class_weights": "random"},
    "z_loss": {"z_loss": 1e-2},
    "capped": {"softcap": 3.0},
    "all": {"label_smoothing": 0.2, "class_weights": "random", "z_loss": 0.05, "softcap": 2.5},
}
#: A common offset of the logits (``x = c + 4 z``, and ``1e6 + 100 z``): the loss's
#: error stays relative to the loss, not to ``|lse|``.
OFFSETS = (0.0, -30.0, 1e4, 1e6)


def _options(name, v, dtype, rng):
    """The options, with random weights rounded to ``dtype`` (the same rounded input
    for the oracle)."""
    opts = dict(OPTIONS[name])
    if opts.get("class_weights") == "random":
        opts["class_weights"] = rng.uniform(0.1, 2.0, v).astype(dtype)
    return opts


def _target(rng, rows, v, dtype):
    """Dirichlet(1/2) rows rounded to ``dtype``, a few entries exactly 0 (``xlogy``)."""
    q = rng.dirichlet(np.full(v, 0.5), size=rows)
    q[rng.random(q.shape) < 0.1] = 0.0
    return q.astype(dtype)


def _high(a):
    a = np.asarray(a)
    return a.astype(np.longdouble if a.dtype == np.float64 else np.float64)


def _oracle(x, q, reduction="none", **opts):
    high = {k: _high(v) if k == "class_weights" else v for k, v in opts.items()}
    return reference.cross_entropy_options(_high(x), _high(q), reduction=reduction, **high)


def _errors(x, q, opts, got, chunks=1):
    """Per row, ``(error, bound)`` in u of the loss and of the gradient."""
    loss, grad = got
    ref = _oracle(x, q, **opts)
    args = (x, q)
    loss_bound, grad_bound = bounds.probability_options_bounds(chunks=chunks, **opts)
    scale = bounds.probability_options_gradient_scale(**opts)(args, ref, 1)
    u = unit_roundoff(x.dtype)
    loss_err = componentwise_error(loss[:, None], ref[0][:, None], np.abs(ref[0][:, None])) / u
    grad_err = componentwise_error(grad, ref[1], scale) / u
    return (loss_err, loss_bound(args, ref[0])), (grad_err, grad_bound(args, ref[1]))


def _assert_within(pairs, label):
    for what, (err, allowed) in zip(("loss", "grad"), pairs, strict=True):
        worst = int(np.argmax(err - allowed))
        assert np.all(err <= allowed), (label, what, err[worst], allowed[worst])


@pytest.mark.parametrize("backend", ["numpy", "cpu", "parallel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_within_the_bound_against_the_oracle(backend, dtype, name):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    rows, v = 13, 97
    opts = _options(name, v, dtype, rng)
    u = unit_roundoff(dtype)
    for offset, scale in [(c, 4.0) for c in OFFSETS] + [(1e6, 100.0)]:
        # scale 100: exp(y_j - m) subnormal where the z-loss's 2 lambda lse scales it up
        x = (offset + scale * rng.standard_normal((rows, v))).astype(dtype)
        q = _target(rng, rows, v, dtype)
        loss, grad, lse, ent = sn.cross_entropy(
            x, q, reduction="none", return_grad=True, return_lse=True, return_entropy=True,
            backend=backend, **opts,
        )  # fmt: skip
        assert loss.dtype == grad.dtype == lse.dtype == ent.dtype == np.dtype(dtype)
        _assert_within(_errors(x, q, opts, (loss, grad)), (backend, offset))
        _, _, rlse, rent = (a.astype(float) for a in _oracle(x, q, **opts))
        # lse and entropy do not depend on the target: the index path's bounds
        # (tests/test_linear_cross_entropy.py), with the cap's rounding of y.
        cap = 2 * bounds.CAP_ROUNDING * opts.get("softcap", 0.0)
        sigma = np.log2(v)
        assert np.all(np.abs(lse - rlse) <= ((4 + sigma) * np.abs(rlse) + cap) * u)
        # (scored above tiny / u: below, its terms exp(y_j - m) are subnormal)
        scored = rent > np.finfo(dtype).tiny / u
        ent_bound = ((16 + 2 * sigma) * rent + 2 * cap) * u
        assert np.all((np.abs(ent - rent) <= ent_bound)[scored])


@pytest.mark.parametrize("backend", ["numpy", "cpu", "parallel"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reductions_within_the_bound(backend, reduction):
    """``"sum"``: the rows' bounds plus NumPy's pairwise sum of the rows' losses
    (``plain_summation_bound(N)``, relative to the sum of non-negative terms);
    ``"mean"``: one more rounding, and the gradient of ``"none"`` divided by ``N``."""
    rng = np.random.default_rng(17)
    dtype, rows, v = np.float32, 40, 61
    opts = _options("all", v, dtype, rng)
    x = (3 * rng.standard_normal((rows, v))).astype(dtype)
    q = _target(rng, rows, v, dtype)
    loss, grad = sn.cross_entropy(
        x, q, reduction=reduction, return_grad=True, backend=backend, **opts
    )
    ref_rows = _oracle(x, q, **opts)[0].astype(float)
    ref_loss, ref_grad = (a.astype(float) for a in _oracle(x, q, reduction, **opts)[:2])
    loss_bound, grad_bound = bounds.probability_options_bounds(**opts)
    u = unit_roundoff(dtype)
    n = rows if reduction == "mean" else 1
    allowed = (np.sum(loss_bound((x, q), ref_rows) * ref_rows) + (
        bounds.plain_summation_bound(rows) + 1) * np.sum(ref_rows)) * u / n  # fmt: skip
    assert abs(float(loss) - ref_loss) <= allowed
    scale = bounds.probability_options_gradient_scale(**opts)((x, q), (None, ref_grad), 1) / n
    err = componentwise_error(grad, ref_grad, scale) / u
    assert np.all(err <= grad_bound((x, q)) + 1)


def _torch_error(x, r, logp, lse):
    """torch's own first-order error in u for ``-sum_j r_j log_softmax(x)_j``: it forms
    ``log p_j = x_j - lse`` (``u (|x_j| + 2 |lse|)`` with the lse's rounding) and sums
    ``V`` products in order."""
    v = x.shape[-1]
    terms = r * (np.abs(x) + 2 * np.abs(lse)[:, None] + np.abs(logp))
    return (v + 4) * np.sum(terms, axis=-1)


@pytest.mark.parametrize("backend", ["numpy", "cpu", "parallel"])
def test_matches_torch_weight_and_label_smoothing(backend):
    """PyTorch with probability targets: ``loss_i = -sum_j w_j q'_ij log p_ij``, ``q' =
    (1 - eps) q + eps / V``; ``"mean"`` divides by the number of rows, not by the
    weights.  float64, within our bound plus torch's error (:func:`_torch_error`)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    rows, v, eps = 30, 17, 0.1
    x = rng.standard_normal((rows, v)) * 3
    q = _target(rng, rows, v, np.float64)
    w = rng.uniform(0.1, 2.0, v)
    opts = {"class_weights": w, "label_smoothing": eps}
    ref = _oracle(x, q, **opts)
    r = w * ((1 - eps) * q + eps / v)
    logp = np.log(reference.softmax(x))
    u = unit_roundoff(np.float64)
    ours_bound = bounds.probability_options_bounds(**opts)[0]((x, q), ref[0]) * ref[0].astype(float)
    row_tol = (ours_bound + _torch_error(x, r, logp, ref[2].astype(float))) * u
    grad_scale = bounds.probability_options_gradient_scale(**opts)((x, q), ref, 1).astype(float)
    for reduction in ("none", "sum", "mean"):
        xt = torch.tensor(x, requires_grad=True)
        expected = F.cross_entropy(
            xt, torch.tensor(q), weight=torch.tensor(w), label_smoothing=eps, reduction=reduction
        )
        expected.sum().backward()
        loss, grad = sn.cross_entropy(
            x, q, reduction=reduction, return_grad=True, backend=backend, **opts
        )
        n = rows if reduction == "mean" else 1
        tol = row_tol if reduction == "none" else (np.sum(row_tol) + rows * u * np.sum(ref[0])) / n
        assert np.all(np.abs(loss - expected.detach().numpy()) <= tol), reduction
        # the gradient: ours (16 + 2 sigma + 3 spread) and torch's (a softmax, a product
        # and a difference: 8 + 2 spread + V/8) relative to its two terms
        spread = bounds.spread(x)[:, None]
        allowed = (32 + 2 * v / 8 + 5 * spread) * grad_scale / n * u
        assert np.all(np.abs(grad - xt.grad.numpy()) <= allowed), reduction


def _torch_loss(torch, x, q, w, eps, z_loss, softcap, reduction):
    """The loss with every option written in torch operations (Liger-Kernel's z-loss,
    Gemma 2's cap), for autograd."""
    v = x.shape[-1]
    y = softcap * torch.tanh(x / softcap)
    r = w * ((1 - eps) * q + eps / v)
    per_row = -(r * torch.log_softmax(y, -1)).sum(-1) + z_loss * torch.logsumexp(y, -1) ** 2
    return per_row.mean() if reduction == "mean" else per_row


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_gradient_matches_torch_autograd_with_every_option(backend):
    """z-loss, cap, weights and smoothing together, float64: our gradient within our
    bound (relative to :func:`~softmax_numba.bounds.probability_options_gradient_scale`)
    plus torch's own rounding, which we allow as 64 + V/8 u of the same terms."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(23)
    rows, v = 9, 29
    opts = _options("all", v, np.float64, rng)
    x = rng.standard_normal((rows, v)) * 3
    q = _target(rng, rows, v, np.float64)
    u = unit_roundoff(np.float64)
    for reduction in ("none", "mean"):
        xt = torch.tensor(x, requires_grad=True)
        expected = _torch_loss(
            torch, xt, torch.tensor(q), torch.tensor(opts["class_weights"]),
            opts["label_smoothing"], opts["z_loss"], opts["softcap"], reduction,
        )  # fmt: skip
        expected.sum().backward()
        loss, grad = sn.cross_entropy(
            x, q, reduction=reduction, return_grad=True, backend=backend, **opts
        )
        ref = _oracle(x, q, **opts)
        n = rows if reduction == "mean" else 1
        scale = bounds.probability_options_gradient_scale(**opts)((x, q), ref, 1) / n
        allowed = bounds.probability_options_bounds(**opts)[1]((x, q))[:, None] + 64 + v / 8
        assert np.all(np.abs(grad - xt.grad.numpy()) <= allowed * scale.astype(float) * u)
        loss_tol = 64 * u * np.abs(expected.detach().numpy())  # both within tens of u of it
        assert np.all(np.abs(loss - expected.detach().numpy()) <= loss_tol)


def test_gradient_matches_finite_differences():
    """Central differences of the mean loss (float64, step ``h = 1e-5``): truncation
    ``h^2 |f'''| / 6`` (``|f'''| <= 10`` for these logits of order 1, weights <= 2 and
    cap 2.5) and rounding ``2 * 40 u |loss| / h``, within 1e-9."""
    rng = np.random.default_rng(3)
    rows, v = 4, 7
    opts = _options("all", v, np.float64, rng)
    x = rng.standard_normal((rows, v))
    q = _target(rng, rows, v, np.float64)
    _, grad = sn.cross_entropy(x, q, return_grad=True, backend="cpu", **opts)
    h = 1e-5
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (
            float(sn.cross_entropy(up, q, backend="cpu", **opts))
            - float(sn.cross_entropy(down, q, backend="cpu", **opts))
        ) / (2 * h)
    assert np.all(np.abs(grad - numeric) <= 1e-9)


@pytest.mark.parametrize("engine", ["cpu", "parallel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunks_folded_one_at_a_time(engine, dtype):
    """The state folded over chunks of 1, 7 and 40 classes (the sweep of a linear
    layer) gives the loss, the gradient and the lse of the whole row, within the bound
    of ``K`` chunks; the gap rises by ``(m - m_old) R`` each time the max does."""
    rng = np.random.default_rng(29)
    rows, v = 6, 40
    opts = _options("all", v, dtype, rng)
    x = (2 * rng.standard_normal((rows, v)) + np.linspace(-20, 20, v)).astype(dtype)  # rising
    q = _target(rng, rows, v, dtype)
    options = LossOptions("none", opts["label_smoothing"], None, opts["z_loss"],
                          opts["softcap"], opts["class_weights"])  # fmt: skip
    for chunk in (1, 7, 40):
        state = ChunkedProbabilityRows(q, v, options, dtype, engine, want_entropy=True)
        z = x.copy()
        starts = range(0, v, chunk)
        pieces = [np.ascontiguousarray(z[:, s : s + chunk]) for s in starts]
        for start, piece in zip(starts, pieces, strict=True):
            state.fold(piece, slice(None), start)
        coefficients = state.gradient_coefficients(slice(None))
        for start, piece in zip(starts, pieces, strict=True):
            state.gradient_into(piece, slice(None), start, coefficients, piece)
        loss = state.reduced(*state.losses())
        grad = np.concatenate(pieces, axis=1)
        _assert_within(_errors(x, q, opts, (loss, grad), chunks=len(starts)), chunk)


def test_a_long_row_of_equal_terms_within_the_bound():
    """One maximum and ``n - 1`` equal entries (every term of ``s`` and of the gap the
    same): a sum in the order the bound assumes, not a serial one."""
    n = 2 * 4096 + 3
    x = np.zeros((2, n), np.float32)
    x[:, 0] = 1.0
    x[1] -= 5.0
    q = np.full((2, n), 1.0 / n, np.float32)
    for backend in ("cpu", "parallel"):
        weights = np.full(n, 0.7, np.float32)
        for opts in ({"label_smoothing": 0.1, "z_loss": 1e-4}, {"class_weights": weights}):
            got = sn.cross_entropy(x, q, reduction="none", return_grad=True, backend=backend,
                                   **opts)  # fmt: skip
            _assert_within(_errors(x, q, opts, got), (backend, opts.keys()))


def _same_kind(got, want):
    """The same NaN and infinities (with their signs) entry by entry."""
    got, want = np.asarray(got, float), np.asarray(want, float)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(
        np.where(np.isinf(got), got, 0), np.where(np.isinf(want), want, 0)
    )


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_nonfinite_values_follow_the_oracle(backend):
    """A NaN logit or target poisons its row; a ``-inf`` logit adds nothing where its
    class weighs 0 (``xlogy``: no ``0 * inf``), an infinite loss where it weighs more;
    a ``+inf`` logit gives NaN; an all ``-inf`` row NaN.  Other rows are unaffected."""
    v = 6
    x = np.tile(np.linspace(-1.0, 2.0, v), (8, 1))
    q = np.tile(np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.0]), (8, 1))
    x[0, 2] = np.nan
    q[1, 3] = np.nan
    x[2, 0] = -np.inf  # q = 0 there: finite
    x[3, 1] = -np.inf  # q > 0 there: inf
    x[4, 4] = np.inf
    x[5] = -np.inf
    for opts in ({"z_loss": 0.01}, {"softcap": 2.0}, {"class_weights": np.linspace(0, 1, v)}):
        got = sn.cross_entropy(
            x, q, reduction="none", return_grad=True, return_lse=True, return_entropy=True,
            backend=backend, **opts,
        )  # fmt: skip
        want = reference.cross_entropy_options(x, q, reduction="none", **opts)
        for g, w in zip(got[:3], want[:3], strict=True):  # loss, gradient, lse
            _same_kind(g, w)
        # The entropy is the index path's (target-free): NaN where a logit is NaN.
        assert np.isnan(got[3][0]) and np.isfinite(got[3][[1, 2, 3, 6, 7]]).all()
        if "softcap" in opts:  # the cap maps -inf and inf to -c and c
            assert np.isnan(got[0][:2]).all() and np.isfinite(got[0][2:]).all()
        else:
            assert np.isfinite(got[0][[2, 6, 7]]).all() and np.isnan(got[0][[0, 1, 4, 5]]).all()
            assert got[0][3] == np.inf
        np.testing.assert_allclose(got[0][6:], want[0][6:], rtol=1e-13)
    _, grad = sn.cross_entropy(x[2:3], q[2:3], return_grad=True, z_loss=0.01, backend=backend)
    assert grad[0, 0] == 0  # p = 0 and q = 0 at the -inf logit


def test_classes_of_weight_zero_and_empty_targets():
    """A class of weight 0 drops out even where its logit is ``-inf``; a target row of
    zeros has no cross-entropy: its loss is the z-loss alone and its gradient
    ``2 lambda lse p``; ``"mean"`` still counts the row."""
    x = np.array([[0.5, -np.inf, 2.0, 1.0], [0.3, 0.2, 0.1, 0.0]])
    q = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    w = np.array([1.0, 0.0, 2.0, 1.0])
    loss, grad, lse = sn.cross_entropy(
        x, q, class_weights=w, z_loss=0.1, reduction="none", return_grad=True,
        return_lse=True, backend="cpu",
    )  # fmt: skip
    p = reference.softmax(x)
    np.testing.assert_allclose(loss[0], -0.5 * np.log(p[0, 0]) + 0.1 * lse[0] ** 2, rtol=1e-15)
    np.testing.assert_allclose(loss[1], 0.1 * lse[1] ** 2, rtol=1e-15)
    np.testing.assert_allclose(grad[1], 0.2 * lse[1] * p[1], rtol=1e-14)
    mean = sn.cross_entropy(x, q, class_weights=w, z_loss=0.1, backend="parallel")
    np.testing.assert_allclose(mean, loss.sum() / 2, rtol=1e-15)


def test_the_plain_path_and_the_options_path_agree():
    """With no option but ``return_lse``, the chunked sweep gives the plain kernel's
    loss and gradient (within the bound of either)."""
    rng = np.random.default_rng(31)
    x = (rng.standard_normal((20, 50)) * 5 + 100).astype(np.float32)
    q = _target(rng, 20, 50, np.float32)
    plain = sn.cross_entropy(x, q, reduction="none", return_grad=True, label_smoothing=0.1)
    loss, grad, _ = sn.cross_entropy(
        x, q, reduction="none", return_grad=True, label_smoothing=0.1, return_lse=True
    )
    for got in (plain, (loss, grad)):
        _assert_within(_errors(x, q, {"label_smoothing": 0.1}, got), "paths")


def test_gradient_written_over_the_target_or_the_logits():
    """``grad_out`` may be the target (read after the logits are copied: a separate
    buffer is used) or the logits; the results are those of a new array."""
    rng = np.random.default_rng(37)
    x = rng.standard_normal((5, 12))
    q = _target(rng, 5, 12, np.float64)
    opts = {"softcap": 2.0, "z_loss": 0.1, "label_smoothing": 0.1}
    loss, grad = sn.cross_entropy(x, q, return_grad=True, **opts)
    target = q.copy()
    loss2, grad2 = sn.cross_entropy(x, target, return_grad=True, grad_out=target, **opts)
    assert grad2 is target and loss2 == loss
    np.testing.assert_array_equal(grad2, grad)
    logits = x.copy()
    _, grad3 = sn.cross_entropy(logits, q, return_grad=True, grad_out=logits, **opts)
    assert grad3 is logits
    np.testing.assert_array_equal(grad3, grad)


def test_the_class_axis_may_be_any_axis():
    rng = np.random.default_rng(41)
    x = rng.standard_normal((3, 7, 4))
    q = rng.dirichlet(np.ones(7), size=(3, 4)).transpose(0, 2, 1)
    w = rng.uniform(0.5, 1.5, 7)
    got = sn.cross_entropy(x, q, axis=1, reduction="none", class_weights=w, return_grad=True)
    moved = sn.cross_entropy(
        np.moveaxis(x, 1, -1), np.moveaxis(q, 1, -1), reduction="none", class_weights=w,
        return_grad=True,
    )  # fmt: skip
    np.testing.assert_array_equal(got[0], moved[0])
    np.testing.assert_array_equal(got[1], np.moveaxis(moved[1], -1, 1))


@pytest.mark.parametrize(
    ("target", "kwargs", "error", "match"),
    [
        (np.full((2, 3), -0.1), {"z_loss": 0.1}, ValueError, "negative"),
        (np.full((2,), 0.5), {"softcap": 1.0}, ValueError, "must be integers"),
        (np.full((2, 4), 0.25), {"class_weights": np.ones(3)}, ValueError, "logits' shape"),
        (np.full((2, 3), 0.3), {"class_weights": np.ones(4)}, ValueError, "class_weights"),
        (np.full((2, 3), 0.3), {"ignore_index": 0, "z_loss": 0.1}, ValueError, "class-index"),
    ],
)
def test_bad_targets_are_refused(target, kwargs, error, match):
    with pytest.raises(error, match=match):
        sn.cross_entropy(np.ones((2, 3)), target, **kwargs)


def test_the_cuda_engine_refuses_the_options(monkeypatch):
    from softmax_numba import _rows

    monkeypatch.setattr(_rows.HostRows, "engine", lambda self, backend: "cuda")
    with pytest.raises(NotImplementedError, match="CPU engines"):
        sn.cross_entropy(np.ones((2, 3)), np.full((2, 3), 1 / 3), z_loss=0.1)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_the_torch_wrapper_takes_weight_and_the_options_with_probabilities(reduction):
    """``softmax_numba.torch.cross_entropy``: gradgradcheck passes (the second derivative
    differentiates the loss in torch operations, weights included), and the gradient of
    that graph agrees with the kernel's within the bound (ours plus 64 + V/8 u of
    torch's own rounding, relative to the gradient's terms)."""
    torch = pytest.importorskip("torch")
    from softmax_numba import torch as snt

    rng = np.random.default_rng(43)
    rows, v = 4, 6
    x = torch.tensor(rng.standard_normal((rows, v)) * 2, requires_grad=True)
    q = torch.tensor(_target(rng, rows, v, np.float64))
    w = torch.tensor(rng.uniform(0.5, 2.0, v))
    opts = {"reduction": reduction, "label_smoothing": 0.1, "z_loss": 0.01, "softcap": 3.0}

    def loss(x):
        return snt.cross_entropy(x, q, w, **opts)

    assert torch.autograd.gradgradcheck(loss, (x,))
    (kernel,) = torch.autograd.grad(loss(x).sum(), x)
    (graph,) = torch.autograd.grad(loss(x).sum(), x, create_graph=True)
    args = (x.detach().numpy(), q.numpy())
    numpy_opts = {k: o for k, o in opts.items() if k != "reduction"} | {"class_weights": w.numpy()}
    ref = _oracle(*args, **numpy_opts)
    n = rows if reduction == "mean" else 1
    scale = bounds.probability_options_gradient_scale(**numpy_opts)(args, ref, 1) / n
    allowed = bounds.probability_options_bounds(**numpy_opts)[1](args)[:, None] + 64 + v / 8
    u = unit_roundoff(np.float64)
    diff = np.abs(graph.detach().numpy() - kernel.numpy())
    assert np.all(diff <= allowed * scale.astype(float) * u)


def test_the_bounds_are_not_vacuous():
    """On rows of 52 at unit scale (float32), every option's bounds stay below the old
    blanket tolerance of 64 u for the loss and 96 u for the gradient (whose cap adds
    ``2 kappa max|y|``)."""
    rng = np.random.default_rng(47)
    for name in OPTIONS:
        opts = _options(name, 52, np.float32, rng)
        x = rng.standard_normal((4, 52)).astype(np.float32)
        q = _target(rng, 4, 52, np.float32)
        loss_bound, grad_bound = bounds.probability_options_bounds(**opts)
        assert np.all(loss_bound((x, q), _oracle(x, q, **opts)[0]) < 64), name
        assert np.all(grad_bound((x, q)) < 96), name


@pytest.mark.parametrize("shape", [(3, 0), (0, 4)])
def test_empty_axes_give_the_oracles_results(shape):
    """No class: a zero cross-entropy and an lse of ``-inf``; no row: ``"mean"`` is
    NaN, ``"sum"`` 0; every engine alike."""
    x, q = np.zeros(shape), np.zeros(shape)
    for reduction in ("none", "mean", "sum"):
        want = sn.cross_entropy(
            x, q, reduction=reduction, return_grad=True, softcap=2.0, return_lse=True,
            backend="numpy",
        )  # fmt: skip
        for backend in ("cpu", "parallel"):
            got = sn.cross_entropy(
                x, q, reduction=reduction, return_grad=True, softcap=2.0, return_lse=True,
                backend=backend,
            )  # fmt: skip
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)
