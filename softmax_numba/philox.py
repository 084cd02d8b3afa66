r"""Philox4x64-10, the counter-based generator of the sampling ops: one source for
every engine.

Philox (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
SC'11) maps a 256-bit counter and a 128-bit key to 256 random bits through ten
rounds of two 64 x 64 -> 128-bit products and a Feistel-like swap.  Since the output
is a pure function of (counter, key), any draw can be computed on its own, in any
order, on any engine: the sampling ops give row ``i`` of a batch the counter
``(block, i, offset_lo, offset_hi)`` and the key made of the seed, so that its draws
depend on ``(seed, offset, i)`` and on nothing else (not the engine, the thread count
nor the other rows).

This is the variant of NumPy's :class:`numpy.random.Philox`, bit for bit: with
``c >= 1``, ``np.random.Philox(key=[k0, k1], counter=[c - 1, c1, c2, c3])
.random_raw(4)`` are the four words of ``philox4x64(c, c1, c2, c3, k0, k1)`` (NumPy
increments the counter before each block of four).  cuRAND's and FlashInfer's
generator is the 32-bit variant, Philox4x32-10, whose streams differ.

The functions use only ``+``, ``*``, ``^``, ``&`` and ``>>`` on unsigned 64-bit
integers, so the same source runs as Python on NumPy ``uint64`` arrays (the numpy
engine, many counters at once) and compiles with Numba for the CPU (:func:`build`
with ``softmax_numba.cpu._compile.jit``) and the GPU (``numba.cuda.jit(device=True)``).
The 128-bit product is formed from 32-bit halves, since neither NumPy nor Numba has a
128-bit integer.
"""

from __future__ import annotations

import types
from types import SimpleNamespace

import numpy as np

_MASK32 = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)
_11 = np.uint64(11)
#: The multipliers and the Weyl increments of the key (Random123's PHILOX_M4x64_0/1,
#: PHILOX_W64_0/1).
_M0 = np.uint64(0xD2E7470EE14C6C93)
_M1 = np.uint64(0xCA5A826395121157)
_W0 = np.uint64(0x9E3779B97F4A7C15)
_W1 = np.uint64(0xBB67AE8584CAA73B)
_ROUNDS = 10
#: 2^-53: the spacing of the uniforms, u = (r >> 11) 2^-53 in [0, 1 - 2^-53].
RESOLUTION = 2.0**-53


def _mulhi(a, b):
    """The high 64 bits of the 128-bit product ``a b`` (the low ones are ``a * b``
    modulo 2^64), from the four products of 32-bit halves."""
    a_lo = a & _MASK32
    a_hi = a >> _32
    b_lo = b & _MASK32
    b_hi = b >> _32
    lo_lo = a_lo * b_lo
    hi_lo = a_hi * b_lo
    lo_hi = a_lo * b_hi
    hi_hi = a_hi * b_hi
    # the middle column: at most 3 (2^32 - 1) < 2^34, no overflow
    middle = (lo_lo >> _32) + (hi_lo & _MASK32) + (lo_hi & _MASK32)
    return hi_hi + (hi_lo >> _32) + (lo_hi >> _32) + (middle >> _32)


def _philox4x64(c0, c1, c2, c3, k0, k1):
    """The four 64-bit words of Philox4x64-10 at counter ``(c0, c1, c2, c3)`` and key
    ``(k0, k1)`` (all ``uint64``)."""
    for r in range(_ROUNDS):
        if r:
            k0 = k0 + _W0
            k1 = k1 + _W1
        hi0 = _mulhi(_M0, c0)
        lo0 = _M0 * c0
        hi1 = _mulhi(_M1, c2)
        lo1 = _M1 * c2
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _uniform(key0, key1, offset0, offset1, row, draw):
    """The ``draw``-th uniform in [0, 1) of row ``row``: word ``draw % 4`` of the
    block at counter ``(draw // 4, row, offset0, offset1)``, as ``(r >> 11) 2^-53``.

    ``row`` and ``draw`` are ``uint64``; the result is exact in float64 (53 bits)."""
    four = np.uint64(4)
    words = _philox4x64(draw // four, row, offset0, offset1, key0, key1)
    word = draw % four
    r = words[0]
    if word == np.uint64(1):
        r = words[1]
    elif word == np.uint64(2):
        r = words[2]
    elif word == np.uint64(3):
        r = words[3]
    return np.float64(r >> _11) * RESOLUTION


def build(decorate) -> SimpleNamespace:
    """The generator compiled with ``decorate`` (a Numba decorator for CPU or GPU
    device functions): ``mulhi``, ``philox4x64`` and ``uniform``, each calling the
    others' compiled forms."""
    mulhi = decorate(_mulhi)
    namespace = {**globals(), "_mulhi": mulhi}
    philox = decorate(_rebind(_philox4x64, namespace))
    namespace["_philox4x64"] = philox
    uniform = decorate(_rebind(_uniform, namespace))
    return SimpleNamespace(mulhi=mulhi, philox4x64=philox, uniform=uniform)


def _rebind(func, namespace: dict):
    """``func`` with its globals replaced (so that it calls compiled helpers)."""
    clone = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__)
    clone.__qualname__ = func.__qualname__
    clone.__module__ = func.__module__
    return clone


# ----------------------------------------------------------------------- host side
def split128(value: int, name: str, func: str) -> tuple[np.uint64, np.uint64]:
    """A non-negative integer below 2^128 as its low and high 64-bit words; a
    ``ValueError`` naming ``name`` and ``func`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{func}(): {name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < 1 << 128:
        raise ValueError(f"{func}(): {name} must be in [0, 2**128), got {value}")
    return np.uint64(value & 0xFFFFFFFFFFFFFFFF), np.uint64(value >> 64)


def fresh_seed() -> int:
    """A 128-bit seed from the operating system's entropy (as ``np.random.default_rng()``
    seeds itself), for ``seed=None``."""
    low, high = np.random.SeedSequence().generate_state(2, dtype=np.uint64)
    return int(low) | int(high) << 64


def uniforms(key: tuple, offset: tuple, rows: np.ndarray, draws: int) -> np.ndarray:
    """The uniforms of ``rows`` (global row indices), ``draws`` per row, as a
    ``(len(rows), draws)`` float64 array: the numpy engine's form of the generator,
    vectorized over the counters (the same words as the compiled :func:`build`)."""
    rows = np.asarray(rows, dtype=np.uint64)
    index = np.arange(draws, dtype=np.uint64)
    row, draw = np.meshgrid(rows, index, indexing="ij")
    block = draw // np.uint64(4)
    with np.errstate(over="ignore"):
        words = _philox4x64(
            block,
            row,
            np.full_like(row, offset[0]),
            np.full_like(row, offset[1]),
            np.uint64(key[0]),
            np.uint64(key[1]),
        )
    picked = np.choose((draw % np.uint64(4)).astype(np.intp), words)
    return (picked >> _11).astype(np.float64) * RESOLUTION
