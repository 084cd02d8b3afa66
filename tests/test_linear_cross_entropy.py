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

import itertools
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
        for got, want, bound in zip(
            (dh, dW, db), (rdh, rdW, rdb), _gradient_bounds(h, W, g, dz, u), strict=True
        ):
            assert np.all(np.abs(got - want) <= bound), name


def _gradient_bounds(h, W, g, dz, u):
    """The bounds on ``(dh, dW, dbias)``: ``e_G`` relative to ``|G|``'s two terms, then
    the products' own rounding (twice the first-order bound)."""
    h, W = np.abs(h.astype(float)), np.abs(W.astype(float))
    n, v = g.shape
    ag = np.abs(g.astype(float))
    e_g = (16 + 2 * np.log2(v) + 4 * dz[:, None]) * u
    magnitude = ag + ag.sum(axis=1, keepdims=True) / v + 1e-300
    return (
        2 * ((e_g * magnitude) @ W + (v + 2) * u * magnitude @ W),
        2 * ((e_g * magnitude).T @ h + (n + 2) * u * magnitude.T @ h),
        2 * ((e_g * magnitude).sum(axis=0) + (n + 2) * u * magnitude.sum(axis=0)),
    )


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
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16"):
        sn.linear_cross_entropy(h.astype(np.complex64), W.astype(np.complex64), np.zeros(4, int))
    with pytest.raises(TypeError, match="one dtype"):
        sn.linear_cross_entropy(h.astype(np.float16), W.astype(np.float32), np.zeros(4, int))
    for threshold in (-0.1, 1.0, "0.1"):
        with pytest.raises(ValueError, match="grad_threshold"):
            sn.linear_cross_entropy(h, W, np.zeros(4, int), grad_threshold=threshold)
    with pytest.raises(TypeError, match="integer class indices"):
        sn.linear_cross_entropy(h, W, np.zeros(4))
    with pytest.raises(ValueError, match="out of range"):
        sn.linear_cross_entropy(h, W, np.array([0, 1, 7, 2]))


def test_the_benchmark_runs_end_to_end(tmp_path):
    from experiments.measure import linear_ce

    table = linear_ce.run(tmp_path, quick=True, progress=False).read()
    assert {"products-numpy", "ours-numpy"} <= set(table.candidate)
    assert (table.median_s > 0).all() and (table.extra_mib.astype(float) >= 0).all()
    assert (table[table.candidate == "products-numpy"].ratio_to_products == 1).all()
    report = (tmp_path / "LINEAR.md").read_text()
    assert "| 256x64x2048 | float32 | gaussian | ours-numpy |" in report
    assert "within 1.15x of its library's products" in report
    assert (tmp_path / "linear_ce.meta.json").exists()


def test_without_scipy_the_gradient_sums_through_a_scratch_buffer(monkeypatch):
    """The sums of ``dW`` and ``dh`` over tiles by ``gemm`` (SciPy) and by matmul into a
    scratch buffer (without SciPy) agree; several blocks of rows and of classes."""
    from softmax_numba import _linear_products

    monkeypatch.setattr(config, "LINEAR_CE_WORKSPACE_BYTES", 8 << 10)
    rng = np.random.default_rng(8)
    h, W, bias, y = _problem(rng, 70, 12, 300, np.float64)
    kwargs = {"bias": bias, "ignore_index": -100, "return_grad": True, "label_smoothing": 0.1}
    for chunk_size in (None, 300, 64):
        with_gemm = sn.linear_cross_entropy(h, W, y, chunk_size=chunk_size, **kwargs)
        with monkeypatch.context() as m:
            m.setattr(_linear_products.NumpyProducts, "_blas", None, raising=False)
            m.setattr(_linear_products.NumpyProducts, "__init__", lambda self: None)
            without = sn.linear_cross_entropy(h, W, y, chunk_size=chunk_size, **kwargs)
        assert with_gemm[0] == without[0]
        for a, b in zip(with_gemm[1], without[1], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        reference_dW = _reference(h, W, bias, y, "mean", {"label_smoothing": 0.1})[1][1]
        np.testing.assert_allclose(without[1][1], reference_dW, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------- memory
def _lowered(a, dtype):
    """``a`` rounded to ``dtype`` (bfloat16 from ml_dtypes)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return a.astype(ml_dtypes.bfloat16)
    return a.astype(dtype)


def _ceiling(h, W, bias, n_rows: int) -> int:
    """What a call may hold: its gradients (of the inputs' sizes), the workspace, a few
    float64 vectors per row and per class (states, coefficients, the bias and its
    gradient in float32), and for bfloat16/float16 the float32 sum of ``dh``."""
    gradients = h.nbytes + W.nbytes + bias.nbytes
    low = h.dtype.itemsize == 2
    per_row, per_class = 16 * n_rows * 8, 4 * W.shape[0] * 8
    return (
        gradients
        + config.LINEAR_CE_WORKSPACE_BYTES
        + per_row
        + per_class
        + (h.size * 4 if low else 0)
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_memory_stays_within_the_workspace(dtype, monkeypatch):
    """Beyond the inputs and the gradients, ``config.LINEAR_CE_WORKSPACE_BYTES`` (here
    64 KiB against 2 MiB of logits) and a few vectors, whatever the order of the
    sweep; NumPy's allocations seen by ``tracemalloc``."""
    monkeypatch.setattr(config, "LINEAR_CE_WORKSPACE_BYTES", 64 << 10)
    rng = np.random.default_rng(0)
    n, d, v = 256, 16, 2048
    h, W, bias, y = (_lowered(a, dtype) if a.dtype.kind == "f" else a
                     for a in _problem(rng, n, d, v, np.float32))  # fmt: skip
    kwargs = {"bias": bias, "ignore_index": -100, "return_grad": True}
    for extra in ({}, {"chunk_size": 300}, {"grad_threshold": 1e-3}):
        sn.linear_cross_entropy(h, W, y, **kwargs, **extra)  # compilation
        tracemalloc.start()
        sn.linear_cross_entropy(h, W, y, **kwargs, **extra)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= _ceiling(h, W, bias, n), extra
        assert peak < n * v * 4 / 2  # less than half the logits


def test_memory_of_torch_tensors_stays_within_the_workspace(monkeypatch):
    """The same ceiling with torch tensors, whose products run in torch: NumPy's
    buffers by ``tracemalloc``, torch's by its profiler's allocator events."""
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile

    monkeypatch.setattr(config, "LINEAR_CE_WORKSPACE_BYTES", 64 << 10)
    rng = np.random.default_rng(1)
    n, d, v = 256, 16, 2048
    h, W, bias, y = (torch.from_numpy(a) for a in _problem(rng, n, d, v, np.float32))
    sn.linear_cross_entropy(h, W, y, bias=bias, ignore_index=-100, return_grad=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        tracemalloc.start()  # inside: the profiler's own bookkeeping is not ours
        sn.linear_cross_entropy(h, W, y, bias=bias, ignore_index=-100, return_grad=True)
        _, numpy_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    held = torch_peak = 0
    events = [e for e in prof.events() if e.name == "[memory]"]
    for event in sorted(events, key=lambda e: e.time_range.start):
        held += event.cpu_memory_usage
        torch_peak = max(torch_peak, held)
    arrays = [a.numpy() for a in (h, W, bias)]
    assert numpy_peak + torch_peak <= _ceiling(*arrays, n)


@pytest.mark.parametrize("widened", [False, True])
def test_the_plan_holds_the_workspace_at_vocabulary_sizes(widened):
    """Tiles of logits (and, for low-precision inputs, the float32 block of ``h`` and
    two chunks of ``W``) within the workspace for LLM shapes, covering the arrays."""
    from softmax_numba._linear_sweep import plan_tiles

    budget = config.LINEAR_CE_WORKSPACE_BYTES // 4
    for rows, d, v in itertools.product((1, 4096, 16384), (1024, 4096), (32768, 131072, 262144)):
        tiles = plan_tiles(rows, v, d, 4, widened, False)
        width = d if widened else 0
        held = tiles.block * tiles.chunk + (tiles.block + 2 * tiles.chunk) * width
        assert held <= budget, (rows, d, v)
        assert 1 <= tiles.block <= rows and 1 <= tiles.chunk <= v
        assert tiles.one_chunk == (tiles.chunk == v and not widened)


# ----------------------------------------------------------------------------- filtering
@pytest.mark.parametrize("name", ["plain", "smoothed", "capped"])
@pytest.mark.parametrize("chunk_size", [None, 50])
def test_gradient_filtering_holds_its_stated_bound(name, chunk_size, monkeypatch):
    """With ``grad_threshold = tau`` the loss is the exact sweep's, bit for bit, and the
    gradients differ from the exact ones by at most what the skipped entries (each at
    most ``tau a_i``, ``a_i = 1 / count`` here) can carry: ``tau a @ |W|`` for ``dh``,
    ``tau |h|^T a`` for ``dW``, ``tau sum(a)`` for ``dbias``, on top of the rounding
    bound.  A large ``tau`` must skip something (the results differ)."""
    monkeypatch.setattr(config, "LINEAR_CE_WORKSPACE_BYTES", 8 << 10)
    rng = np.random.default_rng(5)
    n, d, v = 60, 8, 500
    h, W, bias, y = _problem(rng, n, d, v, np.float64)
    opts = _options(name, v, rng)
    kwargs = {"bias": bias, "ignore_index": -100, "return_grad": True, "chunk_size": chunk_size}
    exact, exact_grads = sn.linear_cross_entropy(h, W, y, **kwargs, **opts)
    _ref_loss, ref_grads, _, _, g = _reference(h, W, bias, y, "mean", opts)
    dz = _logit_rounding(h, W, bias).max(axis=1)
    a = np.where(y != -100, 1.0 / np.count_nonzero(y != -100), 0.0)
    for tau in (1e-4, 0.05):
        loss, grads = sn.linear_cross_entropy(h, W, y, grad_threshold=tau, **kwargs, **opts)
        assert loss == exact
        dropped = (
            tau * np.outer(a, np.abs(W).sum(axis=0)),
            tau * np.outer(np.ones(v), np.abs(h).T @ a),
            tau * a.sum() * np.ones(v),
        )
        rounding = _gradient_bounds(h, W, g, dz, _u(np.float64))
        for got, want, skip, bound in zip(grads, ref_grads, dropped, rounding, strict=True):
            assert np.all(np.abs(got - want) <= bound + skip), (name, tau)
    assert not np.array_equal(grads[1], exact_grads[1])  # tau = 0.05 skipped tiles


# ----------------------------------------------------------------------------- low precision
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_low_precision_inputs_are_widened_a_block_at_a_time(dtype, library, monkeypatch):
    """bfloat16 and float16 ``h``/``W``/``bias`` compute in float32 a tile at a time: the
    loss within the float32 bound of the same rounded inputs, the gradients within it
    plus their own rounding to the input's dtype, in which they come back."""
    monkeypatch.setattr(config, "LINEAR_CE_WORKSPACE_BYTES", 16 << 10)
    rng = np.random.default_rng(2)
    n, d, v = 40, 16, 300
    h, W, bias, y = (_lowered(a, dtype) if a.dtype.kind == "f" else a
                     for a in _problem(rng, n, d, v, np.float32))  # fmt: skip
    args = (h, W, y)
    if library == "torch":
        torch = pytest.importorskip("torch")
        from softmax_numba._interop import _torch_out

        args, bias = tuple(_torch_out(a, None) for a in args), _torch_out(bias, None)
    loss, grads = sn.linear_cross_entropy(*args, bias=bias, ignore_index=-100, return_grad=True,
                                          label_smoothing=0.1)  # fmt: skip
    if library == "torch":
        assert all(isinstance(x, torch.Tensor) for x in (loss, *grads))
        loss, grads = loss.numpy(), [_torch_in_numpy(x) for x in grads]
        bias = _torch_in_numpy(bias)
    assert all(x.dtype == h.dtype for x in grads) and loss.dtype == np.float32
    wide = [a.astype(np.float32) for a in (h, W, bias)]
    ref_loss, ref_grads, _, _, g = _reference(
        *wide[:2], wide[2], y, "mean", {"label_smoothing": 0.1}
    )
    u32, u_low = _u(np.float32), 2.0**-8 if dtype == "bfloat16" else 2.0**-11
    dz = _logit_rounding(*wide).max(axis=1)
    assert (
        abs(float(loss) - float(ref_loss))
        <= ((13 + 2 * np.log2(v)) * abs(float(ref_loss)) + 2 * dz.max()) * u32
    )
    for got, want, bound in zip(
        grads, ref_grads, _gradient_bounds(wide[0], wide[1], g, dz, u32), strict=True
    ):
        want = want.astype(float)
        assert np.all(
            np.abs(got.astype(float) - want) <= bound * (1 + u_low) + u_low * np.abs(want)
        )


def _torch_in_numpy(t):
    from softmax_numba._interop import _torch_in

    return _torch_in("test", t, "t")


def test_torch_tensors_run_their_products_in_torch(monkeypatch):
    """Tensors given to the plain function multiply with torch, NumPy arrays with NumPy,
    and both results keep the bound."""
    torch = pytest.importorskip("torch")
    from softmax_numba import _linear_products

    calls = {"numpy": 0, "torch": 0}
    for cls in (_linear_products.NumpyProducts, _linear_products.TorchProducts):
        product = cls.product

        def counted(self, *args, _product=product):
            calls[self.name] += 1
            return _product(self, *args)

        monkeypatch.setattr(cls, "product", counted)
    rng = np.random.default_rng(4)
    h, W, bias, y = _problem(rng, 30, 8, 200, np.float64)
    ref_loss, ref_grads, _, _, g = _reference(h, W, bias, y, "mean", {})
    dz = _logit_rounding(h, W, bias).max(axis=1)
    tensors = tuple(torch.from_numpy(a) for a in (h, W, y, bias))
    for library, arrays in (("numpy", (h, W, y, bias)), ("torch", tensors)):
        before = dict(calls)
        loss, grads = sn.linear_cross_entropy(*arrays[:3], bias=arrays[3], ignore_index=-100,
                                              chunk_size=64, return_grad=True)  # fmt: skip
        assert calls[library] > before[library]
        assert sum(calls.values()) - sum(before.values()) == calls[library] - before[library]
        for got, want, bound in zip(
            grads, ref_grads, _gradient_bounds(h, W, g, dz, _u(np.float64)), strict=True
        ):
            assert np.all(np.abs(np.asarray(got) - want) <= bound)
        own = (11 + 2 * np.log2(200)) * abs(float(ref_loss)) + 2 * dz.max()
        assert abs(float(loss) - float(ref_loss)) <= own * _u(np.float64)
