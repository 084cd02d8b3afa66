"""linear_cross_entropy, and cross_entropy's Liger-Kernel options, against the
materialized computation in higher precision, finite differences, PyTorch, and
their bad input.

Bounds (first order, ``u`` the unit roundoff of the dtype; ``softmax_numba._linear``):

- each logit ``z_j = h . W_j + b_j`` is rounded within ``dz_j = (d + 2) u (|h| . |W_j|
  + |b_j|)``; a change of the logits by ``dz`` changes a row's loss by at most
  ``2 max_j dz_j`` (cross-entropy is 1-Lipschitz in each direction per unit of
  probability, twice with smoothing, and the z-loss adds ``2 lambda |lse|``);
- on top, the cross-entropy's own error relative to the loss,
  ``(9 + 2 sigma(V) + 2) u`` (``sigma(n) = log2(n)``, the sums' depth);
- a gradient product ``dh = G @ W`` is within ``((V + 2) u + e_G) |G| @ |W|`` with
  ``e_G`` the relative error of ``G``'s entries (its own rounding and ``2 dz``).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import softmax_numba as sn
from softmax_numba import config, reference

OPTIONS = {
    "plain": {},
    "smoothed": {"label_smoothing": 0.1},
    "weighted": {"class_weights": "random"},
    "z_loss": {"z_loss": 1e-3},
    "capped": {"softcap": 3.0},
    "all": {"label_smoothing": 0.2, "class_weights": "random", "z_loss": 0.05, "softcap": 2.5},
}


def _u(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def _problem(rng, n, d, v, dtype, *, offset=0.0, ignored=2):
    h = rng.standard_normal((n, d)).astype(dtype)
    W = (rng.standard_normal((v, d)) * 2 / np.sqrt(d)).astype(dtype)
    bias = (rng.standard_normal(v) + offset).astype(dtype)
    y = rng.integers(0, v, size=n)
    y[:ignored] = -100
    return h, W, bias, y


def _options(name, v, rng):
    opts = dict(OPTIONS[name])
    if opts.get("class_weights") == "random":
        opts["class_weights"] = rng.uniform(0.1, 2.0, v)
    return opts


def _reference(h, W, bias, y, reduction, opts):
    """The materialized form in long double: loss, (dh, dW, dbias), lse, entropy, and
    the gradient with respect to the logits."""
    hl, Wl, bl = (a.astype(np.longdouble) for a in (h, W, bias))
    z = hl @ Wl.T + bl
    loss, g, lse, entropy = reference.cross_entropy_options(
        z, y, reduction=reduction, ignore_index=-100, **opts
    )
    return loss, (g @ Wl, g.T @ hl, g.sum(axis=0)), lse, entropy, g


def _logit_rounding(h, W, bias):
    """``dz_ij / u``: the bound on each logit's rounding, in units of u."""
    d = h.shape[1]
    return (d + 2) * (np.abs(h).astype(float) @ np.abs(W).T.astype(float) + np.abs(bias))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 61])
@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_linear_cross_entropy_matches_the_materialized_form(dtype, name, chunk_size, backend):
    rng = np.random.default_rng(abs(hash((name, chunk_size))) % 2**32)
    n, d, v = 23, 9, 61
    h, W, bias, y = _problem(rng, n, d, v, dtype)
    opts = _options(name, v, rng)
    u = _u(dtype)
    for reduction in ("none", "sum", "mean"):
        loss, (dh, dW, db), lse, ent = sn.linear_cross_entropy(
            h, W, y, bias=bias, reduction=reduction, ignore_index=-100, chunk_size=chunk_size,
            return_grad=True, return_lse=True, return_entropy=True, backend=backend, **opts,
        )  # fmt: skip
        assert loss.dtype == dh.dtype == dW.dtype == db.dtype == lse.dtype == np.dtype(dtype)
        ref_loss, (rdh, rdW, rdb), rlse, rent, g = _reference(h, W, bias, y, reduction, opts)
        dz = _logit_rounding(h, W, bias).max(axis=1)  # per row, in u
        lam = opts.get("z_loss", 0.0)
        own = 11 + 2 * np.log2(v)
        lipschitz = 2 + 2 * lam * np.abs(rlse.astype(float))
        if reduction == "none":
            bound = (own * np.abs(ref_loss.astype(float)) + lipschitz * dz) * u
            assert np.all(np.abs(loss - ref_loss) <= bound)
        else:
            rows = np.abs(reference.cross_entropy_options(
                (h.astype(np.longdouble) @ W.T.astype(np.longdouble) + bias), y,
                reduction="none", ignore_index=-100, **opts)[0].astype(float))  # fmt: skip
            scale = 1.0 / max(1, np.count_nonzero(y != -100)) if reduction == "mean" else 1.0
            if reduction == "mean" and "class_weights" in opts:
                scale = 1.0 / np.sum(opts["class_weights"][y[y != -100]])
            bound = scale * np.sum(own * rows + lipschitz * dz) * u + n * u * abs(float(ref_loss))
            assert abs(float(loss) - float(ref_loss)) <= bound
        assert np.all(np.abs(lse - rlse) <= (4 + np.log2(v)) * u * np.abs(rlse) + dz * u)
        # the entropy changes by at most 2 max dz per row under the logits' rounding
        assert np.all(np.abs(ent - rent) <= (16 + 2 * np.log2(v)) * u * rent + 4 * dz * u)
        # Gradients: e_G relative to |G|'s two terms, then the products' own rounding.
        ag = np.abs(g.astype(float))
        e_g = (16 + 2 * np.log2(v) + 4 * dz[:, None]) * u
        magnitude = ag + np.abs(g.astype(float)).sum(axis=1, keepdims=True) / v + 1e-300
        for got, want, scale in (
            (dh, rdh, (e_g * magnitude) @ np.abs(W) + (v + 2) * u * magnitude @ np.abs(W)),
            (dW, rdW, (e_g * magnitude).T @ np.abs(h) + (n + 2) * u * magnitude.T @ np.abs(h)),
            (db, rdb, (e_g * magnitude).sum(axis=0) + (n + 2) * u * magnitude.sum(axis=0)),
        ):
            assert np.all(np.abs(got - want) <= 2 * scale), name


@pytest.mark.parametrize("name", ["plain", "smoothed", "weighted", "z_loss"])
def test_linear_cross_entropy_keeps_its_error_relative_to_the_loss_under_an_offset(name):
    """A common offset of the logits through the bias (1e4, in float32): the loss stays
    within the bound, which holds the bias's rounding ``u |b|`` but not ``u |b|`` times
    the vocabulary, as ``lse - z_t`` formed from the rounded lse would."""
    rng = np.random.default_rng(7)
    h, W, bias, y = _problem(rng, 40, 16, 300, np.float32, offset=1e4, ignored=0)
    opts = _options(name, 300, rng)
    loss = sn.linear_cross_entropy(h, W, y, bias=bias, reduction="none", chunk_size=64, **opts)
    ref = _reference(h, W, bias, y, "none", opts)[0].astype(float)
    dz = _logit_rounding(h, W, bias).max(axis=1)
    lipschitz = 2 + 2 * opts.get("z_loss", 0.0) * 1.1e4
    bound = ((11 + 2 * np.log2(300)) * ref + lipschitz * dz) * _u(np.float32)
    assert np.all(np.abs(loss - ref) <= bound)


@pytest.mark.parametrize("name", ["plain", "smoothed", "weighted", "capped", "all"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_gradients_match_finite_differences(name, chunk_size):
    rng = np.random.default_rng(3)
    h, W, bias, y = _problem(rng, 6, 4, 13, np.float64, ignored=1)
    opts = _options(name, 13, rng)

    def loss_of(h, W, bias):
        return float(sn.linear_cross_entropy(
            h, W, y, bias=bias, ignore_index=-100, chunk_size=chunk_size, **opts))  # fmt: skip

    _, grads = sn.linear_cross_entropy(
        h, W, y, bias=bias, ignore_index=-100, chunk_size=chunk_size, return_grad=True, **opts
    )
    step = 1e-6
    for k, arg in enumerate((h, W, bias)):
        numeric = np.zeros_like(arg)
        for index in np.ndindex(arg.shape):
            args = [h.copy(), W.copy(), bias.copy()]
            args[k][index] += step
            up = loss_of(*args)
            args[k][index] -= 2 * step
            numeric[index] = (up - loss_of(*args)) / (2 * step)
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-6, atol=1e-8)


def test_cross_entropy_options_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((30, 17)) * 3
    y = rng.integers(0, 17, 30)
    y[4] = -100
    w = rng.uniform(0.1, 2.0, 17)
    for reduction in ("mean", "sum", "none"):
        xt = torch.tensor(x, requires_grad=True)
        expected = torch.nn.functional.cross_entropy(
            xt, torch.tensor(y), weight=torch.tensor(w), label_smoothing=0.1, reduction=reduction
        )
        expected.sum().backward()
        loss, grad = sn.cross_entropy(
            x, y, class_weights=w, label_smoothing=0.1, ignore_index=-100,
            reduction=reduction, return_grad=True,
        )  # fmt: skip
        np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", ["numpy", "cpu", "parallel"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_cross_entropy_options_against_the_oracle_over_offsets(backend, name):
    """Componentwise in units of u, relative to each row's loss, for logits shifted by
    up to 1e6 in float32 (no matrix product: the input is the rounded logits)."""
    rng = np.random.default_rng(5)
    u, v = _u(np.float32), 257
    opts = _options(name, v, rng)
    for offset in (0.0, 1e3, 1e6):
        if "softcap" in opts and offset:
            continue  # a cap maps every large offset to the same capped logits
        x = (rng.standard_normal((19, v)) * 4 + offset).astype(np.float32)
        y = rng.integers(0, v, 19)
        loss, grad, lse, ent = sn.cross_entropy(
            x, y, reduction="none", return_grad=True, return_lse=True, return_entropy=True,
            backend=backend, **opts,
        )  # fmt: skip
        rl, rg, rlse, rent = (
            a.astype(float)
            for a in reference.cross_entropy_options(
                x.astype(np.longdouble), y, reduction="none", **opts
            )
        )
        lam = opts.get("z_loss", 0.0)
        own = (11 + 2 * np.log2(v)) * (rl + 2 * lam * rlse**2)
        assert np.all(np.abs(loss - rl) <= own * u), offset
        assert np.all(np.abs(lse - rlse) <= (4 + np.log2(v)) * u * np.abs(rlse))
        assert np.all(np.abs(ent - rent) <= (16 + 2 * np.log2(v)) * u * rent + 1e-30)
        terms, spread = _gradient_terms(x.astype(np.longdouble), y, opts, rlse)
        assert np.all(np.abs(grad - rg) <= ((16 + 2 * np.log2(v)) * terms + spread) * u)


def _gradient_terms(x, y, opts, lse):
    """``(a p_j + c w_j + b [j = t]) * slope_j``, the sum of the magnitudes of the
    gradient's terms (``reduction="none"``), the scale of its error; and ``a p_j (m -
    z_j) * slope_j``, what the rounding of ``z_j - m`` adds (a relative error ``u (m -
    z_j)`` of ``exp(z_j - m)``, the "spread" of :func:`softmax_numba.softmax`), with
    the slope's own rounding under a cap."""
    v, eps, lam = x.shape[1], opts.get("label_smoothing", 0.0), opts.get("z_loss", 0.0)
    w = opts.get("class_weights", np.ones(v))
    cap = opts.get("softcap")
    z = x if cap is None else cap * np.tanh(x / cap)
    p = reference.softmax(z).astype(float)
    b = (1 - eps) * w[y]
    a = b + eps * np.sum(w) / v + 2 * lam * np.abs(lse)
    terms = a[:, None] * p + eps * w / v
    terms[np.arange(len(y)), y] += b
    z = z.astype(float)
    spread = a[:, None] * p * (np.max(z, axis=1, keepdims=True) - z)
    if cap is None:
        return terms, spread
    # The slope 1 - (z/c)^2 is within about 6 u (z/c)^2 of itself, not relative to it
    # (the rounding of tanh and of the square, cancelling near a cap).
    slope = 1 - (z / cap) ** 2
    return terms * slope, spread * slope + terms * 6 * (z / cap) ** 2


def test_cross_entropy_options_give_the_plain_results_when_off():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 40)).astype(np.float32)
    y = rng.integers(0, 40, 12)
    for kwargs in ({}, {"label_smoothing": 0.3, "ignore_index": 3, "reduction": "sum"}):
        loss, grad = sn.cross_entropy(x, y, return_grad=True, **kwargs)
        loss2, grad2, lse = sn.cross_entropy(x, y, return_grad=True, return_lse=True, **kwargs)
        np.testing.assert_allclose(loss2, loss, rtol=8 * _u(np.float32))
        np.testing.assert_allclose(grad2, grad, rtol=64 * _u(np.float32), atol=1e-9)
        np.testing.assert_allclose(lse, sn.logsumexp(x), rtol=4 * _u(np.float32))


def test_cross_entropy_options_may_overwrite_the_logits():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((10, 33))
    y = rng.integers(0, 33, 10)
    opts = {"softcap": 2.0, "z_loss": 0.1, "label_smoothing": 0.1}
    loss, grad = sn.cross_entropy(x, y, return_grad=True, **opts)
    logits = x.copy()
    loss2, grad2 = sn.cross_entropy(logits, y, return_grad=True, grad_out=logits, **opts)
    assert grad2 is logits
    assert loss2 == loss
    np.testing.assert_array_equal(grad2, grad)


def test_the_input_is_not_written_without_a_gradient():
    x = np.linspace(-50, 50, 64).reshape(4, 16)
    before = x.copy()
    sn.cross_entropy(x, np.arange(4), softcap=5.0)
    np.testing.assert_array_equal(x, before)


def test_leading_axes_and_an_all_ignored_batch():
    rng = np.random.default_rng(4)
    h = rng.standard_normal((2, 3, 5))
    W = rng.standard_normal((11, 5))
    y = rng.integers(0, 11, (2, 3))
    loss, (dh, _, dbias), lse = sn.linear_cross_entropy(
        h, W, y, reduction="none", return_grad=True, return_lse=True
    )
    assert loss.shape == lse.shape == (2, 3) and dh.shape == h.shape and dbias is None
    np.testing.assert_allclose(loss, sn.cross_entropy(h @ W.T, y, reduction="none"), rtol=1e-13)
    ignored = np.full((2, 3), -1)
    loss, (dh, dW, _) = sn.linear_cross_entropy(h, W, ignored, ignore_index=-1, return_grad=True)
    assert np.isnan(loss)
    assert not dh.any() and not dW.any()
    assert sn.linear_cross_entropy(h, W, ignored, ignore_index=-1, reduction="sum") == 0


def test_memory_stays_within_two_chunks(monkeypatch):
    """Beyond the inputs and the gradients, at most two buffers of
    ``config.CHUNKED_LOSS_BYTES`` (and a few vectors per row): the logits (here 4 MiB
    each, for the loss and again for the gradient) never exist whole."""
    monkeypatch.setattr(config, "CHUNKED_LOSS_BYTES", 64 << 10)
    rng = np.random.default_rng(0)
    n, d, v = 512, 32, 2048
    h, W, bias, y = _problem(rng, n, d, v, np.float32)
    kwargs = {"bias": bias, "ignore_index": -100, "return_grad": True}
    for chunk_size in (None, 300):
        # Once first: compilation, and the one-time import of SciPy's BLAS wrappers.
        sn.linear_cross_entropy(h, W, y, chunk_size=chunk_size, **kwargs)
        tracemalloc.start()
        sn.linear_cross_entropy(h, W, y, chunk_size=chunk_size, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        gradients = h.nbytes + W.nbytes + bias.nbytes
        per_row = 16 * n * 8
        assert peak <= gradients + 2 * config.CHUNKED_LOSS_BYTES + per_row + (256 << 10)
        assert peak < n * v * 4  # less than the logits alone


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((4, 5), (7, 6), (4,)), {}, ValueError, "h must be"),
        (((4, 5), (7, 5), (3,)), {}, ValueError, "target must have shape"),
        (((4, 5), (7, 5), (4,)), {"bias": np.zeros(6)}, ValueError, "bias must have shape"),
        (((4, 5), (7, 5), (4,)), {"chunk_size": 0}, ValueError, "chunk_size"),
        (((4, 5), (7, 5), (4,)), {"chunk_size": 8}, ValueError, "chunk_size"),
        (((4, 5), (7, 5), (4,)), {"chunk_size": 2.5}, ValueError, "chunk_size"),
        (((4, 5), (7, 5), (4,)), {"z_loss": -1.0}, ValueError, "z_loss"),
        (((4, 5), (7, 5), (4,)), {"softcap": 0.0}, ValueError, "softcap"),
        (((4, 5), (7, 5), (4,)), {"class_weights": np.ones(6)}, ValueError, "class_weights"),
        (((4, 5), (7, 5), (4,)), {"class_weights": -np.ones(7)}, ValueError, ">= 0"),
        (((4, 5), (7, 5), (4,)), {"backend": "cuda"}, ValueError, "backend"),
        (((4, 5), (0, 5), (4,)), {}, ValueError, "no class"),
    ],
)
def test_bad_input_is_refused(args, kwargs, error, match):
    (n, d), (v, dw), target_shape = args
    h, W = np.ones((n, d)), np.ones((v, dw))
    with pytest.raises(error, match=match):
        sn.linear_cross_entropy(h, W, np.zeros(target_shape, int), **kwargs)


def test_bad_dtypes_and_targets_are_refused():
    h, W = np.ones((4, 5)), np.ones((7, 5))
    with pytest.raises(TypeError, match="one dtype"):
        sn.linear_cross_entropy(h.astype(np.float32), W, np.zeros(4, int))
    with pytest.raises(TypeError, match="float32 or float64"):
        sn.linear_cross_entropy(h.astype(np.float16), W.astype(np.float16), np.zeros(4, int))
    with pytest.raises(TypeError, match="integer class indices"):
        sn.linear_cross_entropy(h, W, np.zeros(4))
    with pytest.raises(ValueError, match="out of range"):
        sn.linear_cross_entropy(h, W, np.array([0, 1, 7, 2]))
    with pytest.raises(NotImplementedError, match="class-index targets"):
        sn.cross_entropy(np.ones((2, 3)), np.full((2, 3), 1 / 3), z_loss=0.1)


def test_the_benchmark_runs_end_to_end(tmp_path):
    from experiments.measure import linear_ce

    table = linear_ce.run(tmp_path, quick=True, progress=False).read()
    assert {"products", "ours", "numpy"} <= set(table.candidate)
    assert (table.median_s > 0).all() and (table.extra_mib.astype(float) >= 0).all()
    assert (table[table.candidate == "products"].ratio_to_products == 1).all()
    assert "| 256x64x2048 | ours |" in (tmp_path / "LINEAR.md").read_text()
    assert (tmp_path / "linear_ce.meta.json").exists()


def test_without_scipy_the_gradient_sums_through_a_scratch_buffer(monkeypatch):
    """The sums of ``dW`` over blocks of rows by ``gemm`` (SciPy) and by matmul into a
    scratch buffer (without SciPy) agree; several blocks of rows and of classes."""
    from softmax_numba import _linear

    monkeypatch.setattr(config, "CHUNKED_LOSS_BYTES", 8 << 10)
    rng = np.random.default_rng(8)
    h, W, bias, y = _problem(rng, 70, 12, 300, np.float64)
    kwargs = {"bias": bias, "ignore_index": -100, "return_grad": True, "label_smoothing": 0.1}
    for chunk_size in (None, 300, 64):
        with_gemm = sn.linear_cross_entropy(h, W, y, chunk_size=chunk_size, **kwargs)
        with monkeypatch.context() as m:
            m.setattr(_linear, "_gemm_accumulate", lambda *args: False)
            without = sn.linear_cross_entropy(h, W, y, chunk_size=chunk_size, **kwargs)
        assert with_gemm[0] == without[0]
        for a, b in zip(with_gemm[1], without[1], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        reference_dW = _reference(h, W, bias, y, "mean", {"label_smoothing": 0.1})[1][1]
        np.testing.assert_allclose(without[1][1], reference_dW, rtol=1e-10, atol=1e-14)
