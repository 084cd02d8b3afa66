"""Every CUDA kernel compiled for a real GPU, with no GPU: NVVM to PTX for sm_90, then
``ptxas -v``; the table of what each kernel uses.

    python -m experiments.device.compile_gate [--out results/gpu] [--cc 9.0]

The CUDA simulator, which the tests use where there is no GPU, runs the kernels as
Python and accepts code that NVVM rejects (a shared array reached through several
device functions is one such case); this gate compiles what a real launch would.
It needs numba-cuda and the NVIDIA compiler wheels (``pip install -e ".[gpu-compile]"``:
NVVM, NVRTC and ptxas), not a driver: numba-cuda asks the driver for the device's
compute capability when it compiles a device function, so the gate answers that
question with ``--cc`` for the duration of the compile (:func:`_target`).

The argument types of each kernel are those of its CPU twin (the same name, the
same arguments; ``softmax_numba.gpu._runtime.launch``), taken from the signatures
the CPU kernels compile when every registry entry runs once on small inputs.

Writes ``ptxas.csv`` (and its ``.meta.json``: commit, machine, packages): per
kernel and dtype, ``status`` (``ok``, ``nvvm-error``, ``ptxas-error``,
``no-signature``), the first line of the error, and from ptxas and
the PTX: registers, shared memory, spill stores and loads, 128-bit (``.v4``) and
other vector global loads, warp shuffles and barriers (the last three count
instructions in the PTX, not executions).  Exits with 1 if any kernel
fails to compile or spills.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pandas as pd

COLUMNS = (
    "kernel",
    "dtype",
    "status",
    "error",
    "registers",
    "shared_bytes",
    "spill_stores",
    "spill_loads",
    "vector4_loads",
    "vector_loads",
    "shuffles",
    "barriers",
)
DTYPES = ("float32", "float64")


def ptxas_path() -> str:
    """``ptxas`` from the ``nvidia-cuda-nvcc`` wheel, else from ``PATH``."""
    try:
        import nvidia

        for root in map(pathlib.Path, nvidia.__path__):
            for found in sorted(root.glob("*/bin/ptxas")):
                return str(found)
    except ImportError:
        pass
    found = shutil.which("ptxas")
    if found is None:
        raise RuntimeError("ptxas not found: pip install -e '.[gpu-compile]' (nvidia-cuda-nvcc)")
    return found


class NvvmError(RuntimeError):
    """NVVM refused the IR; the message is NVVM's log (numba-cuda drops it)."""


@contextlib.contextmanager
def _target(cc: tuple[int, int]):
    """Device functions compile for ``cc`` without asking a driver, and a verifier
    error carries NVVM's log."""
    from numba.cuda import dispatcher
    from numba.cuda.cudadrv import nvvm

    device = SimpleNamespace(compute_capability=cc)
    verify = nvvm.CompilationUnit.verify

    def verify_with_log(unit):
        try:
            verify(unit)
        except Exception as exc:
            raise NvvmError(f"{exc}: {unit.get_log().strip()}") from None

    with (
        mock.patch.object(dispatcher, "get_current_device", lambda: device),
        mock.patch.object(nvvm.CompilationUnit, "verify", verify_with_log),
    ):
        yield


#: The modules of ``softmax_numba.cpu`` whose kernels have a CUDA twin.
KERNEL_MODULES = (
    "softmax",
    "softmax_options",
    "losses",
    "elementwise",
    "maxout",
    "sparse",
    "sampling",
    "segment",
    "cumulative",
)


def kernel_modules() -> list:
    """The modules of :data:`KERNEL_MODULES`, imported."""
    import importlib

    return [importlib.import_module(f"softmax_numba.cpu.{name}") for name in KERNEL_MODULES]


def cpu_signatures() -> dict[str, list[tuple]]:
    """Each CPU kernel's argument types by kernel name, after every registry entry
    (and the options that take other kernels: weights, the sorting algorithms) ran
    once on the serial engine in float32 and float64."""
    import softmax_numba as sn
    from softmax_numba import registry
    from softmax_numba.cpu._compile import Engines

    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        x = rng.standard_normal((3, 16)).astype(dtype)
        for entry in registry.ENTRIES:
            entry.run(entry.arguments(x, np.random.default_rng(1)), backend="cpu")
        sn.logsumexp(x, b=np.ones_like(x), backend="cpu")
        sn.sparsemax(x, algorithm="sort", backend="cpu")
        sn.entmax15(x, algorithm="sort", backend="cpu")
        # the selections (registry.SELECTIONS) have no entries: called here
        sn.sample(x, top_k=4, top_p=0.9, min_p=0.05, seed=0, backend="cpu")
        sn.filter_logits(x, top_k=4, temperature=0.7, backend="cpu")
        sn.top_logprobs(x, 3, backend="cpu")
        # the ragged-row ops (registry.SEGMENTED) have none either: one kernel per direction
        sn.segment_softmax(x[0], np.array([0, 5, 16]), backend="cpu")
        sn.segment_softmax_backward(x, x, np.array([0, 1, 3]), backend="cpu")
    found: dict[str, list[tuple]] = {}
    for module in kernel_modules():
        for value in vars(module).values():
            pairs = value.values() if isinstance(value, dict) else [value]
            for pair in pairs:
                if isinstance(pair, Engines):
                    found.setdefault(pair.name, []).extend(pair.cpu.signatures)
    return found


def buffer_kernels(dtype: str) -> dict[str, tuple]:
    """The elementwise kernels of ``softmax_numba.gpu.buffers`` and their argument
    types (1-D views of the rows, a bool mask, a scalar fill; 2-D for the transpose)."""
    from numba import types

    from softmax_numba.gpu import buffers

    f = getattr(types, dtype)
    vec, mask = types.Array(f, 1, "C"), types.Array(types.boolean, 1, "C")
    return {
        "buffers._where": (buffers._where, (vec, mask, f, vec)),
        "buffers._fill_where_not": (buffers._fill_where_not, (vec, mask, f)),
        "buffers._nan_where_negative": (buffers._nan_where_negative, (vec, vec)),
        "buffers._sign_of_logsumexp": (buffers._sign_of_logsumexp, (vec, vec)),
        "buffers._transpose": (buffers._transpose, (types.Array(f, 2, "C"),) * 2),
    }


def _ptx_counts(ptx: str) -> dict:
    return {
        "vector4_loads": len(re.findall(r"\bld\.global(?:\.\w+)*\.v4\b", ptx)),
        "vector_loads": len(re.findall(r"\bld\.global(?:\.\w+)*\.v[24]\b", ptx)),
        "shuffles": len(re.findall(r"\bshfl\.sync\b", ptx)),
        "barriers": len(re.findall(r"\bbar\.sync\b|\bbarrier\.sync\b", ptx)),
    }


def _ptxas_counts(report: str) -> dict:
    def number(pattern):
        found = re.findall(pattern, report)
        return max(int(v) for v in found) if found else 0

    return {
        "registers": number(r"Used (\d+) registers"),
        "shared_bytes": number(r"(\d+) bytes smem"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
    }


def kernel_signature(name: str, kernel, signatures: dict, dtype: str):
    """The argument types of the CUDA kernel ``name`` on ``dtype`` arrays: its CPU
    twin's (the same name without the variant suffix), or ``None`` if the twin never
    ran.  The CPU kernel may take trailing CPU-only arguments (``_api.run``'s
    ``cpu_extra``, such as the streaming-store flag): they are dropped.  A float16
    call takes the float32 twin's types with float16 arrays; a split row's two passes
    take the pieces' states too, in the compute type (``_runtime.launch``)."""
    from numba import types

    from softmax_numba.gpu._runtime import SPLIT_STATE_SUFFIX, SPLIT_SUFFIX, base_name

    compute = "float32" if dtype == "float16" else dtype
    count = kernel.py_func.__code__.co_argcount
    sigs = [s for s in signatures.get(base_name(name), []) if str(s[0].dtype) == compute]
    if not sigs:
        return None
    sig = tuple(sigs[0])
    if dtype == "float16":
        sig = tuple(
            a.copy(dtype=types.float16)
            if isinstance(a, types.Array) and a.dtype == types.float32
            else a
            for a in sig
        )
    if name.endswith(SPLIT_STATE_SUFFIX):
        return (sig[0], *(types.Array(getattr(types, compute), 2, "C"),) * 3)
    if name.endswith(SPLIT_SUFFIX):
        pieces = (types.Array(getattr(types, compute), 2, "C"),) * 3
        return (sig[0], *pieces, *sig[1 : count - 3])
    return sig[:count]


def compile_all(cc: tuple[int, int] = (9, 0)) -> pd.DataFrame:
    """One row per CUDA kernel and dtype (:data:`COLUMNS`)."""
    from numba import cuda

    from softmax_numba.gpu import _runtime
    from softmax_numba.gpu._runtime import base_name

    if _runtime.simulated():
        raise RuntimeError(
            "the compile gate needs the real CUDA target: unset NUMBA_ENABLE_CUDASIM"
        )
    signatures = cpu_signatures()
    ptxas = ptxas_path()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, _target(cc):
        for dtype in (*DTYPES, "float16"):
            jobs = {}
            # float16 arrays go to the float32 kernels that store them (HALF_STORAGE).
            compute = "float32" if dtype == "float16" else dtype
            for name, kernel in sorted(_runtime.built(compute).items()):
                if dtype == "float16" and base_name(name) not in _runtime.HALF_STORAGE:
                    continue
                jobs[name] = (kernel.py_func, kernel_signature(name, kernel, signatures, dtype))
            if dtype != "float16":
                for name, (kernel, sig) in buffer_kernels(dtype).items():
                    jobs[name] = (kernel.py_func, sig)
            for name, (py_func, sig) in jobs.items():
                row = dict.fromkeys(COLUMNS, 0) | {"kernel": name, "dtype": dtype, "error": ""}
                if sig is None:
                    rows.append(row | {"status": "no-signature", "error": "no CPU call"})
                    continue
                try:
                    ptx, _ = cuda.compile_ptx(py_func, sig, cc=cc)
                except Exception as exc:  # NVVM's and the typing's errors alike
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    rows.append(row | {"status": "nvvm-error", "error": first[:300]})
                    continue
                path = pathlib.Path(tmp) / f"{name}_{dtype}.ptx"
                path.write_text(ptx)
                arch = f"sm_{cc[0]}{cc[1]}"
                done = subprocess.run(
                    [ptxas, f"-arch={arch}", "-v", str(path), "-o", os.devnull],
                    capture_output=True,
                    text=True,
                )
                row |= _ptx_counts(ptx) | _ptxas_counts(done.stderr + done.stdout)
                if done.returncode != 0:
                    lines = (done.stderr.strip() or "ptxas failed").splitlines()
                    row |= {"status": "ptxas-error", "error": lines[0][:300]}
                else:
                    row["status"] = "ok"
                rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def failures(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that fail the gate: not compiled, or spilling registers."""
    spills = (table["spill_stores"] > 0) | (table["spill_loads"] > 0)
    return table[(table["status"] != "ok") | spills]


def _write_meta(table_path: pathlib.Path, cc: tuple[int, int]) -> None:
    """The table's ``.meta.json``: this process (commit, machine, packages), the
    command, the target and the compilers' versions."""
    import json
    from importlib import metadata as dist

    from experiments.harness import metadata

    meta = metadata.collect()
    meta["command"] = " ".join(["python", "-m", "experiments.device.compile_gate", *sys.argv[1:]])
    meta["target"] = f"sm_{cc[0]}{cc[1]}"
    for name in ("numba-cuda", "nvidia-nvvm", "nvidia-cuda-nvcc", "cuda-bindings"):
        try:
            meta["packages"][name] = dist.version(name)
        except dist.PackageNotFoundError:
            meta["packages"][name] = None
    metadata.meta_path(table_path).write_text(json.dumps(meta, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.device.compile_gate")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/gpu"))
    parser.add_argument("--cc", default="9.0", help="compute capability (default 9.0, Hopper)")
    args = parser.parse_args(argv)
    cc = tuple(int(p) for p in args.cc.split("."))
    table = compile_all(cc)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "ptxas.csv", index=False)
    _write_meta(args.out / "ptxas.csv", cc)
    bad = failures(table)
    ok = len(table) - len(bad)
    print(f"{ok} of {len(table)} kernel variants compile for sm_{cc[0]}{cc[1]} without spills")
    for _, row in bad.iterrows():
        print(f"  {row['kernel']} {row['dtype']}: {row['status']} {row['error']}")
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
