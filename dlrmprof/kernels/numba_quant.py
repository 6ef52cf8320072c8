"""numba CPU embedding bag over packed tables (fp16, bf16, int8, int4; `kernels.quant`).

One loop for every kind (`_q_bags`), the fp32 kernel's shape (`numba_embedding._eb_vec_range`):
a bag's sum is one ``<D x float>`` register value; each looked-up row is loaded in its stored
width and converted in registers (`_qsimd`), never written out as float32.  int8 / int4 rows
add ``q * (w * scale)`` with one fused multiply-add per element and keep the sum of
``w * bias`` as a scalar, added once per bag; int4 keeps two ``<D/2 x float>`` sums (even
and odd columns: the low and high nibbles of the row's bytes) and interleaves them when the
bag is stored.  The kind and D are literal arguments: the kind-specific row work
(`_row_sum_zero`, `_row_sum_add`, `_row_sum_store`) is chosen while typing, and the
per-(dtype, D) entry kernels are closures over ints only, so numba's cache serves them in a
new process (`benchmarks/bench_kernel_load.py`).

Prefetch (`packed_plan`): the fp32 kernel's plan (`numba_prefetch.prefetch_plan`) taken at
the packed row's size in bytes (a D 64 int8 row is 72 bytes, two lines unless it starts on
one; an int4 row 36), with three changes measured on packed rows (docs/performance.md):

- rows under 64 bytes in a table beyond L3 / 4 take the one-line plan (two-stage, 32 ahead)
  even where some straddle a line; the two-line plan (L2 alone, 64 ahead) ran the
  one-lookup Zipf cells fast in some processes and at half torch's speed in others;
- where the fp32 plan prefetches into L2 alone (level 2), the two-stage plan runs instead:
  an L2-only prefetch helped in some processes and time windows and not at all in others
  (the one-lookup cells then ran as without prefetch), while the L1 stage of the two-stage
  plan helped in every one, and its 20-lookup DRAM cells ran as fast or faster;
- rows over 32 bytes of a table within L2 are prefetched into L1 16 lookups ahead (the
  fp32 plan prefetches nothing there): the L2 hits of int4 / int8 rows of D 64 and 128 were
  not hidden otherwise.

The prefetch of a straddling row still covers its last byte's line.

Inputs come checked by `kernels.qembedding_bag` (`quant.check_bags`); fp16 and bf16 tables
arrive as uint16 views.  Out-of-range indices are counted and skipped (the caller raises);
nothing wraps.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import literally, njit, prange
from numba.core import types
from numba.core.errors import TypingError
from numba.extending import overload

from dlrmprof.kernels._qsimd import (load_f16, load_f32, vaddscalar, vload_bf16, vload_f16,
                                     vload_u4hi, vload_u4lo, vload_u8, vstore_zip)
from dlrmprof.kernels._simd import vfmadd, vscale, vstore, vzero
from dlrmprof.kernels.numba_prefetch import (FAR, L2_BYTES, L3_BYTES, _line_aligned,
                                             _prefetch_plan, _prefetch_row, _tail_line,
                                             prefetch_first_rows)
from dlrmprof.kernels.numba_util import OPTS, PARALLEL_MIN_WORK, num_threads, raise_bad

# the sources these kernels compile in (see numba_util): update when they change
_DEPS = ("_simd.py", "_qsimd.py", "numba_prefetch.py")
_DEPS_SHA256 = "e00251e2edcb3f9b"


_KINDS = {"fp16": 0, "bf16": 1, "int8": 2, "int4": 3}
# packed tables within L2, rows over 32 bytes: rows into L1 16 lookups ahead (see the module
# note); where the fp32 plan prefetches into L2 alone: the two-stage plan instead
L2_RESIDENT_PLAN = (16, 1)
TWO_STAGE_PLAN = (16, 4)


@njit(inline="always", **OPTS)
def _scaled(v, s):
    return vscale(v, s) if s != 1.0 else v


def _layout(dtype: str, D: int):
    """(KIND, H, C, RB, LINE) of packed `dtype` rows of dimension D: the kind's number, half
    of D, storage elements per row, the packed row in bytes, storage elements per line."""
    KIND = _KINDS[dtype]
    H = D // 2
    itemsize = 2 if KIND < 2 else 1
    C = D if KIND < 2 else (D + 8 if KIND == 2 else H + 4)
    return KIND, H, C, C * itemsize, 64 // itemsize


def _row_sum_zero(kind, out, D, H):
    """A bag's running sum at its start: ``<D x float>`` zeros, int4 two ``<D/2 x float>``
    (even and odd columns).  These three are compiled per literal `kind` (`_OV` below)."""


def _row_sum_add(kind, st, data, idx, psw, p, D, H):
    """(the running sum plus row idx of `data`, weighted by psw[p] unless psw is None; the
    row's weighted bias for int8 / int4, 0 for fp16 / bf16)."""


def _row_sum_store(kind, out, b, ocol, st, bsum, scale):
    """out[b, ocol:ocol + D] = (sum + bsum) * scale (int4: even and odd columns interleaved)."""


def _zero_impl(k):
    if k == 3:
        return lambda kind, out, D, H: (vzero(out, H), vzero(out, H))
    return lambda kind, out, D, H: (vzero(out, D),)


def _add_impl(k):
    if k == 3:
        def add4(kind, st, data, idx, psw, p, D, H):
            w = _weight(psw, p)
            sc = load_f16(data, idx, H) * w
            return ((vfmadd(st[0], vload_u4lo(data, idx, 0, H), sc),
                     vfmadd(st[1], vload_u4hi(data, idx, 0, H), sc)),
                    load_f16(data, idx, H + 2) * w)
        return add4
    if k == 2:
        def add8(kind, st, data, idx, psw, p, D, H):
            w = _weight(psw, p)
            return ((vfmadd(st[0], vload_u8(data, idx, 0, D), load_f32(data, idx, D) * w),),
                    load_f32(data, idx, D + 4) * w)
        return add8
    load = vload_f16 if k == 0 else vload_bf16

    def add_half(kind, st, data, idx, psw, p, D, H):
        # fma(x, 1.0, acc) folds to an add where psw is None
        return (vfmadd(st[0], load(data, idx, 0, D), _weight(psw, p)),), np.float32(0.0)
    return add_half


def _store_impl(k):
    if k == 3:
        def store4(kind, out, b, ocol, st, bsum, scale):
            vstore_zip(out, b, ocol, _scaled(vaddscalar(st[0], bsum), scale),
                       _scaled(vaddscalar(st[1], bsum), scale))
        return store4
    if k == 2:
        def store8(kind, out, b, ocol, st, bsum, scale):
            vstore(out, b, ocol, _scaled(vaddscalar(st[0], bsum), scale))
        return store8

    def store_half(kind, out, b, ocol, st, bsum, scale):
        vstore(out, b, ocol, _scaled(st[0], scale))
    return store_half


def _weight(psw, p):
    """psw[p] as float32; 1.0 where psw is None (decided while typing)."""


@overload(_weight, inline="always", jit_options=OPTS)
def _ov_weight(psw, p):
    if isinstance(psw, types.NoneType):
        return lambda psw, p: np.float32(1.0)
    return lambda psw, p: np.float32(psw[p])


def _literal_kind(kind):
    if not isinstance(kind, types.IntegerLiteral):
        raise TypingError(f"the packed kind must be a literal int, got {kind}")
    return kind.literal_value


# each compiled per literal kind (`_KINDS`): the kernel's loop is written once, the
# kind-specific row work is picked while typing it, never by a runtime branch
_OV = dict(prefer_literal=True, inline="always", jit_options=OPTS)


@overload(_row_sum_zero, **_OV)
def _ov_zero(kind, out, D, H):
    return _zero_impl(_literal_kind(kind))


@overload(_row_sum_add, **_OV)
def _ov_add(kind, st, data, idx, psw, p, D, H):
    return _add_impl(_literal_kind(kind))


@overload(_row_sum_store, **_OV)
def _ov_store(kind, out, b, ocol, st, bsum, scale):
    return _store_impl(_literal_kind(kind))


@njit(**OPTS)
def _q_range(data, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level, ocol, KIND, D,
             H, C, LINE):
    """Bags b0..b1 of a packed table into out[b, ocol:ocol + D]; returns the number of
    out-of-range indices (skipped) and decreasing offsets.  KIND, D, H, C and LINE (see
    `_layout`) are literal: one compiled form per (dtype, D), its loop two (`_q_bags`)."""
    KIND = literally(KIND)
    D = literally(D)
    H = literally(H)
    C = literally(C)
    LINE = literally(LINE)
    if mean:
        return _q_bags(data, indices, offsets, psw, True, out, b0, b1, pf_dist, pf_level, ocol,
                       KIND, D, H, C, LINE)
    return _q_bags(data, indices, offsets, psw, False, out, b0, b1, pf_dist, pf_level, ocol,
                   KIND, D, H, C, LINE)


@njit(**OPTS)
def _q_bags(data, indices, offsets, psw, MEAN, out, b0, b1, pf_dist, pf_level, ocol, KIND, D,
            H, C, LINE):
    """`_q_range`'s loop, compiled once per literal MEAN: under a runtime `mean`, LLVM
    computed every bag's 1 / length (an int-to-double convert and a divide) and selected it
    away in sum mode, a fixed cost per bag that short bags felt most (docs/performance.md,
    "Packed embedding tables")."""
    MEAN = literally(MEAN)
    KIND = literally(KIND)
    D = literally(D)
    H = literally(H)
    C = literally(C)
    LINE = literally(LINE)
    R = data.shape[0]
    bad = 0
    p_end = offsets[b1]
    tail = _tail_line(data, pf_level, C)
    base = np.uint64(data.ctypes.data)
    if pf_level > 0:
        prefetch_first_rows(base, indices, 0, 0, offsets[b0], p_end, pf_dist, pf_level,
                            tail, C, LINE)
    for b in range(b0, b1):
        s = offsets[b]
        e = offsets[b + 1]
        if e < s:
            bad += 1
        st = _row_sum_zero(KIND, out, D, H)
        bsum = np.float32(0.0)
        for p in range(s, e):
            if pf_level > 0:
                q = p + pf_dist
                if q < p_end:
                    _prefetch_row(base, indices[np.uint64(q)], pf_level, tail, C, LINE)
                if pf_level == 4:
                    q = p + FAR * pf_dist
                    if q < p_end:
                        _prefetch_row(base, indices[np.uint64(q)], 2, tail, C, LINE)
            idx = indices[np.uint64(p)]
            if np.uint64(idx) >= np.uint64(R):
                bad += 1
                continue
            st, bias = _row_sum_add(KIND, st, data, idx, psw, p, D, H)
            bsum += bias
        scale = np.float32(1.0 / (e - s)) if MEAN and e > s else np.float32(1.0)
        _row_sum_store(KIND, out, b, ocol, st, bsum, scale)
    return bad


@njit(parallel=True, **OPTS)
def _q_par(data, indices, offsets, psw, mean, out, nparts, pf_dist, pf_level, ocol, KIND, D,
           H, C, LINE):
    """`_q_range` on `nparts` threads: static chunks of consecutive bags, one each."""
    KIND = literally(KIND)
    D = literally(D)
    H = literally(H)
    C = literally(C)
    LINE = literally(LINE)
    B = offsets.shape[0] - 1
    bad = 0
    for t in prange(nparts):
        bad += _q_range(data, indices, offsets, psw, mean, out, t * B // nparts,
                        (t + 1) * B // nparts, pf_dist, pf_level, ocol, KIND, D, H, C, LINE)
    return bad


@njit(inline="always", **OPTS)
def fp32_plan_at(nbytes, RB, aligned, l2_bytes, l3_bytes):
    """The fp32 kernel's plan (`numba_prefetch.prefetch_plan`) for a table of `nbytes` with
    rows of RB bytes; rows under a line in a table beyond L3 / 4 take the one-line plan even
    where they straddle two (see the module note)."""
    one_line = RB < 64 and nbytes > l3_bytes // 4
    return _prefetch_plan(nbytes, RB, 1, one_line or aligned, l2_bytes, l3_bytes)


@njit(inline="always", **OPTS)
def packed_plan(nbytes, RB, aligned, l2_bytes, l3_bytes):
    """(distance, level) of the row prefetch the packed kernels use: `fp32_plan_at`, but
    rows over 32 bytes of a table within L2 go into L1 16 lookups ahead, and where that plan
    prefetches into L2 alone (level 2) the two-stage plan runs instead (see the module note).
    Callable from Python too (the benchmark times both plans)."""
    if nbytes <= l2_bytes:
        return L2_RESIDENT_PLAN if RB > 32 else (0, 0)
    pf_dist, pf_level = fp32_plan_at(nbytes, RB, aligned, l2_bytes, l3_bytes)
    if pf_level == 2:
        return TWO_STAGE_PLAN
    return pf_dist, pf_level


@functools.lru_cache(maxsize=None)
def kernels(dtype: str, D: int):
    """(entry, serial range kernel) for packed `dtype` tables of dimension D.  The closures
    hold ints only and call the module-level kernels with them as literals: numba's cache
    keys a closure on its cells' values, so these load from the cache in a new process (a
    cell holding a kernel would get a fresh key in every process, and a recompile).

    serial(data, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level, ocol)
    entry(data, indices, offsets, psw, mean, out, l2_bytes, l3_bytes, threads, ocol)
    -> bad count (-1 from entry: offsets do not run from 0 to len(indices)); bag b is
    written to out[b, ocol:ocol + D] (`out` may be a wider [B, T * D] buffer)."""
    KIND, H, C, RB, LINE = _layout(dtype, D)

    @njit(**OPTS)
    def ser(data, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level, ocol):
        return _q_range(data, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level,
                        ocol, KIND, D, H, C, LINE)

    @njit(**OPTS)
    def entry(data, indices, offsets, psw, mean, out, l2_bytes, l3_bytes, threads, ocol):
        B = offsets.shape[0] - 1
        if offsets[0] != 0 or offsets[B] != indices.shape[0]:
            return -1
        pf_dist, pf_level = packed_plan(data.shape[0] * RB, RB, _line_aligned(data, C),
                                        l2_bytes, l3_bytes)
        if threads > 1 and B > 1:
            return _q_par(data, indices, offsets, psw, mean, out, min(threads, B), pf_dist,
                          pf_level, ocol, KIND, D, H, C, LINE)
        return _q_range(data, indices, offsets, psw, mean, out, 0, B, pf_dist, pf_level,
                        ocol, KIND, D, H, C, LINE)

    return entry, ser


def storage(dtype: str, data: np.ndarray) -> np.ndarray:
    """The array the kernels read: fp16 as its uint16 bits, others as they are."""
    return data.view(np.uint16) if dtype == "fp16" else data


def qembedding_bag(dtype, dim, data, indices, offsets, mode, per_sample_weights, threads=None,
                   out=None, ocol=0):
    """Pooled [B, dim] float32 from packed `data` (checked by the caller).  BadIndexError
    on out-of-range indices or decreasing offsets.  fp32 tables take the fp32 kernel.

    `out` (optional): a C-contiguous float32 [B, >= ocol + dim] buffer to write bag b into
    at out[b, ocol:ocol + dim] (one table's columns of a [B, T * D] pooled buffer: no
    per-call output, no copy); returned as given."""
    if dtype == "fp32" and out is None:
        from dlrmprof.kernels.numba_embedding import embedding_bag
        return embedding_bag(data, indices, offsets, mode, per_sample_weights)
    if dtype == "fp32":
        raise ValueError("numba_quant.qembedding_bag: out= takes packed tables, not fp32")
    B = offsets.shape[0] - 1
    if out is None:
        out = np.empty((B, dim), np.float32)
    elif (out.dtype != np.float32 or out.ndim != 2 or not out.flags.c_contiguous
          or out.shape[0] != B or ocol < 0 or out.shape[1] < ocol + dim):
        raise ValueError(f"numba_quant.qembedding_bag: out must be a C-contiguous float32 "
                         f"[{B}, >= {ocol + dim}] array, got {out.dtype} {out.shape}")
    if threads is None:
        threads = num_threads() if indices.shape[0] * dim >= PARALLEL_MIN_WORK else 1
    bad = kernels(dtype, dim)[0](storage(dtype, data), indices, offsets, per_sample_weights,
                                 mode == "mean", out, L2_BYTES, L3_BYTES, threads, ocol)
    if bad:
        raise_bad(bad)
    return out
