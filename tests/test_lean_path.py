"""The lean path of every public function (issue 27).

A C-contiguous float32/float64 array taken along its last axis, NumPy array or torch
CPU tensor, with or without ``out=`` / ``grad_out=``, goes straight to its kernel
(``softmax_numba._api.lean_rows``): the general path (``softmax_numba._rows.HostRows``,
and for tensors ``softmax_numba._interop._convert_and_call``) is never built, and the
results are the general path's, bit for bit.  What the lean path does not take
(another axis, a view, an overlapping ``out=``, a bad target) goes the general way and
is still right.
"""

from __future__ import annotations

import numpy as np
import pytest

import softmax_numba as sn
from softmax_numba import _interop, _rows

RNG = np.random.default_rng(27)
SHAPE = (5, 12)


def _x(dtype, shape=SHAPE):
    return (RNG.standard_normal(shape) * 3).astype(dtype)


def _dy(x):
    return RNG.standard_normal(x.shape).astype(x.dtype)


def _target(x):
    """Class indices that depend on ``x`` only (so that two calls agree), one ignored."""
    t = np.argmin(x, axis=-1).astype(np.int64)
    t.flat[0] = -100
    return t


#: name -> (call(x, out) -> result, whether the op takes out=); ``out`` is None or an
#: array of the result's shape.
CALLS = {
    "softmax": lambda x, out: sn.softmax(x, out=out),
    "softmax[online]": lambda x, out: sn.softmax(x, algorithm="online", out=out),
    "log_softmax": lambda x, out: sn.log_softmax(x, out=out),
    "logsumexp": lambda x, out: sn.logsumexp(x),
    "logsumexp[keepdims]": lambda x, out: sn.logsumexp(x, keepdims=True),
    "logcumsumexp": lambda x, out: sn.logcumsumexp(x, out=out),
    "logcumsumexp[reverse]": lambda x, out: sn.logcumsumexp(x, reverse=True, out=out),
    "softmax_backward": lambda x, out: sn.softmax_backward(sn.softmax(x), x, out=out),
    "log_softmax_backward": lambda x, out: sn.log_softmax_backward(x, x * 0.5, out=out),
    "cross_entropy": lambda x, out: sn.cross_entropy(x, _target(x), ignore_index=-100),
    "cross_entropy[grad]": lambda x, out: sn.cross_entropy(
        x, _target(x), ignore_index=-100, label_smoothing=0.1, return_grad=True, grad_out=out
    ),
    "cross_entropy[none]": lambda x, out: sn.cross_entropy(
        x, np.zeros(x.shape[:-1], np.int64), reduction="none"
    ),
    "sigmoid": lambda x, out: sn.sigmoid(x, out=out),
    "softplus": lambda x, out: sn.softplus(x, beta=2.0, out=out),
    "arctan[normalize]": lambda x, out: sn.arctan(x, normalize=True, out=out),
    "gaussian": lambda x, out: sn.gaussian(x, mu=0.5, sigma=2.0, out=out),
    "sparsemax": lambda x, out: sn.sparsemax(x, out=out),
    "entmax15": lambda x, out: sn.entmax15(x, out=out),
    "entmax_bisect": lambda x, out: sn.entmax_bisect(x, alpha=1.7, out=out),
    "sparsemax_backward": lambda x, out: sn.sparsemax_backward(sn.sparsemax(x), x, out=out),
    "entmax15_backward": lambda x, out: sn.entmax15_backward(sn.entmax15(x), x, out=out),
    "maxout": lambda x, out: sn.maxout(x, pool_size=3, out=out),
}
#: The ops whose result has the input's shape and that take ``out=`` (``grad_out=``).
WITH_OUT = {name for name in CALLS if not name.startswith(("logsumexp", "cross_entropy"))} | {
    "cross_entropy[grad]"
}


def _out_like(name, x):
    shape = (*x.shape[:-1], x.shape[-1] // 3) if name == "maxout" else x.shape
    return np.full(shape, np.nan, x.dtype)


def _general(name, x, with_out):
    """The same call through the general path: ``x`` as a Fortran-ordered 2-D array
    (not C-contiguous), ``out`` likewise."""
    xf = np.asfortranarray(x)
    out = np.asfortranarray(_out_like(name, x)) if with_out else None
    return CALLS[name](xf, out)


def _refuse_general_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(_rows.HostRows, "__init__", refuse)
    monkeypatch.setattr(_interop, "_convert_and_call", refuse)


def _assert_same(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _assert_same(g, w)
        return
    assert type(got) is type(want)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_out", [False, True], ids=["new", "out="])
@pytest.mark.parametrize("name", CALLS)
def test_the_lean_path_runs_the_kernel_alone_and_equals_the_general_path(
    name, with_out, dtype, monkeypatch
):
    if with_out and name not in WITH_OUT:
        pytest.skip("no out= for this op")
    x = _x(dtype)
    want = _general(name, x, with_out)
    out = _out_like(name, x) if with_out else None
    with monkeypatch.context() as patch:
        _refuse_general_path(patch)
        got = CALLS[name](x, out)
    _assert_same(got, want)
    if with_out:
        returned = got[1] if isinstance(got, tuple) else got
        assert returned is out


def test_a_1d_array_and_a_stack_of_rows_take_the_lean_path(monkeypatch):
    v, stack = _x(np.float64, (9,)), _x(np.float32, (2, 3, 8))
    three = np.array(3)
    want = (sn.log_softmax(v.copy()), sn.logsumexp(stack.copy()), sn.cross_entropy(v, three))
    _refuse_general_path(monkeypatch)
    got = (sn.log_softmax(v), sn.logsumexp(stack), sn.cross_entropy(v, three))
    _assert_same(got, want)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sigmoid", "cross_entropy[grad]"])
def test_torch_cpu_tensors_take_the_lean_path(name, monkeypatch):
    torch = pytest.importorskip("torch")
    x = _x(np.float32)
    want = CALLS[name](x, _out_like(name, x))
    xt, out = torch.from_numpy(x.copy()), torch.from_numpy(_out_like(name, x))
    target = torch.from_numpy(_target(x))
    _refuse_general_path(monkeypatch)
    if name == "cross_entropy[grad]":
        loss, grad = sn.cross_entropy(
            xt, target, ignore_index=-100, label_smoothing=0.1, return_grad=True, grad_out=out
        )
        assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and grad is out
        np.testing.assert_array_equal(loss.numpy(), want[0])
        np.testing.assert_array_equal(grad.numpy(), want[1])
        return
    got = {"softmax": sn.softmax, "log_softmax": sn.log_softmax, "sigmoid": sn.sigmoid}[name](
        xt, out=out
    )
    assert got is out
    np.testing.assert_array_equal(got.numpy(), want)


def test_a_tensor_requiring_grad_under_no_grad_takes_the_lean_path(monkeypatch):
    torch = pytest.importorskip("torch")
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    want = sn.softmax(x.detach().numpy())
    _refuse_general_path(monkeypatch)
    with torch.no_grad():
        got = sn.softmax(x)
    assert isinstance(got, torch.Tensor) and not got.requires_grad
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("name", sorted(WITH_OUT - {"maxout"}))
def test_an_out_that_overlaps_the_input_goes_the_general_way_and_is_right(name):
    x = _x(np.float64)
    want = CALLS[name](x.copy(), None)
    buffer = np.zeros(x.size + x.shape[-1])
    inputs = buffer[: x.size].reshape(x.shape)
    out = buffer[x.shape[-1] :].reshape(x.shape)  # shifted by one row: overlaps
    inputs[...] = x
    got = CALLS[name](inputs, out)
    returned = got[1] if isinstance(got, tuple) else got
    assert returned is out
    np.testing.assert_array_equal(out, want[1] if isinstance(want, tuple) else want)


def test_an_out_of_range_target_still_names_the_index():
    x = _x(np.float32)
    target = np.zeros(x.shape[0], np.int64)
    target[2] = x.shape[1]
    with pytest.raises(ValueError, match=f"class index {x.shape[1]} is out of range"):
        sn.cross_entropy(x, target)
