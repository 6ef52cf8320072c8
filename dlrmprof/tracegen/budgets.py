"""Counts as budgets on one LRU stack: the model for streams whose popular ids come in sessions.

The windowed stack model without a hot set keeps a session stream's LRU curve (a user's burst
is a run of short reuse distances) but not its popularity: a user returning after a long gap
is whatever id sits at the drawn depth, so every id is about as popular as any other.  Here
each id also carries a budget, its target access count:

* a first touch draws its id's budget from the source's access counts (`count_values` with
  `count_ids` ids each) by size-biased sampling without replacement (a count c drawn with
  weight c times the ids left with it): the order in which an independent-reference stream
  first meets its ids, so popular ids come early, as they do in the source; budgets are
  scaled by the length ratio;
* a reuse draws its depth d from the window's reuse histogram (as `synth._synth_core` with
  no hot set).  Below `exact` the id at depth d is taken, whatever its budget (a session's
  burst is kept as it is).  From `exact` on, the depths are cut into buckets of
  1 / per_octave octave ([2^(j / m), 2^((j + 1) / m))); the id taken is one of those in d's
  bucket, drawn with weight its remaining budget (the id at d when all are spent).  The
  bucket's share of accesses, hence the LRU curve at every power of two, is the source's;
  inside it the popular ids come back;
* the weights live in a Fenwick tree over the stack's time slots (rebuilt when the slots are
  compacted): a bucket's total is two prefix sums, the draw one descent: O(log N) per access;
* with runs (`run_depth` > 0, the placement BUDGET_RUNS) an id's weight is its budget left
  times one more than its run: its reuses in a row at drawn depths under `run_depth` (0 at
  its first touch, reset by a deeper reuse).  An id in use stays in use, as an id does in a
  stream whose popularity drifts (each id popular for a while), and is reused long after its
  insertion, which FIFO caches see and LRU does not (the buckets' shares, hence the LRU
  curve, do not change);
* with a hot set (K ids, the placements BUDGET_HOT and BUDGET_HOT_RUNS) the hot ids are
  placed in each window as the windowed model places them (`synth._place_hot`: their
  per-window counts exact, spaced by their gap histograms), off the stack; the other ids
  carry the budgets (the source's counts less the K largest).  The most popular ids' counts
  are then exact in every window (a budget drawn in a depth's bucket cannot pace them),
  which LFU caches see;
* with a short band (`short_band`, the placement BUDGET_MODEL on a session stream) the
  weights follow the source's measured hazard: an id's chance, per access, of being the one
  reused at a depth grows with its count as count^slope, the slope measured per half-octave
  depth bucket (0.1-0.2 within a session stream's sessions, 1 past them).  Under the band's
  depth (the first bucket whose slope reaches BAND_SLOPE) an id weighs its count class's
  measured hazard while it has budget left, not its budget; the top HEAD depths (one id
  each, where a bucket chooses nothing) are drawn among as one; a reuse whose drawn depth
  is past the stack becomes one of the window's first touches (the source's reuses never
  are: without it a stream's first reuses crowd onto its first few ids, which an LFU cache
  keeps for good).  A popular id then comes back within a session about as often as any
  active one, and after a gap as often as its count says, as in the source.  From the band's
  last half-octave bucket on (`fine_from`) the buckets are FINE_PER_OCTAVE octave wide: a
  reuse's id is then nearer its drawn depth, and its time gap nearer the source's (the
  batch-to-batch overlap at 2,048 of a session stream; docs/performance.md, issue 16 eighth
  pass).

The selection (`selection.select_hot`) measures it beside the other candidates; it is kept
only where it wins the objective.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit

from dlrmprof.tracegen._lru_stack import (_cttz, compact_stack, fenwick_add_row, fenwick_find,
                                          fenwick_prefix, new_stack, remove_slot, slot_at)
from dlrmprof.tracegen.profile import BUDGET_MODEL, _chunks, count_ids
from dlrmprof.tracegen.reuse import fenwick_add
from dlrmprof.tracegen.shortband import HEAD, NO_BAND, RATE_UNIT, _bkey, short_band
from dlrmprof.tracegen.synth import (_below, _draw_bin, _first_hot, _hot_buffers, _uniform,
                                     open_window)
from dlrmprof.tracegen.windows import window_tables

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('_lru_stack.py', 'hashmap.py', 'profile.py', 'reuse.py', 'shortband.py', 'synth.py')
_DEPS_SHA256 = 'f86229cff0f23968'

MODEL = BUDGET_MODEL
BUDGET_RUNS = "budget runs"
BUDGET_HOT = "hot set and budgets"
BUDGET_HOT_RUNS = "hot set and budget runs"
# the selection's placements of this model: (depths below which the id at the drawn depth is
# taken whatever its budget, depth buckets per octave, the run depth: 0 for no runs, whether
# the stream's short band (`short_band`) weighs its draws there)
PLACEMENTS = {BUDGET_MODEL: (0, 2, 0, True), BUDGET_RUNS: (0, 2, 4096, False),
              BUDGET_HOT: (0, 2, 0, False), BUDGET_HOT_RUNS: (0, 2, 4096, False)}
# the placements of a profile without a hot set, and those of a profile with one (its hot
# ids spaced in each window as the windowed model places them, budgets for the stack's ids),
# each with the smallest hot set it is measured with: runs with a hot set of 4 won the
# selection's prefix of a session stream by its noise and lost on the whole stream (LFU
# and LRU; docs/performance.md, issue 16 sixth pass)
NO_HOT = (BUDGET_MODEL, BUDGET_RUNS)
WITH_HOT = {BUDGET_HOT: 1, BUDGET_HOT_RUNS: 8}


def count_distribution(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct access counts ascending, ids with each) of per-id counts (zeros left out)."""
    c = np.asarray(counts, dtype=np.int64)
    vals, num = np.unique(c[c > 0], return_counts=True)
    return vals.astype(np.int64), num.astype(np.int64)


def with_budgets(prof, counts: np.ndarray, placement: str = BUDGET_MODEL, band=NO_BAND):
    """`prof` as the budget model of a stream whose per-id access counts are `counts`: with a
    hot set (K ids, the K largest counts), the budgets are the other ids' counts; `band`
    (`short_band`'s depth, class weights and head weights) where the placement takes one."""
    c = np.asarray(counts, dtype=np.int64)
    if prof.hot_k:
        c = np.sort(c[c > 0])[: -prof.hot_k]
    vals, num = count_distribution(c)
    exact, per_octave, run_depth, banded = PLACEMENTS[placement]
    extra = dict(prof.extra, model=MODEL, budget_exact=exact, budget_per_octave=per_octave)
    if run_depth:
        extra["budget_run_depth"] = run_depth
    if banded and band[0] > 0:
        extra["budget_short_depth"] = int(band[0])
        extra["budget_short_weights"] = [int(x) for x in band[1]]
        extra["budget_short_head"] = [int(x) for x in band[2]]
    return replace(prof, count_values=vals, count_ids=num, extra=extra)


def budget_profile(prof, ids, placement: str = BUDGET_MODEL, band=None):
    """The budget model of the stream `ids` whose profile (no hot set) is `prof`; its short
    band measured (`short_band`) where the placement takes one and `band` is None."""
    counts = np.zeros(max(prof.rows, int(ids.max()) + 1 if ids.shape[0] else 1), np.int64)
    for c in _chunks(ids):
        count_ids(c, counts)
    if band is None:
        band = short_band(ids) if PLACEMENTS[placement][3] else NO_BAND
    return with_budgets(prof, counts, placement, band)


def band_of(prof) -> tuple:
    """The short band a budget profile carries (NO_BAND for none)."""
    return (int(prof.extra.get("budget_short_depth", 0)),
            tuple(int(x) for x in prof.extra.get("budget_short_weights", ())),
            tuple(int(x) for x in prof.extra.get("budget_short_head", ())))


# with a band, the buckets from its last half-octave bucket on (`fine_from`) are this many per
# octave: a reuse's id is then nearer its drawn depth, so its time gap follows the source's
# (the batch-to-batch overlap at 2,048 on the user-item log), while the band's short depths
# and the head keep their half octaves (wider ones there are what keeps the top-10 share)
FINE_PER_OCTAVE = 3


# ------------------------------------------------------------------ the kernel
@njit(cache=True, no_cfunc_wrapper=True)
def _weights(owner, used, weight, cap):
    """The Fenwick tree over slots 1..cap of each occupied slot's owner's weight (none
    where it is not positive)."""
    tw = np.zeros(cap + 1, dtype=np.int64)
    for s in range(1, used + 1):
        if owner[s] >= 0 and weight[owner[s]] > 0:
            tw[s] = weight[owner[s]]
    for s in range(1, cap + 1):           # in-place O(N) build
        p = s + (s & (-s))
        if p <= cap:
            tw[p] += tw[s]
    return tw


@njit(cache=True, no_cfunc_wrapper=True)
def _bucket(d, exact, per_octave):
    """[lo, hi) of the depth bucket holding d >= max(exact, 1): 1 / per_octave octave wide, edges
    rounded up to integers (powers of two are edges), lo at least `exact`."""
    j = np.floor(per_octave * np.log2(np.float64(d)) + 1e-9)
    lo = np.int64(np.ceil(2.0 ** (j / per_octave) - 1e-9))
    hi = np.int64(np.ceil(2.0 ** ((j + 1) / per_octave) - 1e-9))
    if lo > d:                   # float rounding at an edge
        lo = d
    if hi <= d:
        hi = d + 1
    return max(lo, exact), hi


@njit(cache=True, no_cfunc_wrapper=True)
def _count_pool(vals):
    """An empty pool for `_draw_count` (one row: a Fenwick tree over the counts' weights, its
    size a power of two plus one) and its ids left per count."""
    P = 1
    while P < vals.shape[0]:
        P *= 2
    return np.zeros((1, P + 1), dtype=np.int64), np.zeros(vals.shape[0], dtype=np.int64)


@njit(cache=True, no_cfunc_wrapper=True)
def _draw_count(pool, vals, num, left, state):
    """A count drawn by size-biased sampling without replacement: weight the count times
    the ids left with it (`left`, a Fenwick tree `pool` over those weights); the pool is
    refilled with `num` when spent."""
    top = pool.shape[1] - 1
    tot = fenwick_prefix(pool, 0, top)
    if tot == 0:
        for i in range(vals.shape[0]):
            left[i] = num[i]
            fenwick_add_row(pool, 0, i + 1, top + 1, vals[i] * num[i])
        tot = fenwick_prefix(pool, 0, top)
    i = fenwick_find(pool, 0, _below(state, tot)) - 1
    left[i] -= 1
    fenwick_add_row(pool, 0, i + 1, top + 1, -vals[i])
    return vals[i]


# a depth bucket of at most this many ids is drawn from by a walk over its slots (`_pick_small`),
# a larger one by the weight trees (the same draw)
SMALL_BUCKET = 16
MEMO_DEPTHS = 1 << 16     # `_bucket` is kept for depths below this (`_bucket_memo`)


@njit(cache=True, inline="always")
def _bucket_memo(memo, d, exact, per_octave, fine):
    """`_bucket(d, exact, ...)`, its two edges kept in `memo` (rows 0-1 for per_octave, 2-3
    for FINE_PER_OCTAVE; 0: not yet computed, a bucket's lower edge is at least 1) for the
    depths it has room for: the same values without their logarithm and powers per draw."""
    r = 2 if fine else 0
    if d < memo.shape[1] and memo[r, d] > 0:
        return memo[r, d], memo[r + 1, d]
    lo, hi = _bucket(d, exact, FINE_PER_OCTAVE if fine else per_octave)
    if d < memo.shape[1]:
        memo[r, d], memo[r + 1, d] = lo, hi
    return lo, hi


@njit(cache=True, inline="always")
def _next_slot(bits, w, m):
    """(the next occupied slot at or after the bits `m` of word `w`, its word, the bits left
    above it)."""
    while m == 0:
        w += 1
        m = bits[w]
    return w * 64 + np.int64(_cttz(m)), w, m & (m - np.uint64(1))


@njit(cache=True, inline="always")
def _pick_small(owner, bits, weight, b, s_old, m_items, k_d, state):
    """`_pick_weighted`'s draw in a bucket of `m_items` ids whose oldest is at slot s_old, by
    a walk over their slots (oldest first, the weight trees' order): the same draw as the
    trees' (one `_below` of the bucket's total weight, the slot where the running sum passes
    it), or, when all weigh nothing, the slot of the k_d-th (the drawn depth)."""
    first = bits[s_old >> 6] & ~((np.uint64(1) << np.uint64(s_old & 63)) - np.uint64(1))
    tot, at_d, w, m = 0, s_old, s_old >> 6, first
    for k in range(m_items):
        s, w, m = _next_slot(bits, w, m)
        tot += weight[b, owner[s]]
        if k == k_d:
            at_d = s
    if tot <= 0:
        return at_d
    u = _below(state, tot)
    w, m = s_old >> 6, first
    while True:
        s, w, m = _next_slot(bits, w, m)
        u -= weight[b, owner[s]]
        if u < 0:
            return s


@njit(cache=True, inline="always")
def _pick_weighted(owner, bits, tree, tw, b, nw, t, d, D, exact, per_octave, state, memo,
                   weight):
    """The slot an access at drawn depth d takes, budget model (see the module docstring);
    `per_octave` is (buckets per octave, the depth from which they are FINE_PER_OCTAVE); a
    bucket of at most SMALL_BUCKET ids by `_pick_small`, a larger one by the weight trees
    `tw` (row b; slot s there weighs weight[b, owner[s]], as `_reweigh` keeps it)."""
    if d < exact or d == 0:               # (the bucket of depth 0 is the top item)
        return slot_at(bits, tree, nw, t, d, D)
    fine = per_octave[1] > 0 and d >= per_octave[1]
    lo, hi = _bucket_memo(memo, d, exact, per_octave[0], fine)
    hi = min(hi, D)
    s_old = slot_at(bits, tree, nw, t, hi - 1, D)       # the bucket's deepest (oldest)
    if hi - lo <= SMALL_BUCKET:
        return _pick_small(owner, bits, weight, b, s_old, hi - lo, hi - 1 - d, state)
    s_new = slot_at(bits, tree, nw, t, lo, D)           # ... and its shallowest
    wa = fenwick_prefix(tw, b, s_old - 1)
    wb = fenwick_prefix(tw, b, s_new)
    if wb <= wa:
        return slot_at(bits, tree, nw, t, d, D)
    return fenwick_find(tw, b, wa + _below(state, wb - wa))


@njit(cache=True, inline="always")
def _hot_item(hot_gid, k, items, max_ids, state):
    """(hot rank k's item, given at its first access by `synth._first_hot`, items used)."""
    if hot_gid[k] < 0:
        items = _first_hot(hot_gid, k, items, max_ids, state)
    return hot_gid[k], items


@njit(cache=True, no_cfunc_wrapper=True)
def _grow(a, g):
    """`a` grown (zeros) to hold index g."""
    if g < a.shape[0]:
        return a
    grown = np.zeros(max(2 * a.shape[0], g + 1), dtype=a.dtype)
    grown[: a.shape[0]] = a
    return grown


@njit(cache=True, inline="always")
def _pick_head(owner, bits, tree, nw, t, D, weight, head, state, slots):
    """The slot a draw under HEAD takes: one of the top min(HEAD, D) ids, the id at depth j
    with weight head[j] times its short-band weight; -1 when all weigh nothing (slots: a
    scratch array of HEAD)."""
    m = min(HEAD, D)
    tot = 0
    for j in range(m):
        slots[j] = slot_at(bits, tree, nw, t, j, D)
        tot += head[j] * weight[1, owner[slots[j]]]
    if tot == 0:
        return -1
    u = _below(state, tot)
    for j in range(m):
        u -= head[j] * weight[1, owner[slots[j]]]
        if u < 0:
            return slots[j]
    return slots[m - 1]


@njit(cache=True, no_cfunc_wrapper=True)
def _short_class(b, unit, classes):
    """The short band's class of an id of count b: floor(log2(b x unit)), in [0, classes)."""
    x = np.float64(b) * unit
    c = np.int64(np.floor(np.log2(x))) if x >= 1.0 else 0
    return min(c, classes - 1)


@njit(cache=True, inline="always")
def _early(state, rem_cold, D, wtot, wcdf, edges, items, max_ids, guide):
    """Whether a reuse becomes one of the window's first touches: a depth drawn for it is
    past the stack (the source's reuses never are), the window has first touches left and
    the table has ids left.  Without it a stream's first reuses crowd onto its first few
    ids, which an LFU cache keeps for good."""
    return (rem_cold > 0 and D > 0 and wtot > 0 and items < max_ids
            and _draw_guided(state, wcdf, wtot, edges, guide) >= D)


@njit(cache=True, no_cfunc_wrapper=True)
def _grow_ids(left, run, weight, g):
    """The per-id arrays grown (zeros) to hold id g."""
    if g < left.shape[0]:
        return left, run, weight
    w2 = np.zeros((3, max(2 * left.shape[0], g + 1)), dtype=np.int64)
    for i in range(weight.shape[1]):
        for r in range(3):
            w2[r, i] = weight[r, i]
    return _grow(left, g), _grow(run, g), w2


@njit(cache=True, inline="always")
def _reweigh(weight, tw, g, s, cap, delta):
    """Add (delta 1) or take (delta -1) id g's weights at slot s to / from both trees."""
    for b in range(2):
        if weight[b, g] > 0:
            fenwick_add_row(tw, b, s, cap + 1, delta * weight[b, g])


@njit(cache=True, no_cfunc_wrapper=True)
def _budget_core(n_out, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf, edges,
                 fallback_cdf, seed, max_ids, vals, num, scale, exact, per_octave, run_depth,
                 short_depth, short_weights, head, unit, fine_depth):
    """Returns (stream of item numbers in first-touch order, items used, extra cold, clamped):
    the windowed LRU stack of `synth._synth_core` (its hot ids, hot_cnt [K, W], placed in
    each window by `synth._place_hot`, off the stack), each stack id with a budget
    (`_draw_count`, times `scale`) that weighs the draws from depth `exact` on
    (`_pick_weighted`), times one more than its run under `run_depth` (when > 0); under
    `short_depth` (when > 0) the weight is the class's short_weights entry (`_short_class`,
    the second tree) while budget is left, with `_pick_head` under HEAD and `_early`; from
    depth `fine_depth` (when > 0, `fine_from`) the buckets are FINE_PER_OCTAVE octave wide.
    The accesses are drawn by `_budget_span`; here the arrays it cannot replace (the
    stack's compaction, the per-id arrays' growth) between its spans."""
    out = np.empty(n_out, dtype=np.int64)
    state = np.full(1, seed, dtype=np.uint64)
    pool, left_ids = _count_pool(vals)
    # the stack's first time axis: small, it grows as `compact_stack` needs (the draws do not
    # depend on it); int64, as `synth._synth_core`'s, so the stack's callees compile once
    cap = np.int64(1 << 10)
    owner, nw, bits, tree = new_stack(cap)
    tw = np.zeros((2, cap + 1), dtype=np.int64)      # deep-band and short-band weights
    left, run = np.zeros(1024, dtype=np.int64), np.zeros(1024, dtype=np.int64)
    weight = np.zeros((3, 1024), dtype=np.int64)    # row 2: the id's short-band weight
    # t, D, items, extra cold, clamped, then the window's first touches and reuses left
    sc = np.array([1, 0, 0, 0, 0, 0, 0], dtype=np.int64)
    slots = np.empty(HEAD, dtype=np.int64)          # `_pick_head`'s scratch
    hot_gid = np.full(hot_cnt.shape[0], -1, dtype=np.int64)
    sched, rest, parent, gaps = _hot_buffers(bounds, hot_cnt.shape[0])
    memo = np.zeros((4, min(max_ids, MEMO_DEPTHS) + 1), dtype=np.int64)    # `_bucket_memo`
    for w in range(cold_cnt.shape[0]):
        wcdf, wtot, guide = open_window(w, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf,
                                    fallback_cdf, state, sched, parent, gaps, rest, sc)
        pos = bounds[w]
        while True:
            pos = _budget_span(pos, bounds[w], bounds[w + 1], sc, sched, hot_gid, out, state,
                               pool, vals, num, left_ids, owner, bits, tree, tw, cap, left,
                               run, weight, slots, wcdf, wtot, edges, max_ids, scale, exact,
                               per_octave, run_depth, short_depth, short_weights, head, unit,
                               fine_depth, memo, guide)
            if pos == bounds[w + 1]:
                break
            if sc[0] >= cap:
                owner, cap, nw, sc[1], bits, tree = compact_stack(owner, sc[0] - 1, cap)
                sc[0] = sc[1] + 1
                tw = np.stack((_weights(owner, sc[1], weight[0], cap),
                               _weights(owner, sc[1], weight[1], cap)))
            left, run, weight = _grow_ids(left, run, weight, sc[2])
    return out, sc[2], sc[3], sc[4]


@njit(cache=True, no_cfunc_wrapper=True, _nrt=False)
def _budget_span(pos, lo, end, sc, sched, hot_gid, out, state, pool, vals, num, left_ids,
                 owner, bits, tree, tw, cap, left, run, weight, slots, wcdf, wtot, edges,
                 max_ids, scale, exact, per_octave, run_depth, short_depth, short_weights,
                 head, unit, fine_depth, memo, guide):
    """`_budget_core`'s accesses pos.. of the window [lo, end) until its end, the stack's
    time axis is full or the per-id arrays are (returns the next access; sc: the counters).
    It allocates nothing (every array an argument, its per-access helpers inlined), so it
    is compiled without numba's reference counting (`_nrt=False`): the atomic counts numba
    puts around a call, an inlined helper's arrays or a rebound array were about a third of
    the kernel's time in one loop (docs/performance.md, issue 17)."""
    t, D, items, extra_cold, clamped, rem_cold, rem_warm = sc[0], sc[1], sc[2], sc[3], \
        sc[4], sc[5], sc[6]
    nw = bits.shape[0]
    while pos < end and t < cap and items < left.shape[0]:
        k = sched[pos - lo] if hot_gid.shape[0] else -1
        if k >= 0:
            out[pos], items = _hot_item(hot_gid, k, items, max_ids, state)
            pos += 1
            continue
        was = _below(state, rem_cold + rem_warm) < rem_cold
        rem_cold, rem_warm = (rem_cold - 1, rem_warm) if was else (rem_cold, rem_warm - 1)
        if not was and short_depth > 0 and _early(state, rem_cold, D, wtot, wcdf, edges,
                                                  items, max_ids, guide):
            was, rem_cold, rem_warm = True, rem_cold - 1, rem_warm + 1
        cold, d, x, y = _event(state, was, D, wtot, wcdf, edges, items, max_ids, guide)
        extra_cold += x
        clamped += y
        if cold == 2:
            out[pos] = _below(state, max_ids)
            pos += 1
            continue
        if cold:
            g = items
            items += 1
            D += 1
            fenwick_add(tree, (t >> 6) + 1, nw + 1, 1)
            b = _draw_count(pool, vals, num, left_ids, state)
            left[g] = max(1, np.int64(b * scale + _below(state, 1 << 20) / (1 << 20)))
            if short_depth > 0:
                weight[2, g] = short_weights[_short_class(b, unit, short_weights.shape[0])]
        else:
            s = _pick_head(owner, bits, tree, nw, t, D, weight, head, state, slots) \
                if d < HEAD and short_depth > 0 else -1
            if s < 0:
                s = _pick_weighted(owner, bits, tree, tw, 1 if d < short_depth else 0, nw,
                                   t, d, D, exact, (per_octave, fine_depth), state, memo,
                                   weight)
            _reweigh(weight, tw, owner[s], s, cap, -1)
            g = remove_slot(owner, bits, tree, nw, t, s)
            run[g] = run[g] + 1 if d < run_depth else 0
        left[g] -= 1
        weight[0, g] = left[g] * (1 + run[g]) if left[g] > 0 else 0
        if short_depth > 0:
            weight[1, g] = weight[2, g] if left[g] > 0 else 0
        bits[t >> 6] |= np.uint64(1) << np.uint64(t & 63)
        owner[t] = g
        _reweigh(weight, tw, g, t, cap, 1)
        t += 1
        out[pos] = g
        pos += 1
    sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6] = t, D, items, extra_cold, clamped, \
        rem_cold, rem_warm
    return pos


GUIDED_BINS = 32      # `_draw_guided` searches fewer bins by halving, as `_draw_bin`


@njit(cache=True, inline="always")
def _draw_guided(state, cdf, tot, edges, guide):
    """`synth._draw_bin`: the same draws, the same value; past a few bins, its bin found from
    the window's guide table (`synth._window_setup`: guide[j] is the first bin whose cdf
    exceeds j * tot / G), as `synth._synth_span` finds its own."""
    if cdf.shape[0] <= GUIDED_BINS:
        return _draw_bin(state, cdf, tot, edges)
    uf = _uniform(state)
    u = np.int64(uf * tot)                          # `_below(state, tot)`
    a = guide[np.int64(uf * (guide.shape[0] - 1))]
    while a > 0 and cdf[a - 1] > u:                 # float rounding guard
        a -= 1
    while cdf[a] <= u:
        a += 1
    width = edges[a + 1] - edges[a]
    return edges[a] + (_below(state, width) if width > 1 else 0)


@njit(cache=True, inline="always")
def _event(state, cold, D, wtot, wcdf, edges, items, max_ids, guide):
    """The next event of a window given the schedule's choice `cold`: (1 a first touch / 0 a
    reuse / 2 a random id of a full table with an empty stack, its depth, 1 if a first
    touch was added, 1 if a deep draw was clamped): as `synth._synth_core` without a hot
    set."""
    x = 0
    if not cold and (D == 0 or wtot == 0):
        cold, x = True, 1
    if cold and items >= max_ids:
        if D == 0:
            return 2, 0, x, 0
        return 0, D - 1, x, 0      # table full: reuse the least recently used id
    if cold:
        return 1, 0, x, 0
    d = D
    for _try in range(8):
        d = _draw_guided(state, wcdf, wtot, edges, guide)
        if d < D:
            return 0, d, x, 0
    return 0, D - 1, x, 1


def fine_from(short_depth: int) -> int:
    """The depth from which a banded profile's buckets are FINE_PER_OCTAVE octave wide: the
    lower edge of the half-octave bucket under the band's depth (0: none, for no band)."""
    if short_depth <= 1:
        return 0
    return int(np.ceil(2.0 ** ((_bkey(short_depth) - 2) / 2) - 1e-9))


def synthesize_budgets(prof, n: int, rows: int, rng: np.random.Generator):
    """(item numbers in [0, items), facts) of n accesses by the budget model: the windows and
    first touches of `windows.window_tables`, each window's reuse histogram, the budgets."""
    wt = window_tables(prof, n)
    exact = int(prof.extra.get("budget_exact", 0))
    per_octave = int(prof.extra.get("budget_per_octave", 2))
    run_depth = int(prof.extra.get("budget_run_depth", 0))
    short_depth = int(prof.extra.get("budget_short_depth", 0))
    short_weights = np.asarray(prof.extra.get("budget_short_weights", [1]), dtype=np.int64)
    head = np.asarray(prof.extra.get("budget_short_head", [1] * HEAD), dtype=np.int64)
    stream, items, extra, clamped = _budget_core(
        int(n), wt.bounds, wt.hot, wt.gap_cdf, wt.gap_edges, wt.cold, wt.cdf, wt.edges,
        wt.fallback, int(rng.integers(0, 2 ** 63)), int(rows),
        np.ascontiguousarray(prof.count_values, dtype=np.int64),
        np.ascontiguousarray(prof.count_ids, dtype=np.int64),
        float(n) / max(prof.accesses, 1), exact, per_octave, run_depth, short_depth,
        short_weights, head, RATE_UNIT / max(prof.accesses, 1), fine_from(short_depth))
    return stream, {"extra_cold": int(extra), "clamped": int(clamped), "items": int(items)}
