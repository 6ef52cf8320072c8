"""Profiles of Criteo / Terabyte tables (one id per bag) without keeping the stream.

Every table's state is O(distinct ids): nothing proportional to the rows is kept in memory or
written to disk.

* Pass 1, all tables at once as the reader yields rows: the exact LRU reuse-distance
  histogram (`ReuseState`, time axis compacted to the live ids), each id's access count,
  the per-batch statistics (`BatchStream`), the first POLICY_PREFIX accesses (the hot-set
  selection, on the first HOT_PREFIX of them, and the FIFO / LFU / set-associative curves
  are measured there, as the in-memory capture does), for streams longer than
  generate.FIDELITY_PREFIX the figures of the source's prefix at that point
  (`generate.prefix_record`: fidelity is measured there) and, with SHARDS, every 64th
  access's id count.
* Selection: the hot-set size and placement are chosen on each table's prefix
  (`selection.select_hot`); the hot ids are then the K most accessed of the whole stream.
* Pass 2 goes over the stream again (a kept copy or a second read, below): the windowed
  model (`WindowState`: hot ids' counts and gaps per window, tail first touches and
  tail-only reuse distances), where the class model was chosen its per-class first touches
  and class-local reuse distances (`classes.ClassState`), and the SHARDS estimate.
  The windows' length and the hot ids depend on the whole stream (its length and its
  counts), so an exact profile needs them before the windows are measured: a second read
  costs a second parse and no disk, where spilling the stream costs disk O(rows).

A stream of at most IN_MEMORY (= POLICY_PREFIX) accesses is kept whole by pass 1 and profiled
in memory, read once.  A longer one whose copy fits in KEEP_BYTES (each table's ids at 1, 2
or 4 bytes by its id count: about 5M rows of the 26 Criteo tables at 4 bytes) is kept too,
column by column (`_Kept`), and pass 2 runs over that copy: a second parse of the input costs
more than the copy, and the copy is freed before synthesis.
Above KEEP_BYTES the copy is dropped as soon as it overflows and the input is read again.
The profiles equal `generate._profile`'s on the whole stream (tests check it).
"""

from __future__ import annotations

import mmap
from typing import Callable, Iterable

import numpy as np

from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.classes import PLACEMENTS as CLASS_PLACEMENTS
from dlrmprof.tracegen.classes import ClassState, with_classes
from dlrmprof.tracegen.fidelity import POLICY_PREFIX, source_extras
from dlrmprof.tracegen.batches import BatchStream
from dlrmprof.tracegen.profile import (LocalityProfile, WindowState, assemble, count_ids,
                                       hot_ranks)

IN_MEMORY = POLICY_PREFIX       # streams up to this many accesses are kept whole and read once
KEEP_BYTES = 512 << 20          # longer ones are kept as narrow columns up to this size, read once
_BLOCK_BYTES = 64 << 20         # the copy's blocks: above glibc's largest mmap threshold (32 MiB),
                                # so each block goes back to the system when freed


class TablePass:
    """Pass-1 state of one table: feed it the table's ids (dense, >= 0) chunk by chunk."""

    def __init__(self, name: str, prefix: int, probe: bool = False, snap_at: int = 0):
        self.name = name
        self.snap_at = int(snap_at)        # > 0: keep generate.prefix_record at this access
        self.snap: dict | None = None
        self.state = _reuse.ReuseState()
        self.hist = np.zeros(_reuse.MAX_BINS, dtype=np.int64)
        self.cold = 0
        self.counts = np.zeros(1024, dtype=np.int64)
        self.probe = np.zeros(1024, dtype=np.int64) if probe else None
        self.batches = BatchStream()
        self.prefix = np.empty(prefix, dtype=np.int32)
        self.n = 0
        self.bound = 0                     # 1 + the largest id seen

    def feed(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not ids.size:
            return
        if self.snap is None and self.n < self.snap_at < self.n + ids.shape[0]:
            k = self.snap_at - self.n             # the snapshot falls inside this chunk
            self.feed(ids[:k])
            self.feed(ids[k:])
            return
        top = int(ids.max()) + 1
        if top > self.counts.shape[0]:
            self.counts = _grown(self.counts, top)
            if self.probe is not None:
                self.probe = _grown(self.probe, top)
        self.bound = max(self.bound, top)
        self.cold += self.state.feed_hist(ids, self.hist)
        count_ids(ids, self.counts)
        if self.probe is not None:
            count_ids(ids[(-self.n) % 64::64], self.probe)
        self.batches.feed(ids, top)
        m = min(ids.shape[0], self.prefix.shape[0] - self.n)
        if m > 0:
            self.prefix[self.n:self.n + m] = ids[:m]
        self.n += int(ids.shape[0])
        if self.snap is None and self.n == self.snap_at:
            from dlrmprof.tracegen.generate import prefix_record

            hist, cold = self.hist_cold()
            self.snap = prefix_record(hist, cold, self.counts[:self.bound],
                                      self.batches.result())

    @property
    def head(self) -> np.ndarray:
        """The first accesses, as many as the prefix holds."""
        return self.prefix[: min(self.n, self.prefix.shape[0])]

    def hist_cold(self) -> tuple[np.ndarray, int]:
        nz = np.flatnonzero(self.hist)
        return self.hist[: int(nz[-1]) + 1 if nz.size else 0].copy(), self.cold


class _Kept:
    """A copy of the row stream, column by column, each table's ids at the narrowest width that
    holds them so far (uint8, uint16, else int32), in blocks of rows; gives up (and frees
    everything) once it would exceed `budget` bytes or an id does not fit in int32.

    Narrow columns are fewer pages for the kernel to fault in and zero (most of the copy's cost:
    on a 2M-row Kaggle-format file, 26 tables of at most 1,293 ids, 1-2 bytes an id instead of
    4) and more rows under the budget.  A block is one allocation of about _BLOCK_BYTES holding
    each table's column at its width; when a table's ids outgrow their width the block takes
    no more rows (its unused tail is never touched) and the next block is wider."""

    _WIDTHS = ((1 << 8, np.dtype(np.uint8)), (1 << 16, np.dtype(np.uint16)),
               (1 << 31, np.dtype(np.int32)))

    def __init__(self, tables: int, budget: int):
        self.tables = max(int(tables), 1)
        self.budget = int(budget)
        self.dtypes = [self._WIDTHS[0][1]] * self.tables
        self.blocks: list[list] = []         # [columns, rows used, rows it holds]
        self.used = 0                        # bytes of the rows kept
        self.ok = self.budget > 0

    def add(self, sp: np.ndarray) -> None:
        if not self.ok or not sp.shape[0]:
            return
        rows = int(sp.shape[0])
        top = sp.max(axis=0)
        if int(top.max()) >= self._WIDTHS[-1][0]:
            self.drop()                      # not an int32
            return
        dtypes = [max(dt, next(w for bound, w in self._WIDTHS if int(m) < bound),
                      key=lambda d: d.itemsize) for dt, m in zip(self.dtypes, top)]
        row_bytes = sum(d.itemsize for d in dtypes)
        if self.used + rows * row_bytes > self.budget:
            self.drop()
            return
        if dtypes != self.dtypes and self.blocks:
            self.blocks[-1][2] = self.blocks[-1][1]     # the next rows go to a wider block
        self.dtypes = dtypes
        lo = 0
        while lo < rows:
            if not self.blocks or self.blocks[-1][1] == self.blocks[-1][2]:
                self.blocks.append(self._block())
            blk = self.blocks[-1]
            m = min(rows - lo, blk[2] - blk[1])
            for t, col in enumerate(blk[0]):
                col[blk[1]:blk[1] + m] = sp[lo:lo + m, t]
            blk[1] += m
            lo += m
        self.used += rows * row_bytes

    def _block(self) -> list:
        row_bytes = sum(d.itemsize for d in self.dtypes)
        rows = max(1 << 12, _BLOCK_BYTES // row_bytes) // 8 * 8     # each column 8-byte aligned
        # an anonymous mapping of its own: numpy would ask for transparent huge pages
        # (madvise), which a host with fragmented memory compacts for at the first write of
        # each 2 MiB; the copy is written once and read once, so small pages cost less
        buf = np.frombuffer(mmap.mmap(-1, rows * row_bytes), dtype=np.uint8)
        cols, at = [], 0
        for dt in self.dtypes:
            cols.append(buf[at:at + rows * dt.itemsize].view(dt))
            at += rows * dt.itemsize
        return [cols, 0, rows]

    def drop(self) -> None:
        self.ok = False
        self.blocks = []

    def columns(self):
        """The kept stream again, block by block: each block's columns (one array per table,
        its rows in order), each block freed once read."""
        while self.blocks:
            cols, used, _ = self.blocks.pop(0)
            yield [c[:used] for c in cols]
            del cols


def _int64(col: np.ndarray, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(`col` as a contiguous int64 array, the buffer): a narrow kept column is widened into
    `buf` (grown as needed), one buffer for every column of pass 2: a fresh int64 array per
    column costs fresh pages, which the kernel zeroes, as often as not."""
    if col.dtype == np.int64 and col.flags.c_contiguous:
        return col, buf
    if buf.shape[0] < col.shape[0]:
        buf = np.empty(col.shape[0], dtype=np.int64)
    out = buf[:col.shape[0]]
    out[:] = col
    return out, buf


def _grown(a: np.ndarray, bound: int) -> np.ndarray:
    out = np.zeros(max(bound, 2 * a.shape[0]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def profiles_from_rows(read: Callable[[], Iterable[np.ndarray]], names: list[str],
                       rows: list[int] | Callable[[], list[int]], windows: int,
                       hot: int | None, jobs: int = 1, sample_rate: float | None = None,
                       prefix: int | None = None, in_memory: int | None = None,
                       keep_bytes: int | None = None) -> list[LocalityProfile]:
    """One profile per table of a row stream: `read()` yields [rows, tables] arrays of dense
    ids; it is called a second time for streams longer than `in_memory` (default IN_MEMORY;
    shorter ones are kept whole) whose int32 copy exceeds `keep_bytes` (default KEEP_BYTES).
    `prefix`: the selection's (default selection.HOT_PREFIX); `rows`: each table's rows (or a
    function giving them after pass 1).  Equal to `generate._profile` on each column."""
    from dlrmprof.tracegen import generate, selection

    prefix = selection.HOT_PREFIX if prefix is None else int(prefix)
    in_memory = max(IN_MEMORY if in_memory is None else int(in_memory), prefix)
    tables = [TablePass(n, max(in_memory, POLICY_PREFIX), sample_rate is not None,
                        generate.FIDELITY_PREFIX) for n in names]
    kept = _Kept(len(names), KEEP_BYTES if keep_bytes is None else keep_bytes)
    for sp in read():
        kept.add(sp)
        for i, t in enumerate(tables):
            t.feed(sp[:, i])
    n = tables[0].n if tables else 0
    if n == 0:
        return []
    rows = rows() if callable(rows) else rows
    candidates = selection.HOT_CANDIDATES if hot is None else (hot,)
    if n <= in_memory:                    # the whole stream is in memory: profile it there
        kept.drop()
        tasks = [(t.name, t.head, None, r, windows, hot, sample_rate)
                 for t, r in zip(tables, rows)]
        return generate._map(_whole_task, tasks, jobs)
    tasks = [(t.name, t.prefix[:prefix], r, selection.prefix_windows(windows, n, prefix),
              candidates) for t, r in zip(tables, rows)]
    chosen = generate._map(_select_task, tasks, jobs)
    wins, shards, klass = [], [], {}
    for i, (t, (_, sel)) in enumerate(zip(tables, chosen)):
        top, hot_rank, k = hot_ranks(t.counts, t.cold, sel["chosen"])
        wins.append((top, WindowState(hot_rank, k, n, windows, t.bound)))
        if sel["placement"] in CLASS_PLACEMENTS:
            klass[i] = ClassState(t.counts[:max(t.bound, 1)], n, windows,
                                  CLASS_PLACEMENTS[sel["placement"]])
        if sample_rate is not None:
            shards.append(_reuse.ShardsStream(_reuse.shards_heavy(t.probe), sample_rate))
    # pass 2: over the kept copy, or the input read again
    wide = np.empty(0, dtype=np.int64)
    for block in (kept.columns() if kept.ok else (sp.T for sp in read())):
        for i, (_, win) in enumerate(wins):
            col, wide = _int64(block[i], wide)
            win.feed(col)
            if i in klass:
                klass[i].feed(col)
            if shards:
                shards[i].feed(col)
        del block
    out = []
    for i, (t, r, (_, sel), (top, win)) in enumerate(zip(tables, rows, chosen, wins)):
        hist, cold = t.hist_cold()
        pooling = (np.ones(1, dtype=np.int64), np.array([n], dtype=np.int64))
        prof = assemble(t.name, r, n, hist, cold, pooling, top, win)
        prof = (with_classes(prof, klass[i]) if i in klass
                else selection.with_placement(prof, sel["placement"],
                                              counts=t.counts[:max(t.bound, 1)],
                                              band=sel.get("short_band")))
        prof.extra["hot_selection"] = sel
        prof.extra["source_extras"] = source_extras(t.head, None, prof.distinct,
                                                    batches=t.batches.result())
        if n > generate.FIDELITY_PREFIX:
            prof.extra["source_prefix"] = t.snap
        if shards:
            s_hist, s_cold, _ = shards[i].result()
            prof.extra["shards"] = generate.shards_record(s_hist, s_cold, sample_rate, prof)
        out.append(prof)
    return out


def _whole_task(args) -> LocalityProfile:
    from dlrmprof.tracegen import generate

    return generate._profile(*args)


def _select_task(args):
    from dlrmprof.tracegen import selection

    name, head, rows, windows, candidates = args
    return selection.select_hot(name, head, None, rows, windows, None, candidates)
