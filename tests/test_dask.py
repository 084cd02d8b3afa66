"""softmax_numba.dask against the in-memory functions, and the study on a Dask cluster.

Most tests compute with Dask's synchronous scheduler; the cluster tests start one
``LocalCluster`` of two single-threaded worker processes for the module.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import sys
import time

import numpy as np
import pandas as pd
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402
from conftest import unit_roundoff  # noqa: E402

import softmax_numba as sn  # noqa: E402
import softmax_numba.dask as sd  # noqa: E402
from experiments.__main__ import run_step  # noqa: E402
from experiments.harness import store  # noqa: E402
from experiments.measure import dask_bench, sweep  # noqa: E402
from softmax_numba import registry  # noqa: E402

INF, NAN = np.inf, np.nan


def _compute(*arrays):
    return dask.compute(*arrays, scheduler="synchronous")


def _tolerance(dtype) -> dict:
    u = unit_roundoff(dtype)
    return {"rtol": 64 * u, "atol": 64 * u}


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, -1])
def test_chunked_axis_equals_the_in_memory_result(rng, dtype, axis):
    x = (rng.standard_normal((37, 1001)) * 4).astype(dtype)
    dx = da.from_array(x, chunks=(10, 128))  # both axes in several chunks
    assert dx.numblocks[axis] > 2
    got = _compute(
        sd.softmax(dx, axis=axis), sd.log_softmax(dx, axis=axis), sd.logsumexp(dx, axis=axis)
    )
    want = (sn.softmax(x, axis=axis), sn.log_softmax(x, axis=axis), sn.logsumexp(x, axis=axis))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, **_tolerance(dtype))


def test_results_are_lazy_and_keep_the_chunks(rng):
    dx = da.from_array(rng.standard_normal((8, 300)), chunks=(3, 64))
    for f in (sd.softmax, sd.log_softmax):
        out = f(dx)
        assert isinstance(out, da.Array) and out.chunks == dx.chunks
        assert not any("rechunk" in name for name in out.dask.layers)
    lse = sd.logsumexp(dx, keepdims=True)
    assert lse.chunks == (dx.chunks[0], (1,))
    state = sd.online_states(dx, split_every=2)
    m, s = (a[:, 0] for a in np.split(_compute(state)[0], 2, axis=1))
    np.testing.assert_allclose(m + np.log1p(s), sn.logsumexp(dx.compute()), rtol=1e-14)


def test_middle_axis_of_a_3d_array_and_single_chunks(rng):
    x = rng.standard_normal((4, 50, 6)).astype(np.float32)
    for chunks in ((2, 7, 3), (4, 50, 6), (1, 1, 1)):
        dx = da.from_array(x, chunks=chunks)
        np.testing.assert_allclose(
            _compute(sd.softmax(dx, axis=1))[0], sn.softmax(x, axis=1), **_tolerance(np.float32)
        )
        np.testing.assert_allclose(
            _compute(sd.logsumexp(dx, axis=1, keepdims=True))[0],
            sn.logsumexp(x, axis=1, keepdims=True),
            **_tolerance(np.float32),
        )


def test_dtype_policy_follows_the_in_memory_functions(rng):
    half = rng.standard_normal((3, 40)).astype(np.float16)
    ints = rng.integers(-5, 5, (3, 40))
    got_half, got_ints = _compute(
        sd.softmax(da.from_array(half, chunks=(3, 16))),
        sd.log_softmax(da.from_array(ints, chunks=(3, 16))),
    )
    assert got_half.dtype == np.float16 and got_ints.dtype == np.float64
    np.testing.assert_allclose(got_half, sn.softmax(half), rtol=2e-3)
    np.testing.assert_allclose(got_ints, sn.log_softmax(ints), rtol=1e-13)
    with pytest.raises(TypeError, match="accepts"):
        sd.softmax(da.from_array(np.ones((2, 2), complex)))


#: The declared entries that the Dask functions compute (``softmax`` by the merged
#: online state, so its naive and division-free algorithms are not among them).
DASK_ENTRIES = [
    e
    for e in registry.ENTRIES
    if e.op in sd.__all__ and e.algorithm in ("-", "online", "smoothed", "probability")
]


@pytest.mark.parametrize("entry", DASK_ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0.0, -1e4, 1e4])
def test_declared_ops_within_their_bounds_on_chunked_rows(entry, dtype, offset):
    """Each op's declaration (its arguments, oracle and per-output bound) judges the
    Dask result as it judges the in-memory one, componentwise, at large offsets, with
    the class axis in 8 chunks merged by a tree of depth 3 (``split_every=2``): each
    level adds the rounding of one merge, ``s_1 + (1 + s_2) exp(m_2 - m_1)`` (the
    ``exp``, 2 u, the product and the sum), 4 u, to the sum's bound."""
    rng = np.random.default_rng(abs(hash((entry.name, str(dtype)))) % 2**32)
    x = (offset + 3 * rng.standard_normal((6, 1000))).astype(dtype)
    args = entry.arguments(x, np.random.default_rng(1))
    kwargs = {k: v for k, v in entry.kwargs.items() if k != "algorithm"}
    with dask.config.set({"split_every": 2}):
        lazy = getattr(sd, entry.op)(da.from_array(args[0], chunks=(3, 125)), *args[1:], **kwargs)
        got = registry.outputs(_compute(*registry.outputs(lazy)))
    ref = registry.outputs(entry.reference(registry.oracle_args(args)))
    merges = 3 * 4  # u
    for index, (err, bound) in enumerate(entry.errors(args, got, ref)):
        assert np.all(err <= bound + merges), (index, float(np.max(err - bound)))


#: Rows with non-finite entries, as in test_nonfinite.py, placed across chunks.
CASES = {
    "nan": [NAN, 1.0, 2.0],
    "plus_inf": [INF, 1.0, 2.0],
    "two_plus_inf": [INF, INF, 0.0],
    "all_minus_inf": [-INF] * 9,
    "some_minus_inf": [-INF, 1.0, 2.0],
    "plus_and_minus_inf": [INF, -INF, 0.0],
    "nan_and_plus_inf": [NAN, INF, 0.0],
    "nan_and_all_minus_inf": [NAN, *[-INF] * 8],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_rows_follow_the_in_memory_rules(case, dtype):
    x = np.tile(np.linspace(-2, 2, 9), (2, 1))
    start = 3 if len(CASES[case]) < 9 else 0
    x[0, start : start + len(CASES[case])] = CASES[case]
    x = x.astype(dtype)
    dx = da.from_array(x, chunks=(1, 4))  # the special entries straddle two chunks
    for f in ("softmax", "log_softmax", "logsumexp"):
        with np.errstate(all="ignore"):
            want = getattr(sn, f)(x)
        np.testing.assert_allclose(_compute(getattr(sd, f)(dx))[0], want, rtol=1e-6, err_msg=f)


def test_where_masks_and_a_fully_masked_row(rng):
    x = rng.standard_normal((2, 30))
    where = rng.random((2, 30)) > 0.5
    where[1] = False
    dx = da.from_array(x, chunks=(1, 8))
    p, lp = _compute(sd.softmax(dx, where=where), sd.log_softmax(dx, where=where))
    np.testing.assert_allclose(p, sn.softmax(x, where=where), rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(lp, sn.log_softmax(x, where=where), rtol=1e-13)


def test_unsupported_options_say_so():
    dx = da.ones((3, 4), chunks=2)
    with pytest.raises(NotImplementedError, match="b= or return_sign="):
        sd.logsumexp(dx, b=np.ones((3, 4)))
    with pytest.raises(NotImplementedError, match="axis=None"):
        sd.softmax(dx, axis=None)
    with pytest.raises(NotImplementedError, match="backend='cuda'"):
        sd.softmax(dx, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        sd.softmax(dx, backend="gpu")
    np.testing.assert_allclose(
        _compute(sd.logsumexp(da.arange(5.0, chunks=2), axis=None))[0],
        sn.logsumexp(np.arange(5.0), axis=None),
    )


# ----------------------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_class_indices(rng, dtype, axis, reduction):
    x = (rng.standard_normal((23, 301)) * 3).astype(dtype)
    rows = x.shape[1 - axis % 2]
    target = rng.integers(0, x.shape[axis], rows)
    target[::5] = -100
    kwargs = {
        "axis": axis,
        "reduction": reduction,
        "label_smoothing": 0.1,
        "ignore_index": -100,
        "return_grad": True,
    }
    loss, grad = _compute(*sd.cross_entropy(da.from_array(x, chunks=(7, 64)), target, **kwargs))
    want_loss, want_grad = sn.cross_entropy(x, target, **kwargs)
    assert loss.dtype == grad.dtype == dtype and loss.shape == want_loss.shape
    np.testing.assert_allclose(loss, want_loss, **_tolerance(dtype))
    np.testing.assert_allclose(grad, want_grad, **_tolerance(dtype))


def test_cross_entropy_with_probabilities_and_dask_targets(rng):
    x = rng.standard_normal((9, 70))
    q = sn.softmax(rng.standard_normal((9, 70)) * 2)
    dx, dq = da.from_array(x, chunks=(4, 16)), da.from_array(q, chunks=(9, 35))
    loss, grad = _compute(*sd.cross_entropy(dx, dq, return_grad=True, label_smoothing=0.2))
    want_loss, want_grad = sn.cross_entropy(x, q, return_grad=True, label_smoothing=0.2)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-17)
    labels = da.from_array(rng.integers(0, 70, 9), chunks=3)
    np.testing.assert_allclose(
        _compute(sd.cross_entropy(dx, labels))[0],
        sn.cross_entropy(x, labels.compute()),
        rtol=1e-13,
    )


@pytest.mark.parametrize("target", ["index", "probability"])
def test_cross_entropy_at_large_offsets_and_huge_logits_equals_in_memory(rng, target):
    """The chunked losses use the same careful forms: accurate at an offset of 1e6,
    finite where the logits reach half the largest float (as in memory)."""
    for x in (
        1e6 + 3 * rng.standard_normal((6, 50)),
        np.finfo(np.float64).max * rng.uniform(-0.5, 0.5, (6, 50)),
    ):
        t = rng.integers(0, 50, 6)
        if target == "probability":
            t = sn.softmax(rng.standard_normal((6, 50)))
        chunks = (3, 16) if target == "probability" else 3
        dt = da.from_array(t, chunks=chunks)
        got = _compute(
            sd.cross_entropy(
                da.from_array(x, chunks=(3, 16)), dt, reduction="none", label_smoothing=0.1
            )
        )[0]
        want = sn.cross_entropy(x, t, reduction="none", label_smoothing=0.1)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_cross_entropy_checks_class_indices_when_computed():
    loss = sd.cross_entropy(da.zeros((2, 10), chunks=(1, 4)), np.array([3, 10]))
    with pytest.raises(ValueError, match="class index 10 is out of range for 10 classes"):
        _compute(loss)
    with pytest.raises(ValueError, match="ignore_index applies"):
        sd.cross_entropy(da.zeros((2, 3)), np.zeros((2, 3)), ignore_index=0)


#: Bad arguments of both front ends, as (function, logits, target-or-None, kwargs).
BAD_CALLS = {
    "0-d logits": ("softmax", np.float64(1.0), None, {}),
    "float axis": ("log_softmax", np.ones((2, 3)), None, {"axis": 1.0}),
    "axis out of range": ("logsumexp", np.ones((2, 3)), None, {"axis": 2}),
    "complex dtype": ("softmax", np.ones((2, 3), complex), None, {}),
    "bad reduction": ("cross_entropy", np.ones((2, 3)), np.zeros(2, int), {"reduction": "avg"}),
    "smoothing > 1": (
        "cross_entropy",
        np.ones((2, 3)),
        np.zeros(2, int),
        {"label_smoothing": 1.5},
    ),
    "index shape": ("cross_entropy", np.ones((2, 3)), np.zeros(3, int), {}),
    "probability shape": ("cross_entropy", np.ones((2, 3)), np.ones((2, 2)) / 2, {}),
    "ignore_index with probabilities": (
        "cross_entropy",
        np.ones((2, 3)),
        np.ones((2, 3)) / 3,
        {"ignore_index": 0},
    ),
    "string target": ("cross_entropy", np.ones((2, 3)), np.array(["a", "b"]), {}),
}


def test_a_tuple_of_axes_is_not_implemented_yet():
    x = da.ones((2, 3, 4), chunks=2)
    for f in (sd.softmax, sd.log_softmax, sd.logsumexp):
        with pytest.raises(NotImplementedError, match="tuple of axes"):
            f(x, axis=(1, 2))


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_arguments_are_refused_as_in_memory(case):
    """The Dask functions share the in-memory checks: the same error, same message."""
    name, x, target, kwargs = BAD_CALLS[case]
    args = (x,) if target is None else (x, target)
    with pytest.raises(Exception) as in_memory:
        getattr(sn, name)(*args, **kwargs)
    with pytest.raises(type(in_memory.value)) as lazy:
        getattr(sd, name)(*args, **kwargs)
    assert str(lazy.value) == str(in_memory.value)


# ----------------------------------------------------------------------------- cluster


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.xdist_group("dask_cluster")
def test_chunked_softmax_on_a_local_cluster(client, rng):
    x = rng.standard_normal((64, 4000)).astype(np.float32)
    dx = da.from_array(x, chunks=(16, 1000))
    p, lse = client.compute([sd.softmax(dx), sd.logsumexp(dx)], sync=True)
    np.testing.assert_allclose(p, sn.softmax(x), **_tolerance(np.float32))
    np.testing.assert_allclose(lse, sn.logsumexp(x), **_tolerance(np.float32))


@pytest.mark.slow
@pytest.mark.xdist_group("dask_cluster")
def test_benchmark_runs_on_a_small_array(client, tmp_path):
    x = dask_bench.logits(rows=8, vocab=1000, chunk_rows=4, vocab_chunks=3)
    assert x.numblocks == (2, 3)
    rows = dask_bench.measure(client, x, names=("generate", "softmax"))
    table = dask_bench.write(rows, tmp_path, {"n_workers": 2})
    softmax = table[table.workload == "softmax"]
    assert len(softmax) == 2 and (softmax.peak_rss_mib > 0).all()
    np.testing.assert_allclose(softmax.value, 8, rtol=1e-5)
    assert "| softmax |" in (tmp_path / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.xdist_group("dask_cluster")
def test_sweep_on_the_cluster_writes_the_same_table(client, tmp_path):
    run_step("overflow", tmp_path / "local", quick=True, progress=False)
    run_step("overflow", tmp_path / "cluster", quick=True, progress=False, client=client)
    local, cluster = (pd.read_csv(tmp_path / d / "overflow.csv") for d in ("local", "cluster"))
    assert local.worker.isna().all() and cluster.worker.str.startswith("tcp://").all()
    key = ["dtype", "arithmetic", "algorithm", "offset"]
    local, cluster = (
        t.drop(columns=["worker", "run_id"]).sort_values(key, ignore_index=True)
        for t in (local, cluster)
    )
    # The same code on the same input gives the same bits in every process.  (It once
    # did not: a kernel loaded from Numba's disk cache ran its own re-optimized copy
    # of a helper, whose vector sum ``reassoc`` had regrouped, while a process that
    # had compiled it ran the helper's library; helpers are now inlined by Numba,
    # see ``softmax_numba.cpu._compile.jit``.)
    pd.testing.assert_frame_equal(local, cluster)


def slow_measure(cell: dict) -> dict:
    """A cell that takes long enough for a worker to die in the middle of it."""
    time.sleep(0.4)
    return sweep.measure_accuracy(cell)


@pytest.mark.slow
@pytest.mark.xdist_group("dask_cluster")
def test_sweep_survives_a_worker_killed_midway(client, tmp_path):
    import cloudpickle

    cells = sweep.accuracy_cells(
        ["softmax[shifted]", "log_softmax"],
        ["float32", "float64"],
        ["mnist"],
        [1e-3, 1.0, 1e2],
        ["normal"],
        elements=256,
    )
    columns = [*sweep.ACCURACY_COLUMNS, sweep.WORKER]
    table = store.Table(tmp_path / "accuracy.csv", columns, sweep.ACCURACY_KEY)
    pids = client.run(os.getpid)
    victim = next(iter(pids))
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # the workers cannot import tests/
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(sweep.run, cells, slow_measure, table, "acc", False, client)
            deadline = time.time() + 60
            while len(table.done_keys()) < 2 and time.time() < deadline:
                time.sleep(0.05)
            os.kill(pids[victim], signal.SIGKILL)
            before = len(table.done_keys())
            measured = running.result(timeout=120)
        again = sweep.run(cells, slow_measure, table, "acc", False, client)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert 2 <= before < len(cells), "the worker died in the middle of the sweep"
    done = pd.read_csv(table.path)
    assert measured == len(cells) == len(done)
    assert not done.duplicated(sweep.ACCURACY_KEY).any()
    assert table.done_keys() == {store.Table.key_of(c, sweep.ACCURACY_KEY) for c in cells}
    assert again == 0  # resuming finds nothing left to measure


# --------------------------------------------------------------------------- linear_cross_entropy

LINEAR_OPTIONS = [
    {},
    {"label_smoothing": 0.1, "ignore_index": -100},
    {"z_loss": 0.01, "softcap": 2.0, "label_smoothing": 0.2, "ignore_index": -100, "weights": True},
]


@pytest.mark.parametrize("options", LINEAR_OPTIONS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("token_chunks", "vocabulary_chunks"), [(30, 9), (7, 41), (11, 13)])
def test_linear_cross_entropy_on_dask_equals_the_in_memory_one(
    options, reduction, token_chunks, vocabulary_chunks
):
    """Tokens chunked, the vocabulary chunked, or both: the loss, gradients, lse and
    entropy of the in-memory function, up to the merges' few u."""
    rng = np.random.default_rng(0)
    n, d, v = 30, 6, 41
    h, W, b = rng.standard_normal((n, d)), rng.standard_normal((v, d)), rng.standard_normal(v)
    y = rng.integers(0, v, n)
    y[2] = -100 if "ignore_index" in options else y[2]
    options = dict(options)
    if options.pop("weights", False):
        options["class_weights"] = rng.uniform(0.1, 2.0, v)
    kwargs = {"bias": b, "reduction": reduction, "return_grad": True, "return_lse": True,
              "return_entropy": True, **options}  # fmt: skip
    loss, (dh, dW, db), lse, entropy = sn.linear_cross_entropy(h, W, y, **kwargs)
    lazy = sd.linear_cross_entropy(
        da.from_array(h, chunks=(token_chunks, 3)),
        da.from_array(W, chunks=(vocabulary_chunks, 6)),
        da.from_array(y, chunks=token_chunks),
        **kwargs,
    )
    got_loss, (got_dh, got_dW, got_db), got_lse, got_entropy = _compute(lazy)[0]
    u = unit_roundoff(np.float64)
    merges = 8 * np.ceil(v / vocabulary_chunks)
    for got, want in ((got_loss, loss), (got_lse, lse), (got_entropy, entropy)):
        np.testing.assert_allclose(got, want, rtol=(64 + merges) * u)
    for got, want in ((got_dh, dh), (got_dW, dW), (got_db, db)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=(64 + merges) * u)


def test_linear_cross_entropy_on_dask_checks_its_targets_when_computed():
    h, W = da.ones((4, 3), chunks=2), da.ones((5, 3), chunks=(2, 3))
    lazy = sd.linear_cross_entropy(h, W, np.array([0, 1, 5, 2]))
    with pytest.raises(ValueError, match="out of range"):
        _compute(lazy)
    with pytest.raises(ValueError, match="target must have shape"):
        sd.linear_cross_entropy(h, W, np.zeros(3, int))
    with pytest.raises(TypeError, match="one dtype"):
        sd.linear_cross_entropy(h.astype(np.float32), W, np.zeros(4, int))
    with pytest.raises(NotImplementedError, match="backend"):
        sd.linear_cross_entropy(h, W, np.zeros(4, int), backend="numpy")
