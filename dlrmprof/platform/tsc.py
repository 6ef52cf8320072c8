"""The CPU's time-stamp counter from compiled code (numba): `cycle_counter()` inside a
jitted function (the kernels time each table with it), `read_tsc()` from Python.  Only
meaningful where `dlrmprof.platform.invariant_tsc()` holds."""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def cycle_counter(typingctx):
    """The time-stamp counter (``llvm.readcyclecounter``: rdtsc on x86-64)."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", (), fnty)
        return builder.call(fn, [])
    return types.int64(), codegen


@njit(cache=True, nogil=True)
def read_tsc():
    return cycle_counter()
