"""``softmax_numba.torch``: autograd functions whose gradients pass
``torch.autograd.gradcheck`` in float64 and whose values are the plain API's."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

import softmax_numba as sn

torch = pytest.importorskip("torch", reason="torch is not installed (the [torch] extra)")
snt = pytest.importorskip("softmax_numba.torch")
F = torch.nn.functional

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]  # fmt: skip

#: name -> (ours, the plain API on a detached tensor); the sparse maps get spread-out
#: logits so that their supports have several entries and no ties.
ROW_MAPS = {
    "softmax": (lambda x: snt.softmax(x, dim=0), lambda x: sn.softmax(x, axis=0)),
    "log_softmax": (lambda x: snt.log_softmax(x), lambda x: sn.log_softmax(x)),
    "sparsemax": (lambda x: snt.sparsemax(x), lambda x: sn.sparsemax(x)),
    "entmax15": (lambda x: snt.entmax15(x, dim=0), lambda x: sn.entmax15(x, axis=0)),
    "entmax_bisect": (
        lambda x: snt.entmax_bisect(x, alpha=1.7, n_iter=80),
        lambda x: sn.entmax_bisect(x, alpha=1.7, n_iter=80),
    ),
    "logsumexp": (lambda x: snt.logsumexp(x, 1), lambda x: sn.logsumexp(x, axis=1)),
    "logsumexp[tuple, keepdim]": (
        lambda x: snt.logsumexp(x, (0, 1), keepdim=True),
        lambda x: sn.logsumexp(x, axis=(0, 1), keepdims=True),
    ),
}


def _logits(shape, device, scale=3.0):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(shape, dtype=torch.float64, generator=generator) * scale
    return x.to(device).requires_grad_()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ROW_MAPS)
def test_row_maps_pass_gradcheck_and_equal_the_plain_api(name, device):
    ours, plain = ROW_MAPS[name]
    x = _logits((5, 7), device)
    assert torch.autograd.gradcheck(ours, (x,), eps=1e-6, atol=1e-6)
    got = ours(x)
    assert got.requires_grad and got.device == x.device
    torch.testing.assert_close(got.detach(), plain(x.detach()), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_passes_gradcheck_and_equals_torch(reduction, label_smoothing, device):
    x = _logits((2, 5, 3), device)  # classes along dim 1, as torch has them
    target = torch.tensor([[0, 4, -100], [2, 2, 1]], device=device)
    options = {"reduction": reduction, "label_smoothing": label_smoothing}
    assert torch.autograd.gradcheck(lambda x: snt.cross_entropy(x, target, **options), (x,))
    torch.testing.assert_close(
        snt.cross_entropy(x, target, **options), F.cross_entropy(x, target, **options)
    )


def test_cross_entropy_with_probability_targets_and_a_1d_input():
    x = _logits((4, 6), "cpu")
    q = torch.softmax(torch.randn(4, 6, dtype=torch.float64), -1)
    assert torch.autograd.gradcheck(lambda x: snt.cross_entropy(x, q), (x,))
    torch.testing.assert_close(snt.cross_entropy(x, q), F.cross_entropy(x, q))
    v = _logits((6,), "cpu")
    torch.testing.assert_close(
        snt.cross_entropy(v, torch.tensor(3)), F.cross_entropy(v, torch.tensor(3))
    )


def test_gradients_match_torch_in_float32():
    x = _logits((8, 33), "cpu").detach().float().requires_grad_()
    w = torch.randn(8, 33)
    for ours, theirs in [(snt.softmax, torch.softmax), (snt.log_softmax, torch.log_softmax)]:
        (g_ours,) = torch.autograd.grad((ours(x, -1) * w).sum(), x)
        (g_theirs,) = torch.autograd.grad((theirs(x, -1) * w).sum(), x)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-6)


def test_a_non_contiguous_upstream_gradient():
    x = _logits((4, 6), "cpu")
    y = snt.softmax(x)
    dy = torch.randn(6, 4, dtype=torch.float64).t()  # a transposed view
    (got,) = torch.autograd.grad(y, x, dy)
    (want,) = torch.autograd.grad(torch.softmax(x, -1), x, dy)
    torch.testing.assert_close(got, want)


def _gradient_penalty(f, x, weight=10.0):
    """``x.grad`` of ``f(x)[..., 0].sum() + weight * |d f / d x|^2``: a second derivative
    (the penalty's gradient goes through the first derivative)."""
    x = x.detach().clone().requires_grad_()
    out = f(x)
    out = out.sum() if out.ndim == 0 else out.reshape(-1, out.shape[-1])[:, 0].sum()
    (gx,) = torch.autograd.grad(out, x, create_graph=True)
    (out + weight * (gx**2).sum()).backward()
    return x.grad


#: name -> (ours, torch's) for the gradient penalty of issue 26.
PENALTIES = {
    "log_softmax": (lambda x: snt.log_softmax(x, -1), lambda x: torch.log_softmax(x, -1)),
    "softmax": (lambda x: snt.softmax(x, 0), lambda x: torch.softmax(x, 0)),
    "logsumexp": (lambda x: snt.logsumexp(x, 1), lambda x: torch.logsumexp(x, 1)),
    "cross_entropy": (
        lambda x: snt.cross_entropy(x, torch.tensor([0, 4, -100]), label_smoothing=0.1),
        lambda x: F.cross_entropy(x, torch.tensor([0, 4, -100]), label_smoothing=0.1),
    ),
}


@pytest.mark.parametrize("name", PENALTIES)
def test_a_gradient_penalty_differentiates_the_gradient_as_torch_does(name):
    # Issue 26: the backward passes were once_differentiable, so the gradient came back
    # without a graph and the penalty's part of x.grad was silently dropped.
    ours, theirs = PENALTIES[name]
    x = _logits((3, 5), "cpu")
    torch.testing.assert_close(
        _gradient_penalty(ours, x), _gradient_penalty(theirs, x), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("name", ROW_MAPS)
def test_row_maps_pass_gradgradcheck(name):
    ours, _ = ROW_MAPS[name]
    assert torch.autograd.gradgradcheck(ours, (_logits((5, 7), "cpu"),), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sparsemax", "entmax15"])
def test_the_graph_building_backward_equals_the_kernel_backward(name):
    # With create_graph=True the vector-Jacobian product is computed in torch operations;
    # it must be the same derivative as our kernel's.
    ours, _ = ROW_MAPS[name]
    x = _logits((5, 7), "cpu")
    dy = torch.randn(7, 7, dtype=torch.float64)[:5]
    (kernel,) = torch.autograd.grad(ours(x), x, dy)
    (graph,) = torch.autograd.grad(ours(x), x, dy, create_graph=True)
    assert graph.requires_grad
    torch.testing.assert_close(graph, kernel, rtol=1e-13, atol=1e-15)


CE_OPTIONS = {
    "plain": {},
    "smoothed": {"label_smoothing": 0.2},
    "weight, z-loss, soft-cap": {"z_loss": 0.01, "softcap": 3.0, "weight": "w"},
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", CE_OPTIONS)
def test_cross_entropy_passes_gradgradcheck(reduction, options):
    x = _logits((2, 5, 3), "cpu")
    target = torch.tensor([[0, 4, -100], [2, 2, 1]])
    opts = dict(CE_OPTIONS[options], reduction=reduction)
    if "weight" in opts:
        opts["weight"] = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)

    def loss(x):
        return snt.cross_entropy(x, target, **opts)

    assert torch.autograd.gradgradcheck(loss, (x,))
    (kernel,) = torch.autograd.grad(loss(x).sum(), x)
    (graph,) = torch.autograd.grad(loss(x).sum(), x, create_graph=True)
    torch.testing.assert_close(graph, kernel, rtol=1e-12, atol=1e-15)


def test_cross_entropy_with_probability_targets_passes_gradgradcheck():
    q = torch.softmax(torch.randn(4, 6, dtype=torch.float64), -1)
    x = _logits((4, 6), "cpu")
    assert torch.autograd.gradgradcheck(
        lambda x: snt.cross_entropy(x, q, label_smoothing=0.1), (x,)
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_takes_torchs_weight_and_the_liger_options(reduction):
    x = _logits((6, 5), "cpu")
    target = torch.tensor([0, 4, -100, 2, 2, 1])
    w = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    options = {"reduction": reduction, "label_smoothing": 0.1}
    torch.testing.assert_close(
        snt.cross_entropy(x, target, w, **options), F.cross_entropy(x, target, w, **options)
    )
    liger = {"z_loss": 0.01, "softcap": 3.0}
    want = sn.cross_entropy(
        x.detach(), target, class_weights=w, ignore_index=-100, **options, **liger
    )
    torch.testing.assert_close(snt.cross_entropy(x, target, weight=w, **options, **liger), want)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy_passes_gradgradcheck(reduction):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(13, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(13, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 13, (2, 3), generator=g)
    y[0, 1] = -100
    w = torch.linspace(0.5, 2.0, 13, dtype=torch.float64)
    opts = {"reduction": reduction, "label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 3.0}

    def f(h, W, b):
        return snt.linear_cross_entropy(h, W, y, b, class_weights=w, **opts)

    assert torch.autograd.gradgradcheck(f, (h, W, b))


def test_importing_the_torch_module_without_torch_says_how_to_install_it():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import softmax_numba.torch\n"
        "except ImportError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install" in result.stdout and ".[torch]" in result.stdout, result.stderr


def test_the_backward_pass_runs_our_kernel(monkeypatch):
    calls = []
    real = sn.softmax_backward

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(sn, "softmax_backward", spy)
    x = _logits((3, 4), "cpu")
    snt.softmax(x).sum().backward()
    assert calls == [torch.Size([3, 4])]
    np.testing.assert_allclose(x.grad.numpy(), 0.0, atol=1e-15)


def test_the_forward_backward_benchmark_runs_end_to_end(tmp_path):
    from experiments.measure import torch_autograd

    table = torch_autograd.run(tmp_path, quick=True, progress=False).read()
    assert set(table.op) == set(torch_autograd.TRAFFIC)
    ours = table[table.engine == "ours"]
    assert (ours.gbps > 0).all() and (ours.ours_speedup == 1).all()
    assert set(table[table.op == "softmax"].engine) == {"ours", "torch"}
    report = (tmp_path / "TORCH.md").read_text()
    assert "| softmax | 64x1000 |" in report
    assert (tmp_path / "torch_autograd.meta.json").exists()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_linear_cross_entropy_passes_gradcheck_and_equals_torch(reduction, chunk_size):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(13, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(13, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 13, (2, 3), generator=g)
    y[0, 1] = -100
    opts = {"reduction": reduction, "label_smoothing": 0.1, "chunk_size": chunk_size}
    ours = snt.linear_cross_entropy(h, W, y, b, z_loss=1e-2, softcap=3.0, **opts)
    assert isinstance(ours, torch.Tensor) and ours.dtype == torch.float64

    def f(h, W, b):
        return snt.linear_cross_entropy(h, W, y, b, z_loss=1e-2, softcap=3.0, **opts)

    assert torch.autograd.gradcheck(f, (h, W, b))
    del opts["chunk_size"]
    expected = F.cross_entropy(F.linear(h, W, b).permute(0, 2, 1), y, **opts)
    got = snt.linear_cross_entropy(h, W, y, b, chunk_size=chunk_size, **opts)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)
    upstream = torch.rand_like(expected)
    want = torch.autograd.grad(expected, (h, W, b), upstream)
    have = torch.autograd.grad(got, (h, W, b), upstream)
    for a, e in zip(have, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", snt.__all__)
def test_the_torch_functions_document_their_parameters_and_their_examples_run(name):
    from tests.test_docstrings import documented_parameters, run_examples, sections

    func = getattr(snt, name)
    found = sections(func)
    assert {"Parameters", "Returns", "Examples"} <= set(found), f"{name}: {list(found)}"
    signature = set(inspect.signature(func).parameters)
    documented = documented_parameters(func)
    assert signature <= documented, f"{name}: {signature - documented} undocumented"
    assert run_examples(func).attempted > 0


@pytest.mark.parametrize(("reduction", "unit"), [("mean", True), ("mean", False), ("none", False)])
def test_linear_cross_entropy_of_bfloat16_tensors_returns_bfloat16_gradients(reduction, unit):
    """bfloat16 ``input`` and ``weight`` compute in float32 a tile at a time; the
    gradients come back in bfloat16, each within its rounding (``u = 2^-8``) of the
    float32 computation on the same values (whose own error is far below it); twice
    that for a mean scaled by an upstream gradient other than 1 (a second rounding)."""
    g = torch.Generator().manual_seed(2)
    h = torch.randn(6, 8, generator=g).bfloat16().requires_grad_()
    W = torch.randn(40, 8, generator=g).bfloat16().requires_grad_()
    y = torch.randint(0, 40, (6,), generator=g)
    loss = snt.linear_cross_entropy(h, W, y, reduction=reduction, chunk_size=16)
    upstream = torch.ones_like(loss) if unit else torch.rand_like(loss)
    dh, dW = torch.autograd.grad(loss, (h, W), upstream)
    roundings = 2 if reduction == "mean" and not unit else 1
    assert dh.dtype == dW.dtype == torch.bfloat16
    h32, W32 = (t.detach().float().requires_grad_() for t in (h, W))
    ref = F.cross_entropy(F.linear(h32, W32), y, reduction=reduction)
    want = torch.autograd.grad(ref, (h32, W32), upstream)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
    for got, exact in zip((dh, dW), want, strict=True):
        slack = 1e-5 * exact.abs().max()
        assert ((got.float() - exact).abs() <= roundings * 2.0**-8 * exact.abs() + slack).all()
