"""How CPU kernels are compiled: one decorator, one serial/parallel pair maker.

Every kernel goes through :func:`jit`, so that the fast-math flag set and disk
caching are decided in :mod:`softmax_numba.config` and nowhere else.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import pathlib
import types
from typing import NamedTuple

import numba
from numba.extending import overload

from softmax_numba import config


def _options(parallel: bool, reassociate: bool = True, reciprocal: bool = True) -> dict:
    flags = set(config.FASTMATH)
    if not reassociate:
        flags.discard("reassoc")
    if not reciprocal:
        flags.discard("arcp")
    return {
        "cache": config.CACHE,
        "fastmath": flags,
        "error_model": "numpy",
        "parallel": parallel,
    }


def _renamed(func, name: str):
    """A copy of ``func`` under another name (Numba keys its disk cache by name)."""
    clone = types.FunctionType(
        func.__code__, func.__globals__, name, func.__defaults__, func.__closure__
    )
    clone.__qualname__ = name
    clone.__module__ = func.__module__
    clone.__doc__ = func.__doc__
    return clone


#: The modules outside softmax_numba/cpu whose functions the CPU kernels compile.
_SHARED_SOURCES = ("state_algebra.py", "philox.py")


@functools.cache
def _cpu_sources_digest() -> str:
    """SHA-1 of the source files of :mod:`softmax_numba.cpu` (the kernels and the
    helpers they inline) and of :mod:`softmax_numba.state_algebra` and
    :mod:`softmax_numba.philox`, which they compile."""
    sha = hashlib.sha1()
    here = pathlib.Path(__file__).parent
    for path in [*sorted(here.glob("*.py")), *(here.parent / f for f in _SHARED_SOURCES)]:
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _compile_time() -> tuple:
    """The compile-time tunables of :mod:`softmax_numba.config` and their values."""
    values = [getattr(config, name) for name in config.COMPILE_TIME]
    # a set's order follows the per-process string hash: sort it, or no key repeats
    values = [sorted(v) if isinstance(v, set | frozenset) else v for v in values]
    return tuple(zip(config.COMPILE_TIME, map(repr, values), strict=True))


def jit(
    func=None,
    *,
    parallel: bool = False,
    reassociate: bool = True,
    reciprocal: bool = True,
    inline: str | None = None,
):
    """``numba.njit`` with the package's fast-math flags and on-disk cache.

    Helpers are inlined into their callers by Numba (``inline="always"``, the
    default for serial helpers compiled with ``reassoc``), so that each kernel holds
    one copy of them, optimized once.  Left to LLVM, a kernel links a weak copy of
    every helper and re-optimizes it in its own module, where ``reassoc`` may
    regroup a vector sum differently from the helper's own library; which copy runs
    then depends on whether the kernel was compiled in this process or loaded from
    the disk cache, and the same call gave results one ulp apart in two processes.
    Kernels (:func:`engines`), parallel functions and ``reassociate=False`` helpers
    (whose flags must not become their caller's) are never inlined; the last
    compute the same bits in either copy, having no sum to regroup.

    ``reassociate=False`` drops ``reassoc`` from the flags: for the few formulas whose
    order of operations *is* their accuracy, such as ``(x - m) - log1p(s)``, which
    LLVM would otherwise regroup as ``x - (m + log1p(s))`` (the loop-invariant terms
    together, hoisted out of the loop), losing ``u |m|``.  Flags are per
    instruction, so they survive inlining into a kernel compiled with ``reassoc``.
    ``reciprocal=False`` drops ``arcp`` likewise, for a division that must be the
    correctly rounded quotient (``arcp`` lets LLVM multiply by a hoisted reciprocal
    instead, one rounding more: ``filter_logits``'s ``x / T`` differed from NumPy's in
    166 of 1800 float32 entries).

    ``error_model="numpy"``: a division by zero gives inf or NaN, as in NumPy, instead
    of raising (a row of underflowed terms must give NaN, not an exception).

    Numba's disk cache is keyed by the function's name and the time stamp of its
    own file, not by the compile options nor by the functions it inlines from other
    modules; the digest of the options, of the compile-time values of
    :mod:`softmax_numba.config` (``COMPILE_TIME``) and of the source of every CPU
    module is therefore part of the cached name, so that a change to any of them
    never loads code compiled otherwise.
    """

    def decorate(f):
        options = _options(parallel, reassociate, reciprocal)
        inlined = reassociate and reciprocal and not parallel
        options["inline"] = inline or ("always" if inlined else "never")
        flags = sorted(options["fastmath"])
        key = repr((flags, options["inline"], _compile_time(), _cpu_sources_digest()))
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        return numba.njit(**options)(_renamed(f, f"{f.__name__}__{digest}"))

    return decorate if func is None else decorate(func)


#: The parameter names that mark a kernel's outputs: a kernel declares which of its
#: arguments it writes by naming them so (the CUDA launcher copies those back to
#: host arrays).
OUTPUT_PARAMETERS = frozenset(
    {"out", "sign", "dx", "loss", "grad", "support", "m_out", "s_out"}
    | {"gap_out", "entropy_out", "picked_out", "logprob_out", "status"}
    | {"mass_out"}
)


class Engines(NamedTuple):
    """The serial (``backend="cpu"``) and parallel (``backend="parallel"``) kernels,
    the name under which the numpy and CUDA engines register the same kernel, and
    the positions of its output arguments (:data:`OUTPUT_PARAMETERS`)."""

    cpu: numba.core.registry.CPUDispatcher
    parallel: numba.core.registry.CPUDispatcher
    name: str
    outputs: tuple[int, ...]


def engines(func) -> Engines:
    """Compile one Python loop over rows into a serial and a parallel kernel.

    ``func`` loops over rows with ``numba.prange``; without ``parallel=True``
    ``prange`` is a plain ``range``.  Each variant gets its own qualified name, so
    that the two never share an entry of Numba's on-disk cache.  The outputs are
    the parameters of ``func`` named in :data:`OUTPUT_PARAMETERS`; a kernel with
    none is an error.
    """
    names = list(inspect.signature(func).parameters)
    outputs = tuple(i for i, p in enumerate(names) if p in OUTPUT_PARAMETERS)
    if not outputs:
        raise TypeError(
            f"kernel {func.__name__}{tuple(names)} names no output parameter "
            f"(one of {sorted(OUTPUT_PARAMETERS)})"
        )
    return Engines(
        cpu=jit(_renamed(func, f"{func.__name__}_serial"), parallel=False, inline="never"),
        parallel=jit(_renamed(func, f"{func.__name__}_parallel"), parallel=True),
        name=func.__name__,
        outputs=outputs,
    )


def in_dtype_of(array, value):  # pragma: no cover - replaced by the overload in compiled code
    """``value`` cast to the dtype of ``array``, an array or a float (in compiled code
    only).

    Numba types a literal such as ``0.0`` as float64, which would silently promote
    a float32 kernel; ``in_dtype_of(x, 0.0)`` keeps float32 kernels in float32.
    """
    raise NotImplementedError("in_dtype_of() is only available inside compiled kernels")


@overload(in_dtype_of, jit_options=_options(parallel=False))
def _in_dtype_of_overload(array, value):
    dtype = array if isinstance(array, numba.types.Float) else array.dtype

    def impl(array, value):
        return dtype(value)

    return impl
