"""Compile and cache the CPU kernels ahead of the first real call.

Every kernel is compiled with ``cache=True`` (see ``softmax_numba.cpu._compile``):
the first call of a kernel for a dtype compiles it, which takes seconds, and
writes the machine code to Numba's cache, from which later processes load it in
milliseconds.  :func:`warm_up` makes those first calls now, on small arrays, for
every registered op (``softmax_numba.registry``) and the paths the registry's
arguments do not reach (``logsumexp``'s weights, the parallel engine's split of
long rows).  ``python -m softmax_numba warmup`` runs it with a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numba
import numpy as np

from softmax_numba import config, registry
from softmax_numba._softmax import log_softmax, logsumexp, softmax

#: The engines whose kernels are compiled by Numba on the CPU.
ENGINES = ("cpu", "parallel")
#: The dtypes the kernels compute in (float16 and bfloat16 compute in float32).
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Step:
    """One call that compiles: a name for the progress bar and the call."""

    name: str
    call: Callable[[], object]


def _registry_steps(dtype: np.dtype, engine: str) -> list[Step]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8)).astype(dtype)
    steps = []
    for entry in registry.ENTRIES:
        args = entry.arguments(x, rng)
        steps.append(
            Step(
                f"{entry.name} {dtype.name} {engine}",
                lambda entry=entry, args=args: entry.run(args, backend=engine),
            )
        )
    weights = np.ones_like(x)
    steps.append(
        Step(
            f"logsumexp[b=] {dtype.name} {engine}",
            lambda: logsumexp(x, b=weights, backend=engine),
        )
    )
    return steps


def _split_row_steps(dtype: np.dtype) -> list[Step]:
    """The parallel engine's long-row path (a few rows longer than
    ``config.SPLIT_ROW_MIN_LENGTH``), when Numba has more than one thread."""
    if numba.get_num_threads() < 2:
        return []
    x = np.zeros((1, max(config.SPLIT_ROW_MIN_LENGTH, 2 * config.SPLIT_MIN_PIECE)), dtype)
    return [
        Step(f"{f.__name__}[split] {dtype.name} parallel", lambda f=f: f(x, backend="parallel"))
        for f in (softmax, log_softmax, logsumexp)
    ]


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
        if "parallel" in engines:
            found += _split_row_steps(dtype)
    return found


def cache_locations() -> list[str]:
    """Where Numba keeps the compiled kernels of this package (the ``__pycache__``
    folders beside the sources, or ``NUMBA_CACHE_DIR`` when it is set)."""
    from softmax_numba.cpu import softmax as kernels

    return sorted({kernels.SOFTMAX["shifted"].cpu._cache._cache_path})


def warm_up(
    dtypes: Iterable[str] = DTYPES,
    engines: Iterable[str] = ENGINES,
    on_step: Callable[[Step], None] | None = None,
) -> int:
    """Compile (or load from the cache) every kernel for ``dtypes`` and ``engines``;
    ``on_step`` is called after each step (a progress bar).  Returns the number of
    steps."""
    todo = steps(dtypes, engines)
    for step in todo:
        step.call()
        if on_step is not None:
            on_step(step)
    return len(todo)
