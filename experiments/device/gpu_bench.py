"""GPU benchmark (``make bench-gpu``): the CUDA tests on the GPU, then our CUDA kernels
against a device-to-device copy of the same array (the roofline), PyTorch and a Triton
softmax, in one run.

    python -m experiments.device.gpu_bench [--out results/gpu] [--quick] [--tests]
                                           [--budget-s 450]

With ``--tests`` it first runs the CUDA tests (:data:`GPU_TESTS`) on the GPU, not the
simulator, in a pytest subprocess (``-m "not slow"`` under ``--quick``), with at most
:data:`TESTS_SHARE` of the budget; their log goes to ``tests.log`` and their outcome to
``speed.meta.json``.  The benchmark runs whatever the tests found, so that one call
brings back both.

Per shape and dtype (:func:`all_shapes`; float32 and bfloat16), each engine's op is
timed with CUDA events around back-to-back calls (median of :data:`REPEATS` samples of
at least 2 ms; :data:`QUICK_REPEATS` under ``--quick``), the inputs rotating over
enough copies that together they exceed twice the L2 cache (so that no call reads its
input from L2 that the previous one left; at most :data:`MAX_COPIES`, so the smallest
shapes stay in L2).  Bytes are the fewest an op must move: softmax and log-softmax read
and write the array, cross-entropy reads it.  ``ratio_to_copy`` is the op's GB/s over
the copy's in the same run.  Our bfloat16 rows run on Numba device arrays of
``ml_dtypes.bfloat16`` (read and written in 2 bytes, computed in float32); our
cross-entropy takes its class indices from the host (``softmax_numba.cross_entropy``
checks them there), torch's from the device.

Our results are checked in the same run: the first :data:`CHECK_ROWS` rows of the
benchmarked call against the float64 oracle, componentwise, within the op's bound in
the dtype's u (``error_u``, ``bound_u``, ``within_bound``).

Writes ``speed.csv`` after every shape (an interrupted run keeps what it measured),
its ``.meta.json``, and ``speed.png``.  A shape is not started once ``--budget-s``
has passed since the start (the tests included).  On the CUDA simulator it runs tiny
shapes (:data:`SIMULATOR_SHAPES`) with one repeat: a test of the code path; the
simulator times nothing, so its figures are host-clock seconds of Python threads, not
measurements.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pandas as pd

import softmax_numba as sn
from experiments.harness import metadata, timing
from softmax_numba import bounds, config, registry
from softmax_numba.gpu import _runtime

#: The issue's shapes: short and many rows, medium, long and few rows.
SHAPES = ((4096, 1024), (32768, 128), (1024, 32768), (256, 262144), (16384, 4096))
#: Issue 31's: a Llama-3 vocabulary at a decoding batch, ImageNet's classes at a small one.
EXTRA_SHAPES = ((8, 128256), (64, 1000))
#: The study's presets (classes), at 4096 rows.
PRESETS = {"imagenet": 1000, "bert_vocab": 30522, "gpt2_vocab": 50257}
PRESET_ROWS = 4096
#: ``--quick`` on a GPU: one shape of each kind.
QUICK_SHAPES = ((64, 1000), (8, 128256), (4096, 1024), (16384, 4096))
#: On the simulator (a code-path test): tiny rows, of lengths off the 16-byte vectors.
SIMULATOR_SHAPES = ((8, 16), (3, 37))
#: The launch shape on the simulator: 4 threads a block, no warp-per-row kernels (32
#: Python threads a block); restored after the run.
SIMULATOR_CONFIG = {"CUDA_THREADS_PER_BLOCK": 4, "CUDA_WARP_ROW_MAX_LENGTH": 0}
DTYPES = ("float32", "bfloat16")
#: The entries whose bounds check our results, by op.
CHECKED = {"softmax": "softmax[shifted]", "log_softmax": "log_softmax",
           "cross_entropy": "cross_entropy"}  # fmt: skip
CHECK_ROWS = 32
REPEATS = 15
QUICK_REPEATS = 7
MIN_SAMPLE_S = 2e-3
#: Bytes the rotated inputs must exceed, over the L2 size.
L2_FACTOR = 2
MAX_COPIES = 16
#: The CUDA tests that ``--tests`` runs on the GPU, and the share of the budget they get.
GPU_TESTS = (
    "tests/test_cuda.py",
    "tests/test_cuda_bf16.py",
    "tests/test_segment_cuda.py",
    "tests/test_sampling_cuda.py",
    "tests/test_logcumsumexp.py::test_cuda_scans_blocks_of_entries_with_their_carry",
)
TESTS_SHARE = 0.55
#: The test of this benchmark's code path, left out of its own test run.
SELF_TEST = "tests/test_cuda.py::test_gpu_benchmark_runs_end_to_end"
#: pytest-xdist workers for the tests on a GPU, at most one a core (each compiles its
#: own kernels: NVVM is the cost).
TEST_WORKERS = 8


def all_shapes(quick: bool) -> list[tuple[int, int]]:
    """The shapes of a run, the issue's new ones first (a run cut short by its budget
    keeps them)."""
    if _runtime.simulated():
        return list(SIMULATOR_SHAPES)
    if quick:
        return list(QUICK_SHAPES)
    return list(EXTRA_SHAPES) + list(SHAPES) + [(PRESET_ROWS, n) for n in PRESETS.values()]


def run_tests(out: pathlib.Path, quick: bool, budget_s: float) -> dict:
    """The CUDA tests in a pytest subprocess on the real target (``NUMBA_ENABLE_CUDASIM``
    unset), its output in ``out/tests.log``: ``{"returncode", "summary", "seconds"}``
    (``returncode`` 124 when ``budget_s`` ran out)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = pathlib.Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", *GPU_TESTS, "-q", "-p", "no:cacheprovider",
               "--maxfail=20", "--deselect", SELF_TEST]  # fmt: skip
    if quick:
        command += ["-m", "not slow"]
    workers = min(TEST_WORKERS, os.cpu_count() or 1)
    if not _runtime.simulated() and workers > 1 and importlib.util.find_spec("xdist"):
        command += ["-n", str(workers)]
    began = time.monotonic()
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                              timeout=budget_s)  # fmt: skip
        log, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as stopped:
        log = (stopped.stdout or b"").decode() if isinstance(stopped.stdout, bytes) else ""
        log, code = log + f"\n(stopped after {budget_s:.0f} s)\n", 124
    (out / "tests.log").write_text(log)
    lines = [line for line in log.splitlines() if line.strip()]
    seconds = round(time.monotonic() - began, 1)
    summary = lines[-1] if lines else ""
    return {"returncode": code, "summary": summary, "seconds": seconds,
            "command": " ".join(command[1:])}  # fmt: skip


class Clock:
    """Median seconds per call: CUDA events on a GPU, the host clock (synchronized)
    on the simulator, whose events record nothing."""

    def __init__(self, cuda, repeats: int):
        self.cuda, self.repeats = cuda, repeats
        self.events = not _runtime.simulated()

    def median_s(self, fn) -> float:
        """``fn(k)`` called with ``k = 0, 1, 2, ...`` (the input copy to use)."""
        counter = itertools.count()
        if not self.events:
            call = lambda: fn(next(counter))  # noqa: E731
            return timing.time_call(call, repeats=self.repeats, min_sample_s=0,
                                    sync=self.cuda.synchronize)["median_s"]  # fmt: skip
        start, end = self.cuda.event(), self.cuda.event()
        for _ in range(2):  # compile, allocate, load
            fn(next(counter))
        self.cuda.synchronize()

        def sample(inner):
            start.record()
            for _ in range(inner):
                fn(next(counter))
            end.record()
            end.synchronize()
            return self.cuda.event_elapsed_time(start, end) / 1e3 / inner

        inner = max(1, int(MIN_SAMPLE_S / max(sample(1), 1e-7)))
        return float(np.median([sample(inner) for _ in range(self.repeats)]))


def _copies(nbytes: int, cuda) -> int:
    """How many input copies rotate: together over ``L2_FACTOR`` times the L2."""
    if _runtime.simulated():
        return 2
    l2 = getattr(cuda.get_current_device(), "L2_CACHE_SIZE", 64 << 20)
    return int(min(MAX_COPIES, max(2, -(-L2_FACTOR * l2 // nbytes))))


def _torch():
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch if torch.cuda.is_available() else None


def _triton_softmax():
    if importlib.util.find_spec("triton") is None or _torch() is None:
        return None
    from experiments.device import triton_softmax

    return triton_softmax


def _ours(cuda, xs, targets):
    outs = [cuda.device_array_like(x) for x in xs]
    return {
        "softmax": lambda k: sn.softmax(xs[k % len(xs)], out=outs[k % len(xs)], backend="cuda"),
        "log_softmax": lambda k: sn.log_softmax(
            xs[k % len(xs)], out=outs[k % len(xs)], backend="cuda"
        ),
        "cross_entropy": lambda k: sn.cross_entropy(
            xs[k % len(xs)], targets[k % len(xs)], reduction="none", backend="cuda"
        ),
    }


def _torch_ops(torch, ts, tts):
    f = torch.nn.functional
    return {
        "softmax": lambda k: torch.softmax(ts[k % len(ts)], -1),
        "log_softmax": lambda k: torch.log_softmax(ts[k % len(ts)], -1),
        "cross_entropy": lambda k: f.cross_entropy(
            ts[k % len(ts)], tts[k % len(ts)], reduction="none"
        ),
    }


def _check(xs, targets, op: str) -> dict:
    """Our result on the first :data:`CHECK_ROWS` rows of the benchmarked input
    against the oracle: the worst componentwise error and its bound, in u."""
    entry = next(e for e in registry.ENTRIES if e.name == CHECKED[op])
    args = (xs[0],) if op != "cross_entropy" else (xs[0], targets[0])
    got = registry.outputs(entry.run(args, backend="cuda"))

    def host(a):
        a = a[:CHECK_ROWS]
        return a.copy_to_host() if _runtime.is_device_array(a) else np.asarray(a)

    rows = tuple(host(a) for a in args)
    got = tuple(host(g) for g in got)
    ref = registry.outputs(entry.reference(registry.oracle_args(rows)))
    worst, bound, ok = 0.0, 0.0, True
    with bounds.summation_order("cuda"):  # the bound of the CUDA engine's sums
        errors = entry.errors(rows, got, ref)
    for err, allowed in errors:
        ok &= bool(np.all(err <= allowed))
        worst = max(worst, float(np.nanmax(err)))
        bound = max(bound, float(np.max(allowed)))
    return {"error_u": worst, "bound_u": bound, "within_bound": ok}


def _bfloat16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def measure_shape(cuda, clock, device: str, rows: int, n: int, dtype: str, rng) -> list[dict]:
    """Every engine's ops at one shape and dtype, with the copy of the same array."""
    torch = _torch()
    triton = _triton_softmax()
    itemsize = 2 if dtype == "bfloat16" else 4
    nbytes = rows * n * itemsize
    copies = _copies(nbytes, cuda)
    host = [rng.standard_normal((rows, n), dtype=np.float32) for _ in range(min(copies, 2))]
    host_targets = [rng.integers(0, n, rows) for _ in host]
    pick = lambda k: k % len(host)  # noqa: E731 -- at most 2 host draws, copied around
    engines: dict[str, dict] = {}
    ours = [h.astype(_bfloat16()) if dtype == "bfloat16" else h for h in host]
    xs = [cuda.to_device(ours[pick(k)]) for k in range(copies)]
    targets = [host_targets[pick(k)] for k in range(copies)]
    engines["softmax_numba"] = _ours(cuda, xs, targets)
    check = {op: _check(xs, targets, op) for op in CHECKED}
    if torch is not None:
        kind = getattr(torch, dtype)
        ts = [torch.as_tensor(host[pick(k)], device="cuda").to(kind) for k in range(copies)]
        tts = [torch.as_tensor(host_targets[pick(k)], device="cuda") for k in range(copies)]
        engines["torch"] = _torch_ops(torch, ts, tts)
        if triton is not None and n <= triton.MAX_LENGTH:
            outs = [torch.empty_like(t) for t in ts]
            engines["triton"] = {
                "softmax": lambda k: triton.softmax(ts[k % len(ts)], outs[k % len(ts)])
            }
    src = [cuda.to_device(np.ones(nbytes, np.uint8)) for _ in range(2)]
    dst = [cuda.device_array_like(src[0]) for _ in range(2)]
    copy_s = clock.median_s(lambda k: dst[k % 2].copy_to_device(src[k % 2]))
    copy_gbps = 2 * nbytes / copy_s / 1e9
    found = []
    for engine, ops in engines.items():
        for op, fn in ops.items():
            seconds = clock.median_s(fn)
            moved = nbytes * (1 if op == "cross_entropy" else 2)
            gbps = moved / seconds / 1e9
            row = {"device": device, "op": op, "engine": engine, "dtype": dtype,
                   "rows": rows, "n": n, "bytes": moved, "input_copies": copies,
                   "median_s": seconds, "gbps": gbps, "copy_gbps": copy_gbps,
                   "ratio_to_copy": gbps / copy_gbps}  # fmt: skip
            found.append(row | check.get(op, {}) if engine == "softmax_numba" else row)
    return found


def run(
    out: pathlib.Path, quick: bool, budget_s: float = 450.0, tests: bool = False
) -> pd.DataFrame:
    from numba import cuda

    began = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    tested = None
    if tests:
        tested = run_tests(out, quick, TESTS_SHARE * budget_s)
    saved = {name: getattr(config, name) for name in SIMULATOR_CONFIG}
    if _runtime.simulated():  # every simulated thread is a Python thread: keep blocks tiny
        for name, value in SIMULATOR_CONFIG.items():
            setattr(config, name, value)
        device = "CUDA simulator"
    else:
        device = cuda.get_current_device().name
    device = device.decode() if isinstance(device, bytes) else str(device)
    clock = Clock(cuda, 1 if _runtime.simulated() else QUICK_REPEATS if quick else REPEATS)
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    table = pd.DataFrame()
    try:
        for (r, n), dtype in itertools.product(all_shapes(quick), DTYPES):
            if time.monotonic() - began > budget_s:
                break
            rows += measure_shape(cuda, clock, device, r, n, dtype, rng)
            table = pd.DataFrame(rows)
            table.to_csv(out / "speed.csv", index=False)
    finally:
        for name, value in saved.items():
            setattr(config, name, value)
    meta = metadata.write_next_to(out / "speed.csv")
    extra = {"quick": quick, "budget_s": budget_s,
             "seconds": round(time.monotonic() - began, 1), "tests": tested}  # fmt: skip
    meta.write_text(json.dumps(json.loads(meta.read_text()) | extra, indent=2) + "\n")
    if len(table):
        figure(table, out / "speed.png")
    return table


def figure(table: pd.DataFrame, path: pathlib.Path) -> pathlib.Path:
    """Each engine's GB/s over the copy's, per op and shape, one panel per dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(dict.fromkeys(table.dtype))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(7 * len(dtypes), 6), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        d = table[table.dtype == dtype].assign(
            cell=lambda t: t.op + " " + t.rows.astype(str) + "x" + t.n.astype(str)
        )
        cells = list(dict.fromkeys(d.cell))
        engines = list(dict.fromkeys(d.engine))
        width = 0.8 / len(engines)
        for k, engine in enumerate(engines):
            e = d[d.engine == engine].set_index("cell").reindex(cells)
            ax.barh(np.arange(len(cells)) + k * width, e.ratio_to_copy, height=width, label=engine)
        ax.axvline(0.9, color="k", ls="--", lw=1)
        ax.set_yticks(np.arange(len(cells)) + 0.4 - width / 2, cells, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("GB/s over a device-to-device copy's (same run)")
        ax.set_title(f"{table.device.iloc[0]}, {dtype}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.device.gpu_bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/gpu"))
    quick = "4 shapes, fewer repeats, the fast tests (under 4 minutes)"
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--tests", action="store_true", help="the CUDA tests on the GPU first")
    budget = "start no shape after this many seconds (default 450, with --quick 200)"
    parser.add_argument("--budget-s", type=float, default=None, help=budget)
    args = parser.parse_args(argv)
    budget = args.budget_s if args.budget_s is not None else 200.0 if args.quick else 450.0
    table = run(args.out, args.quick, budget, tests=args.tests)
    meta = json.loads(metadata.meta_path(args.out / "speed.csv").read_text())
    if meta.get("tests"):
        print(f"tests ({meta['tests']['seconds']} s): {meta['tests']['summary']}")
    columns = ["op", "engine", "dtype", "rows", "n", "gbps", "ratio_to_copy", "error_u",
               "bound_u", "within_bound"]  # fmt: skip
    if len(table):
        print(table[[c for c in columns if c in table]].to_string(index=False))
    tests_failed = bool(meta.get("tests")) and meta["tests"]["returncode"] != 0
    bad = len(table) and not table.get("within_bound", pd.Series([True])).fillna(True).all()
    return 1 if tests_failed or bad else 0


if __name__ == "__main__":
    sys.exit(main())
