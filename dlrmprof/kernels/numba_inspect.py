"""Assembly of the numba CPU kernels as this process compiles them, so the SIMD sweep can
count the xmm / ymm / zmm registers a NUMBA_CPU_NAME / NUMBA_CPU_FEATURES setting gives."""

from __future__ import annotations

import numba
from numba import njit

from dlrmprof.kernels.numba_dense import _gemm
from dlrmprof.kernels.numba_embedding import _eb_fwd_ser, _eb_vec_kernels
from dlrmprof.kernels.numba_embedding_sgd import _eb_sgd_par
from dlrmprof.kernels.numba_interaction import _interaction, _interaction_bwd


def _asm_targets(dim):
    f32, i64, b1 = numba.float32, numba.int64, numba.boolean
    f2 = numba.types.Array(f32, 2, "C")
    f3 = numba.types.Array(f32, 3, "C")
    i1 = numba.types.Array(i64, 1, "C")
    none = numba.types.none
    eb_ser = _eb_vec_kernels(dim)[1] if dim % 4 == 0 else _eb_fwd_ser
    eb_sig = ((f2, i1, i1, none, b1, f2, i64, i64, i64, i64) if dim % 4 == 0
              else (f2, i1, i1, none, b1, f2, i64, i64))
    return {
        "embedding_bag": (eb_ser, eb_sig),
        "embedding_bag_sgd": (_eb_sgd_par, (f2, i1, i1, f2, none, b1, f32, i64, i64)),
        "interaction": (_interaction, (f2, f3, f2, f32)),
        "interaction_backward": (_interaction_bwd, (f2, f3, f2, f2, f3)),
        "linear": (_gemm, (f2, f2, f2)),
        "linear_backward": (_gemm, (f2, f2, f2)),
    }


def numba_asm(op, dim=64):
    """Assembly (text) of the numba CPU kernel behind `op` (float32 / int64 signature), as
    compiled by this process, so it reflects NUMBA_CPU_NAME / NUMBA_CPU_FEATURES.  For
    embedding_bag it is the kernel used for tables of width `dim` (the D-specialised one
    when dim % 4 == 0), including the functions it calls."""
    disp, sig = _asm_targets(dim)[op]
    # a cached dispatcher may hold only object code: compile an uncached twin for the text
    opts = {k: v for k, v in disp.targetoptions.items() if k != "nopython"}
    twin = njit(sig, **{**opts, "cache": False})(disp.py_func)
    return "\n".join(twin.inspect_asm().values())
