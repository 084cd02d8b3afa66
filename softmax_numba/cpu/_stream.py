"""Streaming (non-temporal) stores for the last write of a kernel's output.

A plain store to memory that is not in cache first reads the line it writes (the
*read for ownership*), so a kernel that reads ``x`` and writes ``out`` moves three
arrays' worth of bytes, where a copy with streaming stores (glibc's ``memcpy`` on
large arrays) moves two: a kernel written with plain stores can reach at most 2/3
of the copy roofline.  :func:`stream_log_probability` writes ``dst = (src - m) - l``
(log-softmax's last pass) with
aligned vector stores marked ``!nontemporal`` (``movntps`` on x86), which skip that
read, and is the last pass of the kernels on arrays larger than the last-level
cache (``config.STREAM_MIN_BYTES``); below that, the output is better left in cache.

Streaming stores are weakly ordered: :func:`stream_fence` (a sequentially consistent
fence, ``sfence`` on x86) must follow them before another thread reads ``dst``; the
kernels call it once per chunk of rows.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64")

#: Bytes per streaming vector store (one cache line).
LINE = 64


def _is_float_row(ty) -> bool:
    return (
        isinstance(ty, types.Array)
        and ty.ndim == 1
        and ty.layout == "C"
        and ty.dtype in (types.float32, types.float64)
    )


@intrinsic
def stream_log_probability(typingctx, src, dst, a, b):
    """``dst[i] = (src[i] - a) - b`` for 1-D C-contiguous rows of one float dtype,
    with streaming stores for every whole cache line of ``dst``.

    ``src`` and ``dst`` have the same length and must not overlap.  The two
    subtractions are emitted in this order; Numba gives them the fast-math flags of
    the function that calls this, which must therefore be compiled without
    ``reassoc`` (LLVM would regroup them as ``src - (a + b)``; for log-softmax, ``a =
    max`` and ``b = log1p(s)``, the regrouped form loses ``u |a|``).
    """
    if not (_is_float_row(src) and _is_float_row(dst) and src.dtype == dst.dtype):
        return None
    if a != src.dtype or b != src.dtype:
        return None
    sig = types.void(src, dst, a, b)

    def codegen(context, builder, signature, args):
        src_arr = context.make_array(signature.args[0])(context, builder, args[0])
        dst_arr = context.make_array(signature.args[1])(context, builder, args[1])
        scale, shift = args[2], args[3]
        intp = context.get_value_type(types.intp)
        ftype = context.get_value_type(signature.args[0].dtype)
        itemsize = context.get_abi_sizeof(ftype)
        width = LINE // itemsize
        vtype = ir.VectorType(ftype, width)
        vscale = _splat(builder, vtype, scale)
        vshift = _splat(builder, vtype, shift)
        n = builder.extract_value(dst_arr.shape, 0)
        src_ptr, dst_ptr = src_arr.data, dst_arr.data

        # Entries before the first 64-byte boundary of dst (all of them if dst is
        # not even aligned to its item size, which NumPy never produces).
        address = builder.ptrtoint(dst_ptr, intp)
        misaligned = builder.and_(builder.neg(address), ir.Constant(intp, LINE - 1))
        head = builder.udiv(misaligned, ir.Constant(intp, itemsize))
        odd = builder.icmp_unsigned(
            "!=", builder.urem(address, ir.Constant(intp, itemsize)), ir.Constant(intp, 0)
        )
        head = builder.select(odd, n, head)
        head = builder.select(builder.icmp_signed("<", n, head), n, head)
        body = builder.sub(n, head)
        body = builder.sub(body, builder.srem(body, ir.Constant(intp, width)))
        body_end = builder.add(head, body)

        def scalar(start, stop):
            with cgutils.for_range_slice(builder, start, stop, ir.Constant(intp, 1)) as (i, _):
                value = builder.load(builder.gep(src_ptr, [i]))
                result = builder.fsub(builder.fsub(value, scale), shift)
                builder.store(result, builder.gep(dst_ptr, [i]))

        scalar(ir.Constant(intp, 0), head)
        nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
        with cgutils.for_range_slice(builder, head, body_end, ir.Constant(intp, width)) as (i, _):
            load_ptr = builder.bitcast(builder.gep(src_ptr, [i]), vtype.as_pointer())
            value = builder.load(load_ptr, align=itemsize)
            store_ptr = builder.bitcast(builder.gep(dst_ptr, [i]), vtype.as_pointer())
            result = builder.fsub(builder.fsub(value, vscale), vshift)
            store = builder.store(result, store_ptr, align=LINE)
            store.set_metadata("nontemporal", nontemporal)
        scalar(body_end, n)
        return context.get_dummy_value()

    return sig, codegen


def _splat(builder, vtype, value):
    vector = ir.Constant(vtype, ir.Undefined)
    for lane in range(vtype.count):
        vector = builder.insert_element(vector, value, ir.Constant(ir.IntType(32), lane))
    return vector


@intrinsic
def stream_fence(typingctx):
    """Orders earlier streaming stores before any later store (``sfence`` on x86, a
    sequentially consistent fence elsewhere)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _X86:  # sfence: the fence x86 defines for weakly ordered stores
            sfence = ir.FunctionType(ir.VoidType(), [])
            builder.call(
                cgutils.get_or_insert_function(builder.module, sfence, "llvm.x86.sse.sfence"), []
            )
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen
