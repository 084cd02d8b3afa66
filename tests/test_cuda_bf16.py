"""The CUDA engine's row access (``softmax_numba/gpu/_wide.py``): 16 bytes at a time with
scalar edges, and float16 / bfloat16 read in 2 bytes, computed in float32, stored in 2.

- The intrinsics' IR (the code a GPU runs) compiled for the CPU: bfloat16 read exactly
  from every one of its 65536 bit patterns, stored rounded to nearest even (NaN kept)
  as ``ml_dtypes`` rounds, and wide accesses that move the bits unchanged.
- On the simulator (``NUMBA_ENABLE_CUDASIM=1``, set in conftest; every wide access there
  asserts a 16-byte boundary): the partition of a row into head, vectors and tail, the
  ops on rows that start off a 16-byte boundary or have an odd length (the scalar
  edge), and bfloat16 device arrays within each op's bound in bfloat16's u.
"""

from __future__ import annotations

import numpy as np
import pytest

import softmax_numba as sn
from softmax_numba import bounds, config, registry

ml_dtypes = pytest.importorskip("ml_dtypes")
cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
BF16 = np.dtype(ml_dtypes.bfloat16)
pytestmark = [
    pytest.mark.skipif(not cuda.is_available(), reason="no GPU and no simulator"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]


# ------------------------------------------------------------------ the IR, on the CPU
@pytest.fixture(scope="module")
def cpu_ir():
    """The intrinsics of ``_wide`` compiled for the CPU, in small loops."""
    import numba
    from numba.extending import intrinsic

    from softmax_numba.gpu import _wide

    p = _wide.intrinsics(intrinsic)
    load, store, load_wide, store_wide, lanes = (
        p.load, p.store, p.load_wide, p.store_wide, p.lanes,
    )  # fmt: skip

    @numba.njit
    def read(bits, out):
        for j in range(bits.size):
            out[j] = load(bits, j)

    @numba.njit
    def write(values, bits):
        for j in range(values.size):
            store(bits, j, values[j])

    @numba.njit
    def copy_wide(a, b, first):
        width = lanes(a)
        for j in range(first, a.size - width + 1, width):
            store_wide(b, j, load_wide(a, j))

    return read, write, copy_wide


def _float32_cases(rng) -> np.ndarray:
    """Every kind of float32 a bfloat16 store meets: the bfloat16 values themselves, the
    ties between neighbours (even and odd), one float32 ulp either side of them, the
    largest finite values (which round to inf), subnormals, zeros, infinities, NaNs
    whose payload sits only in the low half (truncation would make them inf), and
    random bit patterns."""
    bf = np.arange(0, 65536, 7, dtype=np.uint32) << 16
    tie = bf | 0x8000
    special = np.array(
        [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F800001, 0xFF800001, 0x7FC00000,
         0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x00000001, 0x00008000, 0x00018000, 0x807FFFFF],
        dtype=np.uint32,
    )  # fmt: skip
    random = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([bf, tie, tie - 1, tie + 1, special, random]).view(np.float32)


def test_bfloat16_is_read_exactly_from_every_bit_pattern(cpu_ir):
    read, _, _ = cpu_ir
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = np.empty(bits.size, np.float32)
    read(bits, got)
    want = bits.view(BF16).astype(np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_bfloat16_stores_round_to_nearest_even_and_keep_nan(cpu_ir, rng):
    """The device store (IR on the CPU) and the simulator's twin against ml_dtypes."""
    from softmax_numba.gpu._wide import bfloat16_bits

    _, write, _ = cpu_ir
    values = _float32_cases(rng)
    got = np.empty(values.size, np.uint16)
    write(values, got)
    with np.errstate(invalid="ignore"):
        want = values.astype(BF16).view(np.uint16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.isnan(got[nan].view(BF16).astype(np.float32)).all()
    sign = np.signbit(values[nan])
    np.testing.assert_array_equal(np.signbit(got[nan].view(BF16).astype(np.float32)), sign)
    some = np.flatnonzero(~nan)[::40].tolist() + np.flatnonzero(nan)[:20].tolist()
    twin = np.array([bfloat16_bits(values[k]) for k in some], np.uint16)
    np.testing.assert_array_equal(twin, got[some])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_wide_accesses_move_the_bits_unchanged(cpu_ir, dtype, rng):
    """(bfloat16 bits: those of finite values, which a float32 round trip keeps; a NaN
    comes back quiet.)"""
    _, _, copy_wide = cpu_ir
    a = (rng.integers(0, 0x7F80, 64) | (rng.integers(0, 2, 64) << 15)).astype(dtype)
    b = np.zeros_like(a)
    first = (-a.ctypes.data % 16) // a.itemsize  # the first entry on a 16-byte boundary
    copy_wide(a, b, first)
    np.testing.assert_array_equal(b[first:], a[first:])


# ------------------------------------------------------------------ the partition
def _partition(a, start, stop):
    from softmax_numba.gpu import _wide

    return _wide.build().span(a, a, a, start, stop)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.uint16])
def test_the_partition_covers_the_row_with_vectors_on_16_byte_boundaries(dtype):
    lanes = 16 // np.dtype(dtype).itemsize
    buffer = np.zeros(4 * lanes + 40, dtype)
    for offset in range(lanes + 1):
        a = buffer[offset:]
        for start, stop in [(0, 0), (0, 1), (0, lanes), (1, 2 * lanes + 3), (2, 40)]:
            first, body, count, last = _partition(a, start, stop)
            assert (first, last) == (start, stop)
            assert start <= body <= stop and body + count * lanes <= stop
            if count:
                assert a[body:].ctypes.data % 16 == 0
                assert body - start < lanes and stop - (body + count * lanes) < lanes
            else:  # too short for a vector between two boundaries
                assert stop - start < 2 * lanes
    a = buffer[1:]
    mismatched = buffer[2:]  # one entry further from its boundary than a
    from softmax_numba.gpu import _wide

    assert _wide.build().span(a, mismatched, a, 0, 30)[2] == 0
    assert _wide.build().span(a, a.astype(np.float64), a, 0, 30)[2] == 0


# ------------------------------------------------------------------ the scalar edge
@pytest.fixture
def tiny_launch(monkeypatch):
    """5 threads a block, 2 blocks: partial warps and vectors, several rows a block."""
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 5)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 2)
    for name in ("CUDA_WARP_ROW_MAX_LENGTH", "CUDA_ROW_IN_SHARED_MAX_BYTES",
                 "CUDA_SPLIT_MIN_LENGTH"):  # fmt: skip
        monkeypatch.setattr(config, name, 0)


def _shifted_rows(x):
    """``x`` on the device, each row starting 1 entry past a 16-byte boundary."""
    flat = cuda.to_device(np.concatenate([np.zeros(1, x.dtype), x.reshape(-1)]))
    return flat[1:].reshape(x.shape)


def _within_bound(entry, args, got):
    ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    with bounds.summation_order("cuda"):
        errors = entry.errors(args, got, ref)
    for (err, allowed), g in zip(errors, got, strict=True):
        assert g.dtype == np.asarray(args[0]).dtype
        assert np.all(err <= allowed), (entry.name, err.max(), allowed[np.argmax(err - allowed)])


#: One entry per kind of kernel pass: a map of one row, a fold of two, a reduction, the
#: loss and its gradient from the same partition.
EDGE_ENTRIES = ("softmax[online]", "log_softmax", "logsumexp", "softmax_backward",
                "cross_entropy[smoothed]")  # fmt: skip


@pytest.mark.parametrize("name", EDGE_ENTRIES)
@pytest.mark.parametrize("n", [13, 16])
def test_rows_off_a_16_byte_boundary_within_the_bound(name, n, tiny_launch, rng):
    """Rows of 13 (odd: each row starts elsewhere) and 16 (a multiple of 4), the whole
    array one float32 past a boundary: head, vectors and tail in every row."""
    entry = next(e for e in registry.ENTRIES if e.name == name)
    x = (rng.standard_normal((4, n)) * 3).astype(np.float32)
    args = entry.arguments(x, rng)
    device = tuple(
        _shifted_rows(a) if isinstance(a, np.ndarray) and a.shape == x.shape else a for a in args
    )
    result = entry.run(device, backend="cuda")
    got = tuple(
        g.copy_to_host() if hasattr(g, "copy_to_host") else g for g in registry.outputs(result)
    )
    _within_bound(entry, args, got)


# ------------------------------------------------------------------ bfloat16 on the device
#: The ops that store bfloat16 (``_runtime.HALF_STORAGE``): one entry each.
BF16_ENTRIES = ("softmax[online]", "log_softmax", "logsumexp", "cross_entropy")


def _buckets(monkeypatch, bucket):
    if bucket == "warp_per_row":
        monkeypatch.setattr(config, "CUDA_WARP_ROW_MAX_LENGTH", 1024)
        monkeypatch.setattr(config, "CUDA_WARP_ROWS_PER_BLOCK", 2)
    elif bucket == "row_in_shared":
        monkeypatch.setattr(config, "CUDA_ROW_IN_SHARED_MAX_BYTES", 48 * 1024)
    elif bucket == "split_row":
        monkeypatch.setattr(config, "CUDA_SPLIT_MIN_LENGTH", 4)
        monkeypatch.setattr(config, "CUDA_RESIDENT_BLOCKS", 8)


@pytest.mark.parametrize("bucket", ["block_per_row", "warp_per_row", "row_in_shared", "split_row"])
@pytest.mark.parametrize("name", BF16_ENTRIES)
def test_bfloat16_device_arrays_within_the_bound(name, bucket, tiny_launch, monkeypatch, rng):
    """A bfloat16 device array is read as bfloat16, computed in float32 and stored in
    bfloat16 on the device: within the op's bound in bfloat16's u, in every bucket, on
    rows of 19 (8 lanes a vector: a head and a tail in most rows)."""
    _buckets(monkeypatch, bucket)
    entry = next(e for e in registry.ENTRIES if e.name == name)
    x = (rng.standard_normal((5, 19)) * 3 + 10).astype(BF16)
    args = entry.arguments(x, rng)
    result = entry.run((cuda.to_device(x), *args[1:]), backend="cuda")
    got = tuple(g.copy_to_host() for g in registry.outputs(result))
    for g in got:
        assert g.dtype == BF16
    _within_bound(entry, args, got)


def test_bfloat16_device_arrays_agree_with_the_cpu_engine(tiny_launch, rng):
    """The CPU engine's bfloat16 path (float32 inside, one rounding at the end) and the
    device's agree to one bfloat16 rounding: they differ only where the float32 results
    straddle a rounding boundary."""
    x = (rng.standard_normal((6, 24)) * 4).astype(BF16)
    d = cuda.to_device(x)
    for func in (sn.softmax, sn.log_softmax, sn.logsumexp):
        got = func(d).copy_to_host().astype(np.float64)
        want = func(x, backend="cpu").astype(np.float64)
        ulp = np.abs(want) * 2.0**-7 + 2.0**-133
        assert np.all(np.abs(got - want) <= ulp), func.__name__
        assert np.mean(got == want) > 0.9


def test_bfloat16_non_finite_values_follow_the_rules(tiny_launch):
    inf, nan = np.inf, np.nan
    x = np.array(
        [[nan, 1, 2, 0, 3, 1, 0.5, 1, 2], [inf, 1, 2, 0, 3, 1, 0.5, 1, 2],
         [-inf] * 9, [-inf, 1, 2, -inf, -inf, -inf, -inf, -inf, -inf]],
    ).astype(BF16)  # fmt: skip
    for func in (sn.softmax, sn.log_softmax, sn.logsumexp):
        got = func(cuda.to_device(x)).copy_to_host().astype(np.float32)
        with np.errstate(all="ignore"):
            want = func(x, backend="cpu").astype(np.float32)
        np.testing.assert_array_equal(got, want, func.__name__)


def test_bfloat16_device_arrays_elsewhere_are_refused():
    x = cuda.to_device(np.zeros((2, 4), BF16))
    with pytest.raises(TypeError, match="where= on a bfloat16 GPU array"):
        sn.softmax(x, where=np.ones((2, 4), bool))
    with pytest.raises(TypeError, match=r"float32 or float64 \(float16 and bfloat16 too\)"):
        sn.softmax(cuda.to_device(np.zeros((2, 4), np.int32)))
    with pytest.raises(TypeError, match="CuPy has no bfloat16"):
        sn.log_softmax(cuda.to_device(np.zeros((2, 4), np.uint16)))
    with pytest.raises(TypeError, match="accepts float32 or float64, got bfloat16"):
        sn.sparsemax(x)


@pytest.mark.skipif(
    pytest.importorskip("numba").config.ENABLE_CUDASIM, reason="torch CUDA tensors need a GPU"
)
def test_torch_bfloat16_cuda_tensors_come_back_as_bfloat16():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    x = torch.randn(8, 1000, device="cuda").to(torch.bfloat16)
    for func, peer in ((sn.softmax, torch.softmax), (sn.log_softmax, torch.log_softmax)):
        got = func(x)
        assert got.dtype == torch.bfloat16 and got.device == x.device
        want = peer(x.float(), -1)
        ulp = want.abs() * 2.0**-7 + 2.0**-126
        assert bool(((got.float() - want).abs() <= ulp).all()), func.__name__
    loss = sn.cross_entropy(x, torch.arange(8, device="cuda"), reduction="none")
    assert loss.dtype == torch.bfloat16 and loss.device == x.device
