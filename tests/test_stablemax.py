"""StableMax, log_stablemax, stablemax_cross_entropy and stablemax_backward (issue 29,
item 5): the cases the registry's generic tests do not reach.

Every comparison with the oracle is componentwise within the op's own bound
(``Entry.errors``, ``softmax_numba.bounds``), from the same rounded input in higher
precision; the gradients are checked against central differences in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmax_numba as sn
from softmax_numba import _interop, _rows, registry

ENGINES = registry.BACKENDS
ENTRIES = {e.op: e for e in registry.ENTRIES if "stablemax" in e.op}


def check(entry, args, backend):
    """``entry`` on ``backend`` within its bound against the oracle, every output."""
    with np.errstate(all="ignore"):
        got = registry.outputs(entry.run(args, backend=backend))
        ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    for (err, allowed), g in zip(entry.errors(args, got, ref), got, strict=True):
        assert g.dtype == np.asarray(args[0]).dtype
        worst = int(np.argmax(err - allowed)) if err.size else 0
        assert np.all(err <= allowed), (entry.op, backend, worst, err[worst], allowed[worst])
    return got


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("backend", ENGINES)
def test_hand_values(backend):
    """``s(-1), s(0), s(1) = 1/2, 1, 2``: probabilities 1/7, 2/7, 4/7; the loss of the
    last class ``log(7/4)``; the gradient ``(p - onehot) / (1 + |x|)``."""
    x = np.array([[-1.0, 0.0, 1.0]])
    exact = np.array([[1, 2, 4]]) / 7
    u = 2.0**-53
    np.testing.assert_allclose(sn.stablemax(x, backend=backend), exact, rtol=12 * u, atol=0)
    np.testing.assert_allclose(
        sn.log_stablemax(x, backend=backend), np.log(exact), rtol=12 * u, atol=0
    )
    loss, grad = sn.stablemax_cross_entropy(
        x, np.array([2]), reduction="sum", return_grad=True, backend=backend
    )
    np.testing.assert_allclose(loss, np.log(7 / 4), rtol=12 * u)
    np.testing.assert_allclose(grad, [[1 / 14, 2 / 7, -3 / 14]], rtol=24 * u)


#: Rows that reach each branch of the ratios and the corners of the range: the max
#: below 0 (every ``r = (1 - m) / (1 - x)``), far below (``1 - m`` large), above with
#: negative entries, huge entries whose ``s`` sum overflows, subnormals, ties, a
#: near-certain row (``t`` far below ``u``).
def edge_rows(dtype) -> np.ndarray:
    big = float(np.finfo(dtype).max)
    rows = [
        [-3.0, -1.0, -2.5, -7.0, -1.0, -30.0],
        [-1e30, -2e30, -5e29, -1e31, -3e30, -1e30],
        [big / 2, big / 3, -big, 0.0, big / 4, -1.0],
        [big, big, big, big, big, big],
        [1e6, 1e6 + 1, 1e6 - 1, 1e6, 1e6 + 2, -1e6],
        [0.0, -1e30, -1e30, -3e30, -1e29, -1e30],
        [5e-324 if dtype == np.float64 else 1e-45, 0.0, -0.0, 2e-38, -2e-38, 1.0],
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    ]
    with np.errstate(over="ignore"):
        return np.array(rows, dtype=dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # bounds.spread of +-max rows
@pytest.mark.parametrize("op", sorted(ENTRIES))
@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_rows_within_the_bound(op, backend, dtype):
    x = edge_rows(dtype)
    entry = ENTRIES[op]
    args = entry.arguments(x, np.random.default_rng(2))
    if op == "stablemax_cross_entropy":
        args = (x, np.arange(x.shape[0]) % x.shape[1])
    check(entry, args, backend)


@pytest.mark.parametrize("backend", ENGINES)
def test_huge_logits_do_not_overflow(backend):
    """The sum of ``s(x_j)`` overflows; scaled by ``s(max)`` it does not."""
    for dtype in (np.float32, np.float64):
        big = np.finfo(dtype).max
        x = np.array([[big, big / 2, big / 4, -big]], dtype=dtype)
        p = sn.stablemax(x, backend=backend)
        np.testing.assert_allclose(p, [[4 / 7, 2 / 7, 1 / 7, 0]], rtol=40 * np.finfo(dtype).eps)
        assert np.all(np.isfinite(sn.log_stablemax(x, backend=backend)[:, :3]))


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_near_certain_log_probability_keeps_its_digits(backend, dtype):
    """``log p`` of the max is ``-log1p(t)`` with ``t`` far below ``u``: not 0, which
    ``log(stablemax(x))`` gives; relative to itself within the bound."""
    x = np.array([[0.0, -1e20, -3e20, -1e21], [5.0, -1e18, -1e18, -1e18]], dtype=dtype)
    entry = ENTRIES["log_stablemax"]
    (got,) = check(entry, (x,), backend)
    assert np.all(got[:, 0] < 0)
    assert np.all(np.log(sn.stablemax(x, backend=backend))[:, 0] == 0)


@pytest.mark.parametrize("op", ["stablemax", "log_stablemax", "stablemax_cross_entropy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_rows_of_equal_terms_within_the_bound(op, dtype):
    """A max and ``n - 1`` equal entries below it: every term of the sum rounds the
    same way, so a sum that is not vectorized in the lanes the bound assumes is
    caught (a select kept LLVM from vectorizing the cross-entropy's sum: a sequential
    loop, outside the bound here, 75 u off on a float32 row of 2048 near-equal terms)."""
    n = 32000
    x = np.full((2, n), -0.5095, dtype=dtype)
    x[:, 7] = 0.0
    x[1] -= 40.0
    entry = ENTRIES[op]
    args = entry.arguments(x, np.random.default_rng(3))
    for backend in ENGINES:
        check(entry, args, backend)


# ----------------------------------------------------------------------------- collapse


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_collapse_comes_when_the_other_terms_fall_below_u(dtype):
    """The gradient at the target is ``(p_t - 1) / (1 + |x_t|)`` rounded: exactly 0
    once ``t = sum_{j != k} r_j`` is below ``u / 2`` (``p_t = 1 / (1 + t)`` rounds to
    1), nonzero above ``u``: StableMax's softmax collapse (claim 16).  Rows ``[a, -a]``
    have ``t = 1 / (1 + a)^2``."""
    u = float(np.finfo(dtype).eps) / 2
    a = np.array([np.sqrt(4 / u), np.sqrt(0.25 / u)])  # t = u / 4, t = 4 u
    x = np.stack([a, -a], axis=1).astype(dtype)
    for backend in ENGINES:
        _, grad = sn.stablemax_cross_entropy(
            x, np.zeros(2, int), reduction="none", return_grad=True, backend=backend
        )
        assert grad[0, 0] == 0 and grad[1, 0] < 0, (backend, grad[:, 0])


def test_the_collapse_table_measures_both_maps():
    """The study's measurement (``experiments/measure/collapse.py``): softmax
    collapses on the MNIST directions within the grid; StableMax on the directions
    whose wrong classes are all negative, later; on MNIST, whose rows have a second
    positive logit, StableMax's p_t stays below 1 at every scale."""
    from experiments.measure import collapse

    z, target = collapse.directions(quick=True)["margin_113"]
    at = {s: collapse.measure(z, target, s, "float32", "stablemax") for s in (1e3, 1e9)}
    assert at[1e3]["target_grad_zero"] == 0 and at[1e9]["target_grad_zero"] == 1
    assert at[1e9]["loss_zero"] == 0  # the fused loss log1p(t) keeps t
    z, target = collapse.directions(quick=True)["mnist"]
    soft = collapse.measure(z, target, 1e3, "float32", "softmax")
    assert soft["target_grad_zero"] == soft["p_target_one"] == 1
    assert collapse.measure(z, target, 1e12, "float32", "stablemax")["p_target_one"] < 0.01


# ----------------------------------------------------------------------------- rules


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", ENGINES)
def test_non_finite_rules(backend):
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [nan, 1.0, 2.0, -1.0],
            [inf, 1.0, -2.0, 0.0],
            [-inf, -inf, -inf, -inf],
            [-inf, 1.0, -inf, -3.0],
        ]
    )
    p = sn.stablemax(x, backend=backend)
    assert np.isnan(p[:3]).all()
    np.testing.assert_allclose(p[3], [0, 2 / 2.25, 0, 0.25 / 2.25], rtol=1e-15)
    y = sn.log_stablemax(x, backend=backend)
    assert np.isnan(y[0]).all() and np.isnan(y[2]).all()
    np.testing.assert_array_equal(y[1], [nan, -inf, -inf, -inf])  # as log_softmax
    np.testing.assert_array_equal(y[3, [0, 2]], [-inf, -inf])
    loss, grad = sn.stablemax_cross_entropy(
        x, np.array([1, 0, 0, 1]), reduction="none", return_grad=True, backend=backend
    )
    np.testing.assert_array_equal(loss[:3], [nan, nan, nan])
    assert np.isnan(grad[:3]).all()
    np.testing.assert_array_equal(grad[3, [0, 2]], [0, 0])
    for grad in (False, True):  # -log 0 at a finite class beside +inf, on both paths
        loss = sn.stablemax_cross_entropy(
            x[1:2], np.array([1]), reduction="none", return_grad=grad, backend=backend
        )
        np.testing.assert_array_equal(loss[0] if grad else loss, [inf])


@pytest.mark.parametrize("backend", ENGINES)
def test_ignored_rows_and_reductions(backend, rng):
    x = rng.standard_normal((5, 7)) * 3
    t = np.array([0, 6, -100, 3, -100])
    options = {"ignore_index": -100, "backend": backend, "return_grad": True}
    per_row, g = sn.stablemax_cross_entropy(x, t, reduction="none", **options)
    assert per_row[2] == per_row[4] == 0 and np.all(g[[2, 4]] == 0)
    total, g_sum = sn.stablemax_cross_entropy(x, t, reduction="sum", **options)
    mean, g_mean = sn.stablemax_cross_entropy(x, t, reduction="mean", **options)
    assert isinstance(mean, np.generic) and isinstance(total, np.generic)
    np.testing.assert_allclose(total, per_row.sum(), rtol=1e-15)
    np.testing.assert_allclose(mean, per_row.sum() / 3, rtol=1e-15)
    np.testing.assert_allclose(g_sum, g, rtol=1e-15)
    np.testing.assert_allclose(g_mean, g / 3, rtol=1e-15)
    nothing, g_none = sn.stablemax_cross_entropy(x, np.full(5, -100), reduction="mean", **options)
    assert np.isnan(nothing) and np.all(g_none == 0)


# ----------------------------------------------------------------------------- gradients


def numerical_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def _logits(rng, shape=(3, 6)):
    """Logits of both signs, none within ``1e-3`` of 0 (``s''`` jumps there)."""
    x = rng.standard_normal(shape) * 2
    return np.where(np.abs(x) < 1e-3, 0.5, x)


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("axis", [0, -1])
def test_backward_matches_finite_differences(backend, axis, rng):
    x = _logits(rng)
    dy = rng.standard_normal(x.shape)
    y = sn.stablemax(x, axis=axis, backend=backend)
    got = sn.stablemax_backward(y, dy, x, axis=axis, backend=backend)
    expected = numerical_gradient(lambda z: np.sum(sn.stablemax(z, axis=axis) * dy), x)
    np.testing.assert_allclose(got, expected, atol=1e-8)


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradient_matches_finite_differences(backend, reduction, rng):
    x = _logits(rng, (5, 7)) * 2
    target = np.array([0, 6, 3, 3, -100])
    kwargs = {"ignore_index": -100, "backend": backend, "reduction": reduction}
    _, grad = sn.stablemax_cross_entropy(x, target, return_grad=True, **kwargs)
    total = lambda z: np.sum(sn.stablemax_cross_entropy(z, target, **kwargs))  # noqa: E731
    np.testing.assert_allclose(grad, numerical_gradient(total, x), atol=1e-8)


def test_cross_entropy_along_axis_0_is_the_transposed_one(rng):
    x = _logits(rng, (4, 6))
    t = np.array([0, 3, 2, 1, 1, 3])
    a = sn.stablemax_cross_entropy(x, t, axis=0, return_grad=True)
    b = sn.stablemax_cross_entropy(x.T.copy(), t, return_grad=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1].T)


def test_the_jacobian_is_not_softmaxs(rng):
    """``d stablemax_i / d x_j = (delta_ij s'(x_i) - p_i s'(x_j)) / S`` column by
    column, against central differences; ``diag(p) - p p^T`` is far from it."""
    x = _logits(rng, (1, 5))[0]
    p = sn.stablemax(x)
    s = np.where(x >= 0, x + 1, 1 / (1 - x))
    ds = np.where(x >= 0, 1.0, s * s)
    jac = (np.diag(ds) - np.outer(p, ds)) / s.sum()
    fd = np.stack([numerical_gradient(lambda z, i=i: sn.stablemax(z)[i], x) for i in range(5)])
    np.testing.assert_allclose(fd, jac, atol=1e-9)
    assert np.max(np.abs(jac - (np.diag(p) - np.outer(p, p)))) > 0.01


# ----------------------------------------------------------------------------- properties


def _arrays(max_value):
    return hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
        elements=st.floats(-max_value, max_value, allow_nan=False),
    )


@given(x=_arrays(1e300), backend=st.sampled_from(["cpu", "parallel"]), data=st.data())
def test_a_distribution_whose_log_is_log_stablemax(x, backend, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    p = sn.stablemax(x, axis=axis, backend=backend)
    assert np.all((p >= 0) & (p <= 1))
    n = x.shape[axis]
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, atol=(n + 12) * 2.0**-52)
    y = sn.log_stablemax(x, axis=axis, backend=backend)
    assert np.all(y <= 0)
    big = p > 1e-300  # exp(y) has y's absolute error, about 20 u |y|
    assert np.all(np.abs(np.exp(y[big]) - p[big]) <= (np.abs(y[big]) + 2) * 64 * 2.0**-53 * p[big])


@given(x=hnp.arrays(np.float64, st.integers(2, 30), elements=st.floats(-1e6, 1e6, allow_nan=False)))
def test_ratios_are_those_of_s_and_monotone(x):
    p = sn.stablemax(x, backend="cpu")
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(p[order]) >= 0)
    s = np.where(x >= 0, x + 1, 1 / (1 - x))
    i, j = int(np.argmax(x)), int(np.argmin(x))
    np.testing.assert_allclose(p[j] / p[i], s[j] / s[i], rtol=1e-13, atol=1e-300)


# ----------------------------------------------------------------------------- dtypes, out


@pytest.mark.parametrize("op", ["stablemax", "log_stablemax"])
def test_float16_and_bfloat16_are_computed_in_float32(op, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    f = getattr(sn, op)
    for dtype in (np.float16, ml_dtypes.bfloat16):
        x = (rng.standard_normal((4, 50)) * 4).astype(dtype)
        got = f(x, backend="cpu")
        assert got.dtype == dtype
        want = f(x.astype(np.float32), backend="cpu").astype(dtype)
        np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


@pytest.mark.parametrize("backend", ENGINES)
def test_out_is_written_and_returned_on_any_axis(backend, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for op in (sn.stablemax, sn.log_stablemax):
        for axis in (1, (0, 2), None):
            out = np.empty_like(x)
            assert op(x, axis=axis, out=out, backend=backend) is out
            np.testing.assert_array_equal(out, op(x, axis=axis, backend=backend))
    y = sn.stablemax(x, axis=1)
    out = np.empty_like(x)
    assert sn.stablemax_backward(y, x, x, axis=1, out=out, backend=backend) is out


# ----------------------------------------------------------------------------- lean path

RNG = np.random.default_rng(29)
LEAN = {
    "stablemax": lambda x, out: sn.stablemax(x, out=out),
    "log_stablemax": lambda x, out: sn.log_stablemax(x, out=out),
    "stablemax_backward": lambda x, out: sn.stablemax_backward(
        sn.stablemax(x), np.sin(x), x, out=out
    ),
    "stablemax_cross_entropy": lambda x, out: sn.stablemax_cross_entropy(
        x, np.argmin(x, axis=-1), ignore_index=3, return_grad=True
    ),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", LEAN)
def test_the_lean_path_runs_the_kernel_alone_and_equals_the_general_path(name, dtype, monkeypatch):
    x = (RNG.standard_normal((5, 12)) * 3).astype(dtype)
    with_out = name != "stablemax_cross_entropy"
    want = LEAN[name](
        np.asfortranarray(x), np.asfortranarray(np.empty_like(x)) if with_out else None
    )
    out = np.full_like(x, np.nan) if with_out else None

    def refuse(*args, **kwargs):
        raise AssertionError("the general path ran")

    with monkeypatch.context() as patch:
        patch.setattr(_rows.HostRows, "__init__", refuse)
        patch.setattr(_interop, "_convert_and_call", refuse)
        got = LEAN[name](x, out)
    for g, w in zip(registry.outputs(got), registry.outputs(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), strict=True)
    if with_out:
        assert got is out


# ----------------------------------------------------------------------------- errors


def test_cuda_is_a_clear_error_not_a_fallback():
    x = np.ones((2, 3))

    class OnTheGPU:
        @property
        def __cuda_array_interface__(self):
            return {"shape": (2, 3), "typestr": "<f8", "data": (0, False), "version": 3}

    for call in (
        lambda a, **k: sn.stablemax(a, **k),
        lambda a, **k: sn.log_stablemax(a, **k),
        lambda a, **k: sn.stablemax_backward(a, x, x, **k),
        lambda a, **k: sn.stablemax_cross_entropy(a, np.zeros(2, int), **k),
    ):
        with pytest.raises(NotImplementedError, match="no CUDA kernel"):
            call(x, backend="cuda")
        with pytest.raises(NotImplementedError, match="no CUDA kernel"):
            call(OnTheGPU())


def test_bad_arguments_are_one_line_errors():
    x = np.zeros((3, 4))
    readonly = np.zeros((3, 4))
    readonly.flags.writeable = False
    cases = [
        (lambda: sn.stablemax_cross_entropy(x, np.array([0.0, 1.0, 2.0])), TypeError, "integer"),
        (lambda: sn.stablemax_cross_entropy(x, np.zeros(4, int)), ValueError, "shape"),
        (lambda: sn.stablemax_cross_entropy(x, np.array([0, 4, 1])), ValueError, "out of range"),
        (
            lambda: sn.stablemax_cross_entropy(x, np.zeros(3, int), reduction="avg"),
            ValueError,
            "avg",
        ),
        (lambda: sn.stablemax_backward(x, np.zeros((3, 5)), x), ValueError, "dy has shape"),
        (lambda: sn.stablemax_backward(x, x, np.zeros(4)), ValueError, "x has shape"),
        (lambda: sn.stablemax(x, backend="gpu"), ValueError, "backend='gpu'"),
        (lambda: sn.stablemax(x.astype(complex)), TypeError, "accepts float16"),
        (lambda: sn.log_stablemax(x, out=readonly), ValueError, "out must be writeable"),
        (lambda: sn.stablemax_backward(x, x, x, out=readonly), ValueError, "writeable"),
    ]
    for call, kind, match in cases:
        with pytest.raises(kind, match=match) as error:
            call()
        assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- torch

try:
    import torch

    from softmax_numba import torch as snt
except ImportError:  # pragma: no cover - torch is a test dependency
    torch = snt = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
TORCH_MAPS = [
    "stablemax",
    "log_stablemax",
    "stablemax_cross_entropy",
    "stablemax_cross_entropy[none]",
]


def _torch_map(name):
    """(ours, the plain API on a detached tensor)."""
    t = torch.tensor([0, 6, -100, 2, 2])
    return {
        "stablemax": (lambda x: snt.stablemax(x), lambda x: sn.stablemax(x)),
        "log_stablemax": (
            lambda x: snt.log_stablemax(x, dim=0),
            lambda x: sn.log_stablemax(x, axis=0),
        ),
        "stablemax_cross_entropy": (
            lambda x: snt.stablemax_cross_entropy(x, t),
            lambda x: sn.stablemax_cross_entropy(x, t, ignore_index=-100),
        ),
        "stablemax_cross_entropy[none]": (
            lambda x: snt.stablemax_cross_entropy(x, t.clamp(min=1), reduction="none"),
            lambda x: sn.stablemax_cross_entropy(x, t.clamp(min=1), reduction="none"),
        ),
    }[name]


def _tensor(shape=(5, 7)):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, dtype=torch.float64, generator=g) * 3
    return torch.where(x.abs() < 1e-3, 0.5, x).requires_grad_()


@needs_torch
@pytest.mark.parametrize("name", TORCH_MAPS)
def test_torch_wrappers_pass_gradcheck_and_gradgradcheck(name):
    ours, plain = _torch_map(name)
    x = _tensor()
    assert torch.autograd.gradcheck(ours, (x,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(ours, (x,), eps=1e-6, atol=1e-6)
    got = ours(x)
    assert got.requires_grad
    torch.testing.assert_close(got.detach(), plain(x.detach()), rtol=0, atol=0)


@needs_torch
@pytest.mark.parametrize("name", TORCH_MAPS[:3])
def test_the_graph_building_backward_equals_the_kernel_backward(name):
    ours, _ = _torch_map(name)
    x = _tensor()
    shape = ours(x).shape
    dy = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (kernel,) = torch.autograd.grad(ours(x), x, dy)
    (graph,) = torch.autograd.grad(ours(x), x, dy, create_graph=True)
    assert graph.requires_grad
    torch.testing.assert_close(graph, kernel, rtol=1e-13, atol=1e-15)
