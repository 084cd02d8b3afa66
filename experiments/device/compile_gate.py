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
the PTX: registers, shared memory, spill stores and loads, 128-bit global loads
(``vector4_loads``: ``.v4`` of 32-bit lanes, or ``.v2`` of 64-bit ones for float64) and
stores (``vector4_stores``), all vector global loads, warp shuffles and barriers (the
counts are of instructions in the PTX, not executions), and ``family``: whether the
kernel belongs to the softmax family (:data:`FAMILY_MODULES`), whose kernels must read
their rows 128 bits at a time.  The dtypes are float32, float64, and float16 and
bfloat16 (``uint16`` arrays) for the kernels that store them
(``softmax_numba.gpu._runtime.HALF_STORAGE``).  Exits with 1 if any kernel fails to
compile or spills, or a softmax-family kernel issues no 128-bit load.
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
    "vector4_stores",
    "vector_loads",
    "shuffles",
    "barriers",
    "family",
)
DTYPES = ("float32", "float64")
#: The 2-byte dtypes, computed in float32 by the kernels of ``HALF_STORAGE``, and the
#: Numba type of their arrays (bfloat16 as its bits).
HALF_DTYPES = {"float16": "float16", "bfloat16": "uint16"}


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
    "chunked_losses",
)


#: The modules of :data:`KERNEL_MODULES` whose kernels are the softmax family: each
#: reads its rows 16 bytes at a time (``softmax_numba.gpu._wide``).
FAMILY_MODULES = ("softmax", "softmax_options", "losses", "sampling", "segment", "cumulative")
#: Kernels of the family that read no row, with the reason.
READS_NO_ROW = {"_logsumexp__split_row": "merges the pieces' states of each row; reads no row"}


def family_kernels() -> set[str]:
    """The names of the CPU kernels of :data:`FAMILY_MODULES` (their CUDA twins'
    base names)."""
    import importlib

    from softmax_numba.cpu._compile import Engines

    names = set()
    for name in FAMILY_MODULES:
        module = importlib.import_module(f"softmax_numba.cpu.{name}")
        for value in vars(module).values():
            for pair in value.values() if isinstance(value, dict) else [value]:
                if isinstance(pair, Engines):
                    names.add(pair.name)
    return names


def kernel_modules() -> list:
    """The modules of :data:`KERNEL_MODULES`, imported."""
    import importlib

    return [importlib.import_module(f"softmax_numba.cpu.{name}") for name in KERNEL_MODULES]


def _run_chunked_kernels(dtype: str) -> None:
    """Every kernel of ``cpu.chunked_losses`` and ``cpu.linear_tiles`` once: the tiled
    sweep of ``linear_cross_entropy`` (soft cap, weights, smoothing, entropy, gradient
    filtering), and the merge of two pieces' states (Dask's)."""
    import softmax_numba as sn
    from softmax_numba._chunked import ChunkedRows, LossOptions

    rng = np.random.default_rng(2)
    h = rng.standard_normal((4, 8)).astype(dtype)
    W = rng.standard_normal((16, 8)).astype(dtype)
    labels = np.array([0, 5, 15, -100])
    sn.linear_cross_entropy(
        h, W, labels, ignore_index=-100, softcap=3.0, label_smoothing=0.1,
        class_weights=np.ones(16), chunk_size=5, return_grad=True, return_entropy=True,
        grad_threshold=1e-3, backend="cpu",
    )  # fmt: skip
    options = LossOptions(label_smoothing=0.1, ignore_index=-100)
    state = ChunkedRows(labels, 16, options, np.dtype(dtype), "cpu", True)
    state.merge(state.parts, 0.0, 16.0)
    # probability targets with the options: the PROBABILITY_CHUNK_* kernels
    target = rng.dirichlet(np.ones(16), size=4).astype(dtype)
    sn.cross_entropy(
        h @ W.T, target, softcap=3.0, z_loss=1e-3, class_weights=np.ones(16),
        label_smoothing=0.1, return_grad=True, return_entropy=True, backend="cpu",
    )  # fmt: skip


def linear_tile_kernels(dtype: str) -> dict[str, tuple]:
    """The gradient filtering's kernels of ``softmax_numba.gpu.chunked_losses`` and
    their argument types: those of their CPU twins in ``cpu.linear_tiles`` (after
    :func:`cpu_signatures`), ``_tile_within`` with its ``int32`` flag."""
    from numba import types

    from softmax_numba.cpu import linear_tiles
    from softmax_numba.gpu import chunked_losses

    def signature(func):
        found = [s for s in func.signatures if str(s[0].dtype) == dtype]
        return tuple(found[0]) if found else None

    within = signature(linear_tiles.tile_within)
    flag = types.Array(types.int32, 1, "C")
    return {
        "linear_tiles._tile_within": (
            chunked_losses._tile_within,
            None if within is None else (*within, flag),
        ),
        "linear_tiles._add_target_terms": (
            chunked_losses._add_target_terms,
            signature(linear_tiles.add_target_terms),
        ),
    }


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
        # the chunked cross-entropy (linear_cross_entropy's sweep) has none either
        _run_chunked_kernels(dtype)
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


#: A 128-bit vector: four 32-bit lanes or two 64-bit ones.
_WIDE = r"(?:\.v4\.[bfsu]32|\.v2\.[bfsu]64)\b"


def _ptx_counts(ptx: str) -> dict:
    return {
        "vector4_loads": len(re.findall(r"\bld\.global(?:\.\w+)*?" + _WIDE, ptx)),
        "vector4_stores": len(re.findall(r"\bst\.global(?:\.\w+)*?" + _WIDE, ptx)),
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
    ``cpu_extra``, such as the streaming-store flag): they are dropped.  A float16 or
    bfloat16 call takes the float32 twin's types with float16 (``uint16``) arrays; a
    split row's two passes take the pieces' states too, in the compute type
    (``_runtime.launch``)."""
    from numba import types

    from softmax_numba.gpu._runtime import SPLIT_STATE_SUFFIX, SPLIT_SUFFIX, base_name

    compute = "float32" if dtype in HALF_DTYPES else dtype
    count = kernel.py_func.__code__.co_argcount
    sigs = [s for s in signatures.get(base_name(name), []) if str(s[0].dtype) == compute]
    if not sigs:
        return None
    sig = tuple(sigs[0])
    if dtype in HALF_DTYPES:
        storage = getattr(types, HALF_DTYPES[dtype])
        sig = tuple(
            a.copy(dtype=storage) if isinstance(a, types.Array) and a.dtype == types.float32 else a
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
    family = family_kernels()
    ptxas = ptxas_path()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, _target(cc):
        for dtype in (*DTYPES, *HALF_DTYPES):
            jobs = {}
            # 2-byte arrays go to the float32 kernels that store them (HALF_STORAGE).
            compute = "float32" if dtype in HALF_DTYPES else dtype
            for name, kernel in sorted(_runtime.built(compute).items()):
                if dtype in HALF_DTYPES and base_name(name) not in _runtime.HALF_STORAGE:
                    continue
                jobs[name] = (kernel.py_func, kernel_signature(name, kernel, signatures, dtype))
            if dtype not in HALF_DTYPES:
                for name, (kernel, sig) in buffer_kernels(dtype).items():
                    jobs[name] = (kernel.py_func, sig)
                for name, (kernel, sig) in linear_tile_kernels(dtype).items():
                    jobs[name] = (kernel.py_func, sig)
            for name, (py_func, sig) in jobs.items():
                row = dict.fromkeys(COLUMNS, 0) | {"kernel": name, "dtype": dtype, "error": ""}
                row["family"] = base_name(name) in family and name not in READS_NO_ROW
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
    """The rows that fail the gate: not compiled, spilling registers, or a softmax-family
    kernel without a 128-bit load."""
    spills = (table["spill_stores"] > 0) | (table["spill_loads"] > 0)
    narrow = table["family"].astype(bool) & (table["vector4_loads"] == 0)
    return table[(table["status"] != "ok") | spills | narrow]


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
    wide = table[table["family"].astype(bool)]
    print(f"{int((wide['vector4_loads'] > 0).sum())} of {len(wide)} softmax-family variants "
          "issue 128-bit loads")  # fmt: skip
    for _, row in bad.iterrows():
        why = row["error"]
        if row["status"] == "ok":
            spills = row["spill_stores"] or row["spill_loads"]
            why = "spills registers" if spills else "no 128-bit load"
        print(f"  {row['kernel']} {row['dtype']}: {row['status']} {why}")
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
