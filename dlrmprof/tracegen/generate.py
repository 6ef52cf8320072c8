"""The gen-trace pipeline: streams -> profiles -> synthetic trace (+ fidelity).

Criteo input is profiled as it streams in (`onepass`: memory O(distinct ids), no temporary
files); other inputs are in memory already.  Tables are independent: `jobs` > 1 profiles and
synthesizes them in parallel processes; `capture.capture_rank` splits them over
torch.distributed ranks.  Each table's model variant is chosen by measurement
(`selection.choose_hot`), and its fidelity is stored beside the naive baseline's
(`_measured`; on the first FIDELITY_PREFIX accesses of longer tables, `_measured_prefix`).  `plan_synthesis` and
`synthesize_table` let the ranks of a table-parallel capture synthesize their own tables for
`synthesize_trace(done=...)`.  gen-trace writes through `synthesize_packed`: each table written
into the file at its width as it comes, the in-memory int64 layout never built.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Callable

import numpy as np

from dlrmprof.tracegen import batches as _bat
from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.fidelity import fidelity as _fidelity
from dlrmprof.tracegen.fidelity import POLICY_PREFIX, source_extras, with_naive
from dlrmprof.tracegen.profile import (DEFAULT_WINDOWS, TOP_COUNTS, LocalityProfile,
                                       stream_histogram)
from dlrmprof.tracegen.readers import TableStream
from dlrmprof.tracegen.selection import (HOT_CANDIDATES, SELECTION_SEEDS, SHORT_STREAM,
                                         choose_hot, objective)
from dlrmprof.tracegen.naive import naive_figures
from dlrmprof.tracegen.synth import synthesize_bags
from dlrmprof.tracegen.tracefile import (PackedWriter, TableMeta, Trace, header_for,
                                         index_dtype)
from dlrmprof.tracegen.windows import default_rows, distinct_growth, planned_distinct

MODEL = "hot-ids-spaced+tail-lru-stack/windowed"
KEPT = ("per window: exact access counts of the K hottest ids, spaced by their normalised "
        "gap histogram (so their own short-range reuse is kept) or placed independently; "
        "exact count of first touches (the distinct count is kept); histogram of reuse "
        "distances among the other ids (LRU stack model, exact below 256, 16 bins per power "
        "of two above; no other id more accessed than the source's most accessed one); "
        "pooling-factor histogram.  Or (the class model: 2^15 accesses, 4097 ids or more) "
        "ids in classes by access count (octaves or half octaves), per window each class's "
        "first touches and reuse distances on its own LRU stack, no id used more than its "
        "class's largest source count.  Or (the budget model: 2^15 accesses or more) one "
        "windowed LRU stack, each id with a target count drawn from the source's counts, a "
        "reuse taking among the ids of its half-octave depth bucket one weighted by its "
        "budget left (or by budget left times its run of short reuses; or, on a stream whose "
        "short reuses do not follow the counts, below its measured short-band depth by the "
        "reuse chance measured for its count class), beside no hot set or K of 4 to 16 "
        "spaced hot ids.  K (0, 4, 8, 16, 64, 256, 1024, 4096), the placement, "
        "the class model and the budget model are chosen per table by measuring each against "
        "the source (LRU, LFU, popularity, distinct count, per-batch figures), the naive "
        "whole-stream stack model among the candidates, unless --hot is given")


# ------------------------------------------------------------------ profiling
NAIVE_SALT = 0x6E61697665     # the naive baseline's seed: derived from the table's, apart
# Fidelity of a table with more accesses (one per bag) is measured on its first
# FIDELITY_PREFIX accesses: the source's prefix figures (kept by the capture, `prefix_record`)
# against a synthesis of that length from the whole profile (which follows the source's first
# windows) and the naive baseline drawn from the prefix's own histogram.  Synthesis and
# simulation then cost O(FIDELITY_PREFIX) per table, not O(rows); the trace's indices are
# still synthesized at full length.
FIDELITY_PREFIX = 1 << 22


def _profile(name, ids, lengths, rows, windows, hot, sample_rate) -> LocalityProfile:
    hist_cold = stream_histogram(ids)
    # a given --hot still measures the two placements of its hot ids
    prof, tried = choose_hot(name, ids, lengths, rows, windows, hist_cold,
                             candidates=HOT_CANDIDATES if hot is None else (hot,))
    prof.extra["hot_selection"] = tried
    prof.extra["source_extras"] = source_extras(ids, lengths, prof.distinct)
    if lengths is None and ids.shape[0] > FIDELITY_PREFIX:
        head = _reuse.dense_ids(np.asarray(ids[:FIDELITY_PREFIX], dtype=np.int64))
        h, c = stream_histogram(head)
        prof.extra["source_prefix"] = prefix_record(h, c, np.bincount(head),
                                                    _bat.batch_stats(head, None))
    if sample_rate is not None:
        prof.extra["shards"] = shards_error(np.asarray(ids, dtype=np.int64), sample_rate, prof)
    return prof


def prefix_record(hist: np.ndarray, cold: int, counts: np.ndarray, batches) -> dict:
    """What fidelity needs of the source's first accesses (kept in profile.extra
    ["source_prefix"] while the trace is made, not written to the file): their reuse
    histogram, first touches, the TOP_COUNTS largest access counts and the per-batch figures
    (`batches.batch_stats`).  JSON-able."""
    n = int(np.asarray(hist).sum()) + int(cold)
    c = np.asarray(counts, dtype=np.int64)
    k = min(TOP_COUNTS, c.shape[0])
    top = np.sort(c)[::-1][:k]      # a sort, as fidelity.shares_of_counts: counts are ties
    nz = np.flatnonzero(hist)
    return {"accesses": n, "hist": np.asarray(hist)[: int(nz[-1]) + 1 if nz.size else 0].tolist(),
            "cold": int(cold), "top_counts": top[top > 0].tolist(),
            "batches": [b.to_json() for b in batches]}


def _prefix_profile(prof: LocalityProfile, pre: dict) -> LocalityProfile:
    """The source's prefix as a profile that fidelity and the naive baseline read (its whole
    histogram, counts, extras; one window)."""
    n, cold = int(pre["accesses"]), int(pre["cold"])
    hist = np.asarray(pre["hist"], dtype=np.int64)
    extras = dict(prof.extra.get("source_extras") or {}, batches=pre["batches"])
    return LocalityProfile(
        name=prof.name, rows=prof.rows, accesses=n, distinct=cold, num_bags=n,
        bag_len_values=np.ones(1, dtype=np.int64), bag_len_counts=np.array([n], dtype=np.int64),
        hist=hist, cold=cold, top_counts=np.asarray(pre["top_counts"], dtype=np.int64),
        window_size=n, hot_win=np.zeros((0, 1), dtype=np.int64),
        tail_cold=np.array([cold], dtype=np.int64), tail_hist=hist[None, :],
        extra={"source_extras": extras})


def shards_error(ids: np.ndarray, rate: float, prof: LocalityProfile, seed: int = 0) -> dict:
    """SHARDS estimate of the MRC at `rate` and its error against the exact one."""
    hist, cold, _ = _reuse.shards_histogram(ids, rate, seed)
    return shards_record(hist, cold, rate, prof)


def shards_record(hist: np.ndarray, cold: int, rate: float, prof: LocalityProfile) -> dict:
    """A SHARDS estimate's MRC and its error against the profile's exact one."""
    sizes = _reuse.mrc_sizes(prof.distinct)
    est = _reuse.hit_rates(hist, cold, sizes)
    exact = prof.mrc(sizes)[1]
    return {"rate": float(rate), "mrc_mae_vs_exact": float(np.abs(est - exact).mean()),
            "mrc_max_error_vs_exact": float(np.abs(est - exact).max()),
            "sizes": sizes.tolist(), "estimated_hit_rate": est.tolist()}


def profiles_from_criteo(reader, windows: int = DEFAULT_WINDOWS, hot: int | None = None,
                         jobs: int = 1, on_rows: Callable[[int], None] | None = None,
                         sample_rate: float | None = None) -> list[LocalityProfile]:
    """Consume a `read_criteo` reader; one profile per table (pooling factor 1), in memory
    O(distinct ids) and no temporary files (`onepass`: an input longer than
    onepass.IN_MEMORY rows is read a second time, with `reader.again()`)."""
    from dlrmprof.fsutil import remove_stale_spills
    from dlrmprof.tracegen.onepass import profiles_from_rows

    remove_stale_spills()
    def read():
        first = not read.calls
        read.calls += 1
        for chunk in (reader if first else reader.again(progress=None)):
            if on_rows and first:
                on_rows(chunk.sparse.shape[0])
            yield chunk.sparse
    read.calls = 0

    def rows():
        return [reader.table_rows or max(d, 1) for d in reader.table_distinct]

    return profiles_from_rows(read, list(reader.table_names), rows, windows, hot, jobs,
                              sample_rate)


def profiles_from_streams(streams: list[TableStream], windows: int = DEFAULT_WINDOWS,
                          hot: int | None = None, jobs: int = 1,
                          sample_rate: float | None = None) -> list[LocalityProfile]:
    return _map(_profile_stream_task, [(s, windows, hot, sample_rate) for s in streams], jobs)


def _profile_stream_task(args):
    s, windows, hot, sample_rate = args
    return _profile(s.name, s.ids, s.lengths, s.rows, windows, hot, sample_rate)


def _worker_signals() -> None:
    """Workers leave Ctrl-C to the parent (which stops them and cleans up): no traceback
    from each worker, and SIGTERM ends a worker at once."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _map(fn, tasks, jobs):
    if jobs <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    ex = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), initializer=_worker_signals)
    try:
        out = list(ex.map(fn, tasks))
    except BaseException:
        # interrupted (Ctrl-C, SIGTERM) or failed: stop the workers now rather than wait for
        # their tables to finish
        ex.shutdown(wait=False, cancel_futures=True)
        for proc in list((getattr(ex, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    ex.shutdown(wait=True)
    return out


# ------------------------------------------------------------------ synthesis
def _measured(prof, B, rows, ss):
    """(ids, offsets, fidelity with the naive baseline beside it) of a synthesis of the
    source's length.  A short stream's error is mostly the draw: keep the best of a few
    realizations by the selection objective (deterministic in the seed)."""
    ids, offs, facts = synthesize_bags(prof, num_samples=B, rows=rows, seed=ss)
    fid = _fidelity(prof, ids, offsets=offs) | facts
    short = prof.accesses <= SHORT_STREAM
    if short:
        for alt in ss.spawn(SELECTION_SEEDS - 1):
            ids2, offs2, facts2 = synthesize_bags(prof, num_samples=B, rows=rows, seed=alt)
            fid2 = _fidelity(prof, ids2, offsets=offs2) | facts2
            if objective(fid2) < objective(fid):
                ids, offs, fid = ids2, offs2, fid2
    fid["realizations"] = SELECTION_SEEDS if short else 1
    naive_seed = np.random.SeedSequence([int(ss.generate_state(1)[0]), NAIVE_SALT])
    naives = [_naive_fidelity(prof, rows, s, offs)
              for s in naive_seed.spawn(fid["realizations"])]
    return ids, offs, with_naive(fid, naives)


def _naive_fidelity(prof: LocalityProfile, rows: int, seed, offsets) -> dict:
    """Fidelity of the naive baseline (`synth.synthesize_naive` at the source's length, bags
    `offsets`), from what its draws keep (`naive.naive_figures`): its stream is not made."""
    extras = prof.extra.get("source_extras") or {}
    sizes = tuple(int(b["batch_size"]) for b in extras.get("batches", ()))
    figs = naive_figures(prof, length=prof.accesses, rows=rows, seed=seed, head=POLICY_PREFIX,
                         offsets=offsets, batch_sizes=sizes)
    return _fidelity(prof, None, figures=figs)


def _measured_prefix(prof, rows, ss) -> dict:
    """Fidelity on the source's first FIDELITY_PREFIX accesses (profile.extra
    ["source_prefix"]): a synthesis of that length from the whole profile, and the naive
    baseline drawn from the prefix's histogram, against the prefix's figures."""
    src = _prefix_profile(prof, prof.extra["source_prefix"])
    ids, offs, facts = synthesize_bags(prof, num_samples=src.num_bags, rows=rows, seed=ss)
    fid = _fidelity(src, ids, offsets=offs) | facts
    del ids
    fid["realizations"] = 1
    naive_seed = np.random.SeedSequence([int(ss.generate_state(1)[0]), NAIVE_SALT])
    fid = with_naive(fid, [_naive_fidelity(src, rows, naive_seed.spawn(1)[0], offs)])
    fid["prefix_accesses"] = src.accesses
    fid["measured_on"] = (f"the source's first {src.accesses} accesses against a synthesis "
                          f"of that length (the stream has {prof.accesses}; above "
                          f"{FIDELITY_PREFIX} accesses fidelity is measured on this prefix)")
    return fid


def synthesize_table(args) -> tuple:
    """One task of `plan_synthesis`: (ids int64 or None, offsets or None when the pooling
    factor is constant, fidelity or None, distinct ids)."""
    prof, B, rows, ss, with_fidelity, keep = args
    fid = distinct = None
    if with_fidelity and "source_prefix" in prof.extra:
        ids = offs = None
        if keep:                    # first: the same draws as the whole-stream path makes
            ids, offs, _ = synthesize_bags(prof, num_samples=B, rows=rows, seed=ss)
        fid = _measured_prefix(prof, rows if B == prof.num_bags else max(rows, prof.rows), ss)
        if not keep:
            return None, None, fid, 0
    elif with_fidelity and B == prof.num_bags:
        ids, offs, fid = _measured(prof, B, rows, ss)
        distinct = fid["distinct_synthetic"]     # measured on these ids: no second count
    else:
        ids, offs, _ = synthesize_bags(prof, num_samples=B, rows=rows, seed=ss)
        if with_fidelity:
            # the targets compare synthetic and source streams of the same length: measure
            # on a same-length synthesis from the same profile and seed
            _, _, fid = _measured(prof, prof.num_bags, max(rows, prof.rows), ss)
            fid["measured_on"] = "a same-length synthetic stream (the trace's length differs)"
    if not keep:
        return None, None, fid, 0
    if len(prof.bag_len_values) == 1:
        offs = None                     # constant pooling factor: offsets are arithmetic
    else:
        lens = np.diff(offs)
        if lens.size and (lens == lens[0]).all():
            offs = None
    return ids, offs, fid, _distinct(ids, rows) if distinct is None else distinct


def _distinct(ids: np.ndarray, rows: int) -> int:
    """Distinct ids of a stream of ids in [0, rows)."""
    if ids.size and rows <= 4 * ids.size:
        return int(np.count_nonzero(np.bincount(ids, minlength=rows)))
    return int(np.unique(ids).size) if ids.size else 0


MODEL_NOTES = {
    "length_scaling": "a shorter --length follows the source's prefix (its first windows); "
                      "a longer one repeats the source's last full window (hot counts, reuse "
                      "histogram) and grows the distinct ids along the source's fitted curve "
                      "D(n) = distinct * (n / accesses)^b (see 'extrapolated'); fidelity is "
                      "measured on a same-length synthesis",
    "rows_scaling": "ids are a random injection into the table's rows; with fewer rows than "
                    "the source's distinct ids, new ids stop at rows and first touches reuse "
                    "the least recently used id"}


def _extrapolation(p: LocalityProfile, rows: int, B: int) -> dict:
    """What a trace longer than its source invents, per table: accesses beyond the source,
    the fitted growth exponent and the distinct count it plans."""
    n = int(round(p.accesses * B / p.num_bags))
    return {"source_accesses": p.accesses, "accesses": n, "source_distinct": p.distinct,
            "planned_distinct": min(planned_distinct(p, n), rows),
            "distinct_growth": distinct_growth(p),
            "repeated": "the last full source window's hot counts and reuse histogram"}


def check_memory(profiles: list[LocalityProfile], num_samples: int, table_rows: int | None,
                 keep_indices: bool, hint: str, fidelity: bool = True,
                 available: int | None = None, packed: bool = False) -> None:
    """Refuse, before allocating, a synthesis whose arrays exceed the memory available now:
    the trace's indices and offsets (8 B each, kept) plus the largest table's working set
    (its stream and the synthesizer's and fidelity pass's per-access arrays, about 32 B an
    access, and the fidelity pass's int32 array over the table's rows).  `packed`
    (`synthesize_packed`): each table goes to the file as it is made, so only the largest
    table's ids at the file's width and its bag lengths join its working set."""
    from dlrmprof import memcheck

    B = int(num_samples)
    items, work = [], []
    for p in profiles:
        n = int(round(p.accesses * B / p.num_bags)) if p.num_bags else 0
        rows = int(table_rows) if table_rows is not None else max(int(p.rows), n)
        held = 0
        if keep_indices and packed:
            held = index_dtype(rows).itemsize * n + (0 if len(p.bag_len_values) == 1 else 4 * B)
        elif keep_indices:
            items.append((f"table {p.name} ({n} synthetic indices)", 8 * n + 8 * B))
        work.append((f"table {p.name} (synthesizing {n} accesses over {rows} rows)",
                     32 * n + (4 * rows if fidelity else 0) + held))
    items.append(max(work, key=lambda it: it[1]))
    memcheck.check_fits(items, what="the synthetic trace", hint=hint, available=available)


def samples_for(length, profiles: list[LocalityProfile]) -> int | None:
    """gen-trace's --length as a sample count: None (the source's), an int, or a float read
    as a multiple of the source's samples."""
    if length is None or isinstance(length, int):
        return length
    return max(1, int(round(length * max(p.num_bags for p in profiles))))


def plan_synthesis(profiles: list[LocalityProfile], num_samples: int | None = None,
                   table_rows: int | None = None, seed: int = 0, compute_fidelity: bool = True,
                   keep_indices: bool = True,
                   memory_hint: str = "lower --length or --table-rows",
                   packed: bool = False) -> tuple[int, list]:
    """(B, one `synthesize_table` task per table): what `synthesize_trace` runs, so that the
    ranks of a table-parallel capture can run their tables' tasks themselves (a task depends
    on its table's profile, B and the seed only).  Refuses, before anything is allocated, a
    synthesis that would not fit in memory (`check_memory`; `packed`: kept as the file
    stores them, `synthesize_packed`)."""
    if not profiles:
        raise ValueError("no tables to synthesize")
    B = num_samples if num_samples is not None else max(p.num_bags for p in profiles)
    check_memory(profiles, B, table_rows, keep_indices, memory_hint, compute_fidelity,
                 packed=packed)
    seqs = np.random.SeedSequence(int(seed)).spawn(len(profiles))
    tasks = []
    for p, ss in zip(profiles, seqs):
        # accesses of this table at B samples (mean pooling factor x B) -> default rows
        n_est = int(round(p.accesses * B / p.num_bags)) if p.num_bags else 0
        rows = int(table_rows) if table_rows is not None else default_rows(p, n_est)
        tasks.append((p, B, rows, ss, compute_fidelity, keep_indices))
    return int(B), tasks


def synthesize_trace(profiles: list[LocalityProfile], source: dict, num_samples: int | None = None,
                     table_rows: int | None = None, seed: int = 0, compute_fidelity: bool = True,
                     jobs: int = 1, keep_indices: bool = True,
                     memory_hint: str = "lower --length or --table-rows",
                     done: dict | None = None) -> Trace:
    """A trace with synthetic indices for every table; with keep_indices=False a profile-only
    trace (tables are still synthesized once when compute_fidelity, to measure fidelity).
    `memory_hint` ends the one-line error when the synthesis would not fit in memory.
    `done`: {table index: `synthesize_table` result} already computed elsewhere (the ranks
    of a table-parallel capture) for the same plan; the rest is synthesized here.  Its
    entries are consumed (dropped once assembled)."""
    B, tasks, profiles, generator = _plan_trace(profiles, num_samples, table_rows, seed,
                                                compute_fidelity, keep_indices, memory_hint)
    results = _results(tasks, jobs, done or {})
    if not keep_indices:
        fids = {}
        if compute_fidelity:
            for p, (_, _, fid, _) in zip(profiles, results):
                fids[p.name] = fid
        metas = [TableMeta(p.name, t[2], p.accesses, p.distinct) for p, t in zip(profiles, tasks)]
        header = header_for(metas, profiles, B, source, int(seed), generator, fids, False)
        return Trace(num_samples=B, tables=tuple(metas), profiles=tuple(profiles), header=header)
    layout = _Layout(profiles, B)
    metas, fids = _collect(profiles, tasks, results, layout.add)
    indices, offsets = layout.finish()
    header = header_for(metas, profiles, B, source, int(seed), generator, fids, True)
    return Trace(num_samples=B, tables=tuple(metas), profiles=tuple(profiles), header=header,
                 indices=indices, offsets=offsets)


def synthesize_packed(profiles: list[LocalityProfile], source: dict, writer: PackedWriter,
                      num_samples: int | None = None, table_rows: int | None = None,
                      seed: int = 0, jobs: int = 1,
                      memory_hint: str = "lower --length or --table-rows",
                      done: dict | None = None) -> Trace:
    """What gen-trace writes: the trace of `synthesize_trace` (with fidelity) as its header
    and profiles (a `Trace` without the in-memory layout), its tables added to `writer` (an
    open `PackedWriter`, which writes them into its file) as the syntheses come: the int64
    TBE layout is never built.  `writer.finish(trace)` then writes the bytes (and returns
    the digest) that `synthesize_trace(...).save(path)` would."""
    B, tasks, profiles, generator = _plan_trace(profiles, num_samples, table_rows, seed,
                                                True, True, memory_hint, packed=True)
    writer.start(B)
    metas, fids = _collect(profiles, tasks, _results(tasks, jobs, done or {}), writer.add)
    header = header_for(metas, profiles, B, source, int(seed), generator, fids, True)
    return Trace(num_samples=B, tables=tuple(metas), profiles=tuple(profiles), header=header)


def _plan_trace(profiles, num_samples, table_rows, seed, compute_fidelity, keep_indices,
                memory_hint, packed=False) -> tuple[int, list, list, dict]:
    """(B, tasks, profiles as the file stores them, header.generator) of a trace."""
    B, tasks = plan_synthesis(profiles, num_samples, table_rows, seed, compute_fidelity,
                              keep_indices, memory_hint, packed)
    # the source's prefix figures serve the fidelity measurement only: not in the file
    profiles = [replace(p, extra={k: v for k, v in p.extra.items() if k != "source_prefix"})
                if "source_prefix" in p.extra else p for p in profiles]
    generator = {"model": MODEL, "kept": KEPT,
                 "windows": [p.num_windows for p in profiles],
                 "hot_ids": [p.hot_k for p in profiles],
                 "variants": [p.extra.get("hot_selection", {}).get("placement", "given")
                              for p in profiles],
                 "num_samples": int(B), "table_rows": table_rows, **MODEL_NOTES}
    extrapolated = {p.name: _extrapolation(p, t[2], B) for p, t in zip(profiles, tasks)
                    if B > p.num_bags and p.accesses}
    if extrapolated:
        generator["extrapolated"] = extrapolated
    return B, tasks, profiles, generator


def _results(tasks: list, jobs: int, done: dict):
    """Each task's result in table order: from `done`, else computed here (one table at a
    time with jobs=1, a lazy map: only the output arrays stay resident)."""
    todo = [t for t in range(len(tasks)) if t not in done]
    if jobs <= 1:
        made = map(synthesize_table, (tasks[t] for t in todo))
    else:
        made = iter(_map(synthesize_table, [tasks[t] for t in todo], jobs))
    for t in range(len(tasks)):
        yield done.pop(t) if t in done else next(made)


def _collect(profiles, tasks, results, sink) -> tuple[list, dict]:
    """(metas, fidelity per table), each table's (ids, offsets or None, rows) handed to
    `sink` as its result comes and dropped before the next one is made."""
    metas, fids = [], {}
    for p, task, res in zip(profiles, tasks, results):
        ids, offs, fid, distinct = res
        del res
        metas.append(TableMeta(name=p.name, rows=task[2], accesses=int(ids.size),
                               distinct=distinct))
        if fid is not None:
            fids[p.name] = fid
        sink(ids, offs, task[2])
        del ids, offs
    return metas, fids


class _Layout:
    """The TBE layout (int64 indices and offsets) filled table by table.  The offsets array
    is made last, once every table's working arrays are gone: the trace's two arrays and one
    table's synthesis are never resident together."""

    def __init__(self, profiles, B: int):
        fixed = all(len(p.bag_len_values) == 1 for p in profiles)
        total = sum(int(p.bag_len_values[0]) * B for p in profiles) if fixed else None
        self.indices = np.empty(total, dtype=np.int64) if fixed else None
        self.parts, self.bags, self.B, self.base = [], [], B, 0

    def add(self, ids, offs, rows) -> None:
        if self.indices is not None:
            self.indices[self.base:self.base + ids.size] = ids
        else:
            self.parts.append(np.asarray(ids, dtype=np.int64))
        self.bags.append((self.base, ids.size // self.B if self.B else 0, offs))
        self.base += int(ids.size)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        B, indices = self.B, self.indices
        if indices is None:
            indices = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int64)
            self.parts = []
        elif self.base != indices.size:
            raise AssertionError("synthesized fewer indices than planned")
        offsets = np.empty(len(self.bags) * B + 1, dtype=np.int64)
        for t, (lo, step, offs) in enumerate(self.bags):
            if offs is None:
                offsets[t * B:(t + 1) * B] = np.arange(B, dtype=np.int64) * step + lo
            else:
                offsets[t * B:(t + 1) * B] = offs[:-1] + lo
        offsets[-1] = self.base
        self.bags = []
        return indices, offsets


def synthesize(profile: LocalityProfile, num_samples: int | None = None, rows: int | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One table: (indices, offsets [B+1]) synthesized from its profile."""
    ids, offs, _ = synthesize_bags(profile, num_samples=num_samples, rows=rows, seed=seed)
    return ids, offs


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def materialize(trace: Trace, num_samples: int | None = None, seed: int = 0,
                memory_hint: str = "lower --length") -> Trace:
    """`trace` if it has indices for `num_samples` (default: its own); otherwise a new trace
    synthesized from its profiles (deterministic in `seed`).  It lives here, not on `Trace`,
    so the trace file format does not import the synthesizer."""
    B = trace.num_samples if num_samples is None else int(num_samples)
    if trace.has_indices and B == trace.num_samples:
        return trace
    out = synthesize_trace(list(trace.profiles), source=trace.header.get("source", {}),
                           num_samples=B, seed=seed, compute_fidelity=False,
                           memory_hint=memory_hint)
    # the profiles' measured fidelity (gen-trace's, same model) stays with them
    out.header["fidelity"] = dict(trace.header.get("fidelity", {}))
    return out
