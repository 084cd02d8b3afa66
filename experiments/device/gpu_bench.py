"""GPU benchmark (``make bench-gpu``): our CUDA kernels against a device-to-device
copy of the same array (the roofline), PyTorch and CuPy, in one run.

Writes ``results/gpu/speed.csv`` (one row per op, engine, dtype and shape, with the
device's name) and its metadata.  Needs a GPU; with ``--quick`` it runs tiny shapes,
which also work on the CUDA simulator (a smoke test of the code path, not a
measurement).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

import numpy as np
import pandas as pd

import softmax_numba as sn
from experiments.harness import metadata, timing
from softmax_numba import config
from softmax_numba.gpu import _runtime

LENGTHS = (128, 512, 1024, 4096, 16384, 65536, 262144)
PRESETS = {"imagenet": 1000, "bert_vocab": 30522, "gpt2_vocab": 50257}


def _time(fn, sync, repeats=7) -> float:
    """Median seconds per call, each sample at least 5 ms long, the GPU synchronized."""
    return timing.time_call(fn, repeats=repeats, min_sample_s=5e-3, sync=sync)["median_s"]


def _ours(cuda, d_x, d_out, d_target):
    return {
        "softmax": lambda: sn.softmax(d_x, out=d_out, backend="cuda"),
        "log_softmax": lambda: sn.log_softmax(d_x, out=d_out, backend="cuda"),
        "cross_entropy": lambda: sn.cross_entropy(d_x, d_target, reduction="none", backend="cuda"),
    }


def _torch_ops(d_x, target):
    if importlib.util.find_spec("torch") is None:
        return {}
    import torch

    if not torch.cuda.is_available():
        return {}
    t = torch.as_tensor(d_x, device="cuda")
    tt = torch.as_tensor(target, device="cuda")
    f = torch.nn.functional
    return {
        "softmax": lambda: torch.softmax(t, -1),
        "log_softmax": lambda: torch.log_softmax(t, -1),
        "cross_entropy": lambda: f.cross_entropy(t, tt, reduction="none"),
    }


def _cupy_ops(d_x):
    if importlib.util.find_spec("cupy") is None:
        return {}
    import cupy
    from cupyx.scipy import special

    c = cupy.asarray(d_x)
    return {
        "softmax": lambda: special.softmax(c, axis=-1),
        "log_softmax": lambda: special.log_softmax(c, axis=-1),
    }


def run(out: pathlib.Path, quick: bool) -> pd.DataFrame:
    from numba import cuda

    shapes = (
        [(8, 16), (3, 40)]
        if quick
        else [(4096, n) for n in LENGTHS] + [(4096, n) for n in PRESETS.values()]
    )
    if _runtime.simulated():  # every simulated thread is a Python thread: keep blocks tiny
        config.CUDA_THREADS_PER_BLOCK = 4
        device = "CUDA simulator"
    else:
        device = cuda.get_current_device().name
    device = device.decode() if isinstance(device, bytes) else str(device)
    repeats = 1 if quick else 7
    rows = []
    rng = np.random.default_rng(0)
    for dtype in (np.float32,):
        for r, n in shapes:
            x = rng.standard_normal((r, n)).astype(dtype)
            target = rng.integers(0, n, r)
            d_x, d_out = cuda.to_device(x), cuda.device_array_like(x)
            d_target = cuda.to_device(target)
            sync = cuda.synchronize
            copy_s = _time(lambda d_x=d_x, d_out=d_out: d_out.copy_to_device(d_x), sync, repeats)
            copy_gbps = 2 * x.nbytes / copy_s / 1e9
            engines = {"softmax_numba": _ours(cuda, d_x, d_out, d_target),
                       "torch": _torch_ops(d_x, target), "cupy": _cupy_ops(d_x)}  # fmt: skip
            for engine, ops in engines.items():
                for op, fn in ops.items():
                    seconds = _time(fn, sync, repeats)
                    nbytes = x.nbytes * (1 if op == "cross_entropy" else 2)
                    rows.append({"device": device, "op": op, "engine": engine,
                                 "dtype": np.dtype(dtype).name, "rows": r, "n": n,
                                 "bytes": nbytes, "median_s": seconds,
                                 "gbps": nbytes / seconds / 1e9, "copy_gbps": copy_gbps,
                                 "ratio_to_copy": nbytes / seconds / 1e9 / copy_gbps})  # fmt: skip
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "speed.csv", index=False)
    metadata.write_next_to(out / "speed.csv")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.device.gpu_bench", description=__doc__
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/gpu"))
    parser.add_argument("--quick", action="store_true", help="tiny shapes (simulator smoke run)")
    args = parser.parse_args(argv)
    table = run(args.out, args.quick)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
