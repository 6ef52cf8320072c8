"""numba CPU embedding bag over packed tables (fp16, bf16, int8, int4; `kernels.quant`).

One kernel per (dtype, D), the fp32 kernel's shape (`numba_embedding._eb_vec_range`): a
bag's sum is one ``<D x float>`` register value; each looked-up row is loaded in its stored
width and converted in registers (`_qsimd`), never written out as float32.  int8 / int4 rows
add ``q * (w * scale)`` with one fused multiply-add per element and keep the sum of
``w * bias`` as a scalar, added once per bag; int4 keeps two ``<D/2 x float>`` sums (even
and odd columns: the low and high nibbles of the row's bytes) and interleaves them when the
bag is stored.  Rows `pf_dist` lookups ahead are prefetched by the fp32 kernel's plan
(`numba_prefetch.prefetch_plan`) taken at the packed row's size in bytes: a D 64 int8 row is
72 bytes (two lines unless it starts on one), an int4 row 36.  Rows under 64 bytes in a
table beyond L3 / 4 take the one-line plan (two-stage, 32 ahead) even where some straddle a
line: under the two-line plan (L2, 64 ahead) the one-lookup Zipf cells ran fast in some
processes and at half torch's speed in others, as fp32 D 16 rows did; within L3 / 4 the
two-line plan stays, which ran the 20-lookup cells faster (measurements:
docs/performance.md).  The prefetch of a straddling row still covers its last byte's line.

Inputs come checked by `kernels.qembedding_bag` (`quant.check_bags`); fp16 and bf16 tables
arrive as uint16 views.  Out-of-range indices are counted and skipped (the caller raises);
nothing wraps.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from dlrmprof.kernels._qsimd import (load_f16, load_f32, vaddscalar, vload_bf16, vload_f16,
                                     vload_u4hi, vload_u4lo, vload_u8, vstore_zip)
from dlrmprof.kernels._simd import vadd, vfmadd, vscale, vstore, vzero
from dlrmprof.kernels.numba_prefetch import (FAR, L2_BYTES, L3_BYTES, _line_aligned,
                                             _prefetch_plan, _prefetch_row, _tail_line,
                                             prefetch_first_rows)
from dlrmprof.kernels.numba_util import OPTS, PARALLEL_MIN_WORK, num_threads, raise_bad

# the sources these kernels compile in (see numba_util): update when they change
_DEPS = ("_simd.py", "_qsimd.py", "numba_prefetch.py")
_DEPS_SHA256 = "c457a81310a1d228"


_KINDS = {"fp16": 0, "bf16": 1, "int8": 2, "int4": 3}


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


@functools.lru_cache(maxsize=None)
def _serial(dtype: str, D: int):
    """The serial range kernel of `kernels` (closure constants only: numba's cache keys a
    closure on its values, and an njit function there would get a fresh key per process)."""
    KIND, H, C, RB, LINE = _layout(dtype, D)

    @njit(**OPTS)
    def ser(data, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level, ocol):
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
            if KIND == 3:
                lo = vzero(out, H)
                hi = vzero(out, H)
            else:
                acc = vzero(out, D)
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
                w = np.float32(1.0) if psw is None else np.float32(psw[p])
                if KIND == 0:
                    row = vload_f16(data, idx, 0, D)
                    acc = vadd(acc, row) if psw is None else vfmadd(acc, row, w)
                elif KIND == 1:
                    row = vload_bf16(data, idx, 0, D)
                    acc = vadd(acc, row) if psw is None else vfmadd(acc, row, w)
                elif KIND == 2:
                    sc = load_f32(data, idx, D) * w
                    bsum += load_f32(data, idx, D + 4) * w
                    acc = vfmadd(acc, vload_u8(data, idx, 0, D), sc)
                else:
                    sc = load_f16(data, idx, H) * w
                    bsum += load_f16(data, idx, H + 2) * w
                    lo = vfmadd(lo, vload_u4lo(data, idx, 0, H), sc)
                    hi = vfmadd(hi, vload_u4hi(data, idx, 0, H), sc)
            scale = np.float32(1.0 / (e - s)) if mean and e > s else np.float32(1.0)
            if KIND == 3:
                vstore_zip(out, b, ocol, _scaled(vaddscalar(lo, bsum), scale),
                           _scaled(vaddscalar(hi, bsum), scale))
            elif KIND == 2:
                vstore(out, b, ocol, _scaled(vaddscalar(acc, bsum), scale))
            else:
                vstore(out, b, ocol, _scaled(acc, scale))
        return bad

    return ser


@functools.lru_cache(maxsize=None)
def kernels(dtype: str, D: int):
    """(entry, serial range kernel) for packed `dtype` tables of dimension D; RB (the packed
    row's bytes) and D are closure constants, so each (dtype, D) compiles (and caches) once.

    serial(data, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level, ocol)
    entry(data, indices, offsets, psw, mean, out, l2_bytes, l3_bytes, threads, ocol)
    -> bad count (-1 from entry: offsets do not run from 0 to len(indices)); bag b is
    written to out[b, ocol:ocol + D] (`out` may be a wider [B, T * D] buffer)."""
    _, _, C, RB, _ = _layout(dtype, D)
    ser = _serial(dtype, D)

    @njit(parallel=True, **OPTS)
    def par(data, indices, offsets, psw, mean, out, nparts, pf_dist, pf_level, ocol):
        B = offsets.shape[0] - 1
        bad = 0
        for t in prange(nparts):   # static chunks of consecutive bags, one per thread
            bad += ser(data, indices, offsets, psw, mean, out, t * B // nparts,
                       (t + 1) * B // nparts, pf_dist, pf_level, ocol)
        return bad

    @njit(**OPTS)
    def entry(data, indices, offsets, psw, mean, out, l2_bytes, l3_bytes, threads, ocol):
        B = offsets.shape[0] - 1
        if offsets[0] != 0 or offsets[B] != indices.shape[0]:
            return -1
        # the fp32 kernel's plan, at the packed row's bytes (a row of RB one-byte "elements");
        # beyond L3 / 4 a row under a line takes the one-line plan even where it straddles
        # two (see the module note)
        nbytes = data.shape[0] * RB
        one_line = RB < 64 and nbytes > l3_bytes // 4
        pf_dist, pf_level = _prefetch_plan(nbytes, RB, 1, one_line or _line_aligned(data, C),
                                           l2_bytes, l3_bytes)
        if threads > 1 and B > 1:
            return par(data, indices, offsets, psw, mean, out, min(threads, B), pf_dist,
                       pf_level, ocol)
        return ser(data, indices, offsets, psw, mean, out, 0, B, pf_dist, pf_level, ocol)

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
