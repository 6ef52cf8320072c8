"""Software prefetch of embedding rows for the numba CPU kernels (fp32 and packed tables).

`prefetch_plan` picks, per table, how far ahead of the current lookup to prefetch and into
which cache; `_prefetch_row` issues one row's prefetches inside a kernel's loop.  Levels:

    0  none
    1  every line of the row into L1 (prefetcht0)
    2  every line into L2 (prefetcht1)
    3  every other line into L1 (the L2's adjacent-line prefetcher brings the other)
    4  two-stage: every line into L2 `FAR` x distance ahead, then into L1 distance ahead

The cache sizes the plan compares a table with come from `dlrmprof.platform` (sysfs, read
once at import).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dlrmprof.kernels._simd import prefetch_at
from dlrmprof.kernels.numba_util import OPTS
from dlrmprof.platform import cache_sizes

CACHES = cache_sizes()
L1_BYTES, L2_BYTES, L3_BYTES = CACHES.l1, CACHES.l2, CACHES.l3

FAR = 4  # level 4 prefetches into L2 this many times the L1 distance ahead
TWO_STAGE_MAX_BYTES = 512 << 20  # beyond this, rows of 3+ lines take prefetcht1 alone
SGD_PREFETCH = 16   # lookups ahead, for the one-thread sparse SGD of tables beyond L2


@njit(inline="always", **OPTS)
def _prefetch_row(base, row, pf_level, tail, D, line):
    """Prefetch the cache lines of row `row` of the table at byte address `base` (level 2:
    into L2, else L1): one per 64 bytes from the row's start and, with `tail`, the line of
    its last element, which is one more line when rows do not start on a line
    (`_tail_line`); level 3, every other line only (level 4's two stages are two calls,
    levels 2 and 1).  Inlined at numba-IR level, so the caller's literal D and line make the
    loop a fixed sequence.  It takes the table's address, not the array: an array argument
    to an inlined helper may cost an NRT_incref / decref call pair per call where numba's
    reference-count pruning does not remove it, which with two call sites in the loop
    (level 4) made the kernel several times slower (docs/performance.md)."""
    rowbytes = np.uint64(D * (64 // line))
    a = base + np.uint64(row) * rowbytes
    if pf_level == 2:
        for c in range(0, D, line):
            prefetch_at(a + np.uint64(c * (64 // line)), 2)
        if tail:
            prefetch_at(a + rowbytes - np.uint64(1), 2)
    elif pf_level == 3:
        for c in range(0, D, 2 * line):
            prefetch_at(a + np.uint64(c * (64 // line)), 1)
    else:
        for c in range(0, D, line):
            prefetch_at(a + np.uint64(c * (64 // line)), 1)
        if tail:
            prefetch_at(a + rowbytes - np.uint64(1), 1)


@njit(**OPTS)
def prefetch_first_rows(base, indices, p0, row0, start, p_end, pf_dist, pf_level, tail, D,
                        line):
    """The prologue of a kernel's look-ahead: the rows of lookups start .. start + pf_dist
    (indices[p0 + q], rows row0 + index of the table at `base`), which the loop's look-ahead
    never reaches (at B = 128 and one lookup per bag, half of a table's rows); issued back
    to back, so their misses overlap; at level 4 also the far stage's first rows, into L2.
    A call of its own, once per kernel call: its array argument costs nothing in the loop."""
    for q in range(start, min(start + pf_dist, p_end)):
        _prefetch_row(base, row0 + indices[np.uint64(p0 + q)], pf_level, tail, D, line)
    if pf_level == 4:
        for q in range(start + pf_dist, min(start + FAR * pf_dist, p_end)):
            _prefetch_row(base, row0 + indices[np.uint64(p0 + q)], 2, tail, D, line)


@njit(inline="always", **OPTS)
def _line_aligned(weight, D):
    """Whether every row of `weight` starts on a 64-byte line."""
    return ((weight.ctypes.data | (D * weight.itemsize)) & 63) == 0


@njit(inline="always", **OPTS)
def _tail_line(weight, pf_level, D):
    """Whether a row prefetch needs its last element's line too: rows that start off a line
    (a table base or row size not a multiple of 64 bytes, e.g. numpy's 16-byte-aligned
    arrays) span one line more than whole 64-byte steps reach.  Level 3 never asks: it
    prefetches every other line and lets the hardware bring the rest."""
    return pf_level != 3 and not _line_aligned(weight, D)


@njit(**OPTS)
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


def prefetch_plan(table_bytes, D, itemsize, aligned=True):
    """(distance in lookups, level) of the software prefetch for a table whose rows start on
    64-byte lines (`aligned`) or not (levels: see the module docstring)::

      table fits in L2                          none: prefetch is pure overhead
      rows of 2+ lines, table <= L3 / 4         16 ahead, every other line into L1
      rows of 1 line, beyond that               two-stage, 32 (L1) and 128 (L2) ahead
      rows of 2 lines, beyond that              64 ahead into L2
      rows of 3+ lines, table <= 512 MiB        two-stage, 16 (L1) and 64 (L2) ahead
      rows of 3+ lines, larger                  32 ahead into L2

    Why: a table within L2 gains nothing; within a quarter of L3 the rows are a few cycles
    away and the L2's adjacent-line prefetcher completes what is asked for; beyond, a miss
    goes to DRAM and one-line rows need many misses in flight, hence the far L2 stage.  The
    plan was chosen by measuring every plan against torch per cell
    (`benchmarks/bench_embedding_bag.py --tune`; the figures: docs/performance.md, "Prefetch
    plan"); they are leads to re-measure on other hosts, not laws."""
    return _prefetch_plan(table_bytes, D, itemsize, aligned, L2_BYTES, L3_BYTES)
