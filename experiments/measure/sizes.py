"""``python -m experiments sizes``: every op at every size, ours against the peers, in one run.

Ops: softmax, log_softmax, logsumexp, cross_entropy (the mean loss; the mean loss
and its gradient), sigmoid and sparsemax, on arrays from one row of ten to
16384 x 4096, float32, and float64 on a subset (:data:`SHAPES`, :data:`FLOAT64`).
In each cell (op, shape, dtype) the candidates are ours allocating (``softmax(x)``),
ours writing into a buffer written before (``out=``, ``grad_out=`` for the
gradient), a parallel copy of the array, and each installed peer:

- PyTorch CPU (``torch.softmax(x, -1, out=y)`` where torch has ``out=``), as many
  threads as Numba;
- onnxruntime, a one-op model built in memory with ``onnx.helper`` (``Softmax``,
  ``LogSoftmax``, ``ReduceLogSumExp``, ``SoftmaxCrossEntropyLoss``, ``Sigmoid``), its
  input and output bound with ``io_binding`` to NumPy arrays allocated once, the
  intra-op pool sized to the run's threads and told not to spin.  Its gradient of
  the loss lives in onnxruntime-training only: onnxruntime is timed on the loss
  alone;
- ``scipy.special`` (``softmax``, ``log_softmax``, ``logsumexp``, ``expit``; one thread),
  up to :data:`SCIPY_MAX_BYTES`;
- JAX on the CPU, jitted, in a process of its own (:mod:`experiments.measure.jax_worker`:
  it has crashed in one process with Numba and torch);
- the ``entmax`` package's sparsemax (torch), up to :data:`ENTMAX_MAX_BYTES`.

Before any timing each peer's output is checked against ours once per cell (its
first :data:`CHECK_ROWS` rows, or segments): they must agree within twice the op's error bound
(both are within it of the exact result), and never closer than
:data:`CHECK_FLOOR_U` units of roundoff is asked.  A
peer that disagrees is not timed, and its row says why.

Timing: one implementation at a time, in blocks of calls lasting at least
:data:`MIN_BLOCK_S`, the order of the blocks reversed every other round
(:func:`interleaved`), with a short pause between blocks: a thread pool that spins
after a call would otherwise slow whatever runs next.  A ratio is the peer's time
over ours in the same round, the median over rounds, with a distribution-free 95%
interval: above 1 when we are faster.  A peer that writes into an array given to it
(onnxruntime, torch with ``out=``) is compared with ours writing into ``out=``
where we have it; a peer that allocates (scipy, JAX, entmax, NumPy, torch_geometric,
torch without ``out=``), with ours allocating.

Then the single-thread table: softmax and log_softmax float32 in cache, ns per
entry, ours on the serial engine (``backend="cpu"``, ``out=``, Numba at one thread)
against onnxruntime (MLAS) and torch at one thread, ``np.copyto`` and ``np.exp``.

Then the family of issue 29 (part ``"family"``, :data:`FAMILY_OPS`, a grid of its own
so that the cells above stay comparable with earlier runs): each op at
:data:`FAMILY_SHAPES`, float32, at the run's threads, ours allocating and into ``out=``
against the peers that have it (:data:`PEER_CALLS`: what each peer runs), and the copy:

- ``softmax_temperature``: ``softmax(x, temperature=1.7)`` against torch's
  ``torch.softmax(x / T, -1)`` (what a torch user writes; ``x / T`` allocates), JAX's
  ``jax.nn.softmax(x / T)`` and onnxruntime's two-node model (``Div`` by a constant,
  then ``Softmax``);
- ``softmax_sink``: ``softmax(x, sink=s)``, ``s`` a sink logit per row (zeros, as the
  registry entry's), against the softmax of ``cat([x, s[:, None]], -1)`` with the
  sink's column dropped (gpt-oss's reference formulation) in torch and in JAX;
- ``logcumsumexp`` against ``torch.logcumsumexp(x, -1, out=y)``,
  ``jax.lax.cumlogsumexp`` and NumPy's ``np.logaddexp.accumulate`` (one thread);
- ``segment_softmax(values, offsets)``: ``x`` flattened, cut into ``rows`` segments of
  seeded random lengths averaging ``n`` (:func:`segment_offsets`), against
  ``torch_geometric.utils.softmax(src, ptr=offsets)`` where torch_geometric is
  installed (JAX's ``segment_max``/``segment_sum`` would be a user's formula, not an
  op, and is left out);
- ``stablemax`` against the formula of Prieto et al. (2025) in torch: ``s = where(x >=
  0, x + 1, 1 / (1 - x))``, ``s / s.sum(-1, keepdim=True)``.

Their outputs are checked as the other cells' against the bound of the op's registry
entry (:data:`ENTRY`); the segments, which have no entry, against that of
``softmax[shifted]`` on each checked segment as one row (the longest and widest
decide), each segment's errors relative to its largest value.

Writes ``sizes.csv`` (resumable, as the study's tables: :func:`store.open_run`) with
``sizes.meta.json``, then ``SIZES.md`` and ``sizes.png``
(:mod:`experiments.report.sizes`).  ``--library PATH`` times the checkout of the
library at ``PATH`` (its ``softmax_numba``, put first on ``sys.path`` before anything
imports it; its commit in the metadata) with this harness: the "before" table of a
change, measured in the same session as the "after".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import inspect
import itertools
import json
import os
import pathlib
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numba
import numpy as np

# Nothing here imports softmax_numba at import time: ``--library`` must come first.
from experiments.harness import metadata, store, timing
from experiments.measure.jax_worker import SECOND_ARGUMENT, TEMPERATURE

ROOT = pathlib.Path(__file__).resolve().parents[2]

OPS = (
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_grad",
    "sigmoid",
    "sparsemax",
)
#: The family of issue 29 (part ``"family"``): one grid of its own, float32.
FAMILY_OPS = ("softmax_temperature", "softmax_sink", "logcumsumexp", "segment_softmax", "stablemax")
FAMILY_SHAPES = ((64, 1000), (8, 32000), (256, 4096))
QUICK_FAMILY_SHAPES = ((64, 1000),)
LABELS = {
    "cross_entropy": "cross_entropy (loss)",
    "cross_entropy_grad": "cross_entropy (loss + gradient)",
    "softmax_temperature": f"softmax(x, temperature={TEMPERATURE})",
    "softmax_sink": "softmax(x, sink=s), s per row",
    "logcumsumexp": "logcumsumexp(x)",
    "segment_softmax": "segment_softmax(values, offsets)",
    "stablemax": "stablemax(x)",
}
#: (rows, n), float32, in order of size.
SHAPES = (
    (1, 10),
    (1, 1000),
    (64, 1000),
    (1, 128256),
    (8, 32000),
    (256, 4096),
    (32, 128256),
    (4096, 4096),
    (16384, 4096),
)
#: The float64 subset: the softmax family at three sizes in cache and one out of it.
FLOAT64 = (
    ("softmax", "log_softmax", "logsumexp", "cross_entropy"),
    ((1, 1000), (64, 1000), (8, 32000), (4096, 4096)),
)
#: The single-thread table: rows in cache, float32.
SINGLE_OPS = ("softmax", "log_softmax")
SINGLE_SHAPES = ((64, 1000), (8, 32000), (256, 4096))
QUICK_SHAPES = ((1, 10), (64, 1000))
QUICK_FLOAT64 = (("softmax",), ((64, 1000),))
QUICK_SINGLE_SHAPES = ((64, 1000),)

IMPLS = (
    "ours",
    "ours_out",
    "torch",
    "onnxruntime",
    "scipy",
    "jax",
    "entmax",
    "numpy",
    "torch_geometric",
    "copy",
)
SINGLE_IMPLS = ("ours", "onnxruntime", "torch", "copy", "numpy_exp")
PEERS = ("torch", "onnxruntime", "scipy", "jax", "entmax", "numpy", "torch_geometric")
#: The ops each peer has.
PEER_OPS = {
    "torch": (
        "softmax",
        "log_softmax",
        "logsumexp",
        "cross_entropy",
        "cross_entropy_grad",
        "sigmoid",
        "softmax_temperature",
        "softmax_sink",
        "logcumsumexp",
        "stablemax",
    ),
    "onnxruntime": (
        "softmax",
        "log_softmax",
        "logsumexp",
        "cross_entropy",
        "sigmoid",
        "softmax_temperature",
    ),
    "scipy": ("softmax", "log_softmax", "logsumexp", "sigmoid"),
    "jax": (
        "softmax",
        "log_softmax",
        "logsumexp",
        "cross_entropy",
        "cross_entropy_grad",
        "sigmoid",
        "softmax_temperature",
        "softmax_sink",
        "logcumsumexp",
    ),
    "entmax": ("sparsemax",),
    "numpy": ("logcumsumexp",),
    "torch_geometric": ("segment_softmax",),
}
#: What each peer runs for each op of the family (the report names them).
PEER_CALLS = {
    "softmax_temperature": {
        "torch": "torch.softmax(x / T, -1)",
        "jax": "jax.nn.softmax(x / T)",
        "onnxruntime": "Div, Softmax",
    },
    "softmax_sink": {
        "torch": "torch.softmax(torch.cat([x, s[:, None]], -1), -1)[:, :-1]",
        "jax": "jax.nn.softmax(jnp.concatenate([x, s[:, None]], -1))[:, :-1]",
    },
    "logcumsumexp": {
        "torch": "torch.logcumsumexp(x, -1, out=y)",
        "jax": "jax.lax.cumlogsumexp(x, axis=1)",
        "numpy": "np.logaddexp.accumulate(x, axis=-1)",
    },
    "segment_softmax": {"torch_geometric": "torch_geometric.utils.softmax(src, ptr=offsets)"},
    "stablemax": {
        "torch": "s = torch.where(x >= 0, x + 1, 1 / (1 - x)); s / s.sum(-1, keepdim=True)"
    },
}
#: torch ops with ``out=``: compared with ours into ``out=``.
TORCH_OUT = ("softmax", "log_softmax", "logsumexp", "sigmoid", "logcumsumexp")
#: The entmax package sorts each row: above this it takes seconds a call (7.8 s at
#: 16384 x 4096 float32 on 2 cores), and is left out.
ENTMAX_MAX_BYTES = 16 << 20
#: scipy runs on one thread: above this a call takes seconds (logsumexp 3 s at
#: 16384 x 4096 float32), and it is left out.
SCIPY_MAX_BYTES = 64 << 20
#: Arrays of ``x``'s size each op reads plus writes (logsumexp and the loss write
#: one value per row, left out).
TRAFFIC = {
    "softmax": 2,
    "log_softmax": 2,
    "logsumexp": 1,
    "cross_entropy": 1,
    "cross_entropy_grad": 2,
    "sigmoid": 2,
    "sparsemax": 2,
    "softmax_temperature": 2,
    "softmax_sink": 2,
    "logcumsumexp": 2,
    "segment_softmax": 2,
    "stablemax": 2,
}
#: The registry entry whose error bound is the check's tolerance.
ENTRY = {
    "softmax": "softmax[shifted]",
    "log_softmax": "log_softmax",
    "logsumexp": "logsumexp",
    "cross_entropy": "cross_entropy",
    "cross_entropy_grad": "cross_entropy",
    "sigmoid": "sigmoid",
    "sparsemax": "sparsemax[pivot]",
    "softmax_temperature": "softmax[options]",
    "softmax_sink": "softmax[options]",
    "logcumsumexp": "logcumsumexp",
    "segment_softmax": "softmax[shifted]",  # on each segment (no entry of its own)
    "stablemax": "stablemax",
}
#: A peer agrees with ours within ``CHECK_SLACK`` times the op's bound, at least
#: ``CHECK_FLOOR_U`` units of roundoff (a peer that rounds otherwise is the same op;
#: a wrong axis, reduction or formula is off by orders of magnitude more), on the
#: first ``CHECK_ROWS`` rows of its outputs (the whole of a mean loss).
CHECK_SLACK = 2.0
CHECK_FLOOR_U = 16.0
CHECK_ROWS = 64

#: The shortest block of calls of one implementation, and the pause after each block.
MIN_BLOCK_S = 0.02
QUICK_MIN_BLOCK_S = 0.002
SETTLE_S = 0.002
#: A call this many times longer than a block is timed alone: no three more calls
#: to size its blocks.
LONG_CALL = 4
MB = 1 << 20

COLUMNS = (
    "part",
    "op",
    "dtype",
    "rows",
    "n",
    "threads",
    "impl",
    "median_s",
    "low_s",
    "high_s",
    "ns_per_entry",
    "versus",
    "ratio",
    "ratio_low",
    "ratio_high",
    "gbps",
    "copy_gbps",
    "ratio_to_copy",
    "check_u",
    "tolerance_u",
    "rounds",
    "inner",
    "note",
)
KEY = ("part", "op", "dtype", "rows", "n", "threads", "impl")


def rounds_for(nbytes: int, quick: bool) -> int:
    """Rounds of a cell: fewer for big arrays, whose blocks are single long calls."""
    if quick:
        return 3
    if nbytes >= 128 * MB:
        return 3
    if nbytes >= 16 * MB:
        return 5
    return 11


def cells(quick: bool, threads: int) -> list[dict]:
    """The cells of the run: ``part`` ``"sizes"`` at ``threads`` threads, then
    ``"single_thread"``, then ``"family"`` at ``threads`` threads."""
    shapes, (f64_ops, f64_shapes), single, family = (
        (QUICK_SHAPES, QUICK_FLOAT64, QUICK_SINGLE_SHAPES, QUICK_FAMILY_SHAPES)
        if quick
        else (SHAPES, FLOAT64, SINGLE_SHAPES, FAMILY_SHAPES)
    )

    def cell(part, op, dtype, rows, n, k):
        return {"part": part, "op": op, "dtype": dtype, "rows": rows, "n": n, "threads": k}

    grid = [cell("sizes", op, "float32", r, n, threads) for op in OPS for r, n in shapes]
    grid += [cell("sizes", op, "float64", r, n, threads) for op in f64_ops for r, n in f64_shapes]
    grid += [cell("single_thread", op, "float32", r, n, 1) for op in SINGLE_OPS for r, n in single]
    grid += [cell("family", op, "float32", r, n, threads) for op in FAMILY_OPS for r, n in family]
    return grid


# ----------------------------------------------------------------------------- timing


class Local:
    """A candidate timed in this process: ``fn()`` in a loop."""

    def __init__(self, fn: Callable[[], object]):
        self.fn = fn

    def calibrate(self, long_s: float) -> float:
        """The fastest of up to four calls (one if that one lasts ``long_s`` or more)."""
        fn = self.fn
        fastest = np.inf
        for _ in range(4):
            start = time.perf_counter()
            fn()
            fastest = min(fastest, time.perf_counter() - start)
            if fastest >= long_s:
                break
        return fastest

    def block(self, inner: int) -> float:
        fn = self.fn
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - start) / inner


def interleaved(candidates: dict, rounds: int, min_block_s: float) -> tuple[dict, dict]:
    """Seconds per call of each candidate in each round, and each one's block size.

    :func:`experiments.harness.timing.interleaved` with candidates that may time
    their blocks in another process (:class:`Local` here, :class:`JaxProcess`'s
    there): each is called until warm, its block sized from its fastest call, then
    each round times a block of each, one implementation at a time, the order
    reversed every other round, with a pause of :data:`SETTLE_S` after each block
    for the thread pool it woke to go back to sleep.
    """
    inner = {}
    for name, candidate in candidates.items():
        fastest = candidate.calibrate(LONG_CALL * min_block_s)
        inner[name] = max(1, int(min_block_s / max(fastest, 1e-9)))
    samples = {name: np.empty(rounds) for name in candidates}
    order = list(candidates.items())
    for k in range(rounds):
        for name, candidate in order if k % 2 == 0 else order[::-1]:
            samples[name][k] = candidate.block(inner[name])
            time.sleep(SETTLE_S)
    return samples, inner


# ----------------------------------------------------------------------------- ours


def _library():
    import softmax_numba

    return softmax_numba


def ours(op: str, x, target, backend: str | None = None) -> dict[str, Callable]:
    """``{"ours": fn, "ours_out": fn}`` (the second where the function takes an output
    buffer), each a zero-argument call of our public function as a user writes it;
    ``target`` is the op's second array (:func:`_arrays`).  :class:`NotTimed` for an op of
    the family that the library timed (``--library``) does not have."""
    sn = _library()
    kw = {} if backend is None else {"backend": backend}
    if op in FAMILY_OPS:
        function, args, options = _family_call(sn, op, x, target)
        y = np.empty_like(args[0])
        return {
            "ours": lambda: function(*args, **options, **kw),
            "ours_out": lambda: function(*args, **options, out=y, **kw),
        }
    if op.startswith("cross_entropy"):
        grad = op == "cross_entropy_grad"
        found = {"ours": lambda: sn.cross_entropy(x, target, return_grad=grad, **kw)}
        if grad and "grad_out" in inspect.signature(sn.cross_entropy).parameters:
            g = np.empty_like(x)
            found["ours_out"] = lambda: sn.cross_entropy(
                x, target, return_grad=True, grad_out=g, **kw
            )
        return found
    function = getattr(sn, op)
    found = {"ours": lambda: function(x, **kw)}
    if "out" in inspect.signature(function).parameters:
        y = np.empty_like(x)
        found["ours_out"] = lambda: function(x, out=y, **kw)
    return found


def _family_call(sn, op: str, x, target) -> tuple[Callable, tuple, dict]:
    """(function, positional arguments, keyword arguments) of our call of a family op."""
    name = {"softmax_temperature": "softmax", "softmax_sink": "softmax"}.get(op, op)
    function = getattr(sn, name, None)
    options = {
        "softmax_temperature": {"temperature": TEMPERATURE},
        "softmax_sink": {"sink": target},
    }.get(op, {})
    parameters = inspect.signature(function).parameters if function else {}
    if function is None or not set(options) | {"out"} <= set(parameters):
        raise NotTimed(f"the library timed has no {LABELS[op]}")
    if op == "segment_softmax":
        return function, (x.reshape(-1), target), options
    return function, (x,), options


def tolerance_u(op: str, x, target) -> float:
    """The check's tolerance in units of roundoff: :data:`CHECK_SLACK` times the
    largest per-row bound of the op's registry entry on these arguments.  The sink
    per row is the entry's (zeros).  ``segment_softmax`` (``x`` the values, ``target``
    the offsets) has no entry: the bound of ``softmax[shifted]`` on each segment as
    one row, the largest (the longest and widest segment's)."""
    from softmax_numba import registry
    from softmax_numba.error_metrics import allowed_u

    entry = next(e for e in registry.ENTRIES if e.name == ENTRY[op])
    if op == "segment_softmax":
        segments = [x[a:b][None, :] for a, b in itertools.pairwise(target)]
        bound = max(
            (float(np.max(allowed_u(entry.bounds[0], (s,), None, x.dtype))) for s in segments),
            default=0.0,
        )
        return max(CHECK_SLACK * bound, CHECK_FLOOR_U)
    args = (x, target) if op.startswith("cross_entropy") else (x,)
    outputs = registry.outputs(entry.run(args))
    bound = max(float(np.max(b)) for _err, b in entry.errors(args, outputs, outputs))
    return max(CHECK_SLACK * bound, CHECK_FLOOR_U)


def disagreement_u(got: tuple, want: tuple, dtype, offsets=None) -> float:
    """The largest difference between two results, in units of roundoff of ``dtype``,
    relative to the largest magnitude of its row (of the value itself, at least 1,
    for one value per row; of its segment, for the values of the segments that
    ``offsets`` cut); infinite for a missing output, a shape that differs or a NaN."""
    if len(got) < len(want):
        return np.inf
    u = float(np.finfo(dtype).eps) / 2
    worst = 0.0
    for g, w in zip(got, want, strict=False):
        g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        if g.shape != w.shape or not np.all(np.isfinite(g)):
            return np.inf
        if offsets is not None and w.ndim == 1:
            lengths = np.diff(offsets)
            used = lengths > 0
            big = np.maximum.reduceat(np.abs(w), offsets[:-1][used]) if w.size else w
            scale = np.maximum(np.repeat(big, lengths[used]), np.finfo(np.float64).tiny)
        elif w.ndim == 2:
            scale = np.maximum(np.abs(w).max(axis=-1, keepdims=True), np.finfo(np.float64).tiny)
        else:
            scale = np.maximum(np.abs(w), 1.0)
        worst = max(worst, float(np.max(np.abs(g - w) / scale, initial=0.0)) / u)
    return worst


def as_numpy(value) -> tuple[np.ndarray, ...]:
    """A result (array, tensor, scalar or a tuple of them) as a tuple of arrays."""
    values = value if isinstance(value, tuple) else (value,)
    return tuple(
        np.asarray(v.detach().numpy() if hasattr(v, "detach") else v, dtype=None) for v in values
    )


def head(outputs: tuple, rows: int = CHECK_ROWS) -> tuple[np.ndarray, ...]:
    """The first ``rows`` rows of each output (a scalar whole): what the check compares."""
    return tuple(np.array(o[:rows] if np.ndim(o) else o) for o in outputs)


def checked(op: str, x, target) -> tuple:
    """``(x, target)`` cut to what the check compares: the first :data:`CHECK_ROWS` rows,
    or for ``segment_softmax`` the values of the first :data:`CHECK_ROWS` segments
    and their offsets."""
    if op == "segment_softmax":
        k = min(CHECK_ROWS, target.size - 1)
        return x.reshape(-1)[: target[k]], target[: k + 1]
    return x[:CHECK_ROWS], None if target is None else target[:CHECK_ROWS]


def head_of(op: str, outputs: tuple, target) -> tuple[np.ndarray, ...]:
    """:func:`head` of ``op``'s outputs: for ``segment_softmax``, the values of the first
    :data:`CHECK_ROWS` segments (``target``: the offsets)."""
    if op == "segment_softmax":
        stop = target[min(CHECK_ROWS, target.size - 1)]
        return tuple(np.array(o[:stop]) for o in outputs)
    return head(outputs)


# ----------------------------------------------------------------------------- peers


class NotTimed(Exception):
    """A peer left out of a cell; the message, in the row's note, says why."""


def _torch(op: str, x, target, threads: int):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    if op in FAMILY_OPS:
        return _torch_family(torch, op, xt, target)
    if op in ("softmax", "log_softmax", "sigmoid"):
        y = torch.empty_like(xt)
        if op == "sigmoid":
            return lambda: torch.sigmoid(xt, out=y)
        function = getattr(torch, op)
        return lambda: function(xt, -1, out=y)
    if op == "logsumexp":
        y = torch.empty(x.shape[0], dtype=xt.dtype)
        return lambda: torch.logsumexp(xt, -1, out=y)
    tt = torch.from_numpy(target)
    if op == "cross_entropy":
        return lambda: F.cross_entropy(xt, tt)

    def loss_and_grad():
        logits = xt.detach().requires_grad_(True)
        loss = F.cross_entropy(logits, tt)
        loss.backward()
        return loss, logits.grad

    return loss_and_grad


def _torch_family(torch, op: str, xt, target):
    """The family's torch peers (:data:`PEER_CALLS`), as a torch user writes them."""
    if op == "softmax_temperature":
        return lambda: torch.softmax(xt / TEMPERATURE, -1)
    if op == "softmax_sink":
        sink = torch.from_numpy(target)
        return lambda: torch.softmax(torch.cat([xt, sink[:, None]], -1), -1)[:, :-1]
    if op == "logcumsumexp":
        y = torch.empty_like(xt)
        return lambda: torch.logcumsumexp(xt, -1, out=y)

    def stablemax():  # Prieto et al. (2025), their s(x) and its normalization
        s = torch.where(xt >= 0, xt + 1, 1 / (1 - xt))
        return s / s.sum(-1, keepdim=True)

    return stablemax


def _torch_geometric(x, offsets, threads: int):
    import torch
    from torch_geometric.utils import softmax

    torch.set_num_threads(threads)
    src, ptr = torch.from_numpy(x.reshape(-1)), torch.from_numpy(offsets)
    return lambda: softmax(src, ptr=ptr)


def _numpy(x):
    return lambda: np.logaddexp.accumulate(x, axis=-1)


#: The ONNX operator (and its attributes) of each op onnxruntime is timed on.
ORT_NODES = {
    "softmax": ("Softmax", {"axis": -1}),
    "log_softmax": ("LogSoftmax", {"axis": -1}),
    "logsumexp": ("ReduceLogSumExp", {"axes": [-1], "keepdims": 0}),
    "cross_entropy": ("SoftmaxCrossEntropyLoss", {"reduction": "mean"}),
    "sigmoid": ("Sigmoid", {}),
    "softmax_temperature": ("Softmax", {"axis": -1}),
}
#: Ops whose model divides ``x`` by a constant first (a ``Div`` node).
ORT_DIVIDE = {"softmax_temperature": TEMPERATURE}


class Ort:
    """onnxruntime sessions of one-op models, one per (op, dtype, threads)."""

    OPSET = 17

    def __init__(self):
        import onnxruntime

        self.ort = onnxruntime
        self.sessions = {}

    def model(self, op: str, dtype) -> bytes:
        """The one-op model, with symbolic dimensions (one model for every shape)."""
        from onnx import TensorProto, helper

        element = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}[
            np.dtype(dtype).type
        ]
        kind, attributes = ORT_NODES[op]
        inputs = [helper.make_tensor_value_info("x", element, ["N", "C"])]
        if op == "cross_entropy":
            inputs.append(helper.make_tensor_value_info("target", TensorProto.INT64, ["N"]))
        shape = {"logsumexp": ["N"], "cross_entropy": []}.get(op, ["N", "C"])
        output = helper.make_tensor_value_info("y", element, shape)
        nodes, constants, first = [], [], "x"
        if op in ORT_DIVIDE:
            constants.append(helper.make_tensor("T", element, [], [ORT_DIVIDE[op]]))
            nodes.append(helper.make_node("Div", ["x", "T"], ["scaled"]))
            first = "scaled"
        names = [first, *(i.name for i in inputs[1:])]
        nodes.append(helper.make_node(kind, names, ["y"], **attributes))
        graph = helper.make_graph(nodes, kind, inputs, [output], initializer=constants)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.OPSET)], ir_version=8
        )
        return model.SerializeToString()

    def session(self, op: str, dtype, threads: int):
        key = (op, np.dtype(dtype).name, threads)
        if key not in self.sessions:
            options = self.ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            try:
                self.sessions[key] = self.ort.InferenceSession(
                    self.model(op, dtype), options, providers=["CPUExecutionProvider"]
                )
            except Exception as error:  # no kernel for this dtype, say
                self.sessions[key] = NotTimed(f"no session: {str(error).splitlines()[0]}")
        found = self.sessions[key]
        if isinstance(found, NotTimed):
            raise found
        return found

    def make(self, op: str, x, target, threads: int):
        """A zero-argument call running the model on ``x`` into an array allocated
        here (``io_binding``), and a function giving that array."""
        session = self.session(op, x.dtype, threads)
        binding = session.io_binding()
        binding.bind_cpu_input("x", x)
        if op == "cross_entropy":
            binding.bind_cpu_input("target", target)
        shape = {"logsumexp": x.shape[:1], "cross_entropy": ()}.get(op, x.shape)
        y = np.empty(shape, dtype=x.dtype)
        binding.bind_ortvalue_output("y", self.ort.OrtValue.ortvalue_from_numpy(y))
        run = session.run_with_iobinding

        def call():
            run(binding)
            return y

        return call


def _scipy(op: str, x):
    if x.nbytes > SCIPY_MAX_BYTES:
        raise NotTimed(f"not timed above {SCIPY_MAX_BYTES // MB} MB: one thread, seconds a call")
    import scipy.special as sp

    if op == "sigmoid":
        return lambda: sp.expit(x)
    function = getattr(sp, op)
    return lambda: function(x, axis=-1)


def _entmax(op: str, x, threads: int):
    if x.nbytes > ENTMAX_MAX_BYTES:
        raise NotTimed(f"not timed above {ENTMAX_MAX_BYTES // MB} MB: one call takes seconds")
    import entmax
    import torch

    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    return lambda: entmax.sparsemax(xt, dim=-1)


class JaxDied(Exception):
    pass


class JaxProcess:
    """JAX in its own process (:mod:`experiments.measure.jax_worker`): a candidate whose
    blocks are timed there, set up for one cell at a time."""

    TIMEOUT_S = 600
    #: The worker's command line after the interpreter.
    COMMAND = ("-m", "experiments.measure.jax_worker")

    def __init__(self):
        shm = pathlib.Path("/dev/shm")
        where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.folder = pathlib.Path(tempfile.mkdtemp(prefix="sizes-jax-", dir=where))
        self.log = open(self.folder / "stderr.log", "w+")  # closed in close()
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        self.process = subprocess.Popen(
            [sys.executable, *self.COMMAND],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.dead: str | None = None
        try:
            self.version = self._reply().get("version")
        except Exception:
            self.close()
            raise

    def _reply(self) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], self.TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.log.flush()
            self.log.seek(0)
            tail = " | ".join(self.log.read().strip().splitlines()[-3:])
            what = f"ended (exit {self.process.poll()})" if ready else "hung"
            self.dead = f"JAX's process {what}: {tail}"[:300]
            self.process.kill()
            raise JaxDied(self.dead)
        reply = json.loads(line)
        if "error" in reply:
            raise NotTimed(f"JAX: {reply['error']}"[:300])
        return reply

    def request(self, cmd: str, **arguments) -> dict:
        if self.dead:
            raise JaxDied(self.dead)
        try:
            self.process.stdin.write(json.dumps({"cmd": cmd, **arguments}) + "\n")
            self.process.stdin.flush()
        except OSError:
            pass  # the reply says what happened
        return self._reply()

    def setup(self, op: str, x, target) -> JaxProcess:
        np.save(self.folder / "x.npy", x)
        if op in SECOND_ARGUMENT:
            np.save(self.folder / "target.npy", target)
        self.request("setup", op=op, folder=str(self.folder))
        return self

    def outputs(self) -> tuple[np.ndarray, ...]:
        count = self.request("result", rows=CHECK_ROWS)["outputs"]
        found = tuple(np.load(self.folder / f"out{i}.npy") for i in range(count))
        for i in range(count):
            (self.folder / f"out{i}.npy").unlink()
        return found

    def calibrate(self, long_s: float) -> float:
        return self.request("calibrate", long_s=long_s)["fastest"]

    def block(self, inner: int) -> float:
        return self.request("block", inner=inner)["seconds"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if not self.dead:
                self.request("exit")
        with contextlib.suppress(Exception):
            self.process.wait(timeout=30)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.log):
            with contextlib.suppress(OSError):
                stream.close()
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()


class Peers:
    """The installed peers, loaded once for the run."""

    def __init__(self, use_jax: bool = True):
        found = importlib.util.find_spec
        self.installed = {
            "torch": found("torch") is not None,
            "onnxruntime": found("onnxruntime") is not None and found("onnx") is not None,
            "scipy": found("scipy") is not None,
            "jax": use_jax and found("jax") is not None,
            "entmax": found("entmax") is not None and found("torch") is not None,
            "numpy": True,
            "torch_geometric": found("torch_geometric") is not None,
        }
        self.ort = Ort() if self.installed["onnxruntime"] else None
        self.jax: JaxProcess | None = None
        self.jax_failed: str | None = None

    def jax_process(self) -> JaxProcess:
        """The JAX process, started at the first call; :class:`JaxDied` once it has
        failed to start (it is not started again)."""
        if self.jax_failed:
            raise JaxDied(self.jax_failed)
        if self.jax is None:
            try:
                self.jax = JaxProcess()
            except (JaxDied, NotTimed, OSError) as why:
                self.jax_failed = f"JAX's process did not start: {why}"[:300]
                raise JaxDied(self.jax_failed) from None
        return self.jax

    def make(self, peer: str, op: str, x, target, threads: int):
        """A candidate (:class:`Local` or the JAX process) and a function giving its
        outputs (as arrays) from one more call; :class:`NotTimed` if it is left out."""
        if peer == "jax":
            process = self.jax_process().setup(op, x, target)
            return process, process.outputs
        if peer == "torch":
            fn = _torch(op, x, target, threads)
        elif peer == "onnxruntime":
            fn = self.ort.make(op, x, target, threads)
        elif peer == "scipy":
            fn = _scipy(op, x)
        elif peer == "numpy":
            fn = _numpy(x)
        elif peer == "torch_geometric":
            fn = _torch_geometric(x, target, threads)
        else:
            fn = _entmax(op, x, threads)
        return Local(fn), lambda: as_numpy(fn())

    def close(self) -> None:
        if self.jax is not None:
            self.jax.close()


@contextlib.contextmanager
def thread_count(threads: int, peers: Peers):
    """Numba (and torch, if installed) at ``threads`` threads, restored after."""
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    torch = sys.modules.get("torch") if peers.installed["torch"] else None
    torch_before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        numba.set_num_threads(before)
        if torch is not None:
            torch.set_num_threads(torch_before)


# ----------------------------------------------------------------------------- a cell


def _arrays(cell: dict):
    """``x``, seeded, and the op's second array or None: the losses' class indices,
    ``softmax_sink``'s sink logit per row (zeros), ``segment_softmax``'s offsets."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cell["rows"], cell["n"]), dtype=np.dtype(cell["dtype"]).type)
    target = rng.integers(0, cell["n"], size=cell["rows"]) if "cross" in cell["op"] else None
    if cell["op"] == "softmax_sink":
        target = np.zeros(cell["rows"], dtype=x.dtype)
    elif cell["op"] == "segment_softmax":
        target = segment_offsets(x.size, cell["rows"], rng)
    return x, target


def segment_offsets(total: int, segments: int, rng) -> np.ndarray:
    """CSR offsets (int64) of ``segments`` non-empty segments of ``total`` entries:
    ``segments - 1`` distinct cut points drawn uniformly from ``1 .. total - 1``,
    sorted.  The lengths average ``total / segments``, spread as the gaps between
    uniform points are (near exponential: the longest a few times the mean)."""
    cuts = np.sort(rng.choice(total - 1, size=segments - 1, replace=False) + 1)
    return np.concatenate(([0], cuts, [total])).astype(np.int64)


def _parallel_copy(x, threads: int) -> Callable:
    src = x.reshape(-1).view(np.uint8)
    dst = np.empty_like(src)
    return lambda: timing._parallel_copy(src, dst, threads)


def _candidates(cell: dict, peers: Peers, x, target) -> tuple[dict, dict, dict]:
    """(candidates, checks, notes): the candidates to time, the check of each peer
    (its disagreement with ours and the tolerance, in u) and why a peer was not timed."""
    op, threads = cell["op"], cell["threads"]
    single = cell["part"] == "single_thread"
    found = ours(op, x, target, backend="cpu" if single else None)
    if single:
        found = {"ours": found["ours_out"]}
    candidates = {name: Local(fn) for name, fn in found.items()}
    # also the first call of ours: compiled, warm
    want = head_of(op, as_numpy(found["ours"]()), target)
    for fn in found.values():
        fn()
    tolerance = None
    checks, notes = {}, {}
    for peer in PEERS:
        if not peers.installed[peer] or op not in PEER_OPS[peer]:
            continue
        if single and peer not in ("torch", "onnxruntime"):
            continue
        try:
            candidate, outputs = peers.make(peer, op, x, target, threads)
            got = head_of(op, outputs(), target)  # the peer's first call: compiled, warm
        except (NotTimed, JaxDied) as why:
            notes[peer] = str(why)
            continue
        few_x, few = checked(op, x, target)
        if tolerance is None:
            tolerance = tolerance_u(op, few_x, few)
        offsets = few if op == "segment_softmax" else None
        error = disagreement_u(got, want, x.dtype, offsets)
        checks[peer] = (error, tolerance)
        if not error <= tolerance:
            notes[peer] = f"disagrees with ours by {error:.3g} u (tolerance {tolerance:.3g} u)"
            continue
        candidates[peer] = candidate
    if single:
        dst = np.empty_like(x)
        candidates["copy"] = Local(lambda: np.copyto(dst, x))
        candidates["numpy_exp"] = Local(lambda: np.exp(x, out=dst))
    else:
        candidates["copy"] = Local(_parallel_copy(x, threads))
        candidates["copy"].fn()
    return candidates, checks, notes


def _versus(impl: str, op: str, candidates) -> str:
    """Whose time a peer's is divided by: ours in the same mode (see the module)."""
    into = impl == "onnxruntime" or (impl == "torch" and op in TORCH_OUT)
    return "ours_out" if into and "ours_out" in candidates else "ours"


def measure(cell: dict, peers: Peers, quick: bool) -> list[dict]:
    """The rows of one cell: one per implementation timed or left out."""
    x, target = _arrays(cell)
    with thread_count(cell["threads"], peers):
        try:
            candidates, checks, notes = _candidates(cell, peers, x, target)
        except NotTimed as why:  # an op the library timed (--library) does not have
            return [{**cell, "impl": "ours", "note": str(why)}]
        rounds = rounds_for(x.nbytes, quick)
        min_block = QUICK_MIN_BLOCK_S if quick else MIN_BLOCK_S
        try:
            seconds, inner = interleaved(candidates, rounds, min_block)
        except (NotTimed, JaxDied) as why:  # JAX failed while timed: again without it
            notes["jax"] = str(why)
            candidates.pop("jax", None)
            seconds, inner = interleaved(candidates, rounds, min_block)
    entries = x.size
    moved = TRAFFIC[cell["op"]] * x.nbytes
    copy = seconds["copy"]
    rows = []
    for impl, t in seconds.items():
        row = {**cell, "impl": impl, "rounds": rounds, "inner": inner[impl], "note": ""}
        median, low, high = timing.median_interval(t)
        row.update(median_s=median, low_s=low, high_s=high, ns_per_entry=median / entries * 1e9)
        if impl in PEERS:
            versus = _versus(impl, cell["op"], seconds)
            ratio = timing.median_interval(t / seconds[versus])
            row.update(versus=versus, ratio=ratio[0], ratio_low=ratio[1], ratio_high=ratio[2])
            row.update(check_u=checks[impl][0], tolerance_u=checks[impl][1])
        if cell["part"] in ("sizes", "family"):
            own = 2 * x.nbytes if impl == "copy" else moved
            row["gbps"] = float(np.median(own / t)) / 1e9
            row["copy_gbps"] = float(np.median(2 * x.nbytes / copy)) / 1e9
            if impl in ("ours", "ours_out"):
                row["ratio_to_copy"] = float(np.median(moved * copy / (2 * x.nbytes * t)))
        rows.append(row)
    rows += [{**cell, "impl": peer, "note": why} for peer, why in notes.items()]
    return rows


# ----------------------------------------------------------------------------- the run


def library_record(path) -> dict:
    """Where the library timed comes from: its folder and git commit."""
    sn = _library()
    folder = pathlib.Path(sn.__file__).resolve().parent.parent

    def git(*args):
        try:
            return subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    status = git("status", "--porcelain", "--untracked-files=no", "--", "softmax_numba")
    return {
        "library": None if path is None else str(folder),
        "library_commit": git("rev-parse", "HEAD"),
        "library_dirty": status not in ("", "unknown"),
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def use_library(path) -> bool:
    """Put the checkout at ``path`` first on ``sys.path``; False if softmax_numba is
    imported already from elsewhere (then only a new process can time ``path``'s)."""
    folder = pathlib.Path(path).resolve()
    if not (folder / "softmax_numba" / "__init__.py").exists():
        raise SystemExit(f"--library {path}: no softmax_numba package there")
    loaded = sys.modules.get("softmax_numba")
    if loaded is not None:
        return pathlib.Path(loaded.__file__).resolve().parent.parent == folder
    sys.path.insert(0, str(folder))
    where = pathlib.Path(_library().__file__).resolve().parent.parent
    if where != folder:
        raise SystemExit(f"--library {path}: softmax_numba was imported from {where}")
    return True


def run(
    out: pathlib.Path,
    quick: bool = False,
    progress: bool = True,
    mode: str = "auto",
    library=None,
    command: str | None = None,
) -> pathlib.Path:
    """Measure ``out/sizes.csv`` (resuming an interrupted run's cells as the study's
    tables do; ``mode`` as in :func:`experiments.harness.store.plan`), then write
    ``SIZES.md`` and ``sizes.png``; return the table's path."""
    from tqdm import tqdm

    threads = numba.get_num_threads()
    peers = Peers()
    settings = {"quick": quick, "threads": threads, **library_record(library)}
    # a peer the metadata's package list does not name
    settings["torch_geometric"] = (
        _version("torch_geometric") if peers.installed["torch_geometric"] else None
    )
    record = metadata.new_run(settings)
    if command:
        record["command"] = command
    table = store.open_run(out / "sizes.csv", COLUMNS, KEY, record, mode)
    done = table.done_keys()
    todo = [
        c
        for c in cells(quick, threads)
        if store.Table.key_of(c | {"impl": "ours"}, KEY) not in done
    ]
    try:
        for cell in tqdm(todo, desc="sizes", unit="cell", disable=not progress or None):
            table.append(measure(cell, peers, quick))
    finally:
        peers.close()
    path = store.finish(table)
    from experiments.report import sizes as report

    report.write(out)
    return path


def child_command(out: pathlib.Path, quick: bool, progress: bool, mode: str, library) -> list:
    """This module's command line for ``run`` with these arguments, in a new process."""
    command = [sys.executable, "-m", "experiments.measure.sizes", "--out", str(out.resolve())]
    command += ["--library", str(pathlib.Path(library).resolve())] if library else []
    command += ["--quick"] * quick + ["--no-progress"] * (not progress)
    command += {"fresh": ["--fresh"], "keep": ["--keep"]}.get(mode, [])
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.measure.sizes")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--quick", action="store_true", help="two shapes, 3 rounds (< 1 min)")
    parser.add_argument("--library", default=None, help="time the softmax_numba checkout at PATH")
    parser.add_argument("--no-progress", action="store_true")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--fresh", action="store_true")
    keep.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if args.library is not None and not use_library(args.library):
        raise SystemExit("softmax_numba is imported already: run this as a new process")
    out = args.out or pathlib.Path("results") / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    mode = "fresh" if args.fresh else "keep" if args.keep else "auto"
    argv = sys.argv[1:] if argv is None else argv
    path = run(
        out,
        args.quick,
        not args.no_progress,
        mode,
        args.library,
        "python -m experiments sizes " + " ".join(argv),
    )
    sys.stderr.write(f"sizes: {path}, {out / 'SIZES.md'}, {out / 'sizes.png'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
