"""numba CPU embedding-bag forward (parallel over bags with `prange`).

Two kernels: a general one (any D, any float dtype, any layout) and a D-specialised one
(`specialised`) that keeps a bag's sum as one ``<D x float>`` register value (`_simd`) and
prefetches the rows ahead of the current lookup (`numba_prefetch`).  D is a closure constant
of the specialised kernels: one cached specialisation per D.  `embedding_bag_tables` pools
the bags of several tables held in one buffer in one call, timing each table with the
time-stamp counter.  Inputs are numpy arrays already validated by `dlrmprof.kernels`;
out-of-range indices are counted and skipped (the entry points raise), nothing wraps.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import literally, njit, prange

from dlrmprof.kernels import numba_util as nu
from dlrmprof.kernels._simd import cycle_counter, vadd, vfma, vload, vscale, vstore, vzero
from dlrmprof.kernels.numba_prefetch import (FAR, L2_BYTES, L3_BYTES, _line_aligned,
                                             _prefetch_plan, _prefetch_row, _tail_line,
                                             prefetch_first_rows)
from dlrmprof.kernels.numba_util import OPTS, PARALLEL_MIN_WORK, num_threads, raise_bad

# the sources these kernels compile in (see numba_util): update when they change
_DEPS = ("_simd.py", "numba_prefetch.py")
_DEPS_SHA256 = "bd17819262b94ecc"


@njit(**OPTS)
def _eb_bag(weight, indices, offsets, psw, mean, b, out):
    """Pool bag b into out[b]; returns the number of out-of-range indices (skipped)."""
    R, D = weight.shape
    s = offsets[b]
    e = offsets[b + 1]
    for k in range(D):
        out[b, k] = 0.0
    bad = 0
    for p in range(s, e):
        idx = indices[p]
        if idx < 0 or idx >= R:
            bad += 1
            continue
        if psw is None:
            for k in range(D):
                out[b, k] += weight[idx, k]
        else:
            w = psw[p]
            for k in range(D):
                out[b, k] += w * weight[idx, k]
    if mean and e > s:
        inv = 1.0 / (e - s)
        for k in range(D):
            out[b, k] *= inv
    if e < s:
        bad += 1
    return bad


@njit(**OPTS)
def _eb_fwd_ser(weight, indices, offsets, psw, mean, out, b0, b1):
    """Bags b0..b1 into out; returns the number of out-of-range indices and decreasing
    offsets."""
    bad = 0
    for b in range(b0, b1):
        bad += _eb_bag(weight, indices, offsets, psw, mean, b, out)
    return bad


@njit(parallel=True, **OPTS)
def _eb_fwd_par(weight, indices, offsets, psw, mean, out, nparts):
    B = offsets.shape[0] - 1
    bad = 0
    for t in prange(nparts):   # static chunks of consecutive bags, one per thread
        bad += _eb_fwd_ser(weight, indices, offsets, psw, mean, out, t * B // nparts,
                           (t + 1) * B // nparts)
    return bad


# D-specialised forward: the bag's sum is one <D x float> register value (see _simd), and
# the rows `pf_dist` lookups ahead are prefetched (`pf_level`: see `numba_prefetch`).  D is
# a literal (compile-time) argument: one cached specialisation per D.

SPECIALISED_MAX_D = 1024


def specialised(weight):
    """Whether the D-specialised path takes this table."""


@njit(**OPTS)
def _eb_vec_range(weight, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level, D, line,
                  row0, R, p0, ocol):
    """Bags b0..b1 of one table into out[b, ocol:ocol+D].  The table is rows row0..row0+R of
    `weight`; its lookups are indices[p0 + offsets[b] .. p0 + offsets[b+1]] (one table: 0,
    weight.shape[0], 0, 0; several tables in one buffer: see `_eb_tables_kernel`).  Returns the
    number of out-of-range indices (skipped) and decreasing offsets."""
    D = literally(D)
    line = literally(line)   # elements per 64-byte cache line
    bad = 0
    p_end = offsets[b1]
    tail = _tail_line(weight, pf_level, D)
    base = np.uint64(weight.ctypes.data)
    if pf_level > 0:
        prefetch_first_rows(base, indices, p0, row0, offsets[b0], p_end, pf_dist, pf_level,
                            tail, D, line)
    for b in range(b0, b1):
        s = offsets[b]
        e = offsets[b + 1]
        if e < s:
            bad += 1
        acc = vzero(weight, D)
        for p in range(s, e):
            if pf_level > 0:
                q = p + pf_dist
                if q < p_end:
                    # no range check: a prefetch never faults, a bad index is caught below
                    _prefetch_row(base, row0 + indices[np.uint64(p0 + q)], pf_level, tail,
                                  D, line)
                if pf_level == 4:
                    q = p + FAR * pf_dist
                    if q < p_end:
                        _prefetch_row(base, row0 + indices[np.uint64(p0 + q)], 2, tail,
                                      D, line)
            # unsigned positions and one unsigned compare: no negative-index wraparound code
            idx = indices[np.uint64(p0 + p)]
            if np.uint64(idx) >= np.uint64(R):
                bad += 1
                continue
            if psw is None:
                acc = vadd(acc, vload(weight, row0 + idx, 0, D))
            else:
                acc = vfma(acc, vload(weight, row0 + idx, 0, D), psw[p0 + p])
        if mean and e > s:
            acc = vscale(acc, 1.0 / (e - s))
        vstore(out, b, ocol, acc)
    return bad


@njit(**OPTS)
def _eb_vec_ser(weight, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level, D, line):
    """Bags b0..b1 of one table (`_eb_vec_range` on the whole of `weight`); D and line
    literal, so one compiled form per D."""
    D = literally(D)
    line = literally(line)
    return _eb_vec_range(weight, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level,
                         D, line, 0, weight.shape[0], 0, 0)


@njit(parallel=True, **OPTS)
def _eb_vec_par(weight, indices, offsets, psw, mean, out, nparts, pf_dist, pf_level, D, line):
    """`_eb_vec_ser` on `nparts` threads: static chunks of consecutive bags, one each."""
    D = literally(D)
    line = literally(line)
    B = offsets.shape[0] - 1
    bad = 0
    for t in prange(nparts):
        bad += _eb_vec_ser(weight, indices, offsets, psw, mean, out, t * B // nparts,
                           (t + 1) * B // nparts, pf_dist, pf_level, D, line)
    return bad


@functools.lru_cache(maxsize=None)
def _eb_vec_kernels(D, itemsize=4):
    """(entry, serial range kernel) for dimension D.  D is a closure constant, so the calls
    below pass a literal and the kernels above compile (and cache) once per D; a plain Python
    call with `literally` would re-dispatch on every call.  The entry picks serial or
    parallel and the prefetch plan in compiled code: no per-call Python work.  The closures
    hold ints only and call module-level kernels: numba's cache keys a closure on its cells'
    values, and a cell holding a kernel gets a fresh key in every process (a recompile of
    several seconds per process)."""
    line = 64 // itemsize

    @njit(**OPTS)
    def eb_vec_ser(weight, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level):
        return _eb_vec_ser(weight, indices, offsets, psw, mean, out, b0, b1, pf_dist,
                           pf_level, D, line)

    @njit(**OPTS)
    def eb_vec(weight, indices, offsets, psw, mean, out, l2_bytes, l3_bytes, threads):
        B = offsets.shape[0] - 1
        if offsets[0] != 0 or offsets[B] != indices.shape[0]:
            return -1   # the caller's checked path names the fault
        pf_dist, pf_level = _prefetch_plan(weight.shape[0] * D * weight.itemsize, D,
                                           weight.itemsize, _line_aligned(weight, D),
                                           l2_bytes, l3_bytes)
        if threads > 1 and B > 1:
            return _eb_vec_par(weight, indices, offsets, psw, mean, out, min(threads, B),
                               pf_dist, pf_level, D, line)
        # through _eb_vec_ser, not _eb_vec_range: compiled as its own function the loop ran
        # faster than inlined here (docs/performance.md, "Kernel and model choices")
        return _eb_vec_ser(weight, indices, offsets, psw, mean, out, 0, B, pf_dist, pf_level,
                           D, line)

    return eb_vec, eb_vec_ser


@functools.lru_cache(maxsize=None)
def _eb_tables_kernel(D, itemsize=4):
    """One call for the bags of several tables held in one buffer (one thread), each table
    timed inside the kernel by the time-stamp counter (`cycles[t]`, in TSC ticks):

        weight  [sum of rows, D]      table t = rows row_base[t] .. row_base[t] + rows[t]
        indices = [ idx_0 | idx_1 | ... ]     each table's own (table-local) row numbers
        offsets = [ off_0 | off_1 | ... ]     T * (B + 1): each table's offsets, from 0
        out     [B, T * D]            (a [B, T, D] buffer): bag b of table t -> out[b, tD:(t+1)D]

    The same loop as one table's kernel (prefetch plan per table).  Returns the number of
    bad entries (index out of its table's range, decreasing or misaligned offsets)."""
    line = 64 // itemsize

    @njit(**OPTS)
    def eb_tables(weight, rows, row_base, means, indices, offsets, B, out, cycles, l2_bytes,
                  l3_bytes):
        T = rows.shape[0]
        bad = 0
        p0 = 0
        aligned = _line_aligned(weight, D)
        for t in range(T):
            c0 = cycle_counter()
            o = t * (B + 1)
            offs = offsets[o:o + B + 1]
            if offs[0] != 0:
                bad += 1
            pf_dist, pf_level = _prefetch_plan(rows[t] * D * weight.itemsize, D,
                                               weight.itemsize, aligned, l2_bytes, l3_bytes)
            bad += _eb_vec_range(weight, indices, offs, None, means[t], out, 0, B, pf_dist,
                                 pf_level, D, line, row_base[t], rows[t], p0, t * D)
            p0 += offs[B]
            cycles[t] = cycle_counter() - c0
        if p0 != indices.shape[0]:
            bad += 1
        return bad

    return eb_tables


# ------------------------------------------------------------------------------ entry points

_FAST_DTYPES = {(np.dtype(w), np.dtype(i), np.dtype(o)) for w in ("f4", "f8")
                for i in ("i8", "i4", "u8", "u4") for o in ("i8", "i4", "u8", "u4")}


def embedding_bag_fast(weight, indices, offsets, mode):
    """`kernels.embedding_bag` for numpy arrays without per-sample weights, in one layer:
    the checks it needs before compiled code may run (array ranks, dtypes, a C-contiguous
    table of a D the specialised kernel takes), then the kernel, which checks the offsets'
    ends itself and the indices' range as it goes.  Returns None where these inputs need
    the general path (which also names any fault), else the pooled [B, D].  It saves the
    general path's per-call Python work, a visible share of a small call."""
    if (weight.ndim != 2 or indices.ndim != 1 or offsets.ndim != 1 or not offsets.shape[0]
            or (weight.dtype, indices.dtype, offsets.dtype) not in _FAST_DTYPES
            or not weight.flags.c_contiguous or (mode != "sum" and mode != "mean")):
        return None
    D = weight.shape[1]
    if not 0 < D <= SPECIALISED_MAX_D or D & 3:
        return None
    out, bad = _eb_run(weight, indices, offsets, None, mode == "mean", True)
    if bad:
        if bad < 0:
            return None
        raise_bad(bad)
    return out


def _eb_run(weight, indices, offsets, psw, mean, vec):
    """(pooled, bad count) from the D-specialised kernel (`vec`, see `specialised`) or the
    general one; bad -1: the offsets do not run from 0 to len(indices)."""
    D = weight.shape[1]
    out = nu.alloc((offsets.shape[0] - 1, D), weight.dtype)
    # only ask for the thread count when the work could use more than one thread
    threads = num_threads() if indices.shape[0] * D >= PARALLEL_MIN_WORK else 1
    if vec:
        return out, _eb_vec_kernels(D, weight.itemsize)[0](
            weight, indices, offsets, psw, mean, out, L2_BYTES, L3_BYTES, threads)
    B = offsets.shape[0] - 1
    if threads > 1 and B > 1:
        return out, _eb_fwd_par(weight, indices, offsets, psw, mean, out, min(threads, B))
    return out, _eb_fwd_ser(weight, indices, offsets, psw, mean, out, 0, B)


def embedding_bag(weight, indices, offsets, mode, per_sample_weights):
    out, bad = _eb_run(weight, indices, offsets, per_sample_weights, mode == "mean",
                       specialised(weight))
    if bad:
        raise_bad(bad)
    return out


def embedding_bag_tables(weight, rows, row_base, means, indices, offsets, batch, out, cycles):
    """All tables' bags in one call (layout of `_eb_tables_kernel`; one thread): out [B, T*D]
    filled, cycles[t] = TSC ticks spent on table t.  BadIndexError, naming the count, on an
    out-of-range index or malformed offsets."""
    bad = _eb_tables_kernel(weight.shape[1], weight.itemsize)(
        weight, rows, row_base, means, indices, offsets, batch, out, cycles, L2_BYTES, L3_BYTES)
    if bad:
        raise_bad(bad)


