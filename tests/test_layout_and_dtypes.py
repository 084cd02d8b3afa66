"""Axes, views, dtypes, ``out=`` and bad arguments, through the public API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import unit_roundoff

import softmax_numba as sn
from softmax_numba import registry

ENGINES = ("numpy", "cpu", "parallel")
FORWARD = [e for e in registry.ENTRIES if e.arguments is registry.ENTRIES[0].arguments]


def _along(entry, x, axis, backend):
    return registry.outputs(entry.run(entry.arguments(x, None), axis=axis, backend=backend))


@pytest.mark.parametrize("entry", FORWARD, ids=lambda e: e.name)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_every_axis_of_a_3d_array_equals_moving_it_last(entry, axis, rng):
    x = rng.standard_normal((4, 8, 12)).astype(np.float64)
    got = _along(entry, x, axis, "cpu")
    moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    expected = _along(entry, moved, -1, "cpu")
    for g, e in zip(got, expected, strict=True):
        if g.ndim == x.ndim:
            e = np.moveaxis(e, -1, axis)
        np.testing.assert_allclose(g, e, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("entry", FORWARD, ids=lambda e: e.name)
@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_views_with_negative_and_large_strides(entry, backend, rng):
    base = rng.standard_normal((20, 40))
    view = base[::-2, 3::-1] if entry.divisor == 1 else base[::-2, ::-5]
    got = _along(entry, view, -1, backend)
    expected = _along(entry, view.copy(), -1, backend)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("entry", FORWARD, ids=lambda e: e.name)
@pytest.mark.parametrize("shape", [(0, 8), (3, 0), (0, 0), (5, 4, 0)])
def test_empty_arrays(entry, shape):
    x = np.zeros(shape)
    for out in _along(entry, x, -1, "cpu"):
        assert out.size == 0 or entry.op == "logsumexp"


def test_logsumexp_of_an_empty_axis_is_minus_inf():
    np.testing.assert_array_equal(sn.logsumexp(np.zeros((3, 0))), np.full(3, -np.inf))
    assert sn.logsumexp(np.zeros(0), backend="numpy") == -np.inf


@pytest.mark.parametrize("entry", FORWARD, ids=lambda e: e.name)
def test_length_one_axis(entry):
    if not entry.accepts(1):
        pytest.skip("needs rows divisible by pool_size")
    x = np.array([[3.0], [-2.0], [0.0]])
    ref = registry.outputs(entry.reference((x,)))
    for g, r in zip(_along(entry, x, -1, "cpu"), ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-15)


def test_length_one_axis_gives_one():
    np.testing.assert_array_equal(sn.softmax(np.array([[7.5], [-1e30]])), [[1.0], [1.0]])


def test_zero_dimensional_input_needs_axis_none():
    with pytest.raises(np.exceptions.AxisError, match="0-d"):
        sn.softmax(np.float64(2.0))
    assert sn.softmax(np.float64(2.0), axis=None) == 1.0
    assert sn.logsumexp(np.float64(2.0), axis=None) == 2.0


@pytest.mark.parametrize("axis", [2, -3, 7])
def test_axis_out_of_range(axis):
    with pytest.raises(np.exceptions.AxisError):
        sn.softmax(np.ones((2, 3)), axis=axis)


def test_axis_none_normalizes_the_flattened_array(rng):
    x = rng.standard_normal((3, 4))
    p = sn.softmax(x, axis=None)
    assert p.shape == x.shape
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-15)
    np.testing.assert_allclose(sn.logsumexp(x, axis=None), np.log(np.exp(x).sum()), rtol=1e-14)


def test_non_integer_axis_is_a_type_error():
    with pytest.raises(TypeError, match="axis"):
        sn.softmax(np.ones(3), axis=0.0)
    with pytest.raises(TypeError, match="axis"):
        sn.softmax(np.ones(3), axis=[0])
    with pytest.raises(TypeError, match="axis"):
        sn.logsumexp(np.ones(3), axis=(0.0,))


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", ENGINES)
def test_floating_dtype_is_kept(dtype, backend, rng):
    x = rng.standard_normal((6, 10)).astype(dtype)
    p = sn.softmax(x, backend=backend)
    assert p.dtype == dtype
    assert sn.logsumexp(x, backend=backend).dtype == dtype
    assert sn.cross_entropy(x, np.zeros(6, int), backend=backend).dtype == dtype
    np.testing.assert_allclose(p.astype(np.float64).sum(-1), 1.0, atol=4 * unit_roundoff(dtype))


def test_float16_is_computed_in_float32(rng):
    x = (rng.standard_normal((8, 300)) * 4).astype(np.float16)
    got = sn.softmax(x, backend="cpu")
    exact = sn.softmax(x.astype(np.float64), backend="cpu").astype(np.float16)
    assert np.max(np.abs(got.astype(float) - exact.astype(float))) <= 2**-11


def test_bfloat16_when_ml_dtypes_is_installed(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = rng.standard_normal((4, 50)).astype(ml_dtypes.bfloat16)
    p = sn.softmax(x, backend="cpu")
    assert p.dtype == ml_dtypes.bfloat16
    exact = sn.softmax(x.astype(np.float64))
    assert np.max(np.abs(p.astype(np.float64) - exact)) <= 2 * 2**-8


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint16, bool])
def test_integers_and_bools_are_promoted_to_float64(dtype):
    x = np.array([[0, 1, 1], [1, 0, 0]], dtype=dtype)
    p = sn.softmax(x)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, sn.softmax(x.astype(np.float64)))


@pytest.mark.parametrize(
    "x",
    [np.ones(3, complex), np.array(["a", "b"]), np.array([1.0, None]), np.ones(2, np.longdouble)],
    ids=["complex", "str", "object", "longdouble"],
)
def test_unsupported_dtypes_are_type_errors(x):
    with pytest.raises(TypeError, match="accepts float16, bfloat16"):
        sn.softmax(x)


def test_python_lists_are_accepted():
    np.testing.assert_allclose(sn.softmax([1.0, 1.0]), [0.5, 0.5])


# ----------------------------------------------------------------------------- out=


@pytest.mark.parametrize("backend", ENGINES)
def test_out_is_written_and_returned(backend, rng):
    x = rng.standard_normal((5, 7)).astype(np.float32)
    out = np.empty_like(x)
    res = sn.softmax(x, backend=backend, out=out)
    assert res is out
    np.testing.assert_array_equal(out, sn.softmax(x, backend=backend))


def test_out_that_is_a_contiguous_view_is_written_without_a_temporary(rng):
    x = rng.standard_normal((5, 7))
    out = np.empty_like(x)
    buffer = sn._rows.rows_of(x, -1, "softmax").new_rows(out)
    assert np.shares_memory(buffer, out)


def test_in_place(rng):
    x = rng.standard_normal((5, 7))
    expected = sn.softmax(x)
    sn.softmax(x, out=x)
    # Aliasing may switch LLVM to the scalar loop: another summation order.
    np.testing.assert_allclose(x, expected, rtol=8 * 2.0**-53)


def test_out_overlapping_the_input_reversed_is_still_right(rng):
    x = rng.standard_normal((4, 9))
    expected = sn.log_softmax(x[:, ::-1].copy())
    sn.log_softmax(x[:, ::-1], out=x)
    np.testing.assert_array_equal(x, expected)


def test_out_on_another_axis_and_dtype_float16(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float16)
    out = np.empty_like(x)
    sn.softmax(x, axis=1, out=out)
    np.testing.assert_array_equal(out, sn.softmax(x, axis=1))


@pytest.mark.parametrize(
    "out",
    [np.empty((5, 6)), np.empty((5, 7), np.float32), [0.0] * 35],
    ids=["shape", "dtype", "list"],
)
def test_wrong_out_is_an_error(out, rng):
    x = rng.standard_normal((5, 7))
    with pytest.raises((ValueError, TypeError), match="out must"):
        sn.softmax(x, out=out)


# ----------------------------------------------------------------------------- arguments


def test_unknown_algorithm_and_backend():
    with pytest.raises(ValueError, match="algorithm='fast'"):
        sn.softmax(np.ones(3), algorithm="fast")
    with pytest.raises(ValueError, match="backend='gpu'"):
        sn.softmax(np.ones(3), backend="gpu")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present")
def test_cuda_backend_without_a_gpu_is_a_clear_error_not_a_fallback():
    probe = (
        "import numpy as np, softmax_numba as sn\n"
        "try:\n"
        "    sn.softmax(np.ones(3), backend='cuda')\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert "needs" in done.stdout and ("GPU" in done.stdout or "numba-cuda" in done.stdout)


def test_maxout_pool_size_must_divide():
    with pytest.raises(ValueError, match="does not divide"):
        sn.maxout(np.ones((2, 10)), pool_size=3)
    with pytest.raises(ValueError, match="positive integer"):
        sn.maxout(np.ones((2, 10)), pool_size=0)
    assert sn.maxout(np.arange(12.0).reshape(2, 6), pool_size=3, axis=1).shape == (2, 2)


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (sn.softplus, {"beta": 0.0}, "beta"),
        (sn.gaussian, {"sigma": -1.0}, "sigma"),
        (sn.entmax_bisect, {"alpha": 1.0}, "alpha"),
        (sn.entmax_bisect, {"n_iter": 0}, "n_iter"),
    ],
)
def test_bad_parameters(func, kwargs, match):
    with pytest.raises(ValueError, match=match):
        func(np.ones((2, 3)), **kwargs)


def test_where_of_the_wrong_shape():
    with pytest.raises(ValueError, match="where has shape"):
        sn.softmax(np.ones((2, 3)), where=np.ones((3, 2), bool))


def test_backward_with_mismatched_dy():
    with pytest.raises(ValueError, match="dy has shape"):
        sn.softmax_backward(np.ones((2, 3)), np.ones((2, 4)))


def test_auto_picks_parallel_for_large_arrays(monkeypatch):
    import numba

    from softmax_numba import _api, config

    monkeypatch.setattr(config, "PARALLEL_MIN_ELEMENTS", 100)
    assert _api.resolve_backend("auto", 99) == "cpu"
    expected = "parallel" if numba.get_num_threads() > 1 else "cpu"
    assert _api.resolve_backend("auto", 100) == expected
