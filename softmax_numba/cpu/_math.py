"""Branch-free ``exp`` that LLVM can vectorize (Numba's SVML path is gone).

``math.exp`` in a Numba loop is a scalar libm call, which keeps the loop scalar.
:func:`exp` here is range reduction plus a polynomial, with no branches and no
calls, so a loop over it vectorizes:

    x = k ln2 + r,  k = rint(x / ln2),  |r| <= ln2 / 2  (Cody & Waite 1980, with
    ln2 split in a high and a low part so that ``k ln2_hi`` is exact),
    exp(r) ~ 1 + r + r^2 p(r),  p of degree 5 (float32, coefficients of Cephes'
    ``expf``, S. Moshier) or 11 (float64, Taylor),
    exp(x) = exp(r) * 2^k, by adding k to the exponent bits of exp(r),

with the subnormal range and the overflow to ``inf`` handled by selects.  NaN stays NaN, ``-inf``
gives 0, ``+inf`` gives ``inf``.  The maximum error is measured exhaustively over
float32 by the study (``results/exp_ulp.csv``) and bounded in the tests.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from softmax_numba import config
from softmax_numba.cpu._compile import jit


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float32 (as int32) or float64 (as int64)."""
    width = {types.float32: 32, types.float64: 64}.get(x)
    if width is None:
        return None
    sig = (types.int32 if width == 32 else types.int64)(x)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(width))

    return sig, codegen


@intrinsic
def _from_bits(typingctx, bits):
    """The float32 (from int32) or float64 (from int64) with these IEEE bits."""
    target = {types.int32: types.float32, types.int64: types.float64}.get(bits)
    if target is None:
        return None
    sig = target(bits)

    def codegen(context, builder, signature, args):
        kind = ir.FloatType() if target == types.float32 else ir.DoubleType()
        return builder.bitcast(args[0], kind)

    return sig, codegen


@intrinsic
def maxnum(typingctx, a, b):
    """IEEE ``maxNum``: the larger of ``a`` and ``b``, the number if the other is NaN
    (LLVM's ``llvm.maxnum``).  A loop ``m = maxnum(m, x[i])`` is a NaN-skipping max
    that LLVM vectorizes without ``nnan`` (a compare-and-select chain it may not
    reorder)."""
    if a not in (types.float32, types.float64) or a != b:
        return None

    def codegen(context, builder, signature, args):
        kind = args[0].type
        fn = builder.module.declare_intrinsic(
            "llvm.maxnum", [kind], ir.FunctionType(kind, [kind, kind])
        )
        return builder.call(fn, args)

    return a(a, b), codegen


def order_key(x):  # pragma: no cover - replaced by the overload in compiled code
    """A signed integer that orders as the float ``x`` does (compiled code only)."""
    raise NotImplementedError("order_key runs inside compiled kernels")


def from_order_key(key):  # pragma: no cover - replaced by the overload in compiled code
    """The float whose :func:`order_key` is ``key`` (compiled code only)."""
    raise NotImplementedError("from_order_key runs inside compiled kernels")


# IEEE floats order as sign-magnitude integers: flipping the magnitude bits of the
# negative ones makes the order that of two's complement, and the map its own
# inverse.  A max over keys is an integer max, which LLVM vectorizes in any loop
# (a float max needs ``nnan``, and ``llvm.maxnum`` only vectorizes in a loop with no
# other work).  NaNs get keys above +inf or below -inf, by their sign bit.


@overload(order_key, jit_options={"fastmath": {"contract", "nsz"}})
def _order_key_overload(x):
    if x == types.float32:
        return lambda x: np.int32(_bits(x) ^ ((_bits(x) >> np.int32(31)) & np.int32(0x7FFFFFFF)))
    if x == types.float64:
        return lambda x: _bits(x) ^ ((_bits(x) >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))
    return None


@overload(from_order_key, jit_options={"fastmath": {"contract", "nsz"}})
def _from_order_key_overload(key):
    if key == types.int32:
        return lambda key: _from_bits(
            np.int32(key ^ ((key >> np.int32(31)) & np.int32(0x7FFFFFFF)))
        )
    if key == types.int64:
        return lambda key: _from_bits(key ^ ((key >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF)))
    return None


def exp(x):  # pragma: no cover - replaced by the overload in compiled code
    """Vectorizable ``exp`` for float32 and float64 (compiled code only)."""
    raise NotImplementedError("softmax_numba.cpu._math.exp runs inside compiled kernels")


# The scale 2^k is added to the exponent bits of p = exp(r) in [0.7, 1.42]: exact for
# normal results.  Results below the normal range take 2^(k + shift) the same way and
# one multiplication by the constant 2^-shift, so they are rounded once.  Nothing
# here depends on the order of a product, so reassociation cannot overflow it.


@overload(exp, jit_options={"fastmath": {"contract", "nsz"}})
def _exp_overload(x):
    if x == types.float32:

        def exp32(x):
            xc = min(max(x, np.float32(-104.0)), np.float32(89.0))
            k = np.rint(xc * np.float32(1.4426950408889634))
            r = xc - k * np.float32(0.693359375)  # ln2_hi: 9 bits, k * ln2_hi is exact
            r = r - k * np.float32(-2.12194440e-4)  # ln2_lo
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            p = p * r * r + r + np.float32(1.0)
            ki = np.int32(k)
            bits = _bits(p)
            # (Numba widens int32 + int32 to int64: narrow again before the bitcast.)
            normal = _from_bits(np.int32(bits + (ki << np.int32(23))))
            tiny = _from_bits(np.int32(bits + ((ki + np.int32(64)) << np.int32(23))))
            tiny = tiny * np.float32(5.421010862427522e-20)  # 2^-64
            y = tiny if ki < -125 else normal
            y = np.float32(np.inf) if x > np.float32(88.72283935546875) else y
            return x if x != x else y

        return exp32
    if x == types.float64:

        def exp64(x):
            xc = min(max(x, -746.0), 710.0)
            k = np.rint(xc * 1.4426950408889634)
            r = xc - k * 6.93147180369123816490e-01  # ln2_hi (fdlibm), k * ln2_hi exact
            r = r - k * 1.90821492927058770002e-10  # ln2_lo
            p = 1.0 / 6227020800.0  # Taylor to r^13 / 13!: truncation below u / 20
            p = p * r + 1.0 / 479001600.0
            p = p * r + 1.0 / 39916800.0
            p = p * r + 1.0 / 3628800.0
            p = p * r + 1.0 / 362880.0
            p = p * r + 1.0 / 40320.0
            p = p * r + 1.0 / 5040.0
            p = p * r + 1.0 / 720.0
            p = p * r + 1.0 / 120.0
            p = p * r + 1.0 / 24.0
            p = p * r + 1.0 / 6.0
            p = p * r + 0.5
            p = p * r * r + r + 1.0
            ki = np.int64(k)
            bits = _bits(p)
            normal = _from_bits(bits + (ki << np.int64(52)))
            tiny = (
                _from_bits(bits + ((ki + np.int64(512)) << np.int64(52))) * 7.458340731200207e-155
            )
            y = tiny if ki < -1021 else normal
            y = np.inf if x > 709.782712893384 else y
            return x if x != x else y

        return exp64
    return None


def log1p(x):  # pragma: no cover - replaced by the overload in compiled code
    """Vectorizable ``log1p`` for float32 (libm's for float64; compiled code only)."""
    raise NotImplementedError("softmax_numba.cpu._math.log1p runs inside compiled kernels")


def atan(x):  # pragma: no cover - replaced by the overload in compiled code
    """Vectorizable ``atan`` for float32 (libm's for float64; compiled code only)."""
    raise NotImplementedError("softmax_numba.cpu._math.atan runs inside compiled kernels")


# log1p (float32): u = 1 + x rounded, c = the rounding error of that sum divided by u
# (Goldberg's correction), then log(u) as in fdlibm/musl ``logf``: u = 2^k f with
# f in [sqrt(2)/2, sqrt(2)), s = (f - 1) / (f + 1), log f = f - h + s (h + R(s^2)),
# h = (f - 1)^2 / 2, R a degree-4 fit; k ln2 added in two parts.  Every branch of
# musl's ``log1pf`` is a select here.


@overload(log1p, jit_options={"fastmath": {"contract", "nsz"}})
def _log1p_overload(x):
    if x == types.float64:
        return lambda x: math.log1p(x)
    if x != types.float32:
        return None

    def log1p32(x):
        one = np.float32(1.0)
        u = one + x
        bits = _bits(u)
        shifted = np.int32(bits + np.int32(0x3F800000 - 0x3F3504F3))
        k = np.int32((shifted >> np.int32(23)) - np.int32(127))
        f = _from_bits(np.int32((shifted & np.int32(0x007FFFFF)) + np.int32(0x3F3504F3))) - one
        c = (one - (u - x)) if k >= 2 else (x - (u - one))
        c = c / u if k < 25 else np.float32(0.0)
        s = f / (np.float32(2.0) + f)
        z = s * s
        w = z * z
        t1 = w * (np.float32(0.40000972152) + w * np.float32(0.24279078841))
        t2 = z * (np.float32(0.66666662693) + w * np.float32(0.28498786688))
        h = np.float32(0.5) * f * f
        dk = np.float32(k)
        y = s * (h + t1 + t2) + (dk * np.float32(9.0580006145e-06) + c) - h + f
        y = y + dk * np.float32(6.9313812256e-01)
        y = np.float32(np.inf) if x == np.float32(np.inf) else y
        y = np.float32(-np.inf) if x == -one else y
        y = np.float32(np.nan) if x < -one else y
        return x if x != x else y

    return log1p32


# atan (float32), Cephes ``atanf`` (S. Moshier): |x| reduced to [0, tan(pi/8)] by
# atan x = pi/2 + atan(-1/x) above tan(3 pi/8) and pi/4 + atan((x - 1)/(x + 1))
# above tan(pi/8), then x + x z P(z), z = x^2, P of degree 3; the sign put back.
# pi/2 and pi/4 are added as a float32 head and tail, which keeps the sum near
# tan(pi/8) (a cancellation) near 2 ulp (the study measures every float32).


@overload(atan, jit_options={"fastmath": {"contract", "nsz"}})
def _atan_overload(x):
    if x == types.float64:
        return lambda x: math.atan(x)
    if x != types.float32:
        return None

    def atan32(x):
        a = abs(x)
        big = a > np.float32(2.414213562373095)
        mid = a > np.float32(0.4142135623730950)
        r = -np.float32(1.0) / a if big else (a - np.float32(1.0)) / (a + np.float32(1.0))
        r = r if mid else a
        # pi/2 and pi/4 in a float32 head and a tail (the head's rounding error).
        head = np.float32(1.5707963267948966) if big else np.float32(0.7853981633974483)
        tail = np.float32(-4.371139e-08) if big else np.float32(-2.1855694e-08)
        head = head if mid else np.float32(0.0)
        tail = tail if mid else np.float32(0.0)
        z = r * r
        p = np.float32(8.05374449538e-2) * z - np.float32(1.38776856032e-1)
        p = p * z + np.float32(1.99777106478e-1)
        p = p * z - np.float32(3.33329491539e-1)
        y = head + (r + (p * z * r + tail))
        return -y if x < np.float32(0.0) else y

    return atan32


#: The elementary functions the kernels call (``config.EXP``): the vectorizable ones
#: above, or the C library's.
kernel_exp = exp if config.EXP == "fast" else math.exp
kernel_log1p = log1p if config.EXP == "fast" else math.log1p
kernel_atan = atan if config.EXP == "fast" else math.atan


@jit
def exp_array(x, out):
    """``out[i] = exp(x[i])`` with the fast ``exp``, for measuring it on its own."""
    for i in range(x.size):
        out[i] = exp(x[i])


@jit
def log1p_array(x, out):
    """``out[i] = log1p(x[i])`` with the vectorizable ``log1p``."""
    for i in range(x.size):
        out[i] = log1p(x[i])


@jit
def atan_array(x, out):
    """``out[i] = atan(x[i])`` with the vectorizable ``atan``."""
    for i in range(x.size):
        out[i] = atan(x[i])
