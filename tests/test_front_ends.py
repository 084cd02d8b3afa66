"""One set of conventions for every front end, and messages that say what is wrong
(issue 26, items 7 and 8).

- ``axis`` is positional-or-keyword, as in scipy (``softmax(x, 0)``);
- a full reduction returns a NumPy scalar, as NumPy and scipy do (a 0-d tensor for
  torch input, a NumPy scalar from a Dask result's ``compute``);
- ``linear_cross_entropy`` takes ``backend="numpy"`` and promotes integers;
- a read-only ``out=``/``grad_out=``, a floating class-index target, an empty class
  axis and a negative probability are one-line ``ValueError``s before any kernel;
- a tensor that requires grad is taken under ``torch.no_grad()``.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import softmax_numba as sn
from softmax_numba import _linear, registry

try:
    import dask.array as da

    from softmax_numba import dask as sd
except ImportError:  # pragma: no cover - dask is a test dependency
    da = sd = None

needs_dask = pytest.mark.skipif(sd is None, reason="dask is not installed")

PUBLIC = [getattr(sn, name) for name in sn.__all__]
if sd is not None:
    PUBLIC += [getattr(sd, name) for name in sd.__all__]
WITH_AXIS = [f for f in PUBLIC if "axis" in inspect.signature(f).parameters]


def _name(func) -> str:
    return f"{func.__module__.split('.')[1]}.{func.__name__}"


# ----------------------------------------------------------------------------- axis
@pytest.mark.parametrize("func", WITH_AXIS, ids=_name)
def test_axis_is_positional_or_keyword_right_after_the_arrays(func):
    """As scipy's ``softmax(x, axis)``: the arrays positional-only, then ``axis``,
    then keyword-only options."""
    params = list(inspect.signature(func).parameters.values())
    at = [p.name for p in params].index("axis")
    assert params[at].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params[:at])
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[at + 1 :])


def test_at_least_the_scipy_names_take_axis():
    names = {_name(f) for f in WITH_AXIS}
    assert {"_softmax.softmax", "_softmax.logsumexp", "_losses.cross_entropy"} <= names


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
def test_every_registered_op_takes_axis_positionally(entry, rng):
    x = rng.standard_normal((3, 8))
    args = entry.arguments(x, rng)
    got = entry.function(*args, -1, backend="numpy", **entry.kwargs)
    want = entry.function(*args, axis=-1, backend="numpy", **entry.kwargs)
    for g, w in zip(registry.outputs(got), registry.outputs(want), strict=True):
        np.testing.assert_array_equal(g, w)


def test_softmax_axis_positionally_on_both_paths(rng):
    x = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(sn.softmax(x, 0), sn.softmax(x, axis=0))
    np.testing.assert_array_equal(sn.softmax(x, 1), sn.softmax(x, axis=1))  # fast path
    np.testing.assert_array_equal(sn.logsumexp(x, None), sn.logsumexp(x, axis=None))


# ----------------------------------------------------------------------------- scalars
def _is_numpy_scalar(value, dtype) -> bool:
    return isinstance(value, np.generic) and value.dtype == dtype


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_a_full_reduction_is_a_numpy_scalar_everywhere(rng, reduction, backend):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    t = np.array([0, 5, 2, 1])
    q = np.full(x.shape, 1 / 6, np.float32)
    options = {"reduction": reduction, "backend": backend}
    results = {
        "logsumexp(axis=None)": sn.logsumexp(x, axis=None, backend=backend),
        "logsumexp(axis=(0, 1))": sn.logsumexp(x, axis=(0, 1), backend=backend),
        "cross_entropy": sn.cross_entropy(x, t, **options),
        "cross_entropy(probabilities)": sn.cross_entropy(x, q, **options),
        "cross_entropy(return_grad)": sn.cross_entropy(x, t, return_grad=True, **options)[0],
        "cross_entropy(z_loss)": sn.cross_entropy(x, t, z_loss=1e-3, **options),
        "linear_cross_entropy": sn.linear_cross_entropy(x, x[:3].copy(), t % 3, **options),
    }
    for name, value in results.items():
        assert _is_numpy_scalar(value, np.float32), f"{name}: {type(value)}"
    per_row = sn.cross_entropy(x, t, reduction="none", backend=backend)
    assert isinstance(per_row, np.ndarray) and per_row.shape == (4,)


def test_a_full_reduction_of_torch_tensors_is_a_0d_tensor(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal((4, 6)))
    for value in (
        sn.cross_entropy(x, torch.tensor([0, 5, 2, 1])),
        sn.logsumexp(x, axis=None),
        sn.linear_cross_entropy(x, x[:3].clone(), torch.tensor([0, 2, 2, 1])),
    ):
        assert isinstance(value, torch.Tensor) and value.shape == ()


@needs_dask
def test_a_full_reduction_on_dask_computes_to_a_numpy_scalar(rng):
    x = rng.standard_normal((4, 6))
    dx = da.from_array(x, chunks=(2, 3))
    t = np.array([0, 5, 2, 1])
    results = {
        "logsumexp": sd.logsumexp(da.from_array(x[0], chunks=2), axis=None),
        "cross_entropy mean": sd.cross_entropy(dx, t),
        "cross_entropy sum": sd.cross_entropy(dx, t, reduction="sum"),
        "cross_entropy probabilities": sd.cross_entropy(dx, np.full(x.shape, 1 / 6)),
        "linear_cross_entropy": sd.linear_cross_entropy(dx, dx[:3], t % 3),
    }
    for name, lazy in results.items():
        assert lazy.shape == ()
        assert _is_numpy_scalar(lazy.compute(), np.float64), name


# ----------------------------------------------------------------------------- linear
_LINEAR_OPTIONS = {
    "label_smoothing": 0.1,
    "ignore_index": -100,
    "z_loss": 1e-3,
    "softcap": 5.0,
    "class_weights": np.linspace(0.5, 1.5, 11),
}


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_cross_entropy_numpy_engine_equals_the_sweep(rng, reduction):
    h, W, bias = rng.standard_normal((9, 4)), rng.standard_normal((11, 4)), rng.standard_normal(11)
    t = rng.integers(0, 11, 9)
    t[3] = -100
    kwargs = {
        **_LINEAR_OPTIONS,
        "bias": bias,
        "reduction": reduction,
        "return_grad": True,
        "return_lse": True,
        "return_entropy": True,
    }
    got = sn.linear_cross_entropy(h, W, t, backend="numpy", **kwargs)
    want = sn.linear_cross_entropy(h, W, t, backend="cpu", chunk_size=4, **kwargs)
    flat = lambda r: [r[0], *r[1], r[2], r[3]]  # noqa: E731
    for g, w in zip(flat(got), flat(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_linear_cross_entropy_numpy_engine_weights_the_gradient_by_upstream(rng):
    """The backward pass of ``reduction="none"`` (softmax_numba.torch's)."""
    h, W = rng.standard_normal((6, 3)), rng.standard_normal((7, 3))
    t, up = rng.integers(0, 7, 6), rng.standard_normal(6)
    options = {k: None for k in ("bias", "softcap", "class_weights", "chunk_size")}
    options.update(reduction="none", label_smoothing=0.0, ignore_index=None, z_loss=0.0)
    options.update(return_grad=True, return_lse=False, return_entropy=False, upstream=up)
    _, got = _linear._linear_cross_entropy(h, W, t, backend="numpy", **options)
    _, want = _linear._linear_cross_entropy(h, W, t, backend="cpu", **options)
    for g, w in zip(got[:2], want[:2], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_linear_cross_entropy_numpy_engine_keeps_float32(rng):
    h, W = rng.standard_normal((5, 3), np.float32), rng.standard_normal((7, 3), np.float32)
    loss, (dh, dW, _) = sn.linear_cross_entropy(
        h, W, np.arange(5), backend="numpy", return_grad=True
    )
    assert loss.dtype == dh.dtype == dW.dtype == np.float32


def test_linear_cross_entropy_promotes_integers_like_every_function(rng):
    h, W = rng.integers(-3, 4, (5, 3)), rng.integers(-3, 4, (7, 3))
    t = np.arange(5)
    got = sn.linear_cross_entropy(h, W, t, bias=np.ones(7, bool), return_grad=True)
    want = sn.linear_cross_entropy(h * 1.0, W * 1.0, t, bias=np.ones(7), return_grad=True)
    assert got[0].dtype == np.float64
    np.testing.assert_array_equal(got[0], want[0])
    # an integer array takes the floating dtype of the others
    h32 = h.astype(np.float32)
    assert sn.linear_cross_entropy(h32, W, t).dtype == np.float32
    # float16 too (computed in float32, the gradients in float16)
    loss, (dh, dW, _) = sn.linear_cross_entropy(h.astype(np.float16), W, t, return_grad=True)
    assert loss.dtype == np.float32 and dh.dtype == dW.dtype == np.float16
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16"):
        sn.linear_cross_entropy(h.astype(np.complex64), W, t)
    with pytest.raises(TypeError, match="one dtype"):
        sn.linear_cross_entropy(h32, W.astype(np.float64), t)


@needs_dask
def test_linear_cross_entropy_on_dask_promotes_integers(rng):
    h, W = rng.integers(-3, 4, (4, 3)), rng.integers(-3, 4, (6, 3))
    t = np.arange(4)
    lazy = sd.linear_cross_entropy(da.from_array(h, chunks=2), da.from_array(W, chunks=3), t)
    assert lazy.dtype == np.float64
    np.testing.assert_allclose(lazy.compute(), sn.linear_cross_entropy(h, W, t), rtol=1e-13)


# ----------------------------------------------------------------------------- messages
def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def _x(shape):
    return np.random.default_rng(0).standard_normal(shape)


#: Every function that writes into ``out=``: its call on ``x`` with ``out``.
WRITERS = {
    "softmax": lambda x, **kw: sn.softmax(x, **kw),
    "log_softmax": lambda x, **kw: sn.log_softmax(x, **kw),
    "softmax_backward": lambda x, **kw: sn.softmax_backward(x, x, **kw),
    "log_softmax_backward": lambda x, **kw: sn.log_softmax_backward(x, x, **kw),
    "sigmoid": lambda x, **kw: sn.sigmoid(x, **kw),
    "softplus": lambda x, **kw: sn.softplus(x, **kw),
    "arctan": lambda x, **kw: sn.arctan(x, **kw),
    "gaussian": lambda x, **kw: sn.gaussian(x, **kw),
    "sparsemax": lambda x, **kw: sn.sparsemax(x, **kw),
    "entmax15": lambda x, **kw: sn.entmax15(x, **kw),
    "entmax_bisect": lambda x, **kw: sn.entmax_bisect(x, **kw),
    "sparsemax_backward": lambda x, **kw: sn.sparsemax_backward(x, x, **kw),
    "entmax15_backward": lambda x, **kw: sn.entmax15_backward(x, x, **kw),
    "maxout": lambda x, **kw: sn.maxout(x, pool_size=1, **kw),
}


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("layout", ["small", "strided"])
@pytest.mark.parametrize("name", WRITERS)
def test_a_read_only_out_is_a_one_line_value_error(name, layout, backend):
    """Before the fix Numba refused the buffer with a 27-40 line ``TypingError``.
    ``small``: the shape of the small-array fast path; ``strided``: a non-last axis."""
    x = _x((3, 4))
    if layout == "strided":
        x = np.asfortranarray(x)
    out = np.zeros_like(x)
    out.flags.writeable = False
    with pytest.raises(ValueError) as error:
        WRITERS[name](x, out=out, backend=backend)
    assert "out must be writeable" in _one_line(error)


def test_a_read_only_grad_out_is_a_one_line_value_error():
    x = _x((3, 4))
    grad = np.zeros_like(x)
    grad.flags.writeable = False
    for options in ({}, {"z_loss": 1e-3}):
        with pytest.raises(ValueError) as error:
            sn.cross_entropy(x, np.array([0, 1, 2]), return_grad=True, grad_out=grad, **options)
        assert "grad_out must be writeable" in _one_line(error)


def test_a_writeable_out_still_works():
    x = _x((3, 4))
    out = np.zeros_like(x)
    assert sn.softmax(x, out=out) is out
    np.testing.assert_array_equal(out, sn.softmax(x))


def test_a_floating_class_index_target_is_named_as_such():
    with pytest.raises(ValueError) as error:
        sn.cross_entropy(_x((3, 4)), np.array([0.0, 1.0, 2.0]))
    message = _one_line(error)
    assert "class indices must be integers" in message and "astype" in message


def test_an_empty_class_axis_says_so():
    with pytest.raises(ValueError) as error:
        sn.cross_entropy(np.zeros((3, 0)), np.array([0, 1, 2]))
    message = _one_line(error)
    assert "class axis is empty" in message and "0..-1" not in message


def test_a_negative_probability_is_refused():
    q = np.array([[-0.5, 1.0, 0.5, 0.0]] * 3)
    with pytest.raises(ValueError, match="negative") as error:
        sn.cross_entropy(_x((3, 4)), q)
    _one_line(error)
    # still accepted: zeros, rows that do not sum to 1 (as PyTorch), NaN (poisons its row)
    sn.cross_entropy(_x((3, 4)), np.abs(q), backend="numpy")
    loss = sn.cross_entropy(_x((1, 2)), np.array([[np.nan, 1.0]]), backend="numpy")
    assert np.isnan(loss)


@needs_dask
def test_dask_gives_the_same_messages(rng):
    dx = da.from_array(_x((3, 4)), chunks=2)
    with pytest.raises(ValueError, match="class indices must be integers"):
        sd.cross_entropy(dx, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="negative"):
        sd.cross_entropy(dx, -np.ones((3, 4))).compute()
    with pytest.raises(ValueError, match="class axis is empty"):
        sd.cross_entropy(da.zeros((3, 0), chunks=2), np.array([0, 1, 2])).compute()


def test_a_tensor_that_requires_grad_is_taken_under_no_grad(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal((3, 5))).requires_grad_()
    with pytest.raises(TypeError, match="requires grad"):
        sn.softmax(x)
    with torch.no_grad():
        got = sn.softmax(x)
        loss = sn.cross_entropy(x, torch.tensor([0, 4, 2]))
    assert isinstance(got, torch.Tensor) and not got.requires_grad
    np.testing.assert_array_equal(got.numpy(), sn.softmax(x.detach().numpy()))
    assert float(loss) == sn.cross_entropy(x.detach().numpy(), np.array([0, 4, 2]))
