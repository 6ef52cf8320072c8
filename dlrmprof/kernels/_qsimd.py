"""numba intrinsics that load a packed embedding row straight into float32 registers.

Each returns `_simd.Vec(float32, n)` (the running-sum type of the fp32 kernels) from a row
stored in fewer bytes, converting in registers (no float32 copy of the row is written):

    vload_f16(a, i, j, n)    a: uint16 [R, C] holding IEEE half   fpext (vcvtph2ps)
    vload_bf16(a, i, j, n)   a: uint16 [R, C] holding bfloat16    zext, shift left 16
    vload_u8(a, i, j, n)     a: uint8 [R, C]                      uitofp
    vload_u4lo / vload_u4hi  a: uint8 [R, C], n bytes -> the n low / high nibbles
                             (each byte widened to 32 bits first, then masked / shifted:
                             one vpmovzxbd per 16 bytes, no byte shifts or extracts)
    load_f32(a, i, j)        the float32 at bytes a[i, j:j+4] (a row's int8 scale or bias)
    load_f16(a, i, j)        the half at bytes a[i, j:j+2], as float32 (int4's scale, bias)
    vstore_zip(out, i, j, lo, hi)   out[i, j+2k] = lo[k], out[i, j+2k+1] = hi[k]
    vaddscalar(v, s)         v + s in every lane (`_simd`'s, re-exported)

Vectors whose length is not a power of two are `_simd`'s struct of power-of-two pieces;
these intrinsics load and store piece by piece, as `_simd.vload` does.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from dlrmprof.kernels._simd import Vec, _item_pointer, _literal_count, vaddscalar  # noqa: F401

_F32 = ir.FloatType()


def _check_2d(arr, kind):
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.dtype == kind
            and arr.layout == "C"):
        raise TypingError(f"expected a C-contiguous 2-D {kind} array, got {arr}")


def _piece_list(vty):
    """[(piece index or None, lanes, first lane)] of a Vec's LLVM type."""
    if isinstance(vty, ir.VectorType):
        return [(None, vty.count, 0)]
    out, off = [], 0
    for k, sub in enumerate(vty.elements):
        out.append((k, sub.count, off))
        off += sub.count
    return out


def _load_vec(context, builder, sig, args, src_bits, convert, stride=1):
    """A Vec(float32, n) from the array's item pointer: per piece of `lanes` lanes starting at
    lane `first`, load `lanes` integers of `src_bits` bits at element first * stride and
    `convert` them to <lanes x float>."""
    ptr = _item_pointer(context, builder, sig, args)
    vty = context.get_value_type(sig.return_type)
    ity = ir.IntType(src_bits)
    out = ir.Constant(vty, None)
    for k, lanes, first in _piece_list(vty):
        p = builder.gep(ptr, [ir.Constant(ir.IntType(64), first * stride)])
        src = ir.VectorType(ity, lanes)
        raw = builder.load(builder.bitcast(p, src.as_pointer()), align=1)
        v = convert(builder, raw, lanes)
        out = v if k is None else builder.insert_value(out, v, k)
    return out


def _loader(arr, count, kind, bits, convert):
    _check_2d(arr, kind)
    vt = Vec(types.float32, _literal_count(count))

    def codegen(context, builder, sig, args):
        return _load_vec(context, builder, sig, args, bits, convert)
    return vt, codegen


def _cvt_f16(builder, raw, lanes):
    half = builder.bitcast(raw, ir.VectorType(ir.HalfType(), lanes))
    return builder.fpext(half, ir.VectorType(_F32, lanes))


def _cvt_bf16(builder, raw, lanes):
    wide = builder.zext(raw, ir.VectorType(ir.IntType(32), lanes))
    shifted = builder.shl(wide, ir.Constant(ir.VectorType(ir.IntType(32), lanes), 16))
    return builder.bitcast(shifted, ir.VectorType(_F32, lanes))


def _cvt_u8(builder, raw, lanes):
    return builder.uitofp(raw, ir.VectorType(_F32, lanes))


def _cvt_lo(builder, raw, lanes):
    i32 = ir.VectorType(ir.IntType(32), lanes)
    lo = builder.and_(builder.zext(raw, i32), ir.Constant(i32, 15))
    return builder.sitofp(lo, ir.VectorType(_F32, lanes))


def _cvt_hi(builder, raw, lanes):
    i32 = ir.VectorType(ir.IntType(32), lanes)
    hi = builder.lshr(builder.zext(raw, i32), ir.Constant(i32, 4))
    return builder.sitofp(hi, ir.VectorType(_F32, lanes))


def _loader_intrinsic(name, kind, bits, convert):
    """An intrinsic `name`(arr, i, j, n): n `bits`-bit elements of a 2-D `kind` array from
    arr[i, j], `convert`ed to a Vec(float32, n)."""
    def impl(typingctx, arr, i, j, count):
        vt, codegen = _loader(arr, count, kind, bits, convert)
        return vt(arr, i, j, count), codegen
    impl.__name__ = impl.__qualname__ = name
    return intrinsic(impl)


vload_f16 = _loader_intrinsic("vload_f16", types.uint16, 16, _cvt_f16)
vload_bf16 = _loader_intrinsic("vload_bf16", types.uint16, 16, _cvt_bf16)
vload_u8 = _loader_intrinsic("vload_u8", types.uint8, 8, _cvt_u8)
vload_u4lo = _loader_intrinsic("vload_u4lo", types.uint8, 8, _cvt_lo)
vload_u4hi = _loader_intrinsic("vload_u4hi", types.uint8, 8, _cvt_hi)


def _scalar_at(arr, bits, fty):
    _check_2d(arr, types.uint8)

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        v = builder.load(builder.bitcast(ptr, fty.as_pointer()), align=1)
        return v if fty == _F32 else builder.fpext(v, _F32)
    return codegen


@intrinsic
def load_f32(typingctx, arr, i, j):
    return types.float32(arr, i, j), _scalar_at(arr, 32, _F32)


@intrinsic
def load_f16(typingctx, arr, i, j):
    return types.float32(arr, i, j), _scalar_at(arr, 16, ir.HalfType())


@intrinsic
def vstore_zip(typingctx, arr, i, j, lo, hi):
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.dtype == types.float32
            and arr.layout == "C" and isinstance(lo, Vec) and lo == hi
            and lo.dtype == types.float32):
        raise TypingError(f"vstore_zip of {lo}, {hi} into {arr}")

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        vty = context.get_value_type(sig.args[3])
        for k, lanes, first in _piece_list(vty):
            a = args[3] if k is None else builder.extract_value(args[3], k)
            b = args[4] if k is None else builder.extract_value(args[4], k)
            mask = [x for m in range(lanes) for x in (m, lanes + m)]
            zipped = builder.shuffle_vector(
                a, b, ir.Constant(ir.VectorType(ir.IntType(32), 2 * lanes), mask))
            p = builder.gep(ptr, [ir.Constant(ir.IntType(64), 2 * first)])
            builder.store(zipped, builder.bitcast(p, zipped.type.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.void(arr, i, j, lo, hi), codegen
