"""Every CUDA kernel compiles for a real GPU (sm_90, Hopper) through NVVM and ptxas,
without spilling registers: the CUDA simulator, on which the other CUDA tests run
here, accepts code that NVVM rejects.  Needs no GPU, only the compiler wheels of the
test extra (``experiments/device/compile_gate.py``)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest

pytest.importorskip("numba.cuda")
pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.xdist_group("compile_gate")]
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def table(tmp_path_factory, worker_id):
    """The gate's table, built once per test run: under pytest-xdist the workers
    share one build through a lock in the run's temporary folder (the group mark
    should keep these tests on one worker, yet a run of ``make test`` built the gate
    twice, 150 s and 300 s of its 20 minutes)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    out = shared / "compile_gate"
    with FileLock(str(shared / "compile_gate.lock")):
        if not (out / "returncode").exists():
            out.mkdir(exist_ok=True)
            env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
            done = subprocess.run(
                [sys.executable, "-m", "experiments.device.compile_gate", "--out", str(out)],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=900,
            )
            (out / "output").write_text(done.stdout + done.stderr)
            (out / "returncode").write_text(str(done.returncode))
    done = subprocess.CompletedProcess(
        args=[], returncode=int((out / "returncode").read_text()),
        stdout=(out / "output").read_text(), stderr="",
    )  # fmt: skip
    path = out / "ptxas.csv"
    assert path.exists(), done.stdout
    return pd.read_csv(path, keep_default_na=False), done


def check_the_warp_kernels_reduce_with_shuffles_and_no_barrier(table):
    frame, _ = table
    warp = frame[frame.kernel.str.endswith("__warp_per_row")]
    assert len(warp) and (warp.shuffles > 0).all() and (warp.barriers == 0).all()
    assert (warp.shared_bytes == 0).all()


def check_every_kernel_compiles_for_sm90_without_spills(table):
    frame, done = table
    bad = frame[(frame.status != "ok") | (frame.spill_stores > 0) | (frame.spill_loads > 0)]
    assert bad.empty, bad[["kernel", "dtype", "status", "error"]].to_string()
    assert done.returncode == 0, done.stdout + done.stderr


def check_every_gpu_kernel_and_dtype_is_in_the_table(table):
    from experiments.device.compile_gate import kernel_modules
    from softmax_numba.cpu import _compile
    from softmax_numba.gpu import _runtime

    frame, _ = table
    assert set(frame.dtype) == {"float32", "float64", "float16", "bfloat16"}
    # module-qualified names (buffers., linear_tiles.) are kernels without an Engines twin
    names = {_runtime.base_name(n) for n in frame.kernel if "." not in n}
    assert {n for n in frame.kernel if n.startswith("buffers.")}
    for suffix in _runtime.VARIANT_SUFFIXES:  # every row-length bucket is compiled
        assert any(name.endswith(suffix) for name in frame.kernel), suffix
    for dtype in ("float16", "bfloat16"):
        half = {_runtime.base_name(n) for n in frame[frame.dtype == dtype].kernel}
        assert half == set(_runtime.HALF_STORAGE), dtype
    # every kernel the CPU engines register has its CUDA twin compiled here

    cpu = {
        pair.name
        for module in kernel_modules()
        for value in vars(module).values()
        for pair in (value.values() if isinstance(value, dict) else [value])
        if isinstance(pair, _compile.Engines)
    }
    assert cpu == names


def check_every_softmax_family_kernel_reads_its_rows_128_bits_at_a_time(table):
    """Issue 31: a 128-bit global load (``ld.global.v4`` of 32-bit lanes, ``.v2`` of
    64-bit ones) in every softmax-family kernel, every dtype; the row-writing ones store
    so too.  The family is every kernel of its modules but the one that reads no row."""
    from experiments.device.compile_gate import READS_NO_ROW, family_kernels
    from softmax_numba.gpu import _runtime

    frame, _ = table
    family = frame[frame.family.astype(str) == "True"]
    names = {_runtime.base_name(n) for n in family.kernel}
    assert names == family_kernels() and len(family) > 100
    assert not set(family.kernel) & set(READS_NO_ROW)
    narrow = family[family.vector4_loads == 0]
    assert narrow.empty, narrow[["kernel", "dtype"]].to_string()
    writers = family[family.kernel.str.contains("softmax") & ~family.kernel.str.contains("state")]
    assert (writers.vector4_stores > 0).all(), writers[writers.vector4_stores == 0].kernel


def test_the_compile_gate(table):
    """The checks above on one build of the gate, in one test: its fixture then runs
    on one xdist worker only (split over tests, a run of ``make test`` built it on
    both workers, or left one waiting on the other's lock)."""
    check_the_warp_kernels_reduce_with_shuffles_and_no_barrier(table)
    check_every_kernel_compiles_for_sm90_without_spills(table)
    check_every_gpu_kernel_and_dtype_is_in_the_table(table)
    check_every_softmax_family_kernel_reads_its_rows_128_bits_at_a_time(table)
