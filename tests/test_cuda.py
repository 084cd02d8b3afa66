"""The CUDA engine: the CPU engines' correctness tests, on the simulator when there
is no GPU (``NUMBA_ENABLE_CUDASIM=1``, set in conftest), with tiny odd block sizes
so that partial blocks, several rows per block and idle threads all happen."""

from __future__ import annotations

import numpy as np
import pytest
from test_accuracy import check_within_bounds
from test_special_values import documented_limits, special_args, special_rows

import softmax_numba as sn
from softmax_numba import config, registry
from softmax_numba.gpu._runtime import is_device_array

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
pytestmark = [
    pytest.mark.skipif(not cuda.is_available(), reason="no GPU and no simulator"),
    # The simulator evaluates kernels on NumPy scalars, which warn where a GPU is silent.
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]


#: The threshold searches (a block reduction per bisection step) are the slow ones
#: on the simulator, where every thread is a Python thread: they get fewer rows.
SEARCHES = {"sparsemax", "entmax15", "entmax_bisect"}


def _launch(monkeypatch, threads, blocks):
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", threads)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", blocks)


def _buckets_off(monkeypatch):
    for name in (
        "CUDA_WARP_ROW_MAX_LENGTH",
        "CUDA_ROW_IN_SHARED_MAX_BYTES",
        "CUDA_SPLIT_MIN_LENGTH",
    ):
        monkeypatch.setattr(config, name, 0)


@pytest.fixture(autouse=True)
def tiny_launch(monkeypatch):
    """5 threads per block, 3 blocks: partial blocks and several rows per block; the
    plain block-per-row kernels at every row length (the other row-length buckets
    have their own tests below)."""
    _launch(monkeypatch, 5, 3)
    _buckets_off(monkeypatch)


#: float64 runs in ``make test``; ``make test-fast`` keeps float32.
DTYPES_FAST_FLOAT32 = [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)]


#: The ops with a kernel for each row-length bucket (``gpu._runtime.plan``).
BUCKETED = ("softmax[shifted]", "softmax[online]", "log_softmax", "logsumexp")
BUCKETED_ENTRIES = [e for e in registry.ENTRIES if e.name in BUCKETED]


def _warp_per_row(monkeypatch, rows_per_block=2):
    monkeypatch.setattr(config, "CUDA_WARP_ROW_MAX_LENGTH", 1024)
    monkeypatch.setattr(config, "CUDA_WARP_ROWS_PER_BLOCK", rows_per_block)


def _row_in_shared(monkeypatch):
    monkeypatch.setattr(config, "CUDA_ROW_IN_SHARED_MAX_BYTES", 48 * 1024)


def _split_row(monkeypatch):
    """Rows cut into pieces of at least 4 entries to fill 8 resident blocks."""
    monkeypatch.setattr(config, "CUDA_SPLIT_MIN_LENGTH", 4)
    monkeypatch.setattr(config, "CUDA_RESIDENT_BLOCKS", 8)


#: Each bucket, and the kernel-name suffix that :func:`_runtime.plan` must pick in it.
BUCKETS = {
    "warp_per_row": (_warp_per_row, "__warp_per_row"),
    "row_in_shared": (_row_in_shared, "__row_in_shared"),
    "split_row": (_split_row, "__split_row"),
    "block_per_row": (lambda monkeypatch: None, ""),
}


@pytest.mark.parametrize("bucket", BUCKETS)
@pytest.mark.parametrize("entry", BUCKETED_ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("dtype", DTYPES_FAST_FLOAT32)
@pytest.mark.parametrize("n", [1, 13, 70])
def test_every_row_length_bucket_within_the_bound(bucket, entry, dtype, n, rng, monkeypatch):
    """Each bucket forced at rows of 1, 13 and 70 (shorter and longer than a warp, a
    single piece and several): 7 rows on 2 blocks of 5 threads (2 warps of a row each
    for the warp kernels: a warp with no row in the last pass; pieces shorter than the
    block and an empty last piece for the split rows)."""
    BUCKETS[bucket][0](monkeypatch)
    _launch(monkeypatch, 5, 2)
    x = (rng.standard_normal((7, n)) * 3 + 100).astype(dtype)
    check_within_bounds(entry, "cuda", entry.arguments(x, rng))


@pytest.mark.parametrize("bucket", BUCKETS)
@pytest.mark.parametrize("entry", BUCKETED_ENTRIES, ids=lambda e: e.name)
def test_every_row_length_bucket_follows_the_non_finite_rules(bucket, entry, monkeypatch):
    BUCKETS[bucket][0](monkeypatch)
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [nan, 1.0, 2.0, 0.0, 3.0, 1.0, 0.5, 1.0, 2.0],
            [inf, 1.0, 2.0, 0.0, 3.0, 1.0, 0.5, 1.0, 2.0],
            [inf, inf, 0.0, 1.0, 3.0, 1.0, 0.5, 1.0, 2.0],
            [-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf],
            [-inf, 1.0, 2.0, -inf, -inf, -inf, -inf, -inf, -inf],
            [inf, -inf, 0.0, 1.0, 3.0, 1.0, 0.5, 1.0, nan],
            [1.0, 2.0, 0.0, 1.0, 3.0, 1.0, 0.5, 1.0, inf],
        ]
    )
    with np.errstate(all="ignore"):
        want = entry.run((x,), backend="cpu")
    np.testing.assert_array_equal(entry.run((x,), backend="cuda"), want)


@pytest.mark.parametrize("bucket", BUCKETS)
def test_the_launcher_picks_each_bucket_where_it_applies(bucket, monkeypatch):
    from softmax_numba.gpu import _runtime

    BUCKETS[bucket][0](monkeypatch)
    suffix = BUCKETS[bucket][1]
    kernels = _runtime.built("float32")
    how = _runtime.plan(kernels, "_log_softmax", (6, 70), 4, 5)
    assert how.kernel is kernels["_log_softmax" + suffix]
    assert (how.shared_bytes > 0) == (bucket == "row_in_shared")
    assert (how.pieces > 1) == (bucket == "split_row")
    # an op without the variant keeps its kernel
    assert _runtime.plan(kernels, "_maxout", (6, 70), 4, 5).kernel is kernels["_maxout"]


def test_the_launcher_sizes_the_buckets(monkeypatch):
    from softmax_numba.gpu import _runtime

    kernels = {
        "_log_softmax": "block",
        "_log_softmax__warp_per_row": "warp",
        "_log_softmax__row_in_shared": "shared",
        "_log_softmax__split_row_state": "state",
        "_log_softmax__split_row": "split",
    }
    monkeypatch.setattr(config, "CUDA_RESIDENT_BLOCKS", 100)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 65535)
    monkeypatch.setattr(config, "CUDA_WARP_ROW_MAX_LENGTH", 64)
    monkeypatch.setattr(config, "CUDA_WARP_ROWS_PER_BLOCK", 4)
    monkeypatch.setattr(config, "CUDA_ROW_IN_SHARED_MAX_BYTES", 1024)
    monkeypatch.setattr(config, "CUDA_SPLIT_MIN_LENGTH", 1000)

    def plan(rows, n):
        how = _runtime.plan(kernels, "_log_softmax", (rows, n), 4, 5)
        return how.kernel, how.blocks, how.threads, how.shared_bytes, how.pieces

    assert plan(10, 64) == ("warp", 3, 128, 0, 1)  # 10 rows, 4 a block
    assert plan(1000, 64)[1] == 100  # a grid of the resident blocks, looping
    assert plan(10, 65) == ("shared", 10, 5, 260, 1)  # too short to split
    assert plan(200, 256) == ("shared", 100, 5, 1024, 1)
    assert plan(200, 257) == ("block", 100, 5, 0, 1)
    assert plan(10, 8000) == ("split", 80, 5, 0, 8)  # 8 pieces of 1000 (not 10 of 800)
    assert plan(10, 50_000) == ("split", 100, 5, 0, 10)  # 10 rows fill 100 blocks
    assert plan(100, 50_000)[0] == "block"  # the rows fill the device already
    monkeypatch.setattr(config, "CUDA_WARP_ROWS_PER_BLOCK", 64)
    with pytest.raises(ValueError, match="CUDA_WARP_ROWS_PER_BLOCK"):
        _runtime.plan(kernels, "_log_softmax", (10, 8), 4, 5)


#: sparsemax's sort and pivot algorithms are one threshold-search kernel on the GPU.
ON_GPU = [
    e for e in registry.ENTRIES if e.name != "sparsemax[sort]" and e.op not in registry.CPU_ONLY_OPS
]


#: What ``make test-fast`` keeps of :func:`test_matches_reference` (float32): one
#: block reduction and one threshold search.  On the simulator every thread is a
#: Python thread and a case costs seconds; the other entries run in ``make test``, and
#: :func:`test_two_threads_per_block_and_many_blocks` covers them in the fast run.
FAST_ON_GPU = ("softmax[shifted]", "sparsemax[pivot]")


def _gpu_cases():
    for entry in ON_GPU:
        for dtype in (np.float32, np.float64):
            fast = dtype is np.float32 and entry.name in FAST_ON_GPU
            marks = () if fast else (pytest.mark.slow,)
            yield pytest.param(entry, dtype, id=f"{np.dtype(dtype)}-{entry.name}", marks=marks)


@pytest.mark.parametrize(("entry", "dtype"), list(_gpu_cases()))
def test_matches_reference(entry, dtype, rng):
    n = 12 if entry.divisor > 1 else 13
    rows = 4 if entry.op in SEARCHES else 7
    x = (rng.standard_normal((rows, n)) * 3).astype(dtype)
    check_within_bounds(entry, "cuda", entry.arguments(x, rng))


@pytest.mark.parametrize(
    "entry",
    [e for e in registry.ENTRIES if e.op not in SEARCHES and e.op not in registry.CPU_ONLY_OPS],
    ids=lambda e: e.name,
)
def test_two_threads_per_block_and_many_blocks(entry, rng, monkeypatch):
    _launch(monkeypatch, 2, 64)
    x = rng.standard_normal((5, 12 if entry.divisor > 1 else 9))
    check_within_bounds(entry, "cuda", entry.arguments(x, rng))


#: The ops built on block-wide reductions of a row (max, then sum), chosen by name so
#: that a new registry entry cannot shift the selection.
BLOCK_REDUCTIONS = ("softmax", "log_softmax", "logsumexp", "cross_entropy")


@pytest.mark.parametrize(
    "entry", [e for e in registry.ENTRIES if e.op in BLOCK_REDUCTIONS], ids=lambda e: e.name
)
def test_rows_shorter_than_a_block(entry, rng):
    x = rng.standard_normal((3, 4))
    check_within_bounds(entry, "cuda", entry.arguments(x, rng))


@pytest.mark.parametrize("algorithm", ["shifted", "online", "division_free"])
def test_non_finite_rules(algorithm):
    inf, nan = np.inf, np.nan
    x = np.array([[nan, 1, 2], [inf, 1, 2], [-inf, -inf, -inf], [-inf, 1, 2], [0.5, -1, 3]])
    expected = sn.softmax(x, algorithm=algorithm, backend="cpu")
    np.testing.assert_allclose(sn.softmax(x, algorithm=algorithm, backend="cuda"), expected)
    np.testing.assert_allclose(sn.logsumexp(x, backend="cuda"), sn.logsumexp(x, backend="cpu"))


def test_any_axis_and_float16_from_the_host(rng):
    x = rng.standard_normal((3, 5, 4)).astype(np.float16)
    got = sn.softmax(x, axis=1, backend="cuda")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, sn.softmax(x, axis=1, backend="cpu"))


def test_device_arrays_stay_on_the_device(rng):
    x = rng.standard_normal((6, 9)).astype(np.float32)
    d_x = cuda.to_device(x)
    d_p = sn.softmax(d_x)  # backend="auto" picks CUDA for device-resident input
    assert is_device_array(d_p)
    np.testing.assert_allclose(d_p.copy_to_host(), sn.softmax(x), rtol=1e-6)
    lse = sn.logsumexp(d_x, backend="cuda")
    assert is_device_array(lse)
    np.testing.assert_allclose(lse.copy_to_host(), sn.logsumexp(x), rtol=1e-6)
    out = cuda.device_array_like(d_x)
    assert sn.log_softmax(d_x, out=out) is out


def test_device_arrays_need_the_last_axis(rng):
    d_x = cuda.to_device(rng.standard_normal((4, 5)))
    with pytest.raises(ValueError, match="last axis"):
        sn.softmax(d_x, axis=0)
    with pytest.raises(TypeError, match="GPU"):
        sn.softmax(d_x, backend="cpu")


@pytest.mark.slow
def test_gpu_benchmark_runs_end_to_end(tmp_path, monkeypatch):
    """``make bench-gpu``'s code path on tiny shapes (on the simulator: no timing value),
    the tests first (here one small test, in the pytest subprocess of a GPU run)."""
    import json

    from experiments.device import gpu_bench

    one = "tests/test_cuda_bf16.py::test_wide_accesses_move_the_bits_unchanged"
    monkeypatch.setattr(gpu_bench, "GPU_TESTS", (one,))
    table = gpu_bench.run(tmp_path, quick=True, tests=True)
    for name in ("speed.csv", "speed.meta.json", "speed.png", "tests.log"):
        assert (tmp_path / name).exists(), name
    tests = json.loads((tmp_path / "speed.meta.json").read_text())["tests"]
    assert tests["returncode"] == 0 and "3 passed" in tests["summary"], tests
    assert set(table.op) == {"softmax", "log_softmax", "cross_entropy"}
    assert (table.gbps > 0).all() and table.device.nunique() == 1
    ours = table[table.engine == "softmax_numba"]
    assert set(ours.dtype) == {"float32", "bfloat16"}  # ours on device bfloat16 too
    assert len(ours) == 3 * len(gpu_bench.SIMULATOR_SHAPES) * 2
    assert ours.within_bound.all(), ours[["op", "n", "dtype", "error_u", "bound_u"]]


EXP_LIKE = ("sigmoid[normalized]", "softplus[normalized]")
EXP_LIKE_NORMALIZED = [e for e in ON_GPU if e.name in EXP_LIKE]


@pytest.mark.parametrize("entry", EXP_LIKE_NORMALIZED, ids=lambda e: e.name)
@pytest.mark.parametrize(("dtype", "offset"), [(np.float32, -100.0), (np.float64, -1e3)])
def test_normalized_maps_whose_values_underflow(entry, dtype, offset, rng):
    """As on the CPU engines: normalized, they are the softmax of ``x`` there."""
    x = (offset + rng.standard_normal((3, 13)) * 3).astype(dtype)
    check_within_bounds(entry, "cuda", entry.arguments(x, rng))


@pytest.mark.parametrize("entry", EXP_LIKE_NORMALIZED, ids=lambda e: e.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalized_maps_on_rows_mixing_normal_and_underflowed_values(entry, dtype):
    """As on the CPU engines (``test_accuracy``): the row is rescaled by its max."""
    edge = -np.log(np.finfo(dtype).tiny)
    x = np.array(
        [
            [-10.0, -edge - 2, -edge - 5, -edge + 3, -30.0, -edge - 40, -np.inf],
            [16.0, -edge + 10, -edge - 50, -np.inf, -30.0, -edge + 5, -edge - 3],
        ],
        dtype,
    )
    check_within_bounds(entry, "cuda", (x,))


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry", [e for e in ON_GPU if e.algorithm != "naive"], ids=lambda e: e.name
)
def test_special_values_as_the_cpu_engines(entry):
    """The special rows of ``test_special_values`` (NaN, +-inf, overflowing sums,
    subnormals, ties): the CUDA engine gives the cpu engine's non-finite pattern, and
    its finite entries are within the entry's bound of the oracle."""
    x = special_rows(np.float64)
    if entry.divisor > 1:
        x = np.concatenate([x, x[:, :2]], axis=1)[:, : x.shape[1] // entry.divisor * entry.divisor]
    args = special_args(entry, x)
    with np.errstate(all="ignore"):
        ref = registry.outputs(entry.reference(registry.oracle_args(args)))
        cpu = registry.outputs(entry.run(args, backend="cpu"))
        got = registry.outputs(entry.run(args, backend="cuda"))
    for (err, allowed), g, c in zip(entry.errors(args, got, ref), got, cpu, strict=True):
        bad = ~(err <= allowed) & ~documented_limits(entry, x)
        assert not bad.any(), (entry.name, np.flatnonzero(bad))
        for same in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(same(g), same(c))


# ----------------------------------------------------------------------------- device options


@pytest.mark.parametrize("dtype", DTYPES_FAST_FLOAT32)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("mask_on_device", [False, True])
def test_where_on_device_arrays_within_the_bound(name, dtype, mask_on_device, rng):
    """Masked entries give 0 (``-inf`` under log_softmax), a fully masked row as the
    host path gives it, the other entries within the op's bound on the masked row,
    and the result stays on the device."""
    x = (rng.standard_normal((6, 11)) * 3).astype(dtype)
    where = rng.random((6, 11)) > 0.4
    where[2] = False
    func = getattr(sn, name)
    got = func(cuda.to_device(x), where=cuda.to_device(where) if mask_on_device else where)
    assert is_device_array(got)
    got = got.copy_to_host()
    with np.errstate(all="ignore"):
        want = func(x, where=where, backend="numpy")
    np.testing.assert_array_equal(got[2], want[2])
    entry = registry.entries(name)[0 if name == "log_softmax" else 1]  # softmax[shifted]
    kept = [i for i in range(6) if where[i].any()]
    args = (np.where(where, x, -np.inf).astype(dtype)[kept],)
    ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    for err, bound in entry.errors(args, (got[kept],), ref):
        assert np.all(err <= bound), (err, bound)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weights_on_device", [False, True])
def test_logsumexp_weights_and_sign_on_device_arrays(dtype, weights_on_device, rng):
    x = rng.standard_normal((5, 9)).astype(dtype)
    b = rng.standard_normal((5, 9)).astype(dtype)  # both signs: some sums are negative
    d_b = cuda.to_device(b) if weights_on_device else b
    lse, sign = sn.logsumexp(cuda.to_device(x), b=d_b, return_sign=True)
    assert is_device_array(lse) and is_device_array(sign)
    want_lse, want_sign = sn.logsumexp(x, b=b, return_sign=True, backend="cpu")
    np.testing.assert_array_equal(sign.copy_to_host(), want_sign)
    # The weighted sum may cancel: log|s| is accurate to (n + 4) u relative to
    # sum_i |b_i| e^(x_i - a) over |s|, absolutely; GPU and CPU may each be that far off.
    u = np.finfo(dtype).eps / 2
    t = b.astype(np.float64) * np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    condition = np.sum(np.abs(t), -1) / np.abs(np.sum(t, -1))
    error = np.abs(lse.copy_to_host().astype(np.float64) - want_lse)
    assert np.all(error <= 2 * (9 + 4) * u * condition)
    no_sign = sn.logsumexp(cuda.to_device(x), b=d_b).copy_to_host()
    np.testing.assert_array_equal(np.isnan(no_sign), want_sign < 0)


def test_logsumexp_sign_without_weights_on_device_arrays():
    inf, nan = np.inf, np.nan
    x = np.array([[0.0, 1.0], [-inf, -inf], [nan, 0.0], [inf, 0.0]])
    lse, sign = sn.logsumexp(cuda.to_device(x), return_sign=True)
    with np.errstate(all="ignore"):
        want_lse, want_sign = sn.logsumexp(x, return_sign=True, backend="cpu")
    np.testing.assert_array_equal(sign.copy_to_host(), want_sign)
    np.testing.assert_array_equal(lse.copy_to_host(), want_lse)


def test_device_options_refuse_a_mismatched_device_operand():
    x = cuda.to_device(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="C-contiguous with shape"):
        sn.softmax(x, where=cuda.to_device(np.ones((3, 2), bool)))
    with pytest.raises(TypeError, match="must have dtype bool"):
        sn.softmax(x, where=cuda.to_device(np.ones((2, 3))))


def test_cross_entropy_gradient_may_overwrite_device_logits(rng):
    """``grad_out=logits`` on the device: the loss and gradient of the same call that
    keeps the logits, bit for bit (the kernel reads x_t before writing over it)."""
    from test_gradients import overwrite_cases

    x, options = overwrite_cases(rng)
    for target, extra in options:
        kwargs = dict(reduction="none", return_grad=True, **extra)
        loss, grad = sn.cross_entropy(cuda.to_device(x), target, **kwargs)
        logits = cuda.to_device(x)
        got_loss, got = sn.cross_entropy(logits, target, grad_out=logits, **kwargs)
        assert got is logits
        np.testing.assert_array_equal(got.copy_to_host(), grad.copy_to_host(), str(extra))
        np.testing.assert_array_equal(got_loss.copy_to_host(), loss.copy_to_host(), str(extra))


# ------------------------------------------------------------------ float16 on the device

#: The entries whose kernels read and write float16 device arrays.
HALF_ENTRIES = [
    e
    for e in registry.ENTRIES
    if e.op in ("softmax", "log_softmax", "logsumexp")
    or e.name in ("cross_entropy", "cross_entropy[smoothed]")
]


@pytest.mark.parametrize("bucket", BUCKETS)
@pytest.mark.parametrize("entry", HALF_ENTRIES, ids=lambda e: e.name)
def test_float16_device_arrays_within_the_bound(bucket, entry, rng, monkeypatch):
    """A float16 device array is read as float16, computed in float32 and stored in
    float16 on the device: within the op's bound in float16's u, in every bucket."""
    BUCKETS[bucket][0](monkeypatch)
    _launch(monkeypatch, 5, 2)
    x = (rng.standard_normal((7, 13)) * 3 + 10).astype(np.float16)
    args = entry.arguments(x, rng)
    result = entry.run((cuda.to_device(x), *args[1:]), backend="cuda")
    got = tuple(g.copy_to_host() for g in registry.outputs(result))
    ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    for (err, allowed), g in zip(entry.errors(args, got, ref), got, strict=True):
        assert g.dtype == np.float16
        assert np.all(err <= allowed), (entry.name, bucket, err.max(), allowed.max())


def test_float16_device_arrays_elsewhere_are_refused():
    x = cuda.to_device(np.zeros((2, 4), np.float16))
    with pytest.raises(TypeError, match="where= on a float16 GPU array"):
        sn.softmax(x, where=np.ones((2, 4), bool))
    with pytest.raises(TypeError, match="accepts float32 or float64, got float16"):
        sn.sparsemax(x)
    q = np.full((2, 4), 0.25, np.float32)
    with pytest.raises(TypeError, match="float16 only for"):
        sn.cross_entropy(x, q, reduction="none")


def test_device_arrays_take_a_tuple_of_their_last_axes(rng):
    x = rng.standard_normal((3, 4, 5))
    d_x = cuda.to_device(x)
    for f in (sn.softmax, sn.log_softmax, sn.logsumexp):
        got = f(d_x, axis=(1, 2))
        assert is_device_array(got)
        np.testing.assert_allclose(got.copy_to_host(), f(x, axis=(1, 2)), rtol=1e-13)
    lse = sn.logsumexp(d_x, axis=(-1, -2), keepdims=True)
    assert lse.shape == (3, 1, 1)
    with pytest.raises(ValueError, match="last axis"):
        sn.softmax(d_x, axis=(0, 2))
