"""The kernels' vectorizable elementary functions against the C library's, in one run.

``config.EXP`` is read once at import, so each path runs in a child process with
``SOFTMAX_NUMBA_EXP`` set (``fast`` or ``libm``); both measure the same cells with the
study's own accuracy and speed measurements and print them as JSON.  The table
``elementary_paths.csv`` puts the two side by side: error in units of u against the
higher-precision oracle, and GB/s with the parallel copy of the same array.

    python -m experiments.measure.elementary_paths   # one path, the one in the environment
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ENTRIES = (
    "softmax[shifted]",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "sigmoid",
    "softplus",
    "arctan",
    "gaussian",
)
COLUMNS = [
    "entry",
    "dtype",
    "rows",
    "n",
    "path",
    "max_error_u",
    "gbps",
    "parallel_copy_gbps",
    "ratio_to_parallel_copy",
]


def measure(quick: bool) -> list[dict]:
    """The cells on the path this process was started with."""
    from experiments.measure import sweep
    from softmax_numba import config

    rows, n = (64, 1000) if quick else (4096, 1000)
    result = []
    for name in ENTRIES:
        for dtype in ("float32", "float64"):
            cell = {"entry": name, "dtype": dtype, "preset": "imagenet", "n": n, "rows": rows}
            accuracy = sweep.measure_accuracy(
                {**cell, "scale": 10.0, "distribution": "normal", "backend": "parallel"}
            )
            speed = sweep.measure_speed({**cell, "engine": "parallel"})
            result.append(
                {
                    "entry": name,
                    "dtype": dtype,
                    "rows": rows,
                    "n": n,
                    "path": config.EXP,
                    "max_error_u": accuracy["max_error_u"],
                    "gbps": speed["gbps"],
                    "parallel_copy_gbps": speed["parallel_copy_gbps"],
                    "ratio_to_parallel_copy": speed["ratio_to_parallel_copy"],
                }
            )
    return result


def rows(quick: bool) -> list[dict]:
    """Both paths, each measured in a child process of its own."""
    result = []
    for path in ("fast", "libm"):
        env = {**os.environ, "SOFTMAX_NUMBA_EXP": path}
        command = [sys.executable, "-m", "experiments.measure.elementary_paths"]
        if quick:
            command.append("--quick")
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        result += json.loads(done.stdout)
    return result


if __name__ == "__main__":
    json.dump(measure("--quick" in sys.argv), sys.stdout)
