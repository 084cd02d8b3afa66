"""Compile and cache the CPU kernels ahead of the first real call.

Every kernel is compiled with ``cache=True`` (see ``softmax_numba.cpu._compile``):
the first call of a kernel for a type signature compiles it, which takes seconds,
and writes the machine code to Numba's cache, from which later processes load it
in milliseconds.  :func:`warm_up` makes those first calls now, on small arrays,
through the public functions, so that what is compiled is what a user's call
needs:

- every registered op (``softmax_numba.registry``), on each engine and dtype, with
  its arguments laid out three ways, because Numba compiles one machine code per
  argument type and a read-only array is another type: all C-contiguous (passed
  to the kernel as they are), the input Fortran-ordered (the general path, where
  an operand of the input's shape and dtype, such as ``dy`` or a probability
  target, reaches the kernel as a read-only broadcast view) and all
  Fortran-ordered (every operand copied, writeable);
- every algorithm of the functions that take ``algorithm=``;
- the paths the registry's arguments do not reach: ``logsumexp``'s weights ``b=``
  (each of ``a`` and ``b`` read-only or copied), ``cross_entropy``'s options that
  run the chunked sweep (z-loss, soft-cap, class weights, ``return_lse``,
  ``return_entropy``), ``linear_cross_entropy`` with and without gradients and
  with several chunks of the vocabulary, the parallel engine's split of long rows,
  and the functions of :mod:`softmax_numba.dask` when Dask is installed.

:func:`kernels` lists the CPU kernels and :func:`cold_kernels` those that a
warm-up left uncompiled (the test suite requires none).  ``python -m
softmax_numba warmup`` runs it with a progress bar that names each step.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numba
import numpy as np

from softmax_numba import config, registry
from softmax_numba._cumulative import logcumsumexp
from softmax_numba._linear import linear_cross_entropy
from softmax_numba._losses import cross_entropy
from softmax_numba._softmax import SOFTMAX_ALGORITHMS, log_softmax, logsumexp, softmax
from softmax_numba._sparse import SPARSEMAX_ALGORITHMS

#: The engines whose kernels are compiled by Numba on the CPU.
ENGINES = ("cpu", "parallel")
#: The dtypes the kernels compute in (float16 and bfloat16 compute in float32).
DTYPES = ("float32", "float64")

#: The choices of ``algorithm=`` of the public functions that take it.
ALGORITHMS = {
    "softmax": SOFTMAX_ALGORITHMS,
    "sparsemax": SPARSEMAX_ALGORITHMS,
    "entmax15": SPARSEMAX_ALGORITHMS,
}

#: Rows and columns of the small arrays; the columns divide by every registered
#: ``divisor`` (maxout's pool).
_SMALL = (3, 8)


@dataclass(frozen=True)
class Step:
    """One call that compiles: a name for the progress bar and the call."""

    name: str
    call: Callable[[], object]


def _layouts() -> dict[str, Callable[[int, np.ndarray], np.ndarray]]:
    """How each layout arranges the ``i``-th argument of an entry (its arrays of two or
    more dimensions): all C-contiguous (the shortcut that passes the arrays as they
    are), the first one Fortran-ordered (the general path: the input copied, an
    operand of its shape and dtype passed as a read-only broadcast view), all
    Fortran-ordered (every operand copied, writeable)."""
    return {
        "C": lambda i, a: np.ascontiguousarray(a),
        "first F": lambda i, a: np.asfortranarray(a) if i == 0 else np.ascontiguousarray(a),
        "F": lambda i, a: np.asfortranarray(a),
    }


def _normal(shape, dtype) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _entry_call(entry, dtype: np.dtype, arrange: Callable, engine: str, extra: dict):
    def call():
        args = entry.arguments(_normal(_SMALL, dtype), np.random.default_rng(0))
        args = tuple(arrange(i, a) if np.ndim(a) > 1 else a for i, a in enumerate(args))
        return entry.function(*args, backend=engine, **{**entry.kwargs, **extra})

    return call


def _registry_steps(dtype: np.dtype, engine: str) -> list[Step]:
    found = []
    for entry in registry.ENTRIES:
        variants = [("", {})]
        # entries of the other algorithms set it; the options' entries (a temperature,
        # a sink) run one algorithm
        if "algorithm" not in entry.kwargs and entry.algorithm == "-":
            choices = ALGORITHMS.get(entry.op, ())
            variants += [(f"[algorithm={a}]", {"algorithm": a}) for a in choices]
        for label, arrange in _layouts().items():
            for suffix, extra in variants:
                found.append(
                    Step(
                        f"{entry.name}{suffix} {dtype.name} {engine} ({label})",
                        _entry_call(entry, dtype, arrange, engine, extra),
                    )
                )
    return found


def _weighted_steps(dtype: np.dtype, engine: str) -> list[Step]:
    """``logsumexp(a, b=b)``: ``a`` and ``b`` are broadcast together, and each reaches
    the kernel as a read-only view where it had the full shape, else as a copy; the
    four pairs."""
    rows, n = _SMALL
    shapes = [((rows, n), (rows, n)), ((rows, n), (n,)), ((rows, 1), (rows, n)), ((rows, 1), (n,))]
    return [
        Step(
            f"logsumexp[a {a}, b {b}] {dtype.name} {engine}",
            lambda a=a, b=b: logsumexp(_normal(a, dtype), b=np.ones(b, dtype), backend=engine),
        )
        for a, b in shapes
    ]


#: Options of ``cross_entropy`` that run the chunked sweep, and of
#: ``linear_cross_entropy``: every kernel of ``softmax_numba.cpu.chunked_losses``.
_CHUNKED_OPTIONS = (
    {"z_loss": 1e-4, "return_lse": True},
    {"softcap": 5.0, "label_smoothing": 0.1, "return_entropy": True},
    {"class_weights": "ones", "ignore_index": 1},
)


def _options(kwargs: dict, n: int, dtype) -> dict:
    """``kwargs`` with each ``"ones"`` replaced by ones, one per class."""
    return {
        k: np.ones(n, dtype) if isinstance(v, str) and v == "ones" else v for k, v in kwargs.items()
    }


def _chunked_steps(dtype: np.dtype, engine: str) -> list[Step]:
    rows, n = _SMALL
    target = np.arange(rows) % n
    found = []
    for kwargs in _CHUNKED_OPTIONS:
        label = ", ".join(kwargs)
        for grad in (False, True):
            found.append(
                Step(
                    f"cross_entropy[{label}{', grad' if grad else ''}] {dtype.name} {engine}",
                    lambda kwargs=kwargs, grad=grad: cross_entropy(
                        _normal(_SMALL, dtype),
                        target,
                        return_grad=grad,
                        backend=engine,
                        **_options(kwargs, n, dtype),
                    ),
                )
            )
    probabilities = np.full(_SMALL, 1 / n, dtype)  # the options with probability targets
    for grad in (False, True):
        found.append(
            Step(
                f"cross_entropy[probabilities, softcap{', grad' if grad else ''}] "
                f"{dtype.name} {engine}",
                lambda grad=grad: cross_entropy(
                    _normal(_SMALL, dtype),
                    probabilities,
                    softcap=5.0,
                    return_entropy=True,
                    return_grad=grad,
                    backend=engine,
                ),
            )
        )
    hidden = 4
    for chunks, kwargs in (
        (1, {}),
        (2, {"softcap": 5.0, "bias": "ones"}),
        (2, _CHUNKED_OPTIONS[2]),
    ):
        label = ", ".join([f"chunks={chunks}", *kwargs])
        for grad in (False, True):

            def call(chunks=chunks, kwargs=kwargs, grad=grad):
                return linear_cross_entropy(
                    _normal((rows, hidden), dtype),
                    _normal((n, hidden), dtype),
                    target,
                    chunk_size=-(-n // chunks),
                    return_grad=grad,
                    backend=engine,
                    **_options(kwargs, n, dtype),
                )

            grad_label = ", grad" if grad else ""
            found.append(
                Step(f"linear_cross_entropy[{label}{grad_label}] {dtype.name} {engine}", call)
            )
    return found


def _split_row_steps(dtype: np.dtype) -> list[Step]:
    """The parallel engine's long-row path (a few rows longer than
    ``config.SPLIT_ROW_MIN_LENGTH``), when Numba has more than one thread."""
    from softmax_numba import sample

    if numba.get_num_threads() < 2:
        return []
    x = np.zeros((1, max(config.SPLIT_ROW_MIN_LENGTH, 2 * config.SPLIT_MIN_PIECE)), dtype)
    return [
        Step(f"{f.__name__}[split] {dtype.name} parallel", lambda f=f: f(x, backend="parallel"))
        for f in (softmax, log_softmax, logsumexp, logcumsumexp)
    ] + [
        Step(f"sample[split] {dtype.name} parallel", lambda: sample(x, seed=0, backend="parallel"))
    ]


def _sampling_steps(dtype: np.dtype, engine: str) -> list[Step]:
    """``sample``, ``filter_logits`` and ``top_logprobs`` (:mod:`softmax_numba.cpu.sampling`;
    every filter runs in the same kernel)."""
    from softmax_numba import filter_logits, sample, top_logprobs

    x = _normal(_SMALL, dtype)
    options = {"top_k": 3, "top_p": 0.9, "min_p": 0.01, "backend": engine}
    return [
        Step(f"sample {dtype.name} {engine}", lambda: sample(x, seed=0, **options)),
        Step(f"filter_logits {dtype.name} {engine}", lambda: filter_logits(x, **options)),
        Step(f"top_logprobs {dtype.name} {engine}", lambda: top_logprobs(x, 2, backend=engine)),
    ]


def _segment_steps(dtype: np.dtype, engine: str) -> list[Step]:
    """The ragged-row ops (``registry.SEGMENTED``, :mod:`softmax_numba.cpu.segment`): one
    kernel per direction, whose per-piece helpers compile with it; a segment longer
    than ``config.SEGMENT_PIECE_LENGTH`` takes the same kernels."""
    import softmax_numba as sn

    values = _normal((10, 2), dtype)
    offsets = np.array([0, 3, 3, 10])
    found = []
    for name in registry.SEGMENTED:
        func = getattr(sn, name)
        if name.endswith("_backward"):
            args = (values, values, offsets)
        else:
            args = (values[:, 0], offsets)
        found.append(
            Step(f"{name} {dtype.name} {engine}", lambda f=func, a=args: f(*a, backend=engine))
        )
    return found


def _dask_steps(dtype: np.dtype, engine: str) -> list[Step]:
    """The kernels of :mod:`softmax_numba.dask` (``softmax_numba.cpu.states`` and the
    merge of chunked-loss states), when Dask is installed: a row in two chunks."""
    if importlib.util.find_spec("dask") is None:
        return []

    def call():
        import dask
        import dask.array as da

        from softmax_numba import dask as snd

        rows, n = _SMALL
        x = da.from_array(_normal(_SMALL, dtype), chunks=(rows, n // 2))
        target = da.from_array(np.arange(rows) % n, chunks=rows)
        h = da.from_array(_normal((rows, 4), dtype), chunks=(rows, 4))
        W = da.from_array(_normal((n, 4), dtype), chunks=(n // 2, 4))
        lazy = [
            snd.softmax(x, backend=engine),
            snd.log_softmax(x, backend=engine),
            snd.logsumexp(x, backend=engine),
            snd.logcumsumexp(x, backend=engine),
            *snd.cross_entropy(x, target, return_grad=True, backend=engine),
            snd.linear_cross_entropy(h, W, target, backend=engine),
        ]
        return dask.compute(*lazy, scheduler="synchronous")

    return [Step(f"softmax_numba.dask {dtype.name} {engine}", call)]


def steps(dtypes: Iterable[str] = DTYPES, engines: Iterable[str] = ENGINES) -> list[Step]:
    """The calls that compile the kernels of ``dtypes`` on ``engines``.

    Raises
    ------
    ValueError
        For a dtype other than float32 and float64 or an engine other than
        ``"cpu"`` and ``"parallel"`` (the numpy engine compiles nothing, the CUDA
        kernels compile at their first launch, per GPU).
    """
    dtypes, engines = list(dtypes), list(engines)
    for name, values, known in (("dtype", dtypes, DTYPES), ("engine", engines, ENGINES)):
        if bad := [v for v in values if v not in known]:
            raise ValueError(f"unknown {name} {bad[0]!r}; expected some of {', '.join(known)}")
    found = []
    for dtype in map(np.dtype, dtypes):
        for engine in engines:
            found += _registry_steps(dtype, engine)
            found += _weighted_steps(dtype, engine)
            found += _chunked_steps(dtype, engine)
            found += _sampling_steps(dtype, engine)
            found += _segment_steps(dtype, engine)
            found += _dask_steps(dtype, engine)
        if "parallel" in engines:
            found += _split_row_steps(dtype)
    return found


def kernels() -> dict[str, numba.core.registry.CPUDispatcher]:
    """Every CPU kernel of :mod:`softmax_numba.cpu` (the serial and the parallel one of
    each :class:`~softmax_numba.cpu._compile.Engines`), by ``module.NAME.engine``."""
    from softmax_numba import cpu
    from softmax_numba.cpu._compile import Engines

    found = {}
    for info in pkgutil.iter_modules(cpu.__path__):
        module = importlib.import_module(f"{cpu.__name__}.{info.name}")
        for name, value in vars(module).items():
            pairs = value.items() if isinstance(value, dict) else [(None, value)]
            for key, pair in pairs:
                if not isinstance(pair, Engines):
                    continue
                label = name if key is None else f"{name}[{key}]"
                for engine in ENGINES:
                    found[f"{info.name}.{label}.{engine}"] = getattr(pair, engine)
    return found


def cold_kernels(dtypes: Iterable[str] = DTYPES, engines: Iterable[str] = ENGINES) -> list[str]:
    """The kernels of ``engines`` (see :func:`kernels`) that this process has not
    compiled, nor loaded from the cache, for some dtype of ``dtypes``: their first
    array argument of that dtype; as ``"name dtype"``."""
    cold = []
    for name, kernel in kernels().items():
        if name.rsplit(".", 1)[1] not in engines:
            continue
        seen = {
            next((a.dtype.name for a in sig if isinstance(a, numba.types.Array)), None)
            for sig in kernel.signatures
        }
        cold += [f"{name} {dtype}" for dtype in dtypes if dtype not in seen]
    return cold


def cache_locations() -> list[str]:
    """Where Numba keeps the compiled kernels of this package (the ``__pycache__``
    folders beside the sources, or ``NUMBA_CACHE_DIR`` when it is set)."""
    from softmax_numba.cpu import softmax as softmax_kernels

    return sorted({softmax_kernels.SOFTMAX["shifted"].cpu._cache._cache_path})


def warm_up(
    dtypes: Iterable[str] = DTYPES,
    engines: Iterable[str] = ENGINES,
    on_step: Callable[[Step], None] | None = None,
    on_start: Callable[[Step], None] | None = None,
) -> int:
    """Compile (or load from the cache) every kernel for ``dtypes`` and ``engines``;
    ``on_start`` is called before each step and ``on_step`` after it (a progress
    bar).  Returns the number of steps."""
    todo = steps(dtypes, engines)
    for step in todo:
        if on_start is not None:
            on_start(step)
        step.call()
        if on_step is not None:
            on_step(step)
    return len(todo)
