"""JAX on the CPU for ``python -m experiments sizes``, in a process of its own.

JAX has crashed in one process with Numba and PyTorch (docs: the project's guide), so
the sizes benchmark runs it here, a child process that imports neither, and times it
in blocks on request: while the parent waits for a block it is idle, as it is while
this process waits for the next request, so the blocks of the two processes take
turns as the blocks of one process do.

The protocol: one JSON request per line on standard input, one JSON reply per line
on the standard output this process started with (anything else JAX prints goes to
standard error).  Arrays travel as ``.npy`` files in a folder the parent names.

- ``{"cmd": "setup", "op": OP, "folder": DIR}``: load ``DIR/x.npy`` (and the op's
  second argument ``DIR/target.npy`` for the ops of :data:`SECOND_ARGUMENT`: the
  losses' class indices, the sink logit per row), compile the op, call it once;
  ``{"ok": true}``
- ``{"cmd": "calibrate", "long_s": s}``: the fastest of four calls (of one if it
  lasts ``long_s`` or more); ``{"fastest": s}``
- ``{"cmd": "block", "inner": k}``: ``k`` calls in a row; ``{"seconds": s}`` per call
- ``{"cmd": "result", "rows": k}``: the first ``k`` rows of the outputs (a scalar
  whole) into ``DIR/out0.npy``, ``DIR/out1.npy``...; ``{"outputs": count}``
- ``{"cmd": "exit"}``

A request that fails is answered ``{"error": message}`` and the process goes on.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import numpy as np

#: The ops JAX has, under the sizes benchmark's names (``cross_entropy`` is the mean
#: loss, ``cross_entropy_grad`` the mean loss and its gradient; ``softmax_temperature``
#: ``softmax(x / T)``, ``softmax_sink`` the softmax of the row with its sink logit
#: appended, the sink's probability dropped).
OPS = (
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "cross_entropy_grad",
    "sigmoid",
    "softmax_temperature",
    "softmax_sink",
    "logcumsumexp",
)
#: The ops that take a second array (``DIR/target.npy``).
SECOND_ARGUMENT = ("cross_entropy", "cross_entropy_grad", "softmax_sink")
#: The temperature of ``softmax_temperature`` (the sizes benchmark's, for every
#: implementation; the registry entry ``softmax[options]``'s, whose bound is the
#: check's tolerance).  Here so that this process need not import the benchmark.
TEMPERATURE = 1.7


def _functions(jax):
    jnp = jax.numpy

    def loss(x, target):
        lsm = jax.nn.log_softmax(x, axis=-1)
        return -jnp.mean(jnp.take_along_axis(lsm, target[:, None], axis=-1))

    return {
        "softmax": lambda x: jax.nn.softmax(x, axis=-1),
        "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
        "logsumexp": lambda x: jax.nn.logsumexp(x, axis=-1),
        "cross_entropy": loss,
        "cross_entropy_grad": jax.value_and_grad(loss),
        "sigmoid": jax.nn.sigmoid,
        # what a JAX user writes: no temperature, sink or logcumsumexp in jax.nn
        "softmax_temperature": lambda x: jax.nn.softmax(x / TEMPERATURE, axis=-1),
        "softmax_sink": lambda x, sink: jax.nn.softmax(
            jnp.concatenate([x, sink[:, None]], axis=-1), axis=-1
        )[:, :-1],
        "logcumsumexp": lambda x: jax.lax.cumlogsumexp(x, axis=x.ndim - 1),  # no axis=-1
    }


class _Worker:
    def __init__(self):
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 stays float64, float32 float32
        self.jax = jax
        self.functions = _functions(jax)
        self.call = None
        self.folder = None

    def setup(self, op: str, folder: str) -> dict:
        self.folder = pathlib.Path(folder)
        args = [np.load(self.folder / "x.npy")]
        if op in SECOND_ARGUMENT:
            args.append(np.load(self.folder / "target.npy"))
        compiled = self.jax.jit(self.functions[op])
        device_args = [self.jax.device_put(a) for a in args]
        self.call = lambda: self.jax.block_until_ready(compiled(*device_args))
        self.call()
        return {"ok": True}

    def calibrate(self, long_s: float) -> dict:
        fastest = np.inf
        for _ in range(4):
            start = time.perf_counter()
            self.call()
            fastest = min(fastest, time.perf_counter() - start)
            if fastest >= long_s:
                break
        return {"fastest": fastest}

    def block(self, inner: int) -> dict:
        call = self.call
        start = time.perf_counter()
        for _ in range(inner):
            call()
        return {"seconds": (time.perf_counter() - start) / inner}

    def result(self, rows: int) -> dict:
        outputs = self.call()
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        for i, value in enumerate(outputs):
            value = np.asarray(value)
            np.save(self.folder / f"out{i}.npy", value[:rows] if value.ndim else value)
        return {"outputs": len(outputs)}


def main() -> int:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # whatever JAX prints must not corrupt the replies
    worker = _Worker()
    replies.write(json.dumps({"ok": True, "version": worker.jax.__version__}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "exit":
            break
        try:
            reply = getattr(worker, cmd)(**request)
        except Exception as error:  # reported to the parent, which leaves JAX out of the cell
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
