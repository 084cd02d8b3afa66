"""The CPU kernels' speed machinery: row pipelining, streaming stores, vector code.

The 2-D kernels take the max of row ``i + 1`` inside the exp pass of row ``i``;
log-softmax writes large outputs with streaming stores.  Neither may change a
result: these tests compare streaming against plain stores bit for bit, put
non-finite rows right after finite ones inside a run of rows, and check in the
LLVM IR that the hot loops are vectorized and that float32 never becomes float64.
"""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest
import scipy.special

import softmax_numba as sn
from softmax_numba import config
from softmax_numba.cpu import _compile, elementwise, maxout
from softmax_numba.cpu import softmax as kernels
from softmax_numba.cpu._stream import stream_fence

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@_compile.jit
def _stream_fenced(src, dst, a, b):
    kernels.log_probabilities_into(src, dst, a, b, True)
    stream_fence()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stream_log_probability_subtracts_in_order_at_any_alignment(dtype, rng):
    """``(src - a) - b`` with two roundings in that order, never ``src - (a + b)``:
    with ``a`` large, the two differ in most entries."""
    for n in (0, 1, 7, 15, 16, 17, 33, 100, 1001):
        for offset in range(4):
            buffer = np.full(n + offset + 3, -7.0, dtype=dtype)
            dst = buffer[offset : offset + n]
            a, b = dtype(1000.0 + 1.0 / 3.0), dtype(0.1)
            src = (a + rng.standard_normal(n)).astype(dtype)
            _stream_fenced(src, dst, a, b)
            np.testing.assert_array_equal(dst, (src - a) - b)
            if n > 16:
                assert np.any(dst != src - (a + b))
            assert (buffer[:offset] == -7).all() and (buffer[offset + n :] == -7).all()


def _with_nonfinite_rows(rng, rows, n, dtype):
    """Rows after ``ROW_CHUNKS`` runs of plain rows hold NaN, +inf and all -inf, so that
    the pipelined max meets them as the *next* row of a finite one."""
    x = rng.standard_normal((rows, n)).astype(dtype) * 5
    x[3, 7] = np.nan
    x[5, 1] = -np.nan
    x[9, :] = -np.inf
    x[11, 2] = np.inf
    x[13, ::2] = -np.inf
    x[rows - 1, 0] = np.nan
    return x


def _targets(rows, n):
    """Class indices, every fourth one the ignored class -100."""
    return np.where(np.arange(rows) % 4 == 1, -100, np.arange(rows) % n)


CASES = {
    "softmax": lambda x, t, b: sn.softmax(x, backend=b),
    "log_softmax": lambda x, t, b: sn.log_softmax(x, backend=b),
    "logsumexp": lambda x, t, b: sn.logsumexp(x, backend=b),
    "cross_entropy": lambda x, t, b: sn.cross_entropy(
        x, t, reduction="none", ignore_index=-100, return_grad=True, backend=b
    ),
    "cross_entropy_smoothed": lambda x, t, b: sn.cross_entropy(
        x,
        t,
        reduction="none",
        ignore_index=-100,
        label_smoothing=0.1,
        return_grad=True,
        backend=b,
    ),
}


def _arrays(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ["cpu", "parallel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pipelined_rows_equal_rows_one_at_a_time(case, backend, dtype, rng):
    """A row's result must not depend on its neighbours (the pipelined max of the
    next row, NaN and infinities included): bit for bit against one-row calls."""
    rows = 3 * kernels.ROW_CHUNKS + 5  # several rows per run
    x = _with_nonfinite_rows(rng, rows, 37, dtype)
    t = _targets(rows, 37)
    together = _arrays(CASES[case](x, t, backend))
    alone = [_arrays(CASES[case](x[i : i + 1], t[i : i + 1], backend)) for i in range(rows)]
    for k, array in enumerate(together):
        np.testing.assert_array_equal(array, np.concatenate([a[k] for a in alone]))


def _signed_rows(rng, rows, n, dtype):
    """Rows whose maxima the pipelined max must find from the bits of the *next* row:
    every entry negative, a maximum of -0.0 or +0.0 among negatives, a negative NaN
    among negatives, subnormals, and ordinary mixed rows."""
    x = rng.standard_normal((rows, n)).astype(dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    for i in range(rows):
        kind = i % 6
        if kind == 0:
            x[i] = -np.abs(x[i]) - 1
        elif kind == 1:
            x[i] = -np.abs(x[i])
            x[i, i % n] = -0.0
        elif kind == 2:
            x[i] = -np.abs(x[i])
            x[i, i % n] = 0.0
        elif kind == 3:
            x[i] = -np.abs(x[i]) - 2
            x[i, (i + 1) % n] = -np.nan
        elif kind == 4:
            x[i] = -tiny * np.arange(1, n + 1)
    return x


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pipelined_max_of_negative_and_signed_zero_rows(backend, dtype, rng):
    rows, n = 3 * kernels.ROW_CHUNKS + 7, 45
    x = _signed_rows(rng, rows, n, dtype)
    for case in ("softmax", "log_softmax", "logsumexp"):
        together = CASES[case](x, None, backend)
        alone = np.concatenate([CASES[case](x[i : i + 1], None, backend) for i in range(rows)])
        np.testing.assert_array_equal(together, alone)
    wide = x.astype(np.float64)
    finite = ~np.isnan(wide).any(axis=1)
    np.testing.assert_allclose(
        sn.logsumexp(x, backend=backend)[finite],
        scipy.special.logsumexp(wide, axis=-1)[finite],
        rtol=8 * np.finfo(dtype).eps,
    )
    assert np.isnan(sn.softmax(x, backend=backend)[~finite]).all()


@pytest.mark.parametrize("backend", ["cpu", "parallel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streaming_stores_change_no_bit(backend, dtype, rng, monkeypatch):
    x = _with_nonfinite_rows(rng, 2 * kernels.ROW_CHUNKS + 3, 37, dtype)
    monkeypatch.setattr(config, "STREAM_MIN_BYTES", 1 << 62)
    cached = sn.log_softmax(x, backend=backend)
    monkeypatch.setattr(config, "STREAM_MIN_BYTES", 0)
    np.testing.assert_array_equal(sn.log_softmax(x, backend=backend), cached)


@pytest.mark.parametrize("stream_min_bytes", [0, 1 << 62])
@pytest.mark.parametrize("backend", ["cpu", "parallel"])
def test_pipelined_rows_follow_scipy_on_nonfinite_rows(stream_min_bytes, backend, rng, monkeypatch):
    monkeypatch.setattr(config, "STREAM_MIN_BYTES", stream_min_bytes)
    x = _with_nonfinite_rows(rng, 2 * kernels.ROW_CHUNKS + 9, 40, np.float64)
    np.testing.assert_allclose(
        sn.softmax(x, backend=backend), scipy.special.softmax(x, axis=-1), rtol=1e-13
    )
    np.testing.assert_allclose(
        sn.log_softmax(x, backend=backend),
        scipy.special.log_softmax(x, axis=-1),
        rtol=1e-13,
        atol=1e-13,  # x_i - lse cancels near 0
    )
    np.testing.assert_allclose(
        sn.logsumexp(x, backend=backend), scipy.special.logsumexp(x, axis=-1), rtol=1e-13
    )


# ----------------------------------------------------------------------------- machine code

#: Row pieces whose loops carry the kernels' time, with float32 arguments.
_F32 = np.float32
HOT_LOOPS = {
    "maximum": lambda x: (x,),
    "exp_shifted_into": lambda x: (x, _F32(0.5), np.empty_like(x), x, np.zeros(4, x.dtype)),
    "shifted_sum_excluding": lambda x: (x, _F32(0.5), x, np.zeros(4, x.dtype)),
    "exp_shifted_excluding_into": lambda x: (
        x,
        _F32(0.5),
        np.empty_like(x),
        x,
        np.zeros(4, x.dtype),
    ),
    "scale_into": lambda x: (np.empty_like(x), _F32(0.5)),
}


def _llvm_ir(function, args) -> str:
    """The optimized LLVM IR of a kernel's Python function, compiled afresh (cached code
    has none)."""
    options = {**_compile._options(parallel=False), "cache": False}
    dispatcher = numba.njit(**options)(function)
    dispatcher(*args)
    module = next(iter(dispatcher.inspect_llvm().values()))
    # The compiled function itself, not the wrappers that box its result for Python.
    functions = module.split("\ndefine ")[1:]
    return "\n".join(f for f in functions if "cpython" not in f.split("(")[0])


def _slow_but(names, keep):
    """``names``, each a ``slow`` case but ``keep``: every case compiles afresh."""
    return [n if n == keep else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _slow_but(HOT_LOOPS, "exp_shifted_into"))
def test_hot_loops_are_vectorized_in_float32(name):
    x = np.linspace(-3, 3, 100, dtype=np.float32)
    ir = _llvm_ir(getattr(kernels, name).py_func, HOT_LOOPS[name](x))
    assert re.search(r"<\d+ x float>", ir), f"{name}: no float32 vector code"
    assert not re.search(r"fpext float .* to double", ir), f"{name}: float32 widened to float64"
    assert "@llvm.exp.f" not in ir and "@expf" not in ir, f"{name}: calls a library exp"


#: The serial 2-D elementwise kernels and maxout at pool size 4 (float32 arguments).
ELEMENTWISE_KERNELS = {
    "sigmoid": lambda x: (elementwise.SIGMOID.cpu, (x, np.empty_like(x), True)),
    "softplus": lambda x: (elementwise.SOFTPLUS.cpu, (x, np.empty_like(x), 1.0, True)),
    "arctan": lambda x: (elementwise.ARCTAN.cpu, (x, np.empty_like(x), True)),
    "gaussian": lambda x: (elementwise.GAUSSIAN.cpu, (x, np.empty_like(x), 0.0, 1.0, True)),
    "maxout": lambda x: (maxout.MAXOUT.cpu, (x, 4, np.empty((x.shape[0], 25), x.dtype))),
}


@pytest.mark.parametrize("name", _slow_but(ELEMENTWISE_KERNELS, "sigmoid"))
def test_elementwise_kernels_are_vectorized_without_library_calls(name):
    """No libm ``exp``, ``log1p`` or ``atan`` per entry, and vector code (for maxout
    the interleaved loads of a constant pool size)."""
    x = np.linspace(-3, 3, 400, dtype=np.float32).reshape(4, 100)
    kernel, args = ELEMENTWISE_KERNELS[name](x)
    ir = _llvm_ir(kernel.py_func, args)
    assert re.search(r"<\d+ x float>", ir), f"{name}: no float32 vector code"
    for call in ("@expf", "@log1pf", "@atanf", "@llvm.exp.f32", "@llvm.log.f32"):
        assert call not in ir, f"{name}: calls {call}"


@pytest.mark.parametrize("name", _slow_but(ELEMENTWISE_KERNELS, "sigmoid"))
def test_float64_elementwise_kernels_are_vectorized_without_library_calls(name):
    """The same in float64."""
    x = np.linspace(-3, 3, 400).reshape(4, 100)
    kernel, args = ELEMENTWISE_KERNELS[name](x)
    ir = _llvm_ir(kernel.py_func, args)
    assert re.search(r"<\d+ x double>", ir), f"{name}: no float64 vector code"
    for call in ("@exp(", "@log1p(", "@atan(", "@llvm.exp.f64", "@llvm.log.f64"):
        assert call not in ir, f"{name}: calls {call}"
