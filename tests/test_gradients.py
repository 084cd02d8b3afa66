"""Backward ops and the fused cross-entropy gradient against central differences (float64)."""

from __future__ import annotations

import numpy as np
import pytest

import softmax_numba as sn

ENGINES = ("numpy", "cpu", "parallel")


def numerical_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g


FORWARD_BACKWARD = [
    (sn.softmax, sn.softmax_backward),
    (sn.log_softmax, sn.log_softmax_backward),
    (sn.sparsemax, sn.sparsemax_backward),
    (sn.entmax15, sn.entmax15_backward),
]


@pytest.mark.parametrize(("forward", "backward"), FORWARD_BACKWARD, ids=lambda f: f.__name__)
@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("axis", [0, -1])
def test_vjp_matches_finite_differences(forward, backward, backend, axis, rng):
    x = rng.standard_normal((3, 6)) * 2
    dy = rng.standard_normal(x.shape)
    y = forward(x, axis=axis, backend=backend)
    got = backward(y, dy, axis=axis, backend=backend)
    expected = numerical_gradient(lambda z: np.sum(forward(z, axis=axis) * dy), x)
    np.testing.assert_allclose(got, expected, atol=1e-7)


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_gradient_with_class_indices(backend, reduction, smoothing, rng):
    x = rng.standard_normal((5, 7)) * 3
    target = np.array([0, 6, 3, 3, -100])
    kwargs = dict(label_smoothing=smoothing, ignore_index=-100, backend=backend)
    loss, grad = sn.cross_entropy(x, target, reduction=reduction, return_grad=True, **kwargs)
    total = lambda z: np.sum(sn.cross_entropy(z, target, reduction=reduction, **kwargs))  # noqa: E731
    np.testing.assert_allclose(grad, numerical_gradient(total, x), atol=1e-7)
    assert np.all(grad[4] == 0)
    if reduction == "none":
        assert loss.shape == (5,) and loss[4] == 0


@pytest.mark.parametrize("backend", ENGINES)
def test_cross_entropy_gradient_with_probabilities_along_axis_0(backend, rng):
    x = rng.standard_normal((4, 3))
    q = sn.softmax(rng.standard_normal((4, 3)), axis=0)
    _loss, grad = sn.cross_entropy(x, q, axis=0, return_grad=True, backend=backend)
    f = lambda z: sn.cross_entropy(z, q, axis=0, backend=backend)  # noqa: E731
    np.testing.assert_allclose(grad, numerical_gradient(f, x), atol=1e-7)
    np.testing.assert_allclose(grad, (sn.softmax(x, axis=0) - q) / 3, atol=1e-15)


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("probabilities", [False, True])
def test_cross_entropy_writes_its_gradient_into_grad_out(backend, axis, probabilities, rng):
    """``grad_out`` receives the same gradient that a call without it returns, and is
    the array returned; a view of another layout works too."""
    x = rng.standard_normal((6, 9)).astype(np.float32)
    n_rows = x.shape[1] if axis == 0 else x.shape[0]
    classes = x.shape[axis]
    if probabilities:
        target = sn.softmax(rng.standard_normal(x.shape).astype(np.float32), axis=axis)
    else:
        target = rng.integers(0, classes, n_rows)
    kwargs = dict(axis=axis, reduction="mean", return_grad=True, backend=backend)
    loss, expected = sn.cross_entropy(x, target, **kwargs)
    for grad_out in (np.full(x.shape, np.nan, np.float32), np.full(x.shape[::-1], 7, np.float32).T):
        got_loss, grad = sn.cross_entropy(x, target, grad_out=grad_out, **kwargs)
        assert grad is grad_out
        np.testing.assert_array_equal(grad_out, expected)
        np.testing.assert_array_equal(got_loss, loss)


def overwrite_cases(rng, dtype=np.float32):
    """Logits with a +-inf max, a NaN and an overflowing gap beside ordinary rows, and
    the argument sets that write the gradient over them: class indices (plain,
    smoothed, one row ignored) and probabilities (plain, smoothed)."""
    x = (rng.standard_normal((7, 9)) * 3).astype(dtype)
    x[1, 4] = np.inf
    x[2, :] = -np.inf
    x[3, 2] = np.nan
    x[4, 0], x[4, 5] = np.finfo(dtype).max / 2, -np.finfo(dtype).max / 2
    labels = rng.integers(0, 9, 7)
    q = sn.softmax(rng.standard_normal(x.shape).astype(dtype))
    options = [
        (labels, {}),
        (labels, {"label_smoothing": 0.1}),
        (labels, {"ignore_index": int(labels[5])}),
        (q, {}),
        (q, {"label_smoothing": 0.2}),
    ]
    return x, options


@pytest.mark.parametrize("backend", ENGINES)
def test_cross_entropy_gradient_may_overwrite_the_logits(backend, rng):
    """``grad_out=logits`` (a training step that needs the logits no more): the loss
    and the gradient are those of a call that keeps the logits, bit for bit, with the
    logits read before anything is written over them."""
    x, options = overwrite_cases(rng)
    for target, extra in options:
        kwargs = dict(reduction="none", return_grad=True, backend=backend, **extra)
        with np.errstate(all="ignore"):
            loss, grad = sn.cross_entropy(x, target, **kwargs)
            logits = x.copy()
            got_loss, got = sn.cross_entropy(logits, target, grad_out=logits, **kwargs)
        assert got is logits
        np.testing.assert_array_equal(got, grad, err_msg=str(extra))
        np.testing.assert_array_equal(got_loss, loss, err_msg=str(extra))


def test_cross_entropy_grad_out_is_checked():
    x, target = np.zeros((3, 4), np.float32), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="needs return_grad=True"):
        sn.cross_entropy(x, target, grad_out=np.empty_like(x))
    with pytest.raises(ValueError, match="grad_out must have shape"):
        sn.cross_entropy(x, target, return_grad=True, grad_out=np.empty((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"grad_out must have shape .* and dtype float32"):
        sn.cross_entropy(x, target, return_grad=True, grad_out=np.empty((3, 4)))
    with pytest.raises(TypeError, match="grad_out must be a NumPy array"):
        sn.cross_entropy(x, target, return_grad=True, grad_out=[[0.0] * 4] * 3)
