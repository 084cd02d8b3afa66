"""``python -m softmax_numba warmup``: the kernels compiled and cached ahead of use."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

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


@pytest.mark.slow
def test_warmup_fills_the_cache_that_the_first_real_call_loads_from(tmp_path):
    done = _run(
        ["-m", "softmax_numba", "warmup", "--dtypes", "float32", "--engines", "cpu"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    total = len(warmup.steps(["float32"], ["cpu"]))
    assert f"{total}/{total}" in done.stderr  # the progress bar reached its end
    assert str(tmp_path) in done.stdout
    assert list(tmp_path.rglob("*.nbi"))
    first = _run(["-c", FIRST_CALLS], tmp_path)
    assert first.returncode == 0, first.stderr
    # each kernel: loaded once from the cache, compiled never
    assert first.stdout.split() == ["1", "0", "1", "0"]


def test_every_registered_op_is_warmed_on_each_engine_and_dtype():
    names = [s.name for s in warmup.steps(["float64"], ["cpu", "parallel"])]
    from softmax_numba import registry

    for entry in registry.ENTRIES:
        assert f"{entry.name} float64 cpu" in names and f"{entry.name} float64 parallel" in names


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
