"""A row as the CUDA kernels read and write it: 16 bytes at a time where the memory
allows, one entry at a time at the edges; 2-byte types computed in float32.

**The partition** (:func:`span`).  A pass over the entries ``[start, stop)`` of one or
more 1-D rows (the row read, the row written) is cut in three: the *head*, from
``start`` to the first entry whose address is a multiple of 16 bytes in every array of
the pass (fewer than ``L`` entries); the *body*, ``count`` vectors of ``L = 16 /
itemsize`` entries (4 float32, 2 float64, 8 float16 or bfloat16), each read or written
by one 128-bit instruction (``ld.global.v4.f32``, ``.v2.f64``, ``.v4.u32``); the *tail*
(fewer than ``L``).  Thread ``t`` of ``T`` takes the head entries ``start + t, start +
t + T, ...``, the vectors ``t, t + T, ...`` and the tail entries likewise, so that the 32
lanes of a warp read 512 consecutive bytes per vector instruction.  Where the arrays of
a pass are not equally far from a 16-byte boundary, hold entries of different sizes or
are not contiguous, the pass has no body: every entry is then an edge entry, read one
at a time.  A row of a C-contiguous array is 16-byte aligned when its length is a
multiple of ``L`` (and the array's start is: device allocations are 256-byte aligned);
other rows get a head and a tail, and vectors in between.

**Storage and compute.**  float32 and float64 are computed in their own type.  float16
and bfloat16 are read into float32 and rounded back on store, to nearest even (LLVM's
``fptrunc`` for float16).  bfloat16 is held as ``uint16`` (NumPy and Numba have no
bfloat16 type): a bfloat16 is the top half of a float32, so ``bits << 16`` reads it
exactly, and a float32 ``b`` is stored as ``(b + 0x7FFF + ((b >> 16) & 1)) >> 16``
(round to nearest, ties to even; an overflow carries into the exponent and gives
``inf``, as it should), a NaN as ``(b >> 16) | 0x40`` (a quiet NaN of the same sign:
rounding could turn a NaN whose payload sits in the low half into ``inf``).
A ``uint16`` array passed to these functions *is* bfloat16.

**The loops** run one pass of one thread over its entries of a partition ``part``
(the tuple :func:`span` returns), each built once per step function:

- :func:`fold`: ``acc = step(acc, j, x_j, params)`` (a tuple state, such as ``(m, s,
  nan)``), :func:`fold2` the same over two rows;
- :func:`mapping`: ``out_j = fn(j, x_j, params)``, :func:`mapping2` from two rows,
  :func:`generate` from ``j`` alone (the row kept in shared memory);
- :func:`owner`: the thread of a partition that holds entry ``j``.

A thread reads and writes the same entries in every pass over one partition, so a
kernel may write its result over its input (``grad_out=logits``) or keep the entries
it read in shared memory for its next pass, with no barrier in between (another row
may be cut elsewhere: a kernel that keeps its slots from row to row ends each row with
a barrier).

On a GPU, :func:`load`, :func:`store`, :func:`load_wide`, :func:`store_wide`,
:func:`lanes` and :func:`address` are Numba intrinsics (LLVM IR; :data:`CODEGEN` holds
the IR builders, which ``tests/test_cuda_bf16.py`` also compiles for the CPU to check
the conversions bit for bit).  The loops and :func:`span` are device functions that
Numba compiles once per signature and links (NVVM then inlines them: the PTX has no
calls); inlined by Numba into every kernel (``inline="always"``) they doubled the
compile gate's time.  They hold no shared array, so linking them is safe (see
:mod:`softmax_numba.gpu._reduce` on what must be inlined).

On the CUDA simulator the primitives are Python functions on NumPy scalars, and each
wide access asserts that its address is a multiple of 16 bytes.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
from llvmlite import ir
from numba import types

#: Bytes of one wide access.
WIDTH = 16
#: The bfloat16 rounding constants: half an ulp less one, and the quiet bit of a NaN.
_ROUND, _QUIET = 0x7FFF, 0x40


def compute_type(dtype):
    """The Numba type in which entries of ``dtype`` are computed."""
    if dtype in (types.float16, types.uint16):
        return types.float32
    if dtype in (types.float32, types.float64):
        return dtype
    raise TypeError(f"a row of {dtype}: float16, bfloat16 (uint16), float32 or float64 only")


def lanes_of(dtype) -> int:
    """Entries of ``dtype`` in :data:`WIDTH` bytes."""
    return WIDTH // (dtype.bitwidth // 8)


# ----------------------------------------------------------------------------- IR
def _i(bits: int, value: int):
    return ir.Constant(ir.IntType(bits), value)


def widen_ir(builder, value, dtype):
    """IR: an entry of ``dtype`` (its LLVM value) as its :func:`compute_type`."""
    if dtype == types.float16:  # Numba holds a float16 as i16
        if value.type != ir.HalfType():
            value = builder.bitcast(value, ir.HalfType())
        return builder.fpext(value, ir.FloatType())
    if dtype == types.uint16:
        bits = builder.shl(builder.zext(value, ir.IntType(32)), _i(32, 16))
        return builder.bitcast(bits, ir.FloatType())
    return value


def narrow_ir(builder, value, dtype):
    """IR: a value of ``dtype``'s :func:`compute_type` rounded to ``dtype`` (a 2-byte
    type as ``i16``)."""
    if dtype == types.float16:
        return builder.bitcast(builder.fptrunc(value, ir.HalfType()), ir.IntType(16))
    if dtype == types.uint16:
        bits = builder.bitcast(value, ir.IntType(32))
        high = builder.lshr(bits, _i(32, 16))
        odd = builder.and_(high, _i(32, 1))
        rounded = builder.lshr(builder.add(builder.add(bits, _i(32, _ROUND)), odd), _i(32, 16))
        quiet = builder.or_(high, _i(32, _QUIET))
        nan = builder.fcmp_unordered("uno", value, value)
        return builder.trunc(builder.select(nan, quiet, rounded), ir.IntType(16))
    return value


def _byte_pointer(context, builder, aty, array, index, ity):
    """IR: the address of ``array[index]`` (a 1-D array of any stride), as ``i8*``."""
    ary = context.make_array(aty)(context, builder, array)
    stride = builder.extract_value(ary.strides, 0)
    index = context.cast(builder, index, ity, types.intp)
    base = builder.bitcast(ary.data, ir.IntType(8).as_pointer())
    return builder.gep(base, [builder.mul(index, stride)])


def _check_row(aty):
    if not isinstance(aty, types.Array) or aty.ndim != 1:
        raise TypeError(f"a 1-D array, not {aty}")
    return compute_type(aty.dtype)


def _lanes(context, builder, sig, args):
    return context.get_constant(types.intp, lanes_of(sig.args[0].dtype))


def _address(context, builder, sig, args):
    aty, ity = sig.args
    ptr = _byte_pointer(context, builder, aty, args[0], args[1], ity)
    return builder.ptrtoint(ptr, context.get_value_type(types.intp))


def _load(context, builder, sig, args):
    aty, ity = sig.args
    ptr = _byte_pointer(context, builder, aty, args[0], args[1], ity)
    value_type = context.get_data_type(aty.dtype)
    value = builder.load(builder.bitcast(ptr, value_type.as_pointer()))
    return widen_ir(builder, value, aty.dtype)


def _store(context, builder, sig, args):
    aty, ity, vty = sig.args
    ptr = _byte_pointer(context, builder, aty, args[0], args[1], ity)
    value = context.cast(builder, args[2], vty, compute_type(aty.dtype))
    narrowed = narrow_ir(builder, value, aty.dtype)
    builder.store(narrowed, builder.bitcast(ptr, narrowed.type.as_pointer()))
    return context.get_dummy_value()


def _vector_type(context, dtype):
    """The LLVM vector that one wide access moves: the entries themselves for 4- and
    8-byte types, four 32-bit words (two entries each) for 2-byte ones."""
    if dtype.bitwidth == 16:
        return ir.VectorType(ir.IntType(32), 4)
    return ir.VectorType(context.get_value_type(dtype), lanes_of(dtype))


def _load_wide(context, builder, sig, args):
    aty, ity = sig.args
    dtype = aty.dtype
    ptr = _byte_pointer(context, builder, aty, args[0], args[1], ity)
    vty = _vector_type(context, dtype)
    vector = builder.load(builder.bitcast(ptr, vty.as_pointer()), align=WIDTH)
    values = []
    for k in range(vty.count):
        element = builder.extract_element(vector, _i(32, k))
        if dtype.bitwidth == 16:  # little-endian: the entry 2k in the low half
            low = builder.trunc(element, ir.IntType(16))
            high = builder.trunc(builder.lshr(element, _i(32, 16)), ir.IntType(16))
            values.append(widen_ir(builder, low, dtype))
            values.append(widen_ir(builder, high, dtype))
        else:
            values.append(element)
    return context.make_tuple(builder, sig.return_type, values)


def _store_wide(context, builder, sig, args):
    aty, ity, tty = sig.args
    dtype = aty.dtype
    ptr = _byte_pointer(context, builder, aty, args[0], args[1], ity)
    vty = _vector_type(context, dtype)
    narrowed = []
    for k in range(lanes_of(dtype)):
        value = builder.extract_value(args[2], k)
        value = context.cast(builder, value, tty[k], compute_type(dtype))
        narrowed.append(narrow_ir(builder, value, dtype))
    vector = ir.Constant(vty, ir.Undefined)
    for k in range(vty.count):
        if dtype.bitwidth == 16:
            low, high = (builder.zext(h, ir.IntType(32)) for h in narrowed[2 * k : 2 * k + 2])
            element = builder.or_(low, builder.shl(high, _i(32, 16)))
        else:
            element = narrowed[k]
        vector = builder.insert_element(vector, element, _i(32, k))
    builder.store(vector, builder.bitcast(ptr, vty.as_pointer()), align=WIDTH)
    return context.get_dummy_value()


def _wide_tuple(aty):
    return types.UniTuple(_check_row(aty), lanes_of(aty.dtype))


def _check_store_wide(aty, tty):
    _check_row(aty)
    if not isinstance(tty, types.BaseTuple) or len(tty) != lanes_of(aty.dtype):
        raise TypeError(f"store_wide of {lanes_of(aty.dtype)} values into {aty}, got {tty}")


#: The IR builders of the intrinsics, by name.
CODEGEN = {
    "lanes": _lanes,
    "address": _address,
    "load": _load,
    "store": _store,
    "load_wide": _load_wide,
    "store_wide": _store_wide,
}


def intrinsics(intrinsic) -> SimpleNamespace:
    """:data:`CODEGEN` as intrinsics of one target (``numba.cuda.extending.intrinsic``,
    or ``numba.extending.intrinsic`` for the CPU tests of the IR)."""

    @intrinsic
    def lanes(typingctx, a):
        _check_row(a)
        return types.intp(a), _lanes

    @intrinsic
    def address(typingctx, a, j):
        _check_row(a)
        return types.intp(a, j), _address

    @intrinsic
    def load(typingctx, a, j):
        return _check_row(a)(a, j), _load

    @intrinsic
    def store(typingctx, a, j, value):
        _check_row(a)
        return types.none(a, j, value), _store

    @intrinsic
    def load_wide(typingctx, a, j):
        return _wide_tuple(a)(a, j), _load_wide

    @intrinsic
    def store_wide(typingctx, a, j, values):
        _check_store_wide(a, values)
        return types.none(a, j, values), _store_wide

    return SimpleNamespace(lanes=lanes, address=address, load=load, store=store,
                           load_wide=load_wide, store_wide=store_wide)  # fmt: skip


# ----------------------------------------------------------------------------- simulator
def _host(a) -> np.ndarray:
    """The NumPy array under the simulator's wrappers of a kernel's array."""
    while not isinstance(a, np.ndarray):
        a = vars(a)["_item"] if "_item" in vars(a) else vars(a)["_ary"]
    return a


def bfloat16_bits(value) -> np.uint16:
    """A float32 rounded to bfloat16 (nearest, ties to even; NaN kept), its bits: the
    simulator's twin of :func:`narrow_ir`."""
    bits = int(np.float32(value).view(np.uint32))
    high = bits >> 16
    if (bits & 0x7FFFFFFF) > 0x7F800000:
        return np.uint16(high | _QUIET)
    return np.uint16((bits + _ROUND + (high & 1)) >> 16)


def _sim_widen(value, dtype):
    if dtype == np.uint16:
        return np.uint32(int(value) << 16).view(np.float32)
    if dtype == np.float16:
        return np.float32(value)
    return value


def _sim_narrow(value, dtype):
    if dtype == np.uint16:
        return bfloat16_bits(value)
    if dtype == np.float16:
        return np.float16(np.float32(value))
    return dtype.type(value)


def _simulated() -> SimpleNamespace:
    def lanes(a):
        return WIDTH // _host(a).itemsize

    def address(a, j):
        h = _host(a)
        return h.__array_interface__["data"][0] + int(j) * h.strides[0]

    def load(a, j):
        h = _host(a)
        return _sim_widen(h[j], h.dtype)

    def store(a, j, value):
        h = _host(a)
        h[j] = _sim_narrow(value, h.dtype)

    def load_wide(a, j):
        assert address(a, j) % WIDTH == 0, "a wide load off a 16-byte boundary"
        return tuple(load(a, j + k) for k in range(lanes(a)))

    def store_wide(a, j, values):
        assert address(a, j) % WIDTH == 0, "a wide store off a 16-byte boundary"
        assert len(values) == lanes(a)
        for k, value in enumerate(values):
            store(a, j + k, value)

    return SimpleNamespace(lanes=lanes, address=address, load=load, store=store,
                           load_wide=load_wide, store_wide=store_wide)  # fmt: skip


# ----------------------------------------------------------------------------- loops
@functools.cache
def _build(simulated: bool) -> SimpleNamespace:
    from numba import cuda

    if simulated:
        prim = _simulated()
    else:
        from numba.cuda.extending import intrinsic

        prim = intrinsics(intrinsic)
    address = prim.address
    jit = cuda.jit(device=True)  # compiled once a signature, linked (see the module notes)

    @jit
    def span(a, b, c, start, stop):
        """``(start, body, count, stop)``: the partition of ``[start, stop)`` of the
        rows ``a``, ``b`` and ``c`` (the same array twice for fewer): the body starts at
        ``body`` and holds ``count`` vectors (0 where the rows do not line up)."""
        size = a.itemsize
        body = stop
        count = 0
        n = stop - start
        if (
            n > 0
            and b.itemsize == size
            and c.itemsize == size
            and a.strides[0] == size
            and b.strides[0] == size
            and c.strides[0] == size
        ):
            off = address(a, start) % WIDTH
            if off % size == 0 and address(b, start) % WIDTH == off:
                if address(c, start) % WIDTH == off:
                    head = ((WIDTH - off) % WIDTH) // size
                    if head < n:
                        body = start + head
                        count = (n - head) // (WIDTH // size)
        return start, body, count, stop

    @jit
    def owner(part, width, j, threads):
        """The thread (of ``threads``) whose share of ``part`` holds entry ``j``, for
        rows of ``width`` lanes."""
        start, body, count, _stop = part
        if j < body:
            return (j - start) % threads
        tail = body + count * width
        if j < tail:
            return ((j - body) // width) % threads
        return (j - tail) % threads

    @jit
    def whole(a):
        """The partition of all of row ``a``."""
        return span(a, a, a, 0, a.size)

    return SimpleNamespace(span=span, owner=owner, whole=whole, jit=jit, **vars(prim))


def build() -> SimpleNamespace:
    """The primitives and :func:`span`, for the target in use (a GPU or the simulator)."""
    from softmax_numba.gpu import _runtime

    return _build(_runtime.simulated())


def fold(step):
    """``run(a, part, t, threads, acc, params)``: ``acc = step(acc, j, a_j, params)``
    over thread ``t``'s entries of ``part``, in order within each part; the last
    ``acc``."""
    w = build()
    load, load_wide, lanes = w.load, w.load_wide, w.lanes

    @w.jit
    def run(a, part, t, threads, acc, params):
        start, body, count, stop = part
        for j in range(start + t, body, threads):
            acc = step(acc, j, load(a, j), params)
        width = lanes(a)
        for q in range(t, count, threads):
            j = body + q * width
            v = load_wide(a, j)
            for k in range(width):
                acc = step(acc, j + k, v[k], params)
        for j in range(body + count * width + t, stop, threads):
            acc = step(acc, j, load(a, j), params)
        return acc

    return run


def fold2(step):
    """:func:`fold` over two rows: ``acc = step(acc, j, a_j, b_j, params)``."""
    w = build()
    load, load_wide, lanes = w.load, w.load_wide, w.lanes

    @w.jit
    def run(a, b, part, t, threads, acc, params):
        start, body, count, stop = part
        for j in range(start + t, body, threads):
            acc = step(acc, j, load(a, j), load(b, j), params)
        width = lanes(a)
        for q in range(t, count, threads):
            j = body + q * width
            va = load_wide(a, j)
            vb = load_wide(b, j)
            for k in range(width):
                acc = step(acc, j + k, va[k], vb[k], params)
        for j in range(body + count * width + t, stop, threads):
            acc = step(acc, j, load(a, j), load(b, j), params)
        return acc

    return run


def _each(fn, arity: int):
    """``apply(j, a, params)`` (``arity`` 1), ``apply(j, a, b, params)`` (2): the tuple
    of ``fn(j + k, a[k], b[k], params)`` over the lanes of the tuples ``a`` and ``b``;
    ``apply(j, out, params)`` (0): of ``fn(j + k, params)`` over the lanes of the array
    ``out``.  On a GPU an overload writes the tuple out for the lanes of its types."""
    from softmax_numba.gpu import _runtime

    if _runtime.simulated():
        if arity == 0:
            return lambda j, out, params: tuple(fn(j + k, params) for k in range(len_of(out)))
        if arity == 1:
            return lambda j, a, params: tuple(fn(j + k, v, params) for k, v in enumerate(a))
        return lambda j, a, b, params: tuple(
            fn(j + k, u, v, params) for k, (u, v) in enumerate(zip(a, b, strict=True))
        )
    from numba.cuda.extending import overload

    rows = "a, b" if arity == 2 else "a"

    def source(count: int) -> str:
        values = {0: "", 1: "a[{k}], ", 2: "a[{k}], b[{k}], "}[arity]
        terms = ", ".join(f"fn(j + {k}, {values.format(k=k)}params)" for k in range(count))
        return f"lambda j, {rows}, params: ({terms},)"

    def implement(j, first, params):
        count = lanes_of(first.dtype) if arity == 0 else len(first)
        return eval(source(count), {"fn": fn})  # the code written above

    if arity == 2:

        def apply(j, a, b, params):  # a stub, typed by the overload
            raise NotImplementedError

        overload(apply, inline="always")(lambda j, a, b, params: implement(j, a, params))
    else:

        def apply(j, a, params):  # a stub, typed by the overload
            raise NotImplementedError

        overload(apply, inline="always")(lambda j, a, params: implement(j, a, params))
    return apply


def len_of(out) -> int:
    """Lanes of an array on the simulator."""
    return WIDTH // _host(out).itemsize


def mapping(fn):
    """``run(a, out, part, t, threads, params)``: ``out_j = fn(j, a_j, params)`` over
    thread ``t``'s entries of ``part`` (a partition of ``a`` and ``out``)."""
    w = build()
    load, store, load_wide, store_wide, lanes = w.load, w.store, w.load_wide, w.store_wide, w.lanes
    apply = _each(fn, 1)

    @w.jit
    def run(a, out, part, t, threads, params):
        start, body, count, stop = part
        for j in range(start + t, body, threads):
            store(out, j, fn(j, load(a, j), params))
        width = lanes(a)
        for q in range(t, count, threads):
            j = body + q * width
            store_wide(out, j, apply(j, load_wide(a, j), params))
        for j in range(body + count * width + t, stop, threads):
            store(out, j, fn(j, load(a, j), params))

    return run


def mapping2(fn):
    """``run(a, b, out, part, t, threads, params)``: ``out_j = fn(j, a_j, b_j, params)``."""
    w = build()
    load, store, load_wide, store_wide, lanes = w.load, w.store, w.load_wide, w.store_wide, w.lanes
    apply = _each(fn, 2)

    @w.jit
    def run(a, b, out, part, t, threads, params):
        start, body, count, stop = part
        for j in range(start + t, body, threads):
            store(out, j, fn(j, load(a, j), load(b, j), params))
        width = lanes(a)
        for q in range(t, count, threads):
            j = body + q * width
            store_wide(out, j, apply(j, load_wide(a, j), load_wide(b, j), params))
        for j in range(body + count * width + t, stop, threads):
            store(out, j, fn(j, load(a, j), load(b, j), params))

    return run


def generate(fn):
    """``run(out, part, t, threads, params)``: ``out_j = fn(j, params)``."""
    w = build()
    store, store_wide, lanes = w.store, w.store_wide, w.lanes
    apply = _each(fn, 0)

    @w.jit
    def run(out, part, t, threads, params):
        start, body, count, stop = part
        for j in range(start + t, body, threads):
            store(out, j, fn(j, params))
        width = lanes(out)
        for q in range(t, count, threads):
            j = body + q * width
            store_wide(out, j, apply(j, out, params))
        for j in range(body + count * width + t, stop, threads):
            store(out, j, fn(j, params))

    return run
