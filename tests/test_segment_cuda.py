"""The ragged-row ops on the CUDA engine (``softmax_numba/gpu/segment.py``), on the
simulator when there is no GPU (``NUMBA_ENABLE_CUDASIM=1``, set in conftest): every
segment within the row op's bound in the CUDA summation order, special values as on
the CPU, host and device arrays, trailing axes (transposed on the device).  Launches
are tiny and odd (5 threads a block, 3 blocks: partial warps, several segments a
block, idle threads on short segments), segments short: the simulator runs every
thread as a Python thread."""

from __future__ import annotations

import numpy as np
import pytest
from test_segment import OPS, arguments, ragged, segment_errors, special_case

import softmax_numba as sn
from softmax_numba import bounds, config

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
pytestmark = [
    pytest.mark.skipif(not cuda.is_available(), reason="no GPU and no simulator"),
    # The simulator evaluates kernels on NumPy scalars, which warn where a GPU is silent.
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

#: Empty segments, one entry, a segment shorter and one longer than a block.
LENGTHS = [2, 0, 1, 7, 0, 12]


@pytest.fixture(autouse=True)
def tiny_launch(monkeypatch):
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 5)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 3)


def _within_bounds(name, args, got):
    with bounds.summation_order("cuda"):
        errors = segment_errors(name, args, got)
    assert all(e <= a for e, a in errors), (name, max(errors, key=lambda p: p[0] - p[1]))


#: Each op in float32, and one (the kernels are the same code for both) in float64.
CASES = [(name, np.float32) for name in OPS] + [("segment_softmax", np.float64)]


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_every_segment_within_the_bound(name, dtype, rng):
    """Host arrays of two heads: the CUDA engine copies them over and back (one head:
    the other tests)."""
    values, offsets = ragged(rng, LENGTHS, (2,), dtype, offset=1e3)
    args = arguments(name, values, offsets, rng)
    got = OPS[name][0](*args, backend="cuda")
    assert isinstance(got, np.ndarray) and got.dtype == dtype
    _within_bounds(name, args, got)


def test_special_values_as_on_the_cpu():
    values, offsets = special_case()
    for name in ("segment_softmax", "segment_log_softmax", "segment_logsumexp"):
        got = OPS[name][0](values, offsets, backend="cuda")
        want = OPS[name][0](values, offsets, backend="cpu")
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        np.testing.assert_array_equal(got[~np.isfinite(want)], want[~np.isfinite(want)])
        _within_bounds(name, (values, offsets), got)


def test_device_arrays_stay_on_the_device(rng):
    """GPU input gives GPU output (``out=`` written in place); with trailing axes the
    entries are transposed to rows on the device and back."""
    from softmax_numba.gpu._runtime import is_device_array

    for trailing in ((), (3,)):
        values, offsets = ragged(rng, LENGTHS, trailing, np.float32)
        d_values = cuda.to_device(values)
        got = sn.segment_log_softmax(d_values, offsets)
        assert is_device_array(got)
        _within_bounds("segment_log_softmax", (values, offsets), got.copy_to_host())
        out = cuda.device_array((len(LENGTHS), *trailing), np.float32)
        assert sn.segment_logsumexp(d_values, cuda.to_device(offsets), out=out) is out
        _within_bounds("segment_logsumexp", (values, offsets), out.copy_to_host())
    with pytest.raises(TypeError, match="computes on the CPU"):
        sn.segment_softmax(d_values, offsets, backend="cpu")
    swapped = offsets.copy()
    swapped[[1, 3]] = swapped[[3, 1]]
    with pytest.raises(ValueError, match="non-decreasing"):
        sn.segment_softmax(d_values, cuda.to_device(swapped))
