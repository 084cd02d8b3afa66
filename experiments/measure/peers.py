"""Other libraries' versions of our ops, timed in the same run (when installed).

Each peer maps an op to a factory ``make(args) -> fn`` that converts the
arguments once (outside the timing) and returns a zero-argument callable.  SciPy
is always there; PyTorch CPU, onnxruntime, JAX and the ``entmax`` package are
optional extras (``pip install softmax_numba[peers]``) and simply absent from the
tables when not installed.  PyTorch and onnxruntime get as many threads as Numba.

onnxruntime runs one-op ONNX models built in memory
(:class:`experiments.measure.sizes.Ort`: ``Softmax``, ``LogSoftmax``,
``ReduceLogSumExp``, ``Sigmoid``; input and output bound with ``io_binding`` to
arrays allocated once, its pool not spinning).  Its ``SoftmaxCrossEntropyLoss``
gives the loss without the gradient (that lives in onnxruntime-training), so it
is no peer of our ``cross_entropy`` entry (loss and gradient) here; the sizes
benchmark times it on the loss alone.  All of these run in one process with Numba
(none crashed with numba 0.68, torch 2.13, onnxruntime 1.32, jax 0.10); the sizes
benchmark runs JAX apart all the same.
"""

from __future__ import annotations

import functools
import importlib.util

import numba
import numpy as np
import scipy.special

from softmax_numba import registry


def _scipy() -> dict:
    sp = scipy.special
    return {
        "softmax": lambda args: functools.partial(sp.softmax, args[0], axis=-1),
        "log_softmax": lambda args: functools.partial(sp.log_softmax, args[0], axis=-1),
        "logsumexp": lambda args: functools.partial(sp.logsumexp, args[0], axis=-1),
        "sigmoid": lambda args: functools.partial(sp.expit, args[0]),
    }


def _torch() -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(numba.get_num_threads())

    def tensor(make):
        return lambda args: make(*[torch.from_numpy(np.ascontiguousarray(a)) for a in args])

    def cross_entropy(x, target):
        def run():
            logits = x.detach().requires_grad_(True)
            F.cross_entropy(logits, target, reduction="sum").backward()
            return logits.grad

        return run

    return {
        "softmax": tensor(lambda x: functools.partial(torch.softmax, x, -1)),
        "log_softmax": tensor(lambda x: functools.partial(torch.log_softmax, x, -1)),
        "logsumexp": tensor(lambda x: functools.partial(torch.logsumexp, x, -1)),
        "cross_entropy": tensor(cross_entropy),
        "sigmoid": tensor(lambda x: functools.partial(torch.sigmoid, x)),
        "softplus": tensor(lambda x: functools.partial(F.softplus, x)),
        "arctan": tensor(lambda x: functools.partial(torch.atan, x)),
        "gaussian": tensor(lambda x: lambda: torch.exp(-0.5 * x * x)),
        "maxout": tensor(lambda x: lambda: x.view(x.shape[0], -1, 4).amax(-1)),
    }


def _entmax() -> dict:
    import entmax
    import torch

    def tensor(func):
        return lambda args: functools.partial(func, torch.from_numpy(args[0]), dim=-1)

    return {"sparsemax": tensor(entmax.sparsemax), "entmax15": tensor(entmax.entmax15)}


def _jax() -> dict:
    import jax
    import jax.numpy as jnp

    def jitted(func):
        compiled = jax.jit(func)

        def make(args):
            x = jnp.asarray(args[0])
            return lambda: compiled(x).block_until_ready()

        return make

    return {
        "softmax": jitted(lambda x: jax.nn.softmax(x, axis=-1)),
        "log_softmax": jitted(lambda x: jax.nn.log_softmax(x, axis=-1)),
        "logsumexp": jitted(lambda x: jax.nn.logsumexp(x, axis=-1)),
    }


def _onnxruntime() -> dict:
    from experiments.measure.sizes import Ort

    runtime = Ort()
    threads = numba.get_num_threads()

    def model(op):
        return lambda args: runtime.make(op, np.ascontiguousarray(args[0]), None, threads)

    return {op: model(op) for op in ("softmax", "log_softmax", "logsumexp", "sigmoid")}


_LOADERS = {
    "scipy": _scipy,
    "torch": _torch,
    "onnxruntime": _onnxruntime,
    "jax": _jax,
    "entmax": _entmax,
}


def _scipy_results() -> dict:
    sp = scipy.special

    def loss(x, target):
        lsm = sp.log_softmax(x, axis=-1)
        return -np.take_along_axis(lsm, np.asarray(target)[..., None], -1)[..., 0]

    return {
        "softmax": lambda x: sp.softmax(x, axis=-1),
        "log_softmax": lambda x: sp.log_softmax(x, axis=-1),
        "logsumexp": lambda x: sp.logsumexp(x, axis=-1),
        "cross_entropy": loss,
    }


def _torch_results() -> dict:
    import torch
    import torch.nn.functional as F

    def run(func):
        def call(*args):
            tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in args]
            return func(*tensors).numpy()

        return call

    return {
        "softmax": run(lambda x: torch.softmax(x, -1)),
        "log_softmax": run(lambda x: torch.log_softmax(x, -1)),
        "logsumexp": run(lambda x: torch.logsumexp(x, -1)),
        "cross_entropy": run(lambda x, t: F.cross_entropy(x, t, reduction="none")),
    }


def _jax_results() -> dict:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)

    def loss(x, target):
        lsm = jax.nn.log_softmax(x, axis=-1)
        return -jnp.take_along_axis(lsm, target[..., None], -1)[..., 0]

    def run(func):
        return lambda *args: np.asarray(func(*[jnp.asarray(a) for a in args]))

    return {
        "softmax": run(lambda x: jax.nn.softmax(x, axis=-1)),
        "log_softmax": run(lambda x: jax.nn.log_softmax(x, axis=-1)),
        "logsumexp": run(lambda x: jax.nn.logsumexp(x, axis=-1)),
        "cross_entropy": run(loss),
    }


#: Peers whose results the accuracy sweep scores beside ours, in the same cells.
_RESULT_LOADERS = {"scipy": _scipy_results, "torch": _torch_results, "jax": _jax_results}
#: The registry entries a peer's result is compared with (the peer computes the
#: op's first output only: the loss of ``cross_entropy``, no gradient).
PEER_ENTRIES = registry.tagged("core")


@functools.cache
def results_available() -> dict[str, dict]:
    """``{peer: {op: fn(*args) -> ndarray}}`` for the installed peers: each computes
    the op along the last axis, in the input's dtype."""
    found = {}
    for name, load in _RESULT_LOADERS.items():
        if importlib.util.find_spec(name) is not None:
            found[name] = load()
    return found


@functools.cache
def available() -> dict[str, dict]:
    """``{peer: {op: factory}}`` for the peers that are installed."""
    found = {}
    for name, load in _LOADERS.items():
        if importlib.util.find_spec(name) is not None:
            found[name] = load()
    return found


def peer_ops(peer: str) -> dict:
    return available().get(peer, {})
