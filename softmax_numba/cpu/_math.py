"""Branch-free ``exp`` that LLVM can vectorize (Numba's SVML path is gone).

``math.exp`` in a Numba loop is a scalar libm call, which keeps the loop scalar.
:func:`exp` here is range reduction plus a polynomial, with no branches and no
calls, so a loop over it vectorizes:

    x = k ln2 + r,  k = rint(x / ln2),  |r| <= ln2 / 2  (Cody & Waite 1980, with
    ln2 split in a high and a low part so that ``k ln2_hi`` is exact),
    exp(r) ~ 1 + r + r^2 q(r),  q a minimax fit of degree 4 (float32) or 9
    (float64),
    exp(x) = exp(r) 2^k, by ``llvm.ldexp`` (one ``vscalef`` instruction on
    AVX-512, which rounds subnormal results once and overflows to ``inf``), or
    elsewhere by adding k to the exponent bits of exp(r), with selects for the
    subnormal range and the overflow.

NaN stays NaN, ``-inf`` gives 0, ``+inf`` gives ``inf``.  The maximum error is
measured exhaustively over float32 by the study (``results/exp_ulp.csv``) and
bounded in the tests.  On AVX-512 the float32 ``exp`` is 17 vector instructions per
16 entries, of which 10 use the FMA pipes (about 0.25 ns per entry on one Zen 4
core at 2.6 GHz).

The hot loops of the shifted kernels, whose argument is ``x_i - max(x) <= 0``, call
:func:`exp_shifted` instead: the same reduction and polynomial, clamped below so
that ``2^k`` is one shift of the bits of ``x / ln2`` and one product, with no
select on any target (15 vector instructions per vector on AVX2 and AVX-512, against
32 for :func:`exp_nonpositive` on AVX2); it gives the same bits wherever the result
is a normal number and flushes results below ``2^-126.5`` to 0, and ``-inf`` gives 0
with no underflow (an underflowing product costs some 100 cycles on Intel cores).
"""

from __future__ import annotations

import math

import llvmlite.binding as llvm
import numba
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


def float_bits(x):  # pragma: no cover - replaced by the overload in compiled code
    """The IEEE bits of ``x`` as a signed integer of its width (compiled code only)."""
    raise NotImplementedError("float_bits runs inside compiled kernels")


def max_from_bit_bounds(highest, lowest):  # pragma: no cover - replaced by the overload
    """The largest float of a set, from the largest and the smallest of its
    :func:`float_bits` (compiled code only)."""
    raise NotImplementedError("max_from_bit_bounds runs inside compiled kernels")


# IEEE floats order as sign-magnitude integers (the kernels' row max,
# ``softmax_numba.cpu.softmax.maximum``, and the max of the next row that their exp
# passes take).  Read as two's complement, the
# non-negative floats keep their order and the negative ones reverse it (a larger
# magnitude is a larger integer), so a running max needs the largest and the
# smallest integer: the largest, if it is not negative, is the largest float;
# otherwise every entry is negative and the smallest integer is the one of least
# magnitude.  Two integer ops per vector (``vpmaxsd``, ``vpminsd``, one cycle of
# latency each), which LLVM vectorizes in any loop; a float max needs ``nnan``, and
# ``llvm.maxnum`` lowers to a max, a compare and a blend per vector, whose chain
# through the accumulator (some 8 cycles) made a max pass of its own cost 0.05 ns
# per float32 entry on a Xeon core, a sixth of a softmax.  A positive NaN wins the
# largest integer; a negative one is passed over (it is the smallest integer only
# of a row of negative NaNs).


@overload(float_bits, jit_options={"fastmath": {"contract", "nsz"}})
def _float_bits_overload(x):
    if x in (types.float32, types.float64):
        return lambda x: _bits(x)
    return None


@overload(max_from_bit_bounds, jit_options={"fastmath": {"contract", "nsz"}})
def _max_from_bit_bounds_overload(highest, lowest):
    if highest in (types.int32, types.int64) and lowest == highest:
        return lambda highest, lowest: _from_bits(highest if highest >= 0 else lowest)
    return None


def horner(x, coefficients):  # pragma: no cover - replaced by the overload
    """``c_0 x^(n-1) + c_1 x^(n-2) + ... + c_(n-1)`` for a tuple ``coefficients`` of
    one float type, highest degree first, by Horner's rule (compiled code only)."""
    raise NotImplementedError("horner runs inside compiled kernels")


@overload(horner, jit_options={"fastmath": {"contract", "nsz"}})
def _horner_overload(x, coefficients):
    if not isinstance(coefficients, types.UniTuple) or coefficients.dtype != x:
        return None

    def horner_impl(x, coefficients):
        p = coefficients[0]
        for c in coefficients[1:]:
            p = p * x + c
        return p

    return horner_impl


def exp(x):  # pragma: no cover - replaced by the overload in compiled code
    """Vectorizable ``exp`` for float32 and float64 (compiled code only)."""
    raise NotImplementedError("softmax_numba.cpu._math.exp runs inside compiled kernels")


def _target_features() -> str:
    """The CPU features Numba compiles for (``NUMBA_CPU_FEATURES`` or the host's)."""
    if numba.config.CPU_FEATURES is not None:
        return numba.config.CPU_FEATURES
    try:
        return llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot read this host's features: assume none
        return ""


#: Whether LLVM lowers ``llvm.ldexp`` on vectors to one instruction: AVX-512's
#: ``vscalefps``/``vscalefpd``, which scales by ``2^k`` with one rounding, gives
#: subnormal results, 0 and ``inf`` where they belong, and keeps NaN.  Elsewhere the
#: vector ``ldexp`` is a libm call per lane, and :func:`exp` adds ``k`` to the
#: exponent bits instead, with selects for the ranges where that is wrong.
VECTOR_LDEXP: bool = "+avx512f" in _target_features().split(",")


@intrinsic
def ldexp(typingctx, x, k):
    """``x 2^k`` for a float32 or float64 ``x`` and an int32 ``k`` (``llvm.ldexp``)."""
    if x not in (types.float32, types.float64) or k != types.int32:
        return None

    def codegen(context, builder, signature, args):
        kind = args[0].type
        fn = builder.module.declare_intrinsic(
            "llvm.ldexp", [kind, args[1].type], ir.FunctionType(kind, [kind, args[1].type])
        )
        return builder.call(fn, args)

    return x(x, k), codegen


def scale_by_power_of_two(p, k, x):  # pragma: no cover - replaced by the overload
    """``p 2^k`` for the last step of :func:`exp` of ``x`` (compiled code only)."""
    raise NotImplementedError("scale_by_power_of_two runs inside compiled kernels")


# Without a vector ldexp, 2^k is added to the exponent bits of p = exp(r) in
# [0.7, 1.42]: exact for normal results.  Results below the normal range take
# 2^(k + shift) the same way and one multiplication by the constant 2^-shift, so
# they are rounded once; above the range the sum of the bits would be a NaN, and
# a select on x gives inf; a NaN x gives itself.


@overload(scale_by_power_of_two, jit_options={"fastmath": {"contract", "nsz"}})
def _scale_overload(p, k, x):
    if VECTOR_LDEXP:
        return lambda p, k, x: ldexp(p, np.int32(k))
    if p == types.float32:

        def scale32(p, k, x):
            bits = _bits(p)
            # (Numba widens int32 + int32 to int64: narrow again before the bitcast.)
            normal = _from_bits(np.int32(bits + (k << np.int32(23))))
            tiny = _from_bits(np.int32(bits + ((k + np.int32(64)) << np.int32(23))))
            tiny = tiny * np.float32(5.421010862427522e-20)  # 2^-64
            y = tiny if k < -125 else normal
            # 88.72283172607422: the largest float32 whose exp is finite.  The next
            # one, 88.72283935546875, overflows with k = 128 and p > 1, whose bits sum
            # to a NaN: the test must take it in.
            y = np.float32(np.inf) if x > np.float32(88.72283172607422) else y
            return x if x != x else y

        return scale32
    if p == types.float64:

        def scale64(p, k, x):
            bits = _bits(p)
            normal = _from_bits(bits + (k << np.int64(52)))
            tiny = _from_bits(bits + ((k + np.int64(512)) << np.int64(52))) * 7.458340731200207e-155
            y = tiny if k < -1021 else normal
            y = np.inf if x > 709.782712893384 else y  # the largest with a finite exp
            return x if x != x else y

        return scale64
    return None


# x = k ln2 + r: k = rint(x / ln2) is read off the low bits of x / ln2 + 1.5 2^23
# (2^52 for float64), a float whose units digit is k: its bits less the shifter's
# bits are k, with no float-to-int conversion.  The clamps let NaN through (the
# comparisons are false) and keep -inf from giving r = -inf - (-inf) = NaN.
# The polynomials, 1 + r + r^2 q(r), are minimax fits of the relative error on
# |r| <= ln2 / 2 (Lawson's iteration on Chebyshev points, in mpmath), evaluated by
# Horner's rule down to the two unit coefficients; their own error is 0.05 u
# (float32, degree 6) and 0.03 u (float64, degree 11).

_SHIFTER32 = np.float32(12582912.0)  # 1.5 * 2^23
_SHIFTER32_BITS = np.int32(0x4B400000)
_SHIFTER64 = 6755399441055744.0  # 1.5 * 2^52
_SHIFTER64_BITS = np.int64(0x4338000000000000)
#: 1 + r + r^2 q(r), highest degree first.
_EXP32 = tuple(
    np.float32(c)
    for c in (
        1.3814599951729178e-3,
        8.368715643882751e-3,
        4.166838899254799e-2,
        1.666652113199234e-1,
        4.999999403953552e-1,
        1.0,
        1.0,
    )
)
_EXP64 = (
    2.500035469322566e-08,
    2.763023496562406e-07,
    2.7557585399549996e-06,
    2.480149313247267e-05,
    1.9841269507716217e-04,
    1.388888894360216e-03,
    8.33333333349392e-03,
    4.1666666666530246e-02,
    1.6666666666666413e-01,
    5.000000000000011e-01,
    1.0,
    1.0,
)


def exp_of_clamped(x):  # pragma: no cover - replaced by the overload in compiled code
    """``exp`` of an ``x`` already clamped to [-104, 89] (float32) or [-746, 710]
    (float64), or NaN (compiled code only)."""
    raise NotImplementedError("exp_of_clamped runs inside compiled kernels")


def exp_nonpositive(x):  # pragma: no cover - replaced by the overload in compiled code
    """:func:`exp` of an ``x <= 0`` (``-inf`` included) or NaN, one instruction
    shorter: no clamp above (compiled code only).  For shifted arguments such as
    ``x_i - max(x)`` and ``-|x|``."""
    raise NotImplementedError("exp_nonpositive runs inside compiled kernels")


@overload(exp_of_clamped, jit_options={"fastmath": {"contract", "nsz"}})
def _exp_of_clamped_overload(x):
    if x == types.float32:

        def exp32(x):
            n = x * np.float32(1.4426950408889634) + _SHIFTER32
            k = n - _SHIFTER32
            r = x - k * np.float32(0.693359375)  # ln2_hi: 9 bits, k * ln2_hi is exact
            r = r - k * np.float32(-2.12194440e-4)  # ln2_lo
            p = horner(r, _EXP32)
            return scale_by_power_of_two(p, np.int32(_bits(n) - _SHIFTER32_BITS), x)

        return exp32
    if x == types.float64:

        def exp64(x):
            n = x * 1.4426950408889634 + _SHIFTER64
            k = n - _SHIFTER64
            r = x - k * 6.93147180369123816490e-01  # ln2_hi (fdlibm), k * ln2_hi exact
            r = r - k * 1.90821492927058770002e-10  # ln2_lo
            p = horner(r, _EXP64)
            return scale_by_power_of_two(p, _bits(n) - _SHIFTER64_BITS, x)

        return exp64
    return None


@overload(exp, jit_options={"fastmath": {"contract", "nsz"}})
def _exp_overload(x):
    if x == types.float32:

        def exp32(x):
            xc = np.float32(-104.0) if x < np.float32(-104.0) else x
            return exp_of_clamped(np.float32(89.0) if xc > np.float32(89.0) else xc)

        return exp32
    if x == types.float64:

        def exp64(x):
            xc = -746.0 if x < -746.0 else x
            return exp_of_clamped(710.0 if xc > 710.0 else xc)

        return exp64
    return None


@overload(exp_nonpositive, jit_options={"fastmath": {"contract", "nsz"}})
def _exp_nonpositive_overload(x):
    if x == types.float32:
        return lambda x: exp_of_clamped(np.float32(-104.0) if x < np.float32(-104.0) else x)
    if x == types.float64:
        return lambda x: exp_of_clamped(-746.0 if x < -746.0 else x)
    return None


def exp_shifted(x):  # pragma: no cover - replaced by the overload in compiled code
    """``exp`` of a shifted argument ``x = x_i - max(x) <= 0`` (``-inf`` included) or
    NaN, for the hot loops of the shifted kernels, with no per-lane special case:
    results below ``2^-126.5`` (float32; ``2^-1022.5`` for float64) are flushed to 0
    (compiled code only).  See the comment above its overload."""
    raise NotImplementedError("exp_shifted runs inside compiled kernels")


# exp_shifted: the argument is clamped below at a value whose k = rint(x / ln2) is
# -127 (float32; -1023 for float64), and 2^k is formed by shifting the bits of
# n = x / ln2 + 1.5 2^23 + 127 (a float whose units digit is k + 127, the biased
# exponent of 2^k) into the exponent field: one shift, then one product p 2^k.  The
# clamp is the only select (one vmaxps, which lets NaN through).  For k >= -126,
# 2^k is normal and p 2^k is exact where the result is normal (the same bits as
# exp); for x in [-126.5 ln2, -126 ln2) it is subnormal, rounded once.  At k = -127
# the biased exponent is 0, 2^k reads as +0.0 and the result is 0: exp(x) < 2^-126.5
# there, below the smallest normal number (the tests score no entry whose exact
# value is below it).  -inf gives 0 with no underflow (0 * p), so a masked row raises
# no floating-point assist (Intel cores take some 100 cycles per underflowing
# product); NaN stays NaN (NaN * 0 is NaN).  The terms lost from a sum of such
# terms are below n 2^-126.5: they matter only to a sum below n 2^-96 or so, which
# the shifted sums recompute with :func:`exp_nonpositive`.

_SHIFTER32_BIASED = np.float32(12583039.0)  # 1.5 * 2^23 + 127
_SHIFTER64_BIASED = 6755399441056767.0  # 1.5 * 2^52 + 1023
#: The clamps: rint(-88 / ln2) = -127, rint(-709 / ln2) = -1023.
_FLUSH32 = np.float32(-88.0)
_FLUSH64 = -709.0


@overload(exp_shifted, jit_options={"fastmath": {"contract", "nsz"}})
def _exp_shifted_overload(x):
    if x == types.float32:

        def exp_shifted32(x):
            x = _FLUSH32 if x < _FLUSH32 else x
            n = x * np.float32(1.4426950408889634) + _SHIFTER32_BIASED
            k = n - _SHIFTER32_BIASED
            r = x - k * np.float32(0.693359375)
            r = r - k * np.float32(-2.12194440e-4)
            p = horner(r, _EXP32)
            return p * _from_bits(np.int32(_bits(n) << np.int32(23)))

        return exp_shifted32
    if x == types.float64:

        def exp_shifted64(x):
            x = _FLUSH64 if x < _FLUSH64 else x
            n = x * 1.4426950408889634 + _SHIFTER64_BIASED
            k = n - _SHIFTER64_BIASED
            r = x - k * 6.93147180369123816490e-01
            r = r - k * 1.90821492927058770002e-10
            p = horner(r, _EXP64)
            return p * _from_bits(_bits(n) << np.int64(52))

        return exp_shifted64
    return None


#: P of log1p(g) = g - g^2/2 + g^3 P(g), g in [sqrt(2)/2 - 1, sqrt(2) - 1], highest degree first.
_LOG1P32 = tuple(
    np.float32(c)
    for c in (
        -7.634399831295013e-2,
        1.2761537730693817e-1,
        -1.3160200417041779e-1,
        1.420176476240158e-1,
        -1.6623355448246002e-1,
        2.0001226663589478e-1,
        -2.50008225440979e-1,
        3.333333134651184e-1,
    )
)

#: P of log1p(g) = g - g^2/2 + g^3 P(g), g in [-1/4, 1/2], highest degree first.
_LOG1P_UNIT32 = tuple(
    np.float32(c)
    for c in (
        -4.507436975836754e-2,
        1.0462991148233414e-1,
        -1.3161200284957886e-1,
        1.4478403329849243e-1,
        -1.664731204509735e-1,
        1.9990859925746918e-1,
        -2.500009536743164e-1,
        3.333345055580139e-1,
    )
)

#: P of R(z) = z P(z), z = s^2, |s| <= 0.2 (fdlibm's form), highest degree first.
_LOG1P_UNIT64 = (
    1.383769156002312e-01,
    1.31744005360008e-01,
    1.539106352933688e-01,
    1.8181667384413852e-01,
    2.2222224270796304e-01,
    2.857142855605998e-01,
    4.0000000000055697e-01,
    6.66666666666666e-01,
)

#: Cephes ``atanf``'s P of atan(r) = r + r z P(z), z = r^2, highest degree first.
_ATAN32 = tuple(
    np.float32(c)
    for c in (
        8.05374449538e-2,
        -1.38776856032e-1,
        1.99777106478e-1,
        -3.33329491539e-1,
    )
)

#: P of atan(r) = r + r z P(z), z = r^2 <= (7/16)^2, highest degree first.
_ATAN64 = (
    -1.6265536880370426e-02,
    3.651028836347597e-02,
    -4.975914187319295e-02,
    5.833323735074353e-02,
    -6.661034076232801e-02,
    7.691872235238845e-02,
    -9.090886875162651e-02,
    1.1111110395044754e-01,
    -1.4285714272261e-01,
    1.9999999999873666e-01,
    -3.333333333333292e-01,
)


def log1p(x):  # pragma: no cover - replaced by the overload in compiled code
    """Vectorizable ``log1p`` for float32 (libm's for float64; compiled code only)."""
    raise NotImplementedError("softmax_numba.cpu._math.log1p runs inside compiled kernels")


def atan(x):  # pragma: no cover - replaced by the overload in compiled code
    """Vectorizable ``atan`` for float32 (libm's for float64; compiled code only)."""
    raise NotImplementedError("softmax_numba.cpu._math.atan runs inside compiled kernels")


# log1p (float32): u = 1 + x rounded, c = the rounding error of that sum divided by u
# (Goldberg's correction, "What every computer scientist should know about
# floating-point arithmetic", 1991, Thm. 4), then log(u) = k ln2 + log1p(g) with
# u = 2^k (1 + g), 1 + g in [sqrt(2)/2, sqrt(2)) (exact: g = f - 1 by Sterbenz), and
# log1p(g) = g - g^2/2 + g^3 P(g), P of degree 7 a minimax fit of the relative
# error (0.1 u; Lawson's iteration in mpmath), as in Cephes' ``logf`` (S. Moshier)
# but with no division there; k ln2 is added in a head and a tail.  One division
# (c / u) per entry; musl's form needs two.  The special cases are selects.


def log_of_split(g, dk, c):  # pragma: no cover - replaced by the overload
    """``dk ln2 + log1p(g) + c`` for float32 ``g`` in [sqrt(2)/2 - 1, sqrt(2) - 1]
    and a small correction ``c`` (compiled code only)."""
    raise NotImplementedError("log_of_split runs inside compiled kernels")


@overload(log_of_split, jit_options={"fastmath": {"contract", "nsz"}})
def _log_of_split_overload(g, dk, c):
    if g != types.float32:
        return None

    def log_of_split32(g, dk, c):
        p = horner(g, _LOG1P32)
        z = g * g
        y = g * z * p + (dk * np.float32(-2.12194440e-4) + c) - np.float32(0.5) * z
        return (g + y) + dk * np.float32(0.693359375)

    return log_of_split32


@overload(log1p, jit_options={"fastmath": {"contract", "nsz"}})
def _log1p_overload(x):
    if x == types.float64:
        return lambda x: math.log1p(x)
    if x != types.float32:
        return None

    def log1p32(x):
        one = np.float32(1.0)
        u = one + x
        shifted = np.int32(_bits(u) + np.int32(0x3F800000 - 0x3F3504F3))
        k = np.int32((shifted >> np.int32(23)) - np.int32(127))
        g = _from_bits(np.int32((shifted & np.int32(0x007FFFFF)) + np.int32(0x3F3504F3))) - one
        c = (one - (u - x)) if k >= 2 else (x - (u - one))
        c = c / u if k < 25 else np.float32(0.0)
        y = log_of_split(g, np.float32(k), c)
        y = np.float32(np.inf) if x == np.float32(np.inf) else y
        y = np.float32(-np.inf) if x == -one else y
        y = np.float32(np.nan) if x < -one else y
        return x if x != x else y

    return log1p32


def log1p_unit_interval(t):  # pragma: no cover - replaced by the overload
    """:func:`log1p` of a ``t`` in [0, 1] or NaN, such as ``exp(-|x|)`` in softplus,
    with no division and no special case (compiled code only).

    ``1 + t = 2^k (1 + g)`` with ``g = t`` (k = 0) below 1/2 and ``g = (t - 1) / 2``
    (k = 1) from 1/2 on, both exact (Sterbenz), so ``1 + t`` is never rounded and
    Goldberg's correction is not needed; ``log1p(g) = g - g^2/2 + g^3 P(g)`` on
    [-1/4, 1/2] with P of degree 7 a minimax fit (0.08 u), and k ln2 in two parts.
    NaN gives NaN through the arithmetic.
    """
    raise NotImplementedError("log1p_unit_interval runs inside compiled kernels")


def log1p_unit_interval64(t):
    """The float64 :func:`log1p_unit_interval`: the same exact split, then fdlibm's
    form ``log1p(g) = g - (h - s (h + R(s^2)))``, ``s = g / (2 + g)``,
    ``h = g^2 / 2`` (one division; ``g`` itself carries the leading term exactly),
    with ``R(z) = z P(z)``, P of degree 7 a minimax fit for ``|s| <= 0.2`` (0.001 u).
    """
    half = 0.5
    big = t >= half
    g = t * half - half if big else t
    dk = 1.0 if big else 0.0
    s = g / (2.0 + g)
    z = s * s
    p = horner(z, _LOG1P_UNIT64)
    h = half * g * g
    tail = s * (h + z * p) + dk * 1.90821492927058770002e-10  # ln2_lo (fdlibm)
    return dk * 6.93147180369123816490e-01 - ((h - tail) - g)  # ln2_hi


@overload(log1p_unit_interval, jit_options={"fastmath": {"contract", "nsz"}})
def _log1p_unit_interval_overload(t):
    if t == types.float64:
        return log1p_unit_interval64
    if t != types.float32:
        return None

    def log1p_unit_interval32(t):
        half = np.float32(0.5)
        big = t >= half
        g = t * half - half if big else t
        dk = np.float32(1.0) if big else np.float32(0.0)
        p = horner(g, _LOG1P_UNIT32)
        z = g * g
        y = g * z * p + dk * np.float32(-2.12194440e-4) - half * z
        return (g + y) + dk * np.float32(0.693359375)

    return log1p_unit_interval32


# atan (float32), Cephes ``atanf`` (S. Moshier): |x| reduced to [0, tan(pi/8)] by
# atan x = pi/2 + atan(-1/x) above tan(3 pi/8) and pi/4 + atan((x - 1)/(x + 1))
# above tan(pi/8), then x + x z P(z), z = x^2, P of degree 3; the sign put back.
# pi/2 and pi/4 are added as a float32 head and tail, which keeps the sum near
# tan(pi/8) (a cancellation) near 2 ulp (the study measures every float32).


def atan64(x):
    """float64 :func:`atan` by fdlibm's reduction (Sun Microsystems, ``s_atan.c``):
    ``|x|`` below 7/16 as it is, else ``atan(c) + atan(r)`` for c = 1/2, 1, 3/2 or
    inf with ``r = (a - c) / (1 + c a)`` (``(2a - 1) / (2 + a)`` for 1/2,
    ``-1 / a`` for inf), whose numerators are exact (Sterbenz) and whose
    denominators round once (an FMA); one division, the constants chosen by selects.
    Then ``atan(r) = r + r z P(z)``, ``z = r^2 <= (7/16)^2``, P of degree 10 a
    minimax fit of the relative error (0.04 u; Lawson's iteration in mpmath), and
    ``atan(c)`` added as fdlibm's head and tail."""
    a = abs(x)
    # r = (num_a a - num_c) / (den_c + den_a a) and atan(c) = hi + lo, per interval.
    num_a, num_c, den_c, den_a, hi, lo = 1.0, 0.0, 1.0, 0.0, 0.0, 0.0
    if a >= 0.4375:
        num_a, num_c, den_c, den_a = 2.0, 1.0, 2.0, 1.0
        hi, lo = 4.63647609000806093515e-01, 2.26987774529616870924e-17
    if a >= 0.6875:
        num_a, num_c, den_c, den_a = 1.0, 1.0, 1.0, 1.0
        hi, lo = 7.85398163397448278999e-01, 3.06161699786838301793e-17
    if a >= 1.1875:
        num_a, num_c, den_c, den_a = 1.0, 1.5, 1.0, 1.5
        hi, lo = 9.82793723247329054082e-01, 1.39033110312309984516e-17
    if a >= 2.4375:
        num_a, num_c, den_c, den_a = 0.0, 1.0, 0.0, 1.0
        hi, lo = 1.57079632679489655800e00, 6.12323399573676603587e-17
    # (a capped in the numerator, whose factor is 0 for c = inf: no 0 * inf)
    r = (num_a * min(a, 1e300) - num_c) / (den_c + den_a * a)
    z = r * r
    p = horner(z, _ATAN64)
    y = hi + (r + (r * z * p + lo))
    return -y if x < 0.0 else y


@overload(atan, jit_options={"fastmath": {"contract", "nsz"}})
def _atan_overload(x):
    if x == types.float64:
        return atan64
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
        p = horner(z, _ATAN32)
        y = head + (r + (p * z * r + tail))
        return -y if x < np.float32(0.0) else y

    return atan32


#: The elementary functions the kernels call (``config.EXP``): the vectorizable ones
#: above, or the C library's.
kernel_exp = exp if config.EXP == "fast" else math.exp
kernel_exp_nonpositive = exp_nonpositive if config.EXP == "fast" else math.exp
kernel_exp_shifted = exp_shifted if config.EXP == "fast" else math.exp
kernel_log1p = log1p if config.EXP == "fast" else math.log1p
kernel_log1p_unit_interval = log1p_unit_interval if config.EXP == "fast" else math.log1p
kernel_atan = atan if config.EXP == "fast" else math.atan


@jit
def exp_array(x, out):
    """``out[i] = exp(x[i])`` with the fast ``exp``, for measuring it on its own."""
    for i in range(x.size):
        out[i] = exp(x[i])


@jit
def exp_nonpositive_array(x, out):
    """``out[i] = exp(x[i])`` for ``x[i] <= 0`` with :func:`exp_nonpositive`."""
    for i in range(x.size):
        out[i] = exp_nonpositive(x[i])


@jit
def exp_shifted_array(x, out):
    """``out[i] = exp(x[i])`` for ``x[i] <= 0`` with :func:`exp_shifted`."""
    for i in range(x.size):
        out[i] = exp_shifted(x[i])


@jit
def log1p_array(x, out):
    """``out[i] = log1p(x[i])`` with the vectorizable ``log1p``."""
    for i in range(x.size):
        out[i] = log1p(x[i])


@jit
def log1p_unit_interval_array(x, out):
    """``out[i] = log1p(x[i])`` for ``0 <= x[i] <= 1``, the softplus variant."""
    for i in range(x.size):
        out[i] = log1p_unit_interval(x[i])


@jit
def atan_array(x, out):
    """``out[i] = atan(x[i])`` with the vectorizable ``atan``."""
    for i in range(x.size):
        out[i] = atan(x[i])
