"""Tiny numba extension: fixed-length vectors held in registers, and software prefetch.

`Vec(dtype, n)` is an LLVM ``<n x dtype>`` value.  A kernel specialised for an embedding
dimension D keeps one bag's running sum as a single ``<D x float>`` value, so LLVM keeps it
in (D / 16) zmm or (D / 8) ymm registers, whatever the target's width, and every row is
added with full-width loads, no loop, no aliasing question between the table and the output.
The vector length must be a compile-time constant (a literal int: a closure constant).

`prefetch_at(addr, level)` issues ``llvm.prefetch`` (read, data) for an integer byte address
into L1 (level 1: prefetcht0) or L2 (level 2: prefetcht1); it never faults, so a prefetch of a
bad address is harmless.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.core.datamodel import models, register_default
from numba.core.errors import TypingError
from numba.extending import intrinsic

from dlrmprof.platform.tsc import cycle_counter  # noqa: F401 - the kernels take it from here


class Vec(types.Type):
    def __init__(self, dtype, count):
        self.dtype = dtype
        self.count = count
        super().__init__(name=f"Vec({dtype} x {count})")


def _chunks(count: int, itemsize: int) -> list[int] | None:
    """The power-of-two pieces (largest first, at most 64 bytes: one zmm) that a vector of
    `count` elements is held as, or None when `count` is a power of two (one LLVM vector).
    LLVM legalises vectors of other lengths badly: a ``<48 x float>`` running sum ran several
    times slower than a ``<64 x float>`` one (docs/performance.md, "Kernel and model choices")."""
    if count & (count - 1) == 0:
        return None
    widest = max(1, 64 // itemsize)
    out, left = [], count
    while left:
        c = min(widest, 1 << (left.bit_length() - 1))
        out.append(c)
        left -= c
    return out


@register_default(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        chunks = _chunks(fe_type.count, fe_type.dtype.bitwidth // 8)
        if chunks is None:
            be = ir.VectorType(elem, fe_type.count)
        else:  # a struct of power-of-two vectors, each op applied piece by piece
            be = ir.LiteralStructType([ir.VectorType(elem, c) for c in chunks])
        super().__init__(dmm, fe_type, be)


def _pieces(builder, vty, fn, *vals):
    """fn(piece type, *pieces) over a Vec's value: once for a plain vector, else per piece of
    the struct (see `_chunks`)."""
    if isinstance(vty, ir.VectorType):
        return fn(vty, *vals)
    out = ir.Constant(vty, None)
    for k, sub in enumerate(vty.elements):
        out = builder.insert_value(out, fn(sub, *[builder.extract_value(v, k) for v in vals]), k)
    return out


def _piece_pointers(builder, ptr, vty):
    """(piece index or None, pointer to that piece's first element cast to its vector type)."""
    if isinstance(vty, ir.VectorType):
        return [(None, builder.bitcast(ptr, vty.as_pointer()))]
    out, off = [], 0
    for k, sub in enumerate(vty.elements):
        p = builder.gep(ptr, [ir.Constant(ir.IntType(64), off)])
        out.append((k, builder.bitcast(p, sub.as_pointer())))
        off += sub.count
    return out


def _literal_count(count):
    if not isinstance(count, types.IntegerLiteral) or count.literal_value <= 0:
        raise TypingError(f"vector length must be a positive literal int, got {count}")
    return count.literal_value


def _item_pointer(context, builder, sig, args):
    """Pointer to arr[i, j] for (arr, i, j, ...) arguments of any integer types."""
    aryty, ity, jty = sig.args[:3]
    i = context.cast(builder, args[1], ity, types.intp)
    j = context.cast(builder, args[2], jty, types.intp)
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aryty, ary, [i, j], wraparound=False)


def _check_2d_float(arr):
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and isinstance(arr.dtype, types.Float)):
        raise TypingError(f"expected a 2-D float array, got {arr}")


@intrinsic
def vzero(typingctx, arr, count):
    """<count x arr.dtype> of zeros."""
    _check_2d_float(arr)
    vt = Vec(arr.dtype, _literal_count(count))

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(sig.return_type), None)
    return vt(arr, count), codegen


@intrinsic
def vload(typingctx, arr, i, j, count):
    """arr[i, j:j+count] as a vector (the row must be contiguous: C layout)."""
    _check_2d_float(arr)
    if arr.layout != "C":
        raise TypingError("vload needs a C-contiguous array")
    vt = Vec(arr.dtype, _literal_count(count))

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        vty = context.get_value_type(sig.return_type)
        align = context.get_abi_sizeof(context.get_value_type(sig.args[0].dtype))
        out = ir.Constant(vty, None)
        for k, p in _piece_pointers(builder, ptr, vty):
            v = builder.load(p, align=align)
            out = v if k is None else builder.insert_value(out, v, k)
        return out
    return vt(arr, i, j, count), codegen


@intrinsic
def vstore(typingctx, arr, i, j, vec):
    """arr[i, j:j+n] = vec."""
    _check_2d_float(arr)
    if not isinstance(vec, Vec) or vec.dtype != arr.dtype or arr.layout != "C":
        raise TypingError(f"vstore of {vec} into {arr}")

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        vty = context.get_value_type(sig.args[3])
        align = context.get_abi_sizeof(context.get_value_type(sig.args[0].dtype))
        for k, p in _piece_pointers(builder, ptr, vty):
            builder.store(args[3] if k is None else builder.extract_value(args[3], k), p,
                          align=align)
        return context.get_dummy_value()
    return types.void(arr, i, j, vec), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not (isinstance(a, Vec) and a == b):
        raise TypingError(f"vadd of {a} and {b}")

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.args[0])
        return _pieces(builder, vty, lambda t, x, y: builder.fadd(x, y), args[0], args[1])
    return a(a, b), codegen


def _splat(context, builder, vty, scalar_ty, scalar, target_dtype):
    s = context.cast(builder, scalar, scalar_ty, target_dtype)
    vec = ir.Constant(vty, None)
    vec = builder.insert_element(vec, s, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(vec, ir.Constant(vty, None),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vty.count), None))


def _splat_piece(context, builder, sig, args, t):
    """The scalar argument sig.args[-1] broadcast to the piece type `t` of the vector."""
    return _splat(context, builder, t, sig.args[-1], args[-1], sig.args[0].dtype)


def _vec_scalar_op(name, fn, with_acc):
    """An intrinsic `name`: (acc, x, s) -> fn(builder, t, acc, x, s) when `with_acc`, else
    (x, s) -> fn(builder, t, x, s), piece by piece (`_pieces`), with the scalar s broadcast
    to each piece; Vec operands of one type, s any float or integer scalar."""
    def typer(typingctx, *operands):
        *vecs, s = operands
        if not (isinstance(vecs[0], Vec) and all(v == vecs[0] for v in vecs)
                and isinstance(s, (types.Float, types.Integer))):
            raise TypingError(f"{name} of {', '.join(map(str, operands))}")

        def codegen(context, builder, sig, args):
            vty = context.get_value_type(sig.args[0])

            def piece(t, *vals):
                return fn(builder, t, *vals, _splat_piece(context, builder, sig, args, t))
            return _pieces(builder, vty, piece, *args[:-1])
        return vecs[0](*operands), codegen

    if with_acc:
        def impl(typingctx, acc, x, s):
            return typer(typingctx, acc, x, s)
    else:
        def impl(typingctx, x, s):
            return typer(typingctx, x, s)
    impl.__name__ = impl.__qualname__ = name
    return intrinsic(impl)


def _fused(builder, t, a, xv, sv):
    elem = {ir.FloatType(): "f32", ir.DoubleType(): "f64"}[t.element]
    fnty = ir.FunctionType(t, [t, t, t])
    fn = builder.module.declare_intrinsic(f"llvm.fma.v{t.count}{elem}", (), fnty)
    return builder.call(fn, [xv, sv, a])


# acc + x * s (s a scalar, broadcast): a multiply, then an add
vfma = _vec_scalar_op("vfma", lambda b, t, a, xv, sv: b.fadd(a, b.fmul(xv, sv)), True)
# x * s + acc as one fused multiply-add (``llvm.fma``: one rounding)
vfmadd = _vec_scalar_op("vfmadd", _fused, True)
# x * s and x + s (s a scalar, broadcast)
vscale = _vec_scalar_op("vscale", lambda b, t, xv, sv: b.fmul(xv, sv), False)
vaddscalar = _vec_scalar_op("vaddscalar", lambda b, t, xv, sv: b.fadd(xv, sv), False)


_LOCALITY = {1: 3, 2: 2}   # cache level -> llvm.prefetch locality (prefetcht0, prefetcht1)


@intrinsic(prefer_literal=True)
def prefetch_at(typingctx, addr, level):
    """Software prefetch of the byte address `addr` (an integer) into L1 (`level` 1:
    prefetcht0) or L2 (level 2: prefetcht1); `level` a literal int.

    It takes an address, not an array, for helpers inlined into a hot loop: an array argument
    to a numba function inlined at IR level (``inline="always"``) may cost an NRT_incref /
    NRT_decref call pair per call (the loop's vector registers spilled around them, an atomic
    add each) wherever numba's reference-count pruning does not remove it; an integer address
    costs nothing."""
    if not isinstance(addr, types.Integer):
        raise TypingError(f"prefetch_at needs an integer address, got {addr}")
    if not isinstance(level, types.IntegerLiteral) or level.literal_value not in _LOCALITY:
        raise TypingError(f"prefetch_at needs a literal level 1 or 2, got {level}")
    locality = _LOCALITY[level.literal_value]

    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [builder.inttoptr(args[0], i8p), i32(0), i32(locality), i32(1)])
        return context.get_dummy_value()
    return types.void(addr, level), codegen
