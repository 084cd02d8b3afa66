"""``python -m softmax_numba warmup``: the kernels compiled and cached ahead of use."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pathlib
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

from softmax_numba import __main__ as cli
from softmax_numba import warmup

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Run in a process whose Numba cache is ``cache``: the first real calls, then
#: whether each kernel they ran came from the cache (and nothing was compiled).
FIRST_CALLS = """
import numpy as np, softmax_numba as sn
from softmax_numba.cpu import losses, softmax
x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
sn.softmax(x, backend="cpu"); sn.cross_entropy(x, np.arange(4), backend="cpu")
for kernel in (softmax.SOFTMAX["shifted"].cpu, losses.CROSS_ENTROPY_INDEX.cpu):
    print(len(kernel.stats.cache_hits), len(kernel.stats.cache_misses))
"""


def _run(args, cache, **kwargs):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


@pytest.fixture(scope="module")
def after_warmup(tmp_path_factory):
    """A process with an empty Numba cache runs the whole warm-up, then the public
    calls of :func:`compiled_after_warmup`: its output, and the cache it filled (which
    the other tests of the group read: one warm-up from scratch per run, the longest
    test of the suite)."""
    cache = tmp_path_factory.mktemp("warm_cache")
    done = _run(["-c", AFTER_WARMUP.format(tests=str(ROOT / "tests"))], cache)
    return done, cache


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.xdist_group("warmup")
def check_warmup_fills_the_cache_that_the_first_real_call_loads_from(after_warmup):
    _, cache = after_warmup
    assert list(cache.rglob("*.nbi"))  # the warm-up wrote the cache
    done = _run(["-m", "softmax_numba", "warmup", "--dtypes", "float32", "--engines", "cpu"], cache)
    assert done.returncode == 0, done.stderr
    total = len(warmup.steps(["float32"], ["cpu"]))
    assert f"{total}/{total}" in done.stderr  # the progress bar reached its end
    assert str(cache) in done.stdout
    first = _run(["-c", FIRST_CALLS], cache)
    assert first.returncode == 0, first.stderr
    # each kernel: loaded once from the cache, compiled never
    assert first.stdout.split() == ["1", "0", "1", "0"]


def test_every_registered_op_is_warmed_on_each_engine_and_dtype():
    names = [s.name for s in warmup.steps(["float64"], ["cpu", "parallel"])]
    from softmax_numba import registry

    for entry in registry.ENTRIES:
        for engine in ("cpu", "parallel"):
            for layout in ("C", "first F", "F"):
                assert f"{entry.name} float64 {engine} ({layout})" in names


# --------------------------------------------------------------------------- completeness

#: Run in a process with an empty Numba cache: the warm-up, then the public calls.
AFTER_WARMUP = """
import json, sys
sys.path.insert(0, {tests!r})
import test_warmup
print(json.dumps(test_warmup.compiled_after_warmup()))
"""


def cpu_dispatchers() -> dict:
    """Every Numba function of ``softmax_numba.cpu``: the kernels and the helpers they
    call (those not inlined are compiled on their own, per signature)."""
    from numba.core.registry import CPUDispatcher

    from softmax_numba import cpu

    found = {}
    for info in pkgutil.iter_modules(cpu.__path__):
        module = importlib.import_module(f"{cpu.__name__}.{info.name}")
        for name, value in vars(module).items():
            pairs = value.items() if isinstance(value, dict) else [(None, value)]
            for key, item in pairs:
                label = f"{info.name}.{name}" if key is None else f"{info.name}.{name}[{key}]"
                if isinstance(item, CPUDispatcher):
                    found.setdefault(id(item), (label, item))
                elif isinstance(getattr(item, "cpu", None), CPUDispatcher):
                    for engine in ("cpu", "parallel"):
                        kernel = getattr(item, engine)
                        found.setdefault(id(kernel), (f"{label}.{engine}", kernel))
    return dict(found.values())


def public_calls(dtype) -> None:
    """The public functions with every option that selects another kernel or another
    argument type, on both engines.  ``dtype``: float32 and float64 (the kernels'
    own), float16 and int64 (computed in float32 and float64, on copies)."""
    import softmax_numba as sn

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16)).astype(dtype)
    t = np.array([0, 3, 5, 15])
    floating = np.dtype(dtype) in (np.float32, np.float64)
    result = sn.log_softmax(x, backend="numpy").dtype
    for be in ("cpu", "parallel"):
        for algorithm in ("auto", "naive", "shifted", "division_free", "online"):
            sn.softmax(x, algorithm=algorithm, backend=be)
        sn.softmax(x, where=x > 0, backend=be)
        sn.log_softmax(x, where=x > 0, backend=be)
        sn.softmax(x.T, axis=0, backend=be)
        sn.log_softmax(x, axis=(0, 1), backend=be)
        sn.log_softmax(x, out=np.empty(x.shape, result), backend=be)
        sn.logsumexp(x, backend=be)
        sn.logsumexp(x, axis=None, keepdims=True, backend=be)
        for reverse in (False, True):
            sn.logcumsumexp(x, reverse=reverse, backend=be)
            sn.logcumsumexp(x.T, 0, reverse=reverse, out=np.empty(x.T.shape, result), backend=be)
        for b in (x, x[0], np.ones((4, 1), np.float64)):
            sn.logsumexp(x, b=b, return_sign=True, backend=be)
            sn.logsumexp(x[:1], b=b, backend=be)
        for forward, backward in (
            (sn.softmax, sn.softmax_backward),
            (sn.log_softmax, sn.log_softmax_backward),
            (sn.sparsemax, sn.sparsemax_backward),
            (sn.entmax15, sn.entmax15_backward),
        ):
            y = forward(x, backend=be)
            backward(y, x, backend=be)
            backward(y, x, out=np.empty(x.shape, result), backend=be)
            backward(y, np.asfortranarray(x), backend=be)
            backward(np.asfortranarray(y), x, backend=be)
            backward(np.tile(y, (4096, 1)), np.tile(x, (4096, 1)), backend=be)
        for f in (sn.sigmoid, sn.softplus, sn.arctan, sn.gaussian):
            f(x, backend=be)
            f(x, normalize=True, backend=be)
        y = sn.stablemax(x, backend=be)
        sn.stablemax(x.T, axis=0, backend=be)
        sn.log_stablemax(x, axis=(0, 1), out=np.empty(x.shape, result), backend=be)
        sn.stablemax_backward(y, x, x, backend=be)
        sn.stablemax_backward(y, np.asfortranarray(x), x, out=np.empty(x.shape, result), backend=be)
        for kwargs in ({}, {"return_grad": True}, {"ignore_index": 3, "reduction": "none"}):
            sn.stablemax_cross_entropy(x, t, backend=be, **kwargs)
            sn.stablemax_cross_entropy(np.asfortranarray(x), t, backend=be, **kwargs)
        for options in ({}, {"temperature": 0}, {"top_k": 2, "top_p": 0.5, "min_p": 0.1}):
            sn.sample(x, seed=1, backend=be, **options)
            sn.sample(x, seed=1, num_samples=3, return_logprobs=True, backend=be, **options)
        sn.filter_logits(x, top_k=2, temperature=0.5, backend=be)
        sn.top_logprobs(x, 3, backend=be)
        for algorithm in ("auto", "sort", "pivot"):
            sn.sparsemax(x, algorithm=algorithm, return_support_size=True, backend=be)
            sn.entmax15(x, algorithm=algorithm, backend=be)
        sn.entmax_bisect(x, backend=be)
        sn.entmax_bisect(x, alpha=1.2, n_iter=10, backend=be)
        sn.maxout(x, pool_size=4, backend=be)
        q = sn.softmax(x, backend="numpy")
        for logits, target in (
            *((x, target) for target in (t, q, np.asfortranarray(q), q.astype(np.float64))),
            (np.asfortranarray(x), q),
        ):
            for kwargs in (
                {},
                {"return_grad": True},
                {"label_smoothing": 0.1, "return_grad": True, "reduction": "none"},
                {"return_grad": True, "grad_out": np.empty(x.shape, result)},
            ):
                sn.cross_entropy(logits, target, backend=be, **kwargs)
        sn.cross_entropy(x, t, ignore_index=3, return_grad=True, backend=be)
        weights = np.ones(16)
        for kwargs in (
            {"z_loss": 1e-4},
            {"softcap": 5.0},
            {"class_weights": weights},
            {"return_lse": True},
            {"return_entropy": True},
            {"softcap": 5.0, "class_weights": weights, "label_smoothing": 0.1, "ignore_index": 3},
        ):
            sn.cross_entropy(x, t, backend=be, **kwargs)
            sn.cross_entropy(x, t, return_grad=True, backend=be, **kwargs)
            grad = np.empty(x.shape, result)
            sn.cross_entropy(x, t, return_grad=True, grad_out=grad, backend=be, **kwargs)
            if floating:  # the gradient written over the logits
                z = x.copy()
                sn.cross_entropy(z, t, return_grad=True, grad_out=z, backend=be, **kwargs)
        if not floating:
            continue
        h = rng.standard_normal((4, 8)).astype(dtype)
        W = rng.standard_normal((16, 8)).astype(dtype)
        for kwargs in (
            {},
            {"chunk_size": 5},
            {"softcap": 3.0},
            {"softcap": 3.0, "chunk_size": 5, "bias": np.ones(16, dtype)},
            {"class_weights": weights, "label_smoothing": 0.1, "chunk_size": 5},
            {"return_lse": True, "return_entropy": True, "z_loss": 1e-3, "ignore_index": 3},
        ):
            sn.linear_cross_entropy(h, W, t, backend=be, **kwargs)
            sn.linear_cross_entropy(h, W, t, return_grad=True, backend=be, **kwargs)
            sn.linear_cross_entropy(
                h, W, t, reduction="none", return_grad=True, backend=be, **kwargs
            )
    long_row = rng.standard_normal((1, 1 << 16)).astype(dtype)  # the parallel split
    for f in (sn.softmax, sn.log_softmax, sn.logsumexp, sn.logcumsumexp):
        f(long_row, backend="parallel")
    offsets = np.array([0, 5, 5, 16])  # the ragged-row ops, a long segment cut in chunks
    for be in ("cpu", "parallel"):
        for values in (x.T, x[0]):
            for f in (sn.segment_softmax, sn.segment_log_softmax, sn.segment_logsumexp):
                f(values, offsets, backend=be)
            y = sn.segment_softmax(values, offsets, backend=be)
            sn.segment_softmax_backward(y, values, offsets, backend=be)
            sn.segment_log_softmax_backward(y, values, offsets, backend=be)
        sn.segment_log_softmax(long_row[0], np.array([0, 1, long_row.size]), backend=be)


def dask_calls(dtype) -> None:
    """:mod:`softmax_numba.dask`, rows whole and in pieces."""
    import dask
    import dask.array as da

    from softmax_numba import dask as snd

    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((6, 16)).astype(dtype), np.array([0, 3, 5, 15, 1, 2])
    h, W = rng.standard_normal((6, 4)), rng.standard_normal((16, 4))
    for rows, n in ((6, 16), (3, 5)):
        X, T = da.from_array(x, chunks=(rows, n)), da.from_array(t, chunks=rows)
        for be in ("auto", "cpu", "parallel"):
            lazy = [
                snd.softmax(X, backend=be),
                snd.log_softmax(X, where=X > 0, backend=be),
                snd.logsumexp(X, backend=be),
                snd.logcumsumexp(X, reverse=True, backend=be),
                snd.online_states(X, backend=be),
                *snd.cross_entropy(X, T, label_smoothing=0.1, return_grad=True, backend=be),
            ]
            if np.dtype(dtype) in (np.float32, np.float64):
                H = da.from_array(h.astype(dtype), chunks=(rows, 4))
                Wd = da.from_array(W.astype(dtype), chunks=(n, 4))
                lazy.append(snd.linear_cross_entropy(H, Wd, T, softcap=3.0, backend=be))
                loss, grads = snd.linear_cross_entropy(H, Wd, T, return_grad=True, backend=be)
                lazy += [loss, *grads[:2]]
            dask.compute(*lazy, scheduler="synchronous")


def torch_calls(dtype) -> None:
    """:mod:`softmax_numba.torch`, forward and backward."""
    import torch

    from softmax_numba import torch as snt

    dtype = getattr(torch, np.dtype(dtype).name)
    x = torch.randn(4, 16, dtype=dtype, requires_grad=True)
    t = torch.tensor([0, 3, 5, 15])
    for f in (snt.softmax, snt.log_softmax, snt.sparsemax, snt.entmax15, snt.entmax_bisect):
        f(x).sum().backward()
        (f(x) * torch.randn(4, 16, dtype=dtype)).sum().backward()
    snt.logsumexp(x, dim=-1).sum().backward()
    for f in (snt.stablemax, snt.log_stablemax):
        (f(x) * torch.randn(4, 16, dtype=dtype)).sum().backward()
    snt.stablemax_cross_entropy(x, t).backward()
    (snt.logcumsumexp(x, 1) * torch.randn(4, 16, dtype=dtype)).sum().backward()
    snt.cross_entropy(x, t).backward()
    snt.cross_entropy(x, t, reduction="none").sum().backward()
    h = torch.randn(4, 8, dtype=dtype, requires_grad=True)
    W = torch.randn(16, 8, dtype=dtype, requires_grad=True)
    snt.linear_cross_entropy(h, W, t).backward()
    snt.linear_cross_entropy(h, W, t, reduction="none").sum().backward()


def compiled_after_warmup() -> dict:
    """Warm up, then make the calls above: the kernels left cold by the warm-up
    (:func:`softmax_numba.warmup.cold_kernels`), and the new signatures of each Numba
    function that the calls compiled."""
    warmup.warm_up()
    cold = warmup.cold_kernels()
    before = {name: set(f.signatures) for name, f in cpu_dispatchers().items()}
    for dtype in (np.float32, np.float64, np.float16, np.int64):
        public_calls(dtype)
        if importlib.util.find_spec("dask") is not None:
            dask_calls(dtype)
    if importlib.util.find_spec("torch") is not None:
        for dtype in (np.float32, np.float64):
            torch_calls(dtype)
    compiled = {
        name: sorted(map(str, set(f.signatures) - before.get(name, set())))
        for name, f in cpu_dispatchers().items()
    }
    return {"cold": cold, "compiled": {k: v for k, v in compiled.items() if v}}


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.xdist_group("warmup")
def check_after_the_warmup_no_public_call_compiles(after_warmup):
    """Every kernel, and every signature of it that a public call reaches, is compiled
    by the warm-up: in a process with an empty cache, after :func:`warmup.warm_up`, a
    battery of calls (every public function, option, algorithm, engine and input
    dtype, the Dask and torch front ends) compiles nothing.

    Not covered: a read-only input (``x.flags.writeable == False``), which Numba
    types apart from a writeable one; warming both would double the warm-up."""
    done, _ = after_warmup
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["cold"] == [], f"kernels the warm-up never compiles: {found['cold']}"
    assert found["compiled"] == {}, f"compiled after the warm-up: {found['compiled']}"


@pytest.mark.slow
@pytest.mark.long
def test_the_warmup_from_an_empty_cache(after_warmup):
    """Both checks on one warm-up from an empty cache, in one test: its fixture then
    runs once (split over two tests, xdist ran it on both workers, 486 s each)."""
    check_after_the_warmup_no_public_call_compiles(after_warmup)
    check_warmup_fills_the_cache_that_the_first_real_call_loads_from(after_warmup)


def test_cold_kernels_names_what_this_process_has_not_compiled(monkeypatch):
    """A kernel never called is cold for both dtypes; one called for float64 only is
    cold for float32; only the engines asked for are looked at."""
    import numba

    names = set(warmup.kernels())
    assert {"chunked_losses.CHUNK_GRAD.parallel", "softmax.SOFTMAX[naive].cpu"} <= names
    assert {"states.MERGE.cpu", "sparse.ENTMAX15[sort].parallel"} <= names
    fresh = {"m.K.cpu": numba.njit(lambda z: z.sum()), "m.K.parallel": numba.njit(lambda z: 0)}
    monkeypatch.setattr(warmup, "kernels", lambda: fresh)
    assert warmup.cold_kernels(engines=["cpu"]) == ["m.K.cpu float32", "m.K.cpu float64"]
    fresh["m.K.cpu"](np.ones(3))
    assert warmup.cold_kernels(engines=["cpu"]) == ["m.K.cpu float32"]
    assert warmup.cold_kernels(["float64"]) == ["m.K.parallel float64"]


# --------------------------------------------------------------------------- progress bar


def _recording_steps(capsys, seen):
    """Two steps that record, while each runs, what the progress bar has shown."""

    def call(name):
        def run():
            seen[name] = capsys.readouterr().err

        return run

    return [warmup.Step("first kernel", call("first")), warmup.Step("second one", call("second"))]


def test_the_progress_bar_names_each_step_while_it_compiles(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    seen = {}
    monkeypatch.setattr(warmup, "steps", lambda *a: _recording_steps(capsys, seen))
    assert cli.main(["warmup"]) == 0
    assert "first kernel" in seen["first"] and "0/2" in seen["first"]
    assert "second one" in seen["second"] and "1/2" in seen["second"]
    assert "2/2" in capsys.readouterr().err


def test_without_tqdm_each_step_is_a_line_before_it_runs(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    seen = {}
    monkeypatch.setattr(warmup, "steps", lambda *a: _recording_steps(capsys, seen))
    assert cli.main(["warmup"]) == 0
    assert seen == {"first": "[1/2] first kernel\n", "second": "[2/2] second one\n"}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["warmup", "--dtypes", "float16"], "unknown dtype 'float16'"),
        (["warmup", "--engines", "cuda"], "unknown engine 'cuda'"),
        ([], "command"),
    ],
)
def test_bad_arguments_are_usage_errors(args, match, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(args)
    assert stop.value.code == 2
    assert match in capsys.readouterr().err
