"""Synthesize a table's access stream from its `LocalityProfile`.

Model (see profile.py for what is stored):

* the stream is cut into the profile's W windows (stretched or shrunk to the requested
  length); inside window w the position of every event is random, but the number of each
  kind of event is the source's (scaled by length ratio):
  - an access to hot id k (the K most popular ids, independent-reference model per window),
  - a tail first touch (the cold schedule: keeps the distinct count exact),
  - a tail re-access: a reuse distance d drawn from the window's tail histogram (among tail
    ids only); the id at depth d of a virtual LRU stack of tail ids is taken and moved to
    the top.  A draw deeper than the stack so far is redrawn (up to 8 times) and then
    clamped to the bottom, so early windows do not turn into extra first touches;
  - a tail id that has reached the source's largest tail count (the (K+1)-th largest
    count, scaled by the length) leaves the stack when drawn, and the access takes the id
    now at that depth: no tail id grows more popular than the source's (the stack model
    alone makes a few where popularity drifts, and they would displace the hot ids from
    the top);
* the virtual stack (`_lru_stack`) is an occupancy bitmap over time slots with a Fenwick
  tree over its words (order statistics by binary lifting): O(log N) per access, time axis
  compacted to O(distinct) so it stays in cache;
* ids are fresh: the i-th new id is mapped through a seeded random sample of the table's
  rows (a random injection), never a source value.  Same seed -> same bytes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numba import njit

from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen._lru_stack import (compact_stack, new_stack, pop_depth, remove_slot,
                                          slot_at)
from dlrmprof.tracegen.profile import BUDGET_MODEL, CLASS_MODEL, LocalityProfile, gap_row
from dlrmprof.tracegen.reuse import fenwick_add
from dlrmprof.tracegen.windows import default_rows, tail_cap, window_tables

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('_lru_stack.py', 'hashmap.py', 'profile.py', 'reuse.py')
_DEPS_SHA256 = 'bd2462119fdb131a'


@njit(cache=True, no_cfunc_wrapper=True)
def _next(state):
    state[0] += np.uint64(0x9E3779B97F4A7C15)
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, no_cfunc_wrapper=True)
def _uniform(state):
    return np.float64(_next(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, no_cfunc_wrapper=True)
def _below(state, n):
    """Uniform integer in [0, n)."""
    return np.int64(_uniform(state) * n)


GUIDE = 1024        # largest guide table of the tail-distance draw


@njit(cache=True, no_cfunc_wrapper=True)
def _draw_bin(state, cdf, tot, edges):
    """A value drawn from a binned histogram (cdf over bins, total tot): a bin by its count,
    then uniformly inside the bin's [edges[a], edges[a + 1])."""
    u = _below(state, tot)
    lo = 0                              # the first bin whose cdf exceeds u (the last if none)
    span = cdf.shape[0]                 # is in [lo, lo + span): halved, one load a step
    while span > 1:
        half = span >> 1
        lo += half * (cdf[lo + half - 1] <= u)
        span -= half
    width = edges[lo + 1] - edges[lo]
    return edges[lo] + (_below(state, width) if width > 1 else 0)


@njit(cache=True, no_cfunc_wrapper=True)
def _free_slot(parent, p, L):
    """First free slot at or after p (cyclically) in a window of L slots; union-find with
    path halving over 'next free' links (parent[L] is the wrap sentinel)."""
    while True:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        if p < L:
            return p
        p = 0


@njit(cache=True, no_cfunc_wrapper=True)
def _place_hot(sched, parent, L, hot_cnt, w, gap_cdf, gap_edges, state, gaps, rest):
    """Fill sched[0:L] with the window's events in order: hot rank k, or -1 for a tail event.

    With a gap histogram, hot id k's c >= 2 accesses start at a uniform slot and are spaced
    by c normalised gaps drawn from the histogram of its count class (see
    profile._window_pass), rescaled to add up to the window (cyclically); a taken slot moves an
    access to the next free one.  Uniform spacings come out for independent references,
    clusters for sessions.  All other events (tail events, and hot accesses without a gap
    histogram) fill the free slots in random order: independent references."""
    for i in range(L + 1):
        parent[i] = i
        if i < L:
            sched[i] = -2
    K = hot_cnt.shape[0]
    C = gap_cdf.shape[0]
    nbg = gap_cdf.shape[1]
    r = 0
    for k in range(K):
        c = hot_cnt[k, w]
        if c == 0:
            continue
        cl = gap_row(c)
        tot = gap_cdf[cl, nbg - 1] if c >= 2 and cl < C and nbg > 0 else 0
        if tot == 0:
            for i in range(c):
                rest[r] = k
                r += 1
            continue
        span = 0.0
        for i in range(c):
            gaps[i] = _draw_bin(state, gap_cdf[cl], tot, gap_edges) + _uniform(state)
            span += gaps[i]
        start = _below(state, L)
        acc = 0.0
        for i in range(c):
            p = _free_slot(parent, (start + np.int64(L * acc / span)) % L, L)
            acc += gaps[i]
            sched[p] = k
            parent[p] = p + 1
    free = 0
    for i in range(L):
        if sched[i] == -2:
            free += 1
    for i in range(r, free):
        rest[i] = -1
    for i in range(free - 1, 0, -1):        # Fisher-Yates shuffle of the remaining events
        j = _below(state, i + 1)
        t = rest[i]
        rest[i] = rest[j]
        rest[j] = t
    j = 0
    for i in range(L):
        if sched[i] == -2:
            sched[i] = rest[j]
            j += 1


@njit(cache=True, no_cfunc_wrapper=True)
def _hot_buffers(bounds, K):
    """Scratch arrays for `_place_hot`, sized for the longest window (1 each when K = 0)."""
    maxL = 1
    for w in range(bounds.shape[0] - 1):
        maxL = max(maxL, bounds[w + 1] - bounds[w])
    n = maxL if K else 1
    sched = np.empty(n, dtype=np.int32)
    rest = np.empty(n, dtype=np.int32)
    parent = np.empty(maxL + 1 if K else 1, dtype=np.int64)
    gaps = np.empty(n, dtype=np.float64)
    return sched, rest, parent, gaps


@njit(cache=True, no_cfunc_wrapper=True)
def _window_setup(w, bounds, hot_cnt, cold_cnt, cdf, fallback_cdf):
    """Window w's tail event counts and tail-distance draw table.  Returns (cold count, warm
    count, cdf, cdf total, guide) where the cdf is the fallback when the window has none and
    guide[j] = first bin whose cdf exceeds j * total / G (G + 1 = the guide's length)."""
    tot_hot = 0
    for k in range(hot_cnt.shape[0]):
        tot_hot += hot_cnt[k, w]
    rem_cold = cold_cnt[w]
    rem_warm = (bounds[w + 1] - bounds[w]) - tot_hot - rem_cold
    nb = cdf.shape[1]
    wcdf = cdf[w]
    wtot = wcdf[nb - 1] if nb > 0 else 0
    if wtot == 0:
        wcdf = fallback_cdf
        wtot = fallback_cdf[nb - 1] if nb > 0 else 0
    # the guide only shortens the bin search (the draw's result does not depend on its
    # size): no longer than the bins or the window's tail draws need
    G = 16
    while G < GUIDE and G < min(nb, rem_warm):
        G *= 2
    guide = np.zeros(G + 1, dtype=np.int64)
    if wtot > 0:
        b = 0
        for j in range(G + 1):
            thr = (j * wtot) // G
            while b < nb - 1 and wcdf[b] <= thr:
                b += 1
            guide[j] = b
    return rem_cold, rem_warm, wcdf, wtot, guide


@njit(cache=True, no_cfunc_wrapper=True)
def open_window(w, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf, fallback_cdf, state,
                sched, parent, gaps, rest, sc):
    """Window w of a windowed stack kernel (`_synth_core`, `budgets._budget_core`): its hot
    ids placed (`_place_hot`, when there are any), its first touches and reuses left in
    sc[5] and sc[6]; returns its tail draws' (cdf, total, guide) (`_window_setup`)."""
    if hot_cnt.shape[0]:
        _place_hot(sched, parent, bounds[w + 1] - bounds[w], hot_cnt, w, gap_cdf, gap_edges,
                   state, gaps, rest)
    sc[5], sc[6], wcdf, wtot, guide = _window_setup(w, bounds, hot_cnt, cold_cnt, cdf,
                                                    fallback_cdf)
    return wcdf, wtot, guide


@njit(cache=True, no_cfunc_wrapper=True)
def _first_hot(hot_gid, k, items, max_ids, state):
    """Give hot rank k its item at its first access (any id once the table is full); returns
    the items used.  Rare (once per hot rank), so an ordinary call."""
    if items < max_ids:
        hot_gid[k] = items
        return items + 1
    hot_gid[k] = _below(state, max_ids)
    return items


NEAREST = 64        # depths searched on each side for an id under its cap (keep_capped)


@njit(cache=True, no_cfunc_wrapper=True)
def _pop_nearest_under(owner, bits, tree, nw, t, d, D, uses, max_uses):
    """Take the item at depth d, or where it has been used max_uses times the nearest one
    within NEAREST depths (shallower first) used fewer times; the spent item keeps its
    place.  Its own function (not inlined): the synthesizer's loop compiles as before."""
    s = -1
    for i in range(2 * NEAREST + 1):
        # depths d, d - 1, d + 1, d - 2, d + 2, ...: one call site of the inlined lookup
        e = d + ((i + 1) // 2) * (1 if i % 2 == 0 else -1)
        if e < 0 or e >= D:
            continue
        s2 = slot_at(bits, tree, nw, t, e, D)
        if s < 0:
            s = s2                   # the drawn depth, taken when none is under its cap
        if uses[owner[s2]] < max_uses:
            s = s2
            break
    return remove_slot(owner, bits, tree, nw, t, s)


@njit(cache=True, no_cfunc_wrapper=True)
def _pop_capped(owner, bits, tree, nw, t, d, D, uses, max_uses, keep_capped):
    """`pop_depth`, except that an item already used max_uses times (> 0) is not taken: it
    leaves the stack for good and the item now at that depth is taken instead, or
    (keep_capped) it stays where it is, still counted in every depth below it as the
    source's spent ids are, and the nearest item within NEAREST depths (shallower first)
    under its cap is taken.  Returns (item, new D).  keep_capped None: False, and the
    nearest-under search is not compiled in (numba prunes the branch on the argument's type)."""
    if keep_capped is not None and keep_capped and max_uses > 0:
        return _pop_nearest_under(owner, bits, tree, nw, t, d, D, uses, max_uses), D
    while True:      # one call site of the inlined pop_depth (each site is JIT time)
        g = pop_depth(owner, bits, tree, nw, t, d, D)
        if not (max_uses > 0 and uses[g] >= max_uses and D > 1):
            return g, D
        fenwick_add(tree, (t >> 6) + 1, nw + 1, -1)     # pop_depth left it counted at t
        D -= 1
        d = min(d, D - 1)


@njit(cache=True, no_cfunc_wrapper=True)
def _grow_uses(uses, g):
    """The use counts grown (zeros) to hold item g."""
    grown = np.zeros(max(2 * uses.shape[0], g + 1), dtype=np.int64)
    for i in range(uses.shape[0]):      # not a slice copy (see compact_stack)
        grown[i] = uses[i]
    return grown


# The per-event decisions and the depth draw stay inline in _synth_span's loop: as helpers
# (inlined by numba or called) they measured slower (docs/performance.md, issue 19 split).
def synth_core(n_out, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf, edges,
               fallback_cdf, seed, max_ids, redraws, deep_is_cold, max_uses=0,
               keep_capped=False, dists=None):
    """`_synth_core` with its arguments in one of the two type combinations it is compiled
    for (any other, an omitted default or None included, is one more specialization to
    compile cold and load warm).  Every caller goes through here.  dists, when given, is
    written.  The two: a stream shorter than the stack's first time axis (`FIRST_CAP`)
    without keep_capped (the bundled sample's tables, short streams) gets the one without
    the stack's compaction and the nearest-under search, which it never runs (their code is
    a large share of a cold start's JIT); every other stream the one with them."""
    a = functools.partial(np.ascontiguousarray, dtype=np.int64)
    short = int(n_out) < FIRST_CAP and not keep_capped
    return _synth_core(int(n_out), a(bounds), a(hot_cnt), a(gap_cdf), a(gap_edges),
                       a(cold_cnt), a(cdf), a(edges), a(fallback_cdf), int(seed), int(max_ids),
                       int(redraws), bool(deep_is_cold), int(max_uses),
                       None if short else bool(keep_capped),
                       _NO_DISTS if dists is None else dists, None if short else True)


_NO_DISTS = np.empty(0, dtype=np.int64)     # synth_core's "no dists": an empty array, not None
FIRST_CAP = 1 << 14     # the stack's first time axis: a shorter stream never compacts it


@njit(cache=True, no_cfunc_wrapper=True)
def _synth_core(n_out, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf, edges,
                fallback_cdf, seed, max_ids, redraws, deep_is_cold, max_uses, keep_capped,
                dists, compacts):
    """Returns (stream of item numbers in first-touch order, items used, extra cold, clamped).

    redraws: tail draws deeper than the stack so far are redrawn this many times, then
    clamped to its bottom, or (deep_is_cold) turned into a first touch (the naive model).
    max_uses > 0: no tail item is used more than max_uses times (`_pop_capped`, keep_capped).
    dists (an array of n_out, the naive model only: no hot set, no cap; empty for none): each
    access's stack depth, -1 for a first touch -- its reuse distance, known as it is drawn.
    compacts None (n_out < FIRST_CAP) or True: the stack's compaction left out or compiled
    in (a branch on an argument's type, which numba prunes); keep_capped None is False.
    The accesses are drawn by `_synth_span`; here, between its spans, what replaces an
    array (the stack's compaction, the use counts' growth)."""
    out = np.empty(n_out, dtype=np.int64)
    state = np.full(1, seed, dtype=np.uint64)
    K = hot_cnt.shape[0]
    hot_gid = np.full(K, -1, dtype=np.int64)
    sched, rest, parent, gaps = _hot_buffers(bounds, K)
    cap = np.int64(FIRST_CAP)      # int64 (as t, D, items): a literal compiles callees twice
    owner, nw, bits, tree = new_stack(cap)
    # t, D, items, extra cold, clamped, then the window's first touches and reuses left
    sc = np.array([1, 0, 0, 0, 0, 0, 0], dtype=np.int64)
    uses = np.zeros(1024 if max_uses > 0 else 1, dtype=np.int64)
    for w in range(cold_cnt.shape[0]):
        wcdf, wtot, guide = open_window(w, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf,
                                        fallback_cdf, state, sched, parent, gaps, rest, sc)
        pos = bounds[w]
        while True:
            pos = _synth_span(pos, bounds[w], bounds[w + 1], sc, sched, hot_gid, out, state,
                              owner, bits, tree, cap, uses, wcdf, wtot, guide, edges,
                              max_ids, redraws, deep_is_cold, max_uses, keep_capped, dists)
            if pos == bounds[w + 1]:
                break
            if compacts is not None and sc[0] >= cap:
                owner, cap, nw, sc[1], bits, tree = compact_stack(owner, sc[0] - 1, cap)
                sc[0] = sc[1] + 1
            if max_uses > 0 and sc[2] >= uses.shape[0]:
                uses = _grow_uses(uses, sc[2])
    return out, sc[2], sc[3], sc[4]


@njit(cache=True, no_cfunc_wrapper=True, _nrt=False)
def _synth_span(pos, lo, end, sc, sched, hot_gid, out, state, owner, bits, tree, cap, uses,
                wcdf, wtot, guide, edges, max_ids, redraws, deep_is_cold, max_uses,
                keep_capped, dists):
    """`_synth_core`'s accesses pos.. of the window [lo, end) until its end, the stack's
    time axis is full or (capping) the use counts are (returns the next access; sc: the
    counters).  It allocates nothing, so it is compiled without numba's reference counting
    (`_nrt=False`, as `budgets._budget_span`): about a fifth of the kernel's time was
    atomic reference counts around its calls and rebound arrays (docs/performance.md)."""
    t, D, items, extra_cold, clamped, rem_cold, rem_warm = sc[0], sc[1], sc[2], sc[3], \
        sc[4], sc[5], sc[6]
    nw = bits.shape[0]
    K = hot_gid.shape[0]
    while pos < end and t < cap and (max_uses <= 0 or items < uses.shape[0]):
        if K and sched[pos - lo] >= 0:
            k = sched[pos - lo]
            if hot_gid[k] < 0:
                items = _first_hot(hot_gid, k, items, max_ids, state)
            out[pos] = hot_gid[k]
            pos += 1
            continue
        cold = _below(state, rem_cold + rem_warm) < rem_cold
        rem_cold, rem_warm = (rem_cold - 1, rem_warm) if cold else (rem_cold, rem_warm - 1)
        if not cold and (D == 0 or wtot == 0):
            cold = True
            extra_cold += 1
        if cold and items >= max_ids:
            if D == 0:
                out[pos] = _below(state, max_ids)
                pos += 1
                continue
            cold = False           # table full: reuse the least recently used tail id
            d = D - 1
        elif not cold:
            d = D                  # a tail reuse distance, redrawn if deeper than D
            for _try in range(redraws):
                uf = _uniform(state)
                u = np.int64(uf * wtot)
                a = guide[np.int64(uf * (guide.shape[0] - 1))]
                while a > 0 and wcdf[a - 1] > u:      # float rounding guard
                    a -= 1
                while wcdf[a] <= u:
                    a += 1
                lo_e = edges[a]
                width = edges[a + 1] - lo_e
                d = lo_e + (_below(state, width) if width > 1 else 0)
                if d < D:
                    break
            if d >= D:
                if deep_is_cold and items < max_ids:
                    cold = True
                    extra_cold += 1
                else:
                    d = D - 1
                    clamped += 1
        if cold:
            g = items
            items += 1
            D += 1
            fenwick_add(tree, (t >> 6) + 1, nw + 1, 1)
        elif max_uses > 0:
            g, D = _pop_capped(owner, bits, tree, nw, t, d, D, uses, max_uses, keep_capped)
        else:
            g = pop_depth(owner, bits, tree, nw, t, d, D)
        if max_uses > 0:        # without a cap (the naive model) no count at all
            uses[g] += 1
        bits[t >> 6] |= np.uint64(1) << np.uint64(t & 63)
        owner[t] = g
        t += 1
        out[pos] = g
        pos += 1
        if dists.shape[0]:
            dists[pos - 1] = -1 if cold else d
    sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6] = t, D, items, extra_cold, clamped, \
        rem_cold, rem_warm
    return pos


def synthesize_stream(profile: LocalityProfile, length: int | None = None,
                      rows: int | None = None, seed: int | np.random.SeedSequence = 0
                      ) -> tuple[np.ndarray, dict]:
    """Synthesize `length` accesses (default: the source's) for one table.

    Returns (ids in [0, rows), facts) where facts counts redraws that had to be clamped and
    first touches that had to be added.  A profile whose extra["model"] is NAIVE (the
    selection found the naive model best for its table) is synthesized by it, one whose model
    is CLASSES by count classes on their own stacks (`classes.synthesize_classes`), one
    whose model is BUDGETS by one stack whose ids carry budgets (`budgets.synthesize_budgets`).
    """
    if profile.extra.get("model") == NAIVE:
        return _naive(profile, length, rows, seed)[:2]
    n_src = profile.accesses
    n = n_src if length is None else int(length)
    rows = default_rows(profile, n) if rows is None else int(rows)
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    rng = np.random.default_rng(ss)
    if n == 0 or n_src == 0:
        return np.zeros(n, dtype=np.int64), {"extra_cold": 0, "clamped": 0, "items": 0}
    if profile.extra.get("model") == BUDGETS:
        from dlrmprof.tracegen.budgets import synthesize_budgets

        stream, facts = synthesize_budgets(profile, n, rows, rng)
        return _fresh_ids(stream, facts["items"], rows, rng), facts
    if profile.extra.get("model") == CLASSES:
        from dlrmprof.tracegen.classes import synthesize_classes

        stream, facts = synthesize_classes(profile, n, rows, rng)
        return _fresh_ids(stream, facts["items"], rows, rng), facts
    wt = window_tables(profile, n)
    core_seed = int(rng.integers(0, 2 ** 63))
    stream, items, extra, clamped = synth_core(
        n, wt.bounds, wt.hot, wt.gap_cdf, wt.gap_edges, wt.cold, wt.cdf, wt.edges,
        wt.fallback, core_seed, rows, 8, False, tail_cap(profile, n))
    ids = _fresh_ids(stream, items, rows, rng)
    return ids, {"extra_cold": int(extra), "clamped": int(clamped), "items": int(items)}


def _fresh_ids(stream: np.ndarray, items: int, rows: int, rng) -> np.ndarray:
    """Fresh ids: a seeded random injection of the item numbers into the table's rows."""
    if items > rows:      # cannot happen: items are capped at rows
        raise AssertionError("more synthetic ids than rows")
    perm = rng.choice(rows, size=max(items, 1), replace=False)
    return np.take(perm, stream, out=stream, mode="clip")     # in place: no second stream


NAIVE = "naive"      # profile.extra["model"] of a table synthesized by the naive model
CLASSES = CLASS_MODEL  # ... by count classes on their own stacks (classes.py)
BUDGETS = BUDGET_MODEL  # ... by one stack whose ids carry count budgets (budgets.py)


def synthesize_naive(profile: LocalityProfile, length: int | None = None,
                     rows: int | None = None, seed: int | np.random.SeedSequence = 0
                     ) -> np.ndarray:
    """The naive baseline every fidelity report sets the model against: i.i.d. draws from the
    source's whole reuse-distance histogram (first touches included as their own outcome) on
    one LRU stack, no windows, no hot set; a draw deeper than the stack so far becomes a first
    touch.  Same seed, same ids."""
    return _naive(profile, length, rows, seed)[0]


def synthesize_naive_hist(profile: LocalityProfile, length: int | None = None,
                          rows: int | None = None, seed: int | np.random.SeedSequence = 0
                          ) -> tuple[np.ndarray, tuple[np.ndarray, int]]:
    """`synthesize_naive`'s ids (the same) and their reuse-distance histogram (binned warm
    histogram, cold count), from the stack depths the draws took: the stream's reuse pass is
    not needed (ids are an injection of the stack's items, so the distances are the depths)."""
    ids, _, dists = _naive(profile, length, rows, seed, with_dists=True)
    return ids, _reuse.histogram(dists)


class NaiveSetup(NamedTuple):
    """The naive baseline's draws before its kernel runs (`naive_setup`)."""
    n: int                      # accesses
    rows: int                   # ids are drawn from [0, rows)
    rng: np.random.Generator    # after the draws below: next, the injection of the items
    empty: bool                 # no accesses, or a source without any: all id 0
    cold: np.ndarray | None     # [first touches to place]
    cdf: np.ndarray | None      # cumulative warm histogram (the source's bins)
    core_seed: int              # the kernel's RNG seed


def naive_setup(profile: LocalityProfile, length, rows, seed) -> NaiveSetup:
    """The naive baseline's RNG draws before its kernel, in their order: every user of the
    naive draws (`_naive`, `naive.naive_figures`) starts here, so they draw the same."""
    n = profile.accesses if length is None else int(length)
    rows = default_rows(profile, n) if rows is None else int(rows)
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    rng = np.random.default_rng(ss)
    if n == 0 or profile.accesses == 0:
        return NaiveSetup(n, rows, rng, True, None, None, 0)
    hist = np.asarray(profile.hist, dtype=np.int64)
    cold = np.array([rng.binomial(n, profile.cold / profile.accesses)], dtype=np.int64)
    cdf = np.cumsum(hist) if hist.size else np.zeros(0, dtype=np.int64)
    return NaiveSetup(n, rows, rng, False, cold, cdf, int(rng.integers(0, 2 ** 63)))


def _naive(profile, length, rows, seed, with_dists=False):
    n, rows, rng, empty, cold, cdf, core_seed = naive_setup(profile, length, rows, seed)
    if empty:
        dists = np.zeros(n, dtype=np.int64)        # all id 0: one first touch, then depth 0
        dists[:1] = -1
        return np.zeros(n, dtype=np.int64), {"extra_cold": 0, "clamped": 0, "items": 0}, dists
    dists = np.empty(n, dtype=np.int64) if with_dists else None
    stream, items, extra, clamped = synth_core(
        n, np.array([0, n], dtype=np.int64), np.zeros((0, 1), dtype=np.int64),
        np.zeros((0, 0), dtype=np.int64), _reuse.bin_edges(0),
        cold, np.ascontiguousarray(cdf[None, :]), _reuse.bin_edges(cdf.size),
        cdf, core_seed, rows, 1, True, 0, False, dists)
    mapping = rng.choice(rows, size=max(items, 1), replace=False)
    return mapping[stream], {"extra_cold": int(extra), "clamped": int(clamped),
                             "items": int(items)}, dists


def bag_seeds(seed) -> tuple:
    """(the bag lengths' seed, the stream's seed) that `synthesize_bags` draws from `seed`."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    return tuple(ss.spawn(2))


def synthesize_bags(profile: LocalityProfile, num_samples: int | None = None,
                    rows: int | None = None, seed=0) -> tuple[np.ndarray, np.ndarray, dict]:
    """(indices, offsets [B+1], facts) for one table: bag lengths drawn from the pooling
    histogram (all equal when the source's were), then the access stream cut into bags."""
    bag_ss, stream_ss = bag_seeds(seed)
    B = profile.num_bags if num_samples is None else int(num_samples)
    vals, counts = profile.bag_len_values, profile.bag_len_counts
    offsets = np.zeros(B + 1, dtype=np.int64)
    if len(vals) == 1:      # offsets made after the stream: one per-access array at a time
        total = B * int(vals[0])
    else:
        if B == profile.num_bags:
            lengths = np.repeat(vals, counts)
            np.random.default_rng(bag_ss).shuffle(lengths)
        else:
            p = counts / counts.sum()
            lengths = np.random.default_rng(bag_ss).choice(vals, size=B, p=p).astype(np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        del lengths
    ids, facts = synthesize_stream(profile, length=total, rows=rows, seed=stream_ss)
    if len(vals) == 1:
        np.cumsum(np.broadcast_to(np.int64(vals[0]), B), out=offsets[1:])
    return ids, offsets, facts
