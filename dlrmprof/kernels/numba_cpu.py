"""numba CPU kernels (parallel over bags / samples / row blocks with `prange`).

Inputs are numpy arrays already validated by `dlrmprof.kernels`.  Every kernel is
`cache=True`, so a child process of a SIMD sweep compiles once per ISA setting.

The SIMD sweep of the profiler runs these in child processes with different
`NUMBA_CPU_NAME` / `NUMBA_CPU_FEATURES`; `numba_asm(op)` returns the assembly that the
current process generates, so it can count xmm / ymm / zmm registers.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import literally, njit, prange

from dlrmprof.kernels._simd import (cycle_counter, prefetch_at, prefetch_at_l2, vadd, vfma,
                                    vfmadd, vload, vscale, vstore, vzero)

# numba's cache keys compiled code on the content of this file alone, not on _simd.py's: a
# kernel compiled with an older _simd stays in use (seen: the <48 x float> code of the old
# _simd kept running after its fix).  This digest of _simd.py ties the two, and
# tests/test_kernels.py fails until it is updated, so an edit there recompiles here.
_SIMD_SHA256 = "7f827a8c316ab76e"

_OPTS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")
# reductions (dot products) only vectorize when LLVM may reassociate
_FAST = dict(_OPTS, fastmath={"reassoc", "contract", "nsz", "arcp"})

_PF_PROLOGUE = True  # prefetch the first look-ahead's rows up front (a compile-time global)
_FAR = 4  # level 4 (two-stage) prefetches into L2 this many times the L1 distance ahead
TWO_STAGE_MAX_BYTES = 512 << 20  # beyond this, rows of 3+ lines take prefetcht1 alone

# below this many gathered elements (nnz * D) the parallel launch costs more than it saves
PARALLEL_MIN_WORK = 1 << 16


class BadIndexError(IndexError):
    pass


def _alloc(shape, dtype):
    """Output allocation (uninitialised; tests swap in a NaN-poisoned allocator)."""
    return np.empty(shape, dtype=dtype)


# --------------------------------------------------------------------------- embedding bag

@njit(**_OPTS)
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


@njit(parallel=True, **_OPTS)
def _eb_fwd_par(weight, indices, offsets, psw, mean, out):
    B = offsets.shape[0] - 1
    bad = 0
    for b in prange(B):
        bad += _eb_bag(weight, indices, offsets, psw, mean, b, out)
    return bad


@njit(**_OPTS)
def _eb_fwd_ser(weight, indices, offsets, psw, mean, out):
    B = offsets.shape[0] - 1
    bad = 0
    for b in range(B):
        bad += _eb_bag(weight, indices, offsets, psw, mean, b, out)
    return bad


# D-specialised forward: the bag's sum is one <D x float> register value (see _simd), and
# the rows `pf_dist` lookups ahead are prefetched (`pf_level`: see `prefetch_plan`).  D is
# a literal (compile-time) argument: one cached specialisation per D.

SPECIALISED_MAX_D = 1024


def specialised(weight):
    """Whether the D-specialised path takes this table."""
    D = weight.shape[1]
    return (0 < D <= SPECIALISED_MAX_D and D % 4 == 0 and weight.dtype.kind == "f"
            and weight.itemsize in (4, 8) and weight.flags.c_contiguous)


@njit(inline="always", **_OPTS)
def _prefetch_row(base, row, pf_level, tail, D, line):
    """Prefetch the cache lines of row `row` of the table at byte address `base` (level 2:
    into L2, else L1): one per 64 bytes from the row's start and, with `tail`, the line of
    its last element, which is one more line when rows do not start on a line
    (`_tail_line`); level 3, every other line only (level 4's two stages are two calls,
    levels 2 and 1).  Inlined at numba-IR level, so the caller's literal D and line make the
    loop a fixed sequence.  It takes the table's address, not the array: an array argument
    to an inlined helper may cost an NRT_incref / decref call pair per call where numba's
    reference-count pruning does not remove it, and with two call sites in the loop (level
    4) it did not: the first two-stage version ran at 0.65x torch instead of 1.65x (R 1e7 x
    D 64, L 20, `bench_row_prefetch.py`)."""
    rowbytes = np.uint64(D * (64 // line))
    a = base + np.uint64(row) * rowbytes
    if pf_level == 2:
        for c in range(0, D, line):
            prefetch_at_l2(a + np.uint64(c * (64 // line)))
        if tail:
            prefetch_at_l2(a + rowbytes - np.uint64(1))
    elif pf_level == 3:
        for c in range(0, D, 2 * line):
            prefetch_at(a + np.uint64(c * (64 // line)))
    else:
        for c in range(0, D, line):
            prefetch_at(a + np.uint64(c * (64 // line)))
        if tail:
            prefetch_at(a + rowbytes - np.uint64(1))


@njit(inline="always", **_OPTS)
def _line_aligned(weight, D):
    """Whether every row of `weight` starts on a 64-byte line."""
    return ((weight.ctypes.data | (D * weight.itemsize)) & 63) == 0


@njit(inline="always", **_OPTS)
def _tail_line(weight, pf_level, D):
    """Whether a row prefetch needs its last element's line too: rows that start off a line
    (a table base or row size not a multiple of 64 bytes, e.g. numpy's 16-byte-aligned
    arrays) span one line more than whole 64-byte steps reach.  Level 3 never asks: it
    prefetches every other line and lets the hardware bring the rest (see `prefetch_plan`)."""
    return pf_level != 3 and not _line_aligned(weight, D)


@njit(**_OPTS)
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
    if pf_level > 0 and _PF_PROLOGUE:
        # prologue: the first pf_dist rows, which the loop's look-ahead never reaches (at
        # B = 128 and one lookup per bag, half of a table's rows); issued back to back, so
        # their misses overlap
        for q in range(offsets[b0], min(offsets[b0] + pf_dist, p_end)):
            _prefetch_row(base, row0 + indices[np.uint64(p0 + q)], pf_level, tail, D, line)
        if pf_level == 4:   # and the far stage's first rows, into L2
            for q in range(offsets[b0] + pf_dist, min(offsets[b0] + _FAR * pf_dist, p_end)):
                _prefetch_row(base, row0 + indices[np.uint64(p0 + q)], 2, tail, D, line)
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
                    q = p + _FAR * pf_dist
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


@njit(**_OPTS)
def _prefetch_plan(table_bytes, D, itemsize, aligned, l2_bytes, l3_bytes):
    if table_bytes <= l2_bytes:
        return 0, 0
    lines = (D * itemsize + 63) // 64 + (0 if aligned else 1)
    if lines >= 2 and table_bytes <= l3_bytes // 4:
        return 16, 3
    if lines == 1:
        return 32, 4
    if lines == 2:
        return 64, 2
    if table_bytes <= TWO_STAGE_MAX_BYTES:
        return 16, 4
    return 32, 2


@functools.lru_cache(maxsize=None)
def _eb_vec_kernels(D, itemsize=4):
    """(entry, serial range kernel) for dimension D.  D is a closure constant, so the calls
    below pass a literal and the kernels above compile (and cache) once per D; a plain Python
    call with `literally` would re-dispatch on every call.  The entry picks serial or
    parallel and the prefetch plan in compiled code: no per-call Python work."""
    line = 64 // itemsize

    @njit(**_OPTS)
    def eb_vec_ser(weight, indices, offsets, psw, mean, out, b0, b1, pf_dist, pf_level):
        return _eb_vec_range(weight, indices, offsets, psw, mean, out, b0, b1, pf_dist,
                             pf_level, D, line, 0, weight.shape[0], 0, 0)

    @njit(parallel=True, **_OPTS)
    def eb_vec_par(weight, indices, offsets, psw, mean, out, nparts, pf_dist, pf_level):
        B = offsets.shape[0] - 1
        bad = 0
        for t in prange(nparts):   # static chunks of consecutive bags, one per thread
            bad += eb_vec_ser(weight, indices, offsets, psw, mean, out, t * B // nparts,
                              (t + 1) * B // nparts, pf_dist, pf_level)
        return bad

    @njit(**_OPTS)
    def eb_vec(weight, indices, offsets, psw, mean, out, l2_bytes, l3_bytes, threads):
        B = offsets.shape[0] - 1
        if offsets[0] != 0 or offsets[B] != indices.shape[0]:
            return -1   # the caller's checked path names the fault
        pf_dist, pf_level = _prefetch_plan(weight.shape[0] * D * weight.itemsize, D,
                                           weight.itemsize, _line_aligned(weight, D),
                                           l2_bytes, l3_bytes)
        if threads > 1 and B > 1:
            return eb_vec_par(weight, indices, offsets, psw, mean, out, min(threads, B),
                              pf_dist, pf_level)
        # through eb_vec_ser, not _eb_vec_range: compiled as its own function the loop ran
        # 5-10% faster than inlined here (R=1e4, D=128, L=20, paired runs vs torch)
        return eb_vec_ser(weight, indices, offsets, psw, mean, out, 0, B, pf_dist, pf_level)

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

    @njit(**_OPTS)
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


def _cache_bytes(level_wanted, default):
    """Size of cpu0's level-`level_wanted` data/unified cache from sysfs."""
    import glob
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(f"{d}/level") as f:
                level = int(f.read())
            with open(f"{d}/type") as f:
                kind = f.read().strip()
            with open(f"{d}/size") as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        if level == level_wanted and kind in ("Unified", "Data"):
            mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
            try:
                return int(size.rstrip("KM")) * mult
            except ValueError:
                break
    return default


def _l2_bytes(default=1 << 20):
    """Per-core L2 size from sysfs (the level-2 data/unified cache of cpu0)."""
    return _cache_bytes(2, default)


L1_BYTES = _cache_bytes(1, 32 << 10)
L2_BYTES = _l2_bytes()
L3_BYTES = _cache_bytes(3, 32 << 20)
SGD_PREFETCH = 16   # lookups ahead, for the one-thread sparse SGD of tables beyond L2


def prefetch_plan(table_bytes, D, itemsize, aligned=True):
    """(distance in lookups, level) of the software prefetch for a table whose rows start on
    64-byte lines (`aligned`) or not: level 0 none, 1 every line into L1 (prefetcht0), 2 every
    line into L2 (prefetcht1), 3 every other line into L1, 4 two-stage (every line into L2
    4 x distance ahead, then into L1 distance ahead).

      table fits in L2                          none: prefetch is pure overhead
      rows of 2+ lines, table <= L3 / 4         16 ahead, every other line into L1; the L2's
                                                adjacent-line prefetcher brings the other
      rows of 1 line, beyond that               two-stage, 32 (L1) and 128 (L2) ahead
      rows of 2 lines, beyond that              64 ahead into L2
      rows of 3+ lines, table <= 512 MiB        two-stage, 16 (L1) and 64 (L2) ahead
      rows of 3+ lines, larger                  32 ahead into L2

    The plans are chosen by measuring every plan against torch per cell
    (`benchmarks/bench_embedding_bag.py --tune`); the measurements behind this table, and
    why one-line rows use two-stage rather than L2-only prefetch, are in docs/performance.md
    ("Prefetch plan").  They are leads to re-measure on other hosts, not laws."""
    return _prefetch_plan(table_bytes, D, itemsize, aligned, L2_BYTES, L3_BYTES)


@njit(**_OPTS)
def _read_tsc():
    return cycle_counter()


@functools.lru_cache(maxsize=None)
def tsc_period_s():
    """Seconds per tick of the time-stamp counter, calibrated against perf_counter (median
    of three 10 ms spans); None where there is no invariant TSC (not x86-64, or cpuinfo
    lacks constant_tsc / nonstop_tsc): callers then time with perf_counter."""
    import platform
    import time
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")),
                         [])
    except OSError:
        return None
    if "constant_tsc" not in flags or "nonstop_tsc" not in flags:
        return None
    est = []
    for _ in range(3):
        c0, t0 = _read_tsc(), time.perf_counter()
        while time.perf_counter() - t0 < 0.01:
            pass
        c1, t1 = _read_tsc(), time.perf_counter()
        if c1 > c0:
            est.append((t1 - t0) / (c1 - c0))
    if len(est) < 3:
        return None
    period = sorted(est)[1]
    return period if 1e-10 < period < 5e-9 else None   # 0.2 .. 10 GHz


@njit(**_OPTS)
def _check_bags(indices, offsets, R):
    """Number of out-of-range indices plus decreasing offsets (0 means all valid)."""
    bad = 0
    for p in range(indices.shape[0]):
        idx = indices[p]
        if idx < 0 or idx >= R:
            bad += 1
    for b in range(offsets.shape[0] - 1):
        if offsets[b + 1] < offsets[b]:
            bad += 1
    return bad


@njit(parallel=True, **_OPTS)
def _eb_sgd_par(weight, indices, offsets, grad, psw, mean, lr, nparts, pf_dist):
    """Fused SGD on `nparts` threads.  Rows are partitioned among threads by `row % nparts`:
    each part scans all lookups and updates only its own rows (`_eb_sgd_ser` with its part),
    so no two threads ever write the same row."""
    for t in prange(nparts):
        _eb_sgd_ser(weight, indices, offsets, grad, psw, mean, lr, pf_dist, 0, 0, 0, t, nparts)


@njit(**_OPTS)
def _eb_sgd_ser(weight, indices, offsets, grad, psw, mean, lr, pf_dist, row0, p0, gcol, part,
                nparts):
    """The fused SGD on one thread, rows in lookup order; each row `pf_dist` lookups ahead is
    prefetched into L1 (0: no prefetch): a training step reaches these rows again only after
    the MLPs have pushed them out of L2.  As in `_eb_vec_range`, the table is rows row0.. of
    `weight`, its lookups start at indices[p0], and bag b's gradient is grad[b, gcol:gcol+D]
    (one table: 0, 0, 0).  With nparts > 1 only the rows with row % nparts == part are
    updated (one thread's share, see `_eb_sgd_par`).  Indices are not checked here: callers
    validate first."""
    B = offsets.shape[0] - 1
    D = weight.shape[1]
    nnz = offsets[B]
    line = 64 // weight.itemsize
    tail = _tail_line(weight, 1, D)
    base = np.uint64(weight.ctypes.data)
    if pf_dist > 0 and _PF_PROLOGUE:
        for q in range(offsets[0], min(offsets[0] + pf_dist, nnz)):  # as in the forward
            _prefetch_row(base, row0 + indices[p0 + q], 1, tail, D, line)
    for b in range(B):
        s = offsets[b]
        e = offsets[b + 1]
        if e <= s:
            continue
        scale = lr / (e - s) if mean else lr
        for p in range(s, e):
            if pf_dist > 0 and p + pf_dist < nnz:
                _prefetch_row(base, row0 + indices[p0 + p + pf_dist], 1, tail, D, line)
            idx = row0 + indices[p0 + p]
            if nparts > 1 and idx % nparts != part:
                continue
            c = scale if psw is None else scale * psw[p0 + p]
            # 16 lanes at a time as explicit vectors: a plain `for k` loop here gets runtime
            # alias checks between weight and grad on every row (2.3x slower at 2048 lookups
            # of a 7-row table); w - c g is computed as w + g (-c), the same rounding
            k = 0
            while k + 16 <= D:
                vstore(weight, idx, k, vfma(vload(weight, idx, k, 16),
                                            vload(grad, b, gcol + k, 16), -c))
                k += 16
            while k < D:
                weight[idx, k] -= c * grad[b, gcol + k]
                k += 1


@njit(**_OPTS)
def eb_tables_sgd(weight, rows, row_base, means, indices, offsets, B, grad, lr, cycles,
                  pf_dist, l1_bytes):
    """The fused SGD of the tables of `_eb_tables_kernel` (same layout; grad [B, T * D]) in
    one call, one thread, each table timed by the time-stamp counter (`cycles[t]`).  All or
    nothing: every index and offset is checked before the first write; returns the number
    of bad entries (nothing written when > 0).  The rows of every table larger than L1 are
    prefetched, those within L2 too: in a training step the MLPs run between the lookup and
    this update and push the rows out of L2 (kaggle preset, bundled trace, tables of
    2-1,293 rows, batch 128, 1 thread: 176 -> 86 us in the kernel); a table within L1 (a few
    rows, hit over and over) gains nothing from it."""
    T = rows.shape[0]
    D = weight.shape[1]
    bad = 0
    p0 = 0
    for t in range(T):
        o = t * (B + 1)
        if offsets[o] != 0:
            bad += 1
        for b in range(B):
            if offsets[o + b + 1] < offsets[o + b]:
                bad += 1
        n = offsets[o + B]
        if p0 + n > indices.shape[0]:
            return bad + 1
        for p in range(p0, p0 + n):
            if np.uint64(indices[p]) >= np.uint64(rows[t]):
                bad += 1
        p0 += n
    if bad or p0 != indices.shape[0]:
        return bad + (p0 != indices.shape[0])
    p0 = 0
    for t in range(T):
        c0 = cycle_counter()
        o = t * (B + 1)
        pf = pf_dist if rows[t] * D * weight.itemsize > l1_bytes else 0
        _eb_sgd_ser(weight, indices, offsets[o:o + B + 1], grad, None, means[t], lr, pf,
                    row_base[t], p0, t * D, 0, 1)
        p0 += offsets[o + B]
        cycles[t] = cycle_counter() - c0
    return 0


# ----------------------------------------------------------------------------- interaction

@njit(parallel=True, **_FAST)
def _interaction(dense, pooled, out, zero):
    B, T, D = pooled.shape
    for b in prange(B):
        for k in range(D):
            out[b, k] = dense[b, k]
        o = D
        for i in range(1, T + 1):
            for j in range(i):
                s = zero
                if j == 0:
                    for k in range(D):
                        s += pooled[b, i - 1, k] * dense[b, k]
                else:
                    for k in range(D):
                        s += pooled[b, i - 1, k] * pooled[b, j - 1, k]
                out[b, o] = s
                o += 1


@njit(parallel=True, **_FAST)
def _interaction_bwd(dense, pooled, g, gd, gp):
    B, T, D = pooled.shape
    for b in prange(B):
        for k in range(D):
            gd[b, k] = g[b, k]
        for i in range(T):
            for k in range(D):
                gp[b, i, k] = 0.0
        o = D
        for i in range(1, T + 1):
            for j in range(i):
                c = g[b, o]
                o += 1
                if j == 0:
                    for k in range(D):
                        gp[b, i - 1, k] += c * dense[b, k]
                        gd[b, k] += c * pooled[b, i - 1, k]
                else:
                    for k in range(D):
                        gp[b, i - 1, k] += c * pooled[b, j - 1, k]
                        gp[b, j - 1, k] += c * pooled[b, i - 1, k]


# Vector forms for D % 16 == 0 (every preset): 16 lanes, one zmm of fp32, D a compile-time
# constant (one cached specialisation per D).  The scalar forms above compute each pair's dot
# product alone (a horizontal sum per pair) and accumulate the backward in memory: ~150 us
# forward and ~240 us backward at B = 128, T = 26, D = 16 on the Zen 4 host.  Both vector
# forms are register-blocked as a small GEMM: four rows of Z share every vector load and
# eight running sums hide the FMA latency, so the inner loops issue one 512-bit load per four
# FMAs instead of one per FMA (Zen 4 issues one such load a cycle).  What remains of the
# forward's time is mostly the scalar transpose of Z and the copy of the lower triangle (a
# stage-by-stage timing, not a counter).  The forward forms the Gram blocks G[t + 1, j0:j0+16]
# = Z[t + 1] . Z^T[:, j0:j0+16] for four pooled rows t at a time and copies the lower triangle
# out; the backward forms the symmetric pair-gradient matrix G and computes dZ = G Z four
# rows at a time; four rows share each vector load, where the one-row forms they replace
# needed one load per FMA (the paired timings: docs/performance.md, "Interaction";
# tests/test_kernels.py checks both against the float64 reference).
_IL = 16


@njit(inline="always", **_FAST)
def _fma_4x2(acc, v, w, m, r, c):
    """One step of the register-blocked kernels below: the eight running sums `acc` (rows r
    .. r+3 of the block, two each) plus v * m[r + i, c] and w * m[r + i, c + 1]."""
    a0, a1, a2, a3, a4, a5, a6, a7 = acc
    return (vfmadd(a0, v, m[r, c]), vfmadd(a1, w, m[r, c + 1]),
            vfmadd(a2, v, m[r + 1, c]), vfmadd(a3, w, m[r + 1, c + 1]),
            vfmadd(a4, v, m[r + 2, c]), vfmadd(a5, w, m[r + 2, c + 1]),
            vfmadd(a6, v, m[r + 3, c]), vfmadd(a7, w, m[r + 3, c + 1]))


@functools.lru_cache(maxsize=None)
def _interaction_vec_kernels(D):
    """(forward, backward) for dimension D (a multiple of 16, a closure constant)."""

    @njit(parallel=True, **_FAST)
    def fwd(dense, pooled, out):
        B, T, _ = pooled.shape
        N = T + 1
        TP = (T + 3) // 4 * 4                  # pooled rows, padded to the block of four
        J = (N + _IL - 1) // _IL * _IL         # columns of Z^T, padded to 16 lanes
        nblk = (B + _IL - 1) // _IL
        for blk in prange(nblk):
            zp = np.zeros((TP, D), dtype=out.dtype)   # rows T.. stay zero
            zt = np.zeros((D, J), dtype=out.dtype)    # Z^T; columns N.. stay zero
            gm = np.empty((TP, J), dtype=out.dtype)   # gm[t, j] = <z_{t+1}, z_j>
            for b in range(blk * _IL, min(B, (blk + 1) * _IL)):
                pb = pooled[b]
                for k0 in range(0, D, _IL):
                    vstore(out, b, k0, vload(dense, b, k0, _IL))
                for k in range(D):
                    zt[k, 0] = dense[b, k]
                for t in range(T):
                    for k0 in range(0, D, _IL):
                        vstore(zp, t, k0, vload(pb, t, k0, _IL))
                    for k in range(D):
                        zt[k, t + 1] = pb[t, k]
                for t0 in range(0, T, 4):
                    # rows t0+1 .. t0+4 of Z need the pairs j < t0 + 4
                    for j0 in range(0, min(t0 + 4, N), _IL):
                        zero = vzero(zt, _IL)
                        acc = (zero, zero, zero, zero, zero, zero, zero, zero)
                        for k in range(0, D, 2):
                            acc = _fma_4x2(acc, vload(zt, k, j0, _IL), vload(zt, k + 1, j0, _IL),
                                           zp, t0, k)
                        a0, a1, a2, a3, a4, a5, a6, a7 = acc
                        vstore(gm, t0, j0, vadd(a0, a1))
                        vstore(gm, t0 + 1, j0, vadd(a2, a3))
                        vstore(gm, t0 + 2, j0, vadd(a4, a5))
                        vstore(gm, t0 + 3, j0, vadd(a6, a7))
                o = D
                for t in range(T):
                    for j in range(t + 1):
                        out[b, o + j] = gm[t, j]
                    o += t + 1

    @njit(parallel=True, **_FAST)
    def bwd(dense, pooled, g, gd, gp):
        B, T, _ = pooled.shape
        N = T + 1
        NP = (N + 3) // 4 * 4
        nblk = (B + _IL - 1) // _IL
        for blk in prange(nblk):
            z = np.empty((N, D), dtype=gd.dtype)
            # G[i, j] = G[j, i] = d out / d <z_i, z_j>; the diagonal and rows N.. stay zero
            G = np.zeros((NP, N), dtype=gd.dtype)
            for b in range(blk * _IL, min(B, (blk + 1) * _IL)):
                pb = pooled[b]
                for k0 in range(0, D, _IL):
                    vstore(z, 0, k0, vload(dense, b, k0, _IL))
                for t in range(T):
                    for k0 in range(0, D, _IL):
                        vstore(z, t + 1, k0, vload(pb, t, k0, _IL))
                o = D
                for i in range(1, N):
                    for j in range(i):
                        c = g[b, o + j]
                        G[i, j] = c
                        G[j, i] = c
                    o += i
                gpb = gp[b]
                for i0 in range(0, N, 4):
                    for k0 in range(0, D, _IL):
                        zero = vzero(z, _IL)
                        # the dense part passes straight through
                        first = vload(g, b, k0, _IL) if i0 == 0 else zero
                        acc = (first, zero, zero, zero, zero, zero, zero, zero)
                        j = 0
                        while j + 2 <= N:
                            acc = _fma_4x2(acc, vload(z, j, k0, _IL), vload(z, j + 1, k0, _IL),
                                           G, i0, j)
                            j += 2
                        a0, a1, a2, a3, a4, a5, a6, a7 = acc
                        if j < N:   # N odd: the last column
                            v = vload(z, j, k0, _IL)
                            a0 = vfmadd(a0, v, G[i0, j])
                            a2 = vfmadd(a2, v, G[i0 + 1, j])
                            a4 = vfmadd(a4, v, G[i0 + 2, j])
                            a6 = vfmadd(a6, v, G[i0 + 3, j])
                        if i0 == 0:
                            vstore(gd, b, k0, vadd(a0, a1))
                        else:
                            vstore(gpb, i0 - 1, k0, vadd(a0, a1))
                        if i0 + 1 < N:
                            vstore(gpb, i0, k0, vadd(a2, a3))
                        if i0 + 2 < N:
                            vstore(gpb, i0 + 1, k0, vadd(a4, a5))
                        if i0 + 3 < N:
                            vstore(gpb, i0 + 2, k0, vadd(a6, a7))

    return fwd, bwd


# ------------------------------------------------------------------------------------ loss

@njit(**_OPTS)
def bce_with_logits_grad(z, y, grad):
    """Mean binary cross-entropy of logits `z` against labels `y` (what torch's
    BCEWithLogitsLoss gives), and its gradient w.r.t. `z` written into `grad`:
    (sigmoid(z) - y) / n.  One pass, float64 sums, stable for any |z|:
    loss_i = max(z, 0) - z y + log(1 + exp(-|z|))."""
    n = z.shape[0]
    total = 0.0
    inv = 1.0 / n
    for i in range(n):
        zi = np.float64(z[i])
        yi = np.float64(y[i])
        e = np.exp(-abs(zi))
        total += max(zi, 0.0) - zi * yi + np.log1p(e)
        sig = 1.0 / (1.0 + e) if zi >= 0.0 else e / (1.0 + e)
        grad[i] = (sig - yi) * inv
    return total * inv


# ------------------------------------------------------------------ MLP backward helpers
# Elementwise steps of the MLP backward with SGD (dlrmprof.dlrm.model._MLPFunction, numba
# backend, fp32 CPU): one call each instead of torch's threshold_backward (a new tensor) and
# sum + add_ (a reduction set-up each): at batch 128 those cost 6-54 us a layer, mostly
# per-op overhead and writes into fresh buffers.

@njit(**_OPTS)
def relu_grad_(g, y):
    """g[i, j] = 0 where y[i, j] <= 0, in place: ReLU's backward, torch's
    threshold_backward(g, y, 0) (a NaN in y passes g through, as there)."""
    M, N = g.shape
    for i in range(M):
        for j in range(N):
            g[i, j] = 0.0 if y[i, j] <= 0 else g[i, j]


@njit(**_OPTS)
def bias_sgd_(b, g, lr):
    """b -= lr * (column sums of g): the bias's SGD step from dY [M, N] (float64 sums)."""
    M, N = g.shape
    acc = np.zeros(N, np.float64)
    for i in range(M):
        for j in range(N):
            acc[j] += g[i, j]
    for j in range(N):
        b[j] -= lr * acc[j]


# ---------------------------------------------------------------------------------- linear

_GEMM_MR = 4     # rows of the output per register tile
_GEMM_NR = 32    # columns per register tile: a <32 x float> per row (2 zmm, 4 ymm, 8 xmm)


@njit(parallel=True, **_FAST)
def _gemm(A, Bm, out):
    """out = A @ Bm (C-contiguous).  Register-tiled outer products: a 4 x 32 tile of `out`
    lives in 4 vector values; each k broadcasts A[m, k] and fuses a multiply-add with one
    row of Bm, so the SIMD width of the generated code follows the target (the point of the
    SIMD study).  Edges (M % 4, N % 32) take a scalar loop."""
    M, K = A.shape
    N = Bm.shape[1]
    nfull = N // _GEMM_NR
    nmb = (M + _GEMM_MR - 1) // _GEMM_MR
    for mb in prange(nmb):
        m0 = mb * _GEMM_MR
        if m0 + _GEMM_MR <= M:
            for nb in range(nfull):
                n0 = nb * _GEMM_NR
                c0 = vzero(out, _GEMM_NR)
                c1 = vzero(out, _GEMM_NR)
                c2 = vzero(out, _GEMM_NR)
                c3 = vzero(out, _GEMM_NR)
                for k in range(K):
                    b = vload(Bm, k, n0, _GEMM_NR)
                    c0 = vfma(c0, b, A[m0, k])
                    c1 = vfma(c1, b, A[m0 + 1, k])
                    c2 = vfma(c2, b, A[m0 + 2, k])
                    c3 = vfma(c3, b, A[m0 + 3, k])
                vstore(out, m0, n0, c0)
                vstore(out, m0 + 1, n0, c1)
                vstore(out, m0 + 2, n0, c2)
                vstore(out, m0 + 3, n0, c3)
            n_rest = nfull * _GEMM_NR
        else:
            n_rest = 0
        for m in range(m0, min(m0 + _GEMM_MR, M)):
            for n in range(n_rest, N):
                out[m, n] = 0.0
            for k in range(K):
                a = A[m, k]
                for n in range(n_rest, N):
                    out[m, n] += a * Bm[k, n]


@njit(**_FAST)
def _add_bias(y, bias):
    M, N = y.shape
    for m in range(M):
        for n in range(N):
            y[m, n] += bias[n]


# ------------------------------------------------------------------------------ entry points

def _raise_bad(bad):
    raise BadIndexError(f"{bad} out-of-range indices or decreasing offsets")


_THREADS = []


def num_threads() -> int:
    """numba.get_num_threads() (this thread's setting) in ~0.1 us instead of ~0.7: numba's
    own accessor behind it, once the public call has started the pool and agreed with it;
    the public call wherever that accessor is missing (another numba version)."""
    if not _THREADS:
        n = numba.get_num_threads()
        fast = getattr(numba.np.ufunc.parallel, "_get_num_threads", None)
        try:
            ok = fast is not None and int(fast()) == n
        except Exception:  # noqa: BLE001 - any failure means: use the public call
            ok = False
        _THREADS.append(fast if ok else numba.get_num_threads)
    return _THREADS[0]()


_FAST_DTYPES = {(np.dtype(w), np.dtype(i), np.dtype(o)) for w in ("f4", "f8")
                for i in ("i8", "i4", "u8", "u4") for o in ("i8", "i4", "u8", "u4")}


def embedding_bag_fast(weight, indices, offsets, mode):
    """`kernels.embedding_bag` for numpy arrays without per-sample weights, in one layer:
    the checks it needs before compiled code may run (array ranks, dtypes, a C-contiguous
    table of a D the specialised kernel takes), then the kernel, which checks the offsets'
    ends itself and the indices' range as it goes.  Returns None where these inputs need
    the general path (which also names any fault), else the pooled [B, D].  About 1 us
    less per call than the general path (half of a 1e4 x 16, B 2048, one-lookup call)."""
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
        _raise_bad(bad)
    return out


def _eb_run(weight, indices, offsets, psw, mean, vec):
    """(pooled, bad count) from the D-specialised kernel (`vec`, see `specialised`) or the
    general one; bad -1: the offsets do not run from 0 to len(indices)."""
    D = weight.shape[1]
    out = _alloc((offsets.shape[0] - 1, D), weight.dtype)
    # only ask for the thread count when the work could use more than one thread
    threads = num_threads() if indices.shape[0] * D >= PARALLEL_MIN_WORK else 1
    if vec:
        return out, _eb_vec_kernels(D, weight.itemsize)[0](
            weight, indices, offsets, psw, mean, out, L2_BYTES, L3_BYTES, threads)
    kern = _eb_fwd_par if threads > 1 else _eb_fwd_ser
    return out, kern(weight, indices, offsets, psw, mean, out)


def embedding_bag(weight, indices, offsets, mode, per_sample_weights):
    out, bad = _eb_run(weight, indices, offsets, per_sample_weights, mode == "mean",
                       specialised(weight))
    if bad:
        _raise_bad(bad)
    return out


def embedding_bag_sgd(weight, indices, offsets, grad_output, lr, mode, per_sample_weights):
    bad = _check_bags(indices, offsets, weight.shape[0])
    if bad:
        _raise_bad(bad)   # nothing was written: all-or-nothing
    if not weight.flags.c_contiguous:
        # the kernels load and store rows as vectors: update a contiguous copy, write it back
        # (in place as far as the caller sees; costs a pass over the table)
        dense = np.ascontiguousarray(weight)
        embedding_bag_sgd(dense, indices, offsets, grad_output, lr, mode, per_sample_weights)
        weight[...] = dense
        return
    grad_output = np.ascontiguousarray(grad_output)   # the vector loads need whole rows
    work = indices.shape[0] * weight.shape[1]
    nparts = num_threads() if work >= PARALLEL_MIN_WORK else 1
    pf = SGD_PREFETCH if weight.nbytes > L2_BYTES else 0
    if nparts == 1:  # no parallel launch (a few us a call)
        _eb_sgd_ser(weight, indices, offsets, grad_output, per_sample_weights, mode == "mean",
                    weight.dtype.type(lr), pf, 0, 0, 0, 0, 1)
        return
    _eb_sgd_par(weight, indices, offsets, grad_output, per_sample_weights, mode == "mean",
                weight.dtype.type(lr), nparts, pf)


def _interaction_vectorised(dense, pooled):
    return (pooled.shape[2] % _IL == 0 and dense.dtype == pooled.dtype
            and dense.flags.c_contiguous and pooled.flags.c_contiguous)


def embedding_bag_tables(weight, rows, row_base, means, indices, offsets, batch, out, cycles):
    """All tables' bags in one call (layout of `_eb_tables_kernel`; one thread): out [B, T*D]
    filled, cycles[t] = TSC ticks spent on table t.  BadIndexError, naming the count, on an
    out-of-range index or malformed offsets."""
    bad = _eb_tables_kernel(weight.shape[1], weight.itemsize)(
        weight, rows, row_base, means, indices, offsets, batch, out, cycles, L2_BYTES, L3_BYTES)
    if bad:
        _raise_bad(bad)


def embedding_bag_tables_sgd(weight, rows, row_base, means, indices, offsets, batch, grad, lr,
                             cycles):
    """The fused sparse SGD of all tables in one call (`eb_tables_sgd`); all or nothing."""
    bad = eb_tables_sgd(weight, rows, row_base, means, indices, offsets, batch, grad,
                        weight.dtype.type(lr), cycles, SGD_PREFETCH, L1_BYTES)
    if bad:
        _raise_bad(bad)   # nothing was written


def interaction(dense, pooled):
    B, T, D = pooled.shape
    out = _alloc((B, D + (T + 1) * T // 2), dense.dtype)
    if _interaction_vectorised(dense, pooled):
        _interaction_vec_kernels(D)[0](dense, pooled, out)
    else:
        _interaction(dense, pooled, out, dense.dtype.type(0))
    return out


def interaction_backward(dense, pooled, grad_out):
    gd = _alloc(dense.shape, dense.dtype)
    gp = _alloc(pooled.shape, pooled.dtype)
    g = np.ascontiguousarray(grad_out, dtype=dense.dtype)
    if _interaction_vectorised(dense, pooled):
        _interaction_vec_kernels(dense.shape[1])[1](dense, pooled, g, gd, gp)
    else:
        _interaction_bwd(dense, pooled, g, gd, gp)
    return gd, gp


def linear(x, weight, bias):
    out = _alloc((x.shape[0], weight.shape[0]), x.dtype)
    _gemm(x, np.ascontiguousarray(weight.T), out)
    if bias is not None:
        _add_bias(out, bias)
    return out


def linear_backward(x, weight, grad_out):
    g = np.ascontiguousarray(grad_out)
    grad_x = _alloc(x.shape, x.dtype)
    _gemm(g, weight, grad_x)
    grad_w = _alloc(weight.shape, weight.dtype)
    _gemm(np.ascontiguousarray(g.T), x, grad_w)
    return grad_x, grad_w, g.sum(axis=0, dtype=np.float64).astype(weight.dtype)


# ------------------------------------------------------------------------- assembly access

def _asm_targets(dim):
    f32, i64, b1 = numba.float32, numba.int64, numba.boolean
    f2 = numba.types.Array(f32, 2, "C")
    f3 = numba.types.Array(f32, 3, "C")
    i1 = numba.types.Array(i64, 1, "C")
    none = numba.types.none
    eb_ser = _eb_vec_kernels(dim)[1] if dim % 4 == 0 else _eb_fwd_ser
    eb_sig = ((f2, i1, i1, none, b1, f2, i64, i64, i64, i64) if dim % 4 == 0
              else (f2, i1, i1, none, b1, f2))
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
