"""Cache simulation of an embedding op's address stream (source: ``"simulated"``).

An embedding bag reads, for every lookup, the cache lines of one table row.  `row_lines()` turns
(indices, row_bytes, table base) into that stream of 64-byte line numbers, in the order the op
issues them (table by table, bag by bag).  `simulate_hierarchy()` runs it through set-associative
LRU caches of the host's L1d/L2/L3 sizes and ways (numba, one pass per level): each level sees the
misses of the level above (a non-inclusive "filtered" hierarchy: a good model of private L1/L2,
an approximation of an exclusive victim L3 such as AMD's).  Only the row traffic is simulated
(index/offset arrays and the output are streamed and prefetched; they are not in the stream), on
one core: with several threads each core's L1/L2 sees its share of bags, so per-core levels are
optimistic for multi-threaded runs.

For contrast, the **fully-associative LRU** hit rates at the same capacities come from exact
reuse distances of the same line stream (`dlrmprof.tracegen.reuse_distances`): the miss-ratio
curve of the trace itself.  The gap between the two is what associativity (conflict misses)
costs.

Entry points:
``simulate_op(tables, caches, ...)`` -> the per-op dict the report's ``cache`` section and
``roofline.verdicts(cache=...)`` use: ``{levels: [...], dram_bytes, row_bytes_total, ...}``.
``simulate_trace(trace, caches, ...)`` -> per-table results and ``emb.all`` for a `Trace`; each
table's result also carries ``trace_mrc``: the table's own miss-ratio curve (from its locality
profile, row granularity) at the same capacities.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
from numba import njit

from dlrmprof.profile.host import data_caches
from dlrmprof.tracegen.policies import _lru_pass   # the one set-associative LRU kernel

LINE = 64


def lru_misses(lines: np.ndarray, size_bytes: int, ways: int, line_bytes: int = LINE
               ) -> np.ndarray:
    """The missed line numbers (in order) of a set-associative LRU cache."""
    lines = np.ascontiguousarray(lines, dtype=np.int64)
    nlines = max(1, size_bytes // line_bytes)
    ways = max(1, min(int(ways or nlines), nlines))
    nsets = max(1, nlines // ways)
    out = np.empty(lines.size, dtype=np.int64)
    n = _lru_pass(lines, nsets, ways, out)
    return out[:n].copy()


def reference_lru_misses(lines: Iterable[int], size_bytes: int, ways: int,
                         line_bytes: int = LINE) -> list[int]:
    """Plain-Python reference of `lru_misses` (tests)."""
    from collections import OrderedDict
    nlines = max(1, size_bytes // line_bytes)
    ways = max(1, min(int(ways or nlines), nlines))
    nsets = max(1, nlines // ways)
    sets = [OrderedDict() for _ in range(nsets)]
    out = []
    for ln in lines:
        s = sets[ln % nsets]
        if ln in s:
            s.move_to_end(ln)
        else:
            if len(s) >= ways:
                s.popitem(last=False)
            s[ln] = True
            out.append(ln)
    return out


@njit(cache=True)
def _expand_rows(indices, base_line_bytes, row_bytes, lines_per_row, out):
    n = 0
    for i in range(indices.size):
        start = base_line_bytes + indices[i] * row_bytes
        first = start // 64
        last = (start + row_bytes - 1) // 64
        for ln in range(first, last + 1):
            out[n] = ln
            n += 1
    return n


def row_lines(indices: np.ndarray, row_bytes: int, base: int = 0) -> np.ndarray:
    """Line numbers touched by reading rows `indices` of a table at byte address `base`."""
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    per = (row_bytes + LINE - 1) // LINE + 1  # a row may straddle one more line
    out = np.empty(indices.size * per, dtype=np.int64)
    n = _expand_rows(indices, int(base), int(row_bytes), per, out)
    return out[:n]


def _levels(caches: Sequence[dict]) -> list[dict]:
    dc = data_caches(list(caches)) if caches and "type" in caches[0] else list(caches)
    return [c for c in dc if c.get("size_bytes")]


def simulate_hierarchy(lines: np.ndarray, caches: Sequence[dict], *,
                       fully_associative: bool = True) -> dict:
    """Hit rates per level, predicted DRAM lines/bytes, and the fully-associative contrast.

    ``levels[k]``: ``{level, size_bytes, ways, accesses (reaching this level), hits,
    local_hit_rate, cumulative_hit_rate (fraction of all accesses served at or above it),
    fa_cumulative_hit_rate (fully-associative LRU of the same total capacity, when known)}``.
    """
    levels = _levels(caches)
    total = int(lines.size)
    stream = np.ascontiguousarray(lines, dtype=np.int64)
    out_levels = []
    served = 0
    for c in levels:
        line_b = int(c.get("line_bytes") or LINE)
        misses = lru_misses(stream, int(c["size_bytes"]), int(c.get("ways") or 0), line_b)
        hits = stream.size - misses.size
        served += hits
        out_levels.append({"level": int(c["level"]), "size_bytes": int(c["size_bytes"]),
                           "ways": c.get("ways"), "accesses": int(stream.size),
                           "hits": int(hits),
                           "local_hit_rate": hits / stream.size if stream.size else 0.0,
                           "cumulative_hit_rate": served / total if total else 0.0})
        stream = misses
    res: dict[str, Any] = {"line_accesses": total, "distinct_lines": None,
                           "levels": out_levels, "dram_lines": int(stream.size),
                           "dram_bytes": int(stream.size) * LINE, "source": "simulated",
                           "model": "set-associative LRU per level, each level fed the misses "
                                    "of the level above; row traffic only; one core"}
    if fully_associative and total:
        # the fully-associative analogue of level k is one LRU holding L1+...+Lk
        # (non-inclusive hierarchy): compare cumulative hit rates at cumulative capacities
        cum = [int(x) for x in np.cumsum([c["size_bytes"] for c in levels])]
        fa = fully_associative_hit_rates(lines, cum)
        if fa is None:
            res["fully_associative"] = {"available": False,
                                        "reason": "dlrmprof.tracegen.reuse_distances missing"}
        else:
            rates, distinct, _ = fa
            res["distinct_lines"] = distinct
            for lv, r in zip(out_levels, rates):
                lv["fa_cumulative_hit_rate"] = float(r)
            res["fully_associative"] = {"available": True, "capacities_bytes": cum,
                                        "hit_rates": [float(r) for r in rates],
                                        "source": "simulated (exact reuse distances)"}
    return res


def fully_associative_hit_rates(lines: np.ndarray, sizes_bytes: Sequence[int], dist=None):
    """Exact LRU hit rate of a fully-associative cache of each size, from reuse distances.

    Returns (rates, distinct_lines (= cold misses), distances) or None when the reuse-distance profiler of the
    trace toolkit is not available.
    """
    if dist is None:
        try:
            from dlrmprof.tracegen import reuse_distances
        except ImportError:
            try:
                from dlrmprof.tracegen.reuse import reuse_distances
            except ImportError:
                return None
        dist = reuse_distances(np.asarray(lines, dtype=np.int64))
    n = dist.size
    cold = int((dist < 0).sum())
    warm = np.sort(dist[dist >= 0])
    rates = [float(np.searchsorted(warm, s // LINE, side="left")) / n if n else 0.0
             for s in sizes_bytes]
    return rates, cold, dist


def simulate_op(tables: Sequence[tuple], caches: Sequence[dict], *,
                max_lookups: int | None = 2_000_000, fully_associative: bool = True) -> dict:
    """Simulate one embedding op reading `tables` = [(indices, row_bytes[, rows]), ...] in order.

    Tables sit one after another in memory, each 4 KiB-aligned (as separate allocations).  If
    the op has more than `max_lookups` lookups only the first `max_lookups` are simulated
    (``sampled`` says so; rates are then of that prefix).  Returns `simulate_hierarchy`'s dict
    plus ``lookups``, ``row_bytes_total`` (bytes of all rows looked up, the effective
    convention) and ``dram_bytes`` scaled to the whole op when sampled.
    """
    parts, base, lookups, row_total = [], 0, 0, 0
    remaining = max_lookups
    total_lookups = sum(int(np.asarray(tab[0]).size) for tab in tables)
    for tab in tables:
        indices, row_bytes = tab[0], int(tab[1])
        ix = np.asarray(indices, dtype=np.int64)
        full_ix = ix
        if remaining is not None:
            ix = ix[:max(remaining, 0)]
            remaining -= ix.size
        if ix.size:
            parts.append(row_lines(ix, row_bytes, base))
            lookups += ix.size
            row_total += ix.size * row_bytes
        nrows = int(tab[2]) if len(tab) > 2 and tab[2] else (
            int(full_ix.max()) + 1 if full_ix.size else 0)
        base += -(-max(nrows, 1) * row_bytes // 4096) * 4096
    lines = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    res = simulate_hierarchy(lines, caches, fully_associative=fully_associative)
    scale = total_lookups / lookups if lookups else 1.0
    res.update(lookups=lookups, total_lookups=total_lookups, sampled=lookups < total_lookups,
               row_bytes_total=int(round(row_total * scale)),
               dram_bytes=int(round(res["dram_bytes"] * scale)))
    return res


def trace_mrc(profile, row_bytes: int, caches: Sequence[dict]) -> dict:
    """The table's own fully-associative LRU hit rates (its locality profile's miss-ratio
    curve, in rows) at the hierarchy's cumulative capacities, and the whole curve in bytes."""
    levels = _levels(caches)
    cum = [int(x) for x in np.cumsum([c["size_bytes"] for c in levels])]
    at = np.array([max(1, c // row_bytes) for c in cum], dtype=np.int64)
    _, rates = profile.mrc(at)
    sizes, curve = profile.mrc()
    return {"capacities_bytes": cum, "hit_rates": [float(r) for r in rates],
            "curve": {"sizes_bytes": [int(x) * row_bytes for x in sizes],
                      "hit_rates": [float(r) for r in curve]},
            "source": "trace locality profile (row reuse distances)"}


def simulate_trace(trace, caches: Sequence[dict], *, dim: int, elem_bytes: int = 4,
                   max_lookups: int | None = 2_000_000, per_table: bool = True) -> dict:
    """Per-table (``emb.<name>``) and whole-op (``emb.all``) simulations for a `Trace`."""
    row_bytes = dim * elem_bytes
    tabs = []
    for t, meta in enumerate(trace.tables):
        ix, _ = trace.table_bags(t)
        tabs.append((meta.name, np.asarray(ix), row_bytes, int(meta.rows)))
    out = {}
    profiles = getattr(trace, "profiles", None) or ()
    if per_table:
        for t, (name, ix, rb, rows) in enumerate(tabs):
            res = simulate_op([(ix, rb, rows)], caches, max_lookups=max_lookups)
            if t < len(profiles):
                res["trace_mrc"] = trace_mrc(profiles[t], rb, caches)
            out[f"emb.{name}"] = res
    out["emb.all"] = simulate_op([(ix, rb, rows) for _, ix, rb, rows in tabs], caches,
                                 max_lookups=max_lookups)
    return out
