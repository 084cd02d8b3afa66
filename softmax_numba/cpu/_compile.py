"""How CPU kernels are compiled: one decorator, one serial/parallel pair maker.

Every kernel goes through :func:`jit`, so that the fast-math flag set and disk
caching are decided in :mod:`softmax_numba.config` and nowhere else.
"""

from __future__ import annotations

import types
from typing import NamedTuple

import numba
from numba.extending import overload

from softmax_numba import config


def jit(func=None, *, parallel: bool = False):
    """``numba.njit`` with the package's fast-math flags and on-disk cache."""

    def decorate(f):
        return numba.njit(cache=config.CACHE, fastmath=set(config.FASTMATH), parallel=parallel)(f)

    return decorate if func is None else decorate(func)


class Engines(NamedTuple):
    """The serial (``backend="cpu"``) and parallel (``backend="parallel"``) kernels."""

    cpu: numba.core.registry.CPUDispatcher
    parallel: numba.core.registry.CPUDispatcher


def engines(func) -> Engines:
    """Compile one Python loop over rows into a serial and a parallel kernel.

    ``func`` loops over rows with ``numba.prange``; without ``parallel=True``
    ``prange`` is a plain ``range``.  Each variant gets its own qualified name, so
    that the two never share an entry of Numba's on-disk cache.
    """

    def variant(suffix: str, parallel: bool):
        clone = types.FunctionType(
            func.__code__, func.__globals__, f"{func.__name__}_{suffix}", func.__defaults__
        )
        clone.__qualname__ = clone.__name__
        clone.__module__ = func.__module__
        clone.__doc__ = func.__doc__
        return jit(clone, parallel=parallel)

    return Engines(cpu=variant("serial", False), parallel=variant("parallel", True))


def like(array, value):  # pragma: no cover - replaced by the overload in compiled code
    """``value`` cast to the dtype of ``array`` (in compiled code only).

    Numba types a literal such as ``0.0`` as float64, which would silently promote
    a float32 kernel; ``like(x, 0.0)`` keeps float32 kernels in float32.
    """
    raise NotImplementedError("like() is only available inside compiled kernels")


@overload(like, jit_options={"fastmath": set(config.FASTMATH)})
def _like_overload(array, value):
    dtype = array.dtype

    def impl(array, value):
        return dtype(value)

    return impl
