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
