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
  which LFU caches see.

The selection (`selection.select_hot`) measures it beside the other candidates; it is kept
only where it wins the objective.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit

from dlrmprof.tracegen._lru_stack import compact_stack, new_stack, remove_slot, slot_at
from dlrmprof.tracegen.profile import BUDGET_MODEL, _chunks, count_ids
from dlrmprof.tracegen.reuse import fenwick_add
from dlrmprof.tracegen.synth import (_below, _draw_bin, _first_hot, _hot_buffers, _place_hot,
                                     _window_setup)
from dlrmprof.tracegen.windows import window_tables

MODEL = BUDGET_MODEL
BUDGET_RUNS = "budget runs"
BUDGET_HOT = "hot set and budgets"
BUDGET_HOT_RUNS = "hot set and budget runs"
# the selection's placements of this model: (depths below which the id at the drawn depth is
# taken whatever its budget, depth buckets per octave, the run depth: 0 for no runs)
PLACEMENTS = {BUDGET_MODEL: (0, 2, 0), BUDGET_RUNS: (0, 2, 4096), BUDGET_HOT: (0, 2, 0),
              BUDGET_HOT_RUNS: (0, 2, 4096)}
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


def with_budgets(prof, counts: np.ndarray, placement: str = BUDGET_MODEL):
    """`prof` as the budget model of a stream whose per-id access counts are `counts`: with a
    hot set (K ids, the K largest counts), the budgets are the other ids' counts."""
    c = np.asarray(counts, dtype=np.int64)
    if prof.hot_k:
        c = np.sort(c[c > 0])[: -prof.hot_k]
    vals, num = count_distribution(c)
    exact, per_octave, run_depth = PLACEMENTS[placement]
    extra = dict(prof.extra, model=MODEL, budget_exact=exact, budget_per_octave=per_octave)
    if run_depth:
        extra["budget_run_depth"] = run_depth
    return replace(prof, count_values=vals, count_ids=num, extra=extra)


def budget_profile(prof, ids, placement: str = BUDGET_MODEL):
    """The budget model of the stream `ids` whose profile (no hot set) is `prof`."""
    counts = np.zeros(max(prof.rows, int(ids.max()) + 1 if ids.shape[0] else 1), np.int64)
    for c in _chunks(ids):
        count_ids(c, counts)
    return with_budgets(prof, counts, placement)


# ------------------------------------------------------------------ the kernel
@njit(cache=True, no_cfunc_wrapper=True)
def fenwick_prefix(tw, s):
    """Sum of the weights of slots 1..s."""
    tot = 0
    while s > 0:
        tot += tw[s]
        s -= s & (-s)
    return tot


@njit(cache=True, no_cfunc_wrapper=True)
def fenwick_find(tw, target):
    """The smallest slot s with fenwick_prefix(tw, s) > target (0 <= target < the total);
    tw's size less one is a power of two."""
    p = 0
    step = tw.shape[0] - 1
    while step > 0:
        q = p + step
        if q < tw.shape[0] and tw[q] <= target:
            p = q
            target -= tw[q]
        step >>= 1
    return p + 1


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
def _draw_count(pool, vals, num, left, state):
    """A count drawn by size-biased sampling without replacement: weight the count times
    the ids left with it (`left`, a Fenwick tree `pool` over those weights); the pool is
    refilled with `num` when spent."""
    top = pool.shape[0] - 1
    tot = fenwick_prefix(pool, top)
    if tot == 0:
        for i in range(vals.shape[0]):
            left[i] = num[i]
            fenwick_add(pool, i + 1, top + 1, vals[i] * num[i])
        tot = fenwick_prefix(pool, top)
    i = fenwick_find(pool, _below(state, tot)) - 1
    left[i] -= 1
    fenwick_add(pool, i + 1, top + 1, -vals[i])
    return vals[i]


@njit(cache=True, no_cfunc_wrapper=True)
def _pick_weighted(owner, bits, tree, tw, nw, t, d, D, exact, per_octave, state):
    """The slot an access at drawn depth d takes, budget model (see the module docstring)."""
    if d < exact or d == 0:               # (the bucket of depth 0 is the top item)
        return slot_at(bits, tree, nw, t, d, D)
    lo, hi = _bucket(d, exact, per_octave)
    hi = min(hi, D)
    s_old = slot_at(bits, tree, nw, t, hi - 1, D)       # the bucket's deepest (oldest)
    s_new = slot_at(bits, tree, nw, t, lo, D)           # ... and its shallowest
    wa = fenwick_prefix(tw, s_old - 1)
    wb = fenwick_prefix(tw, s_new)
    if wb <= wa:
        return slot_at(bits, tree, nw, t, d, D)
    return fenwick_find(tw, wa + _below(state, wb - wa))


@njit(cache=True, no_cfunc_wrapper=True)
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


@njit(cache=True, no_cfunc_wrapper=True)
def _budget_core(n_out, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf, edges,
                 fallback_cdf, seed, max_ids, vals, num, scale, exact, per_octave, run_depth):
    """Returns (stream of item numbers in first-touch order, items used, extra cold, clamped):
    the windowed LRU stack of `synth._synth_core` (its hot ids, hot_cnt [K, W], placed in
    each window by `synth._place_hot`, off the stack), each stack id with a budget
    (`_draw_count`, times `scale`) that weighs the draws from depth `exact` on
    (`_pick_weighted`), times one more than its run under `run_depth` (when > 0)."""
    out = np.empty(n_out, dtype=np.int64)
    state = np.full(1, seed, dtype=np.uint64)
    P = 1
    while P < vals.shape[0]:
        P *= 2
    pool = np.zeros(P + 1, dtype=np.int64)
    left_ids = np.zeros(vals.shape[0], dtype=np.int64)
    cap = 1 << 14
    owner, nw, bits, tree = new_stack(cap)
    tw = np.zeros(cap + 1, dtype=np.int64)
    left = np.zeros(1024, dtype=np.int64)
    run = np.zeros(1024, dtype=np.int64)
    weight = np.zeros(1024, dtype=np.int64)
    t, D, items, extra_cold, clamped = 1, 0, 0, 0, 0
    K = hot_cnt.shape[0]
    hot_gid = np.full(K, -1, dtype=np.int64)
    sched, rest, parent, gaps = _hot_buffers(bounds, K)
    for w in range(cold_cnt.shape[0]):
        lo = bounds[w]
        if K:
            _place_hot(sched, parent, bounds[w + 1] - lo, hot_cnt, w, gap_cdf, gap_edges,
                       state, gaps, rest)
        rem_cold, rem_warm, wcdf, wtot, _ = _window_setup(w, bounds, hot_cnt, cold_cnt, cdf,
                                                          fallback_cdf)
        for pos in range(lo, bounds[w + 1]):
            if t >= cap:
                owner, cap, nw, D, bits, tree = compact_stack(owner, t - 1, cap)
                t = D + 1
                tw = _weights(owner, D, weight, cap)
            k = sched[pos - lo] if K else -1
            if k >= 0:
                out[pos], items = _hot_item(hot_gid, k, items, max_ids, state)
                continue
            was = _below(state, rem_cold + rem_warm) < rem_cold
            if was:
                rem_cold -= 1
            else:
                rem_warm -= 1
            cold, d, x, y = _event(state, was, D, wtot, wcdf, edges, items, max_ids)
            extra_cold += x
            clamped += y
            if cold == 2:
                out[pos] = _below(state, max_ids)
                continue
            if cold:
                g = items
                items += 1
                D += 1
                fenwick_add(tree, (t >> 6) + 1, nw + 1, 1)
                left = _grow(left, g)
                run = _grow(run, g)
                weight = _grow(weight, g)
                b = _draw_count(pool, vals, num, left_ids, state)
                left[g] = max(1, np.int64(b * scale + _below(state, 1 << 20) / (1 << 20)))
            else:
                s = _pick_weighted(owner, bits, tree, tw, nw, t, d, D, exact, per_octave, state)
                if weight[owner[s]] > 0:
                    fenwick_add(tw, s, cap + 1, -weight[owner[s]])
                g = remove_slot(owner, bits, tree, nw, t, s)
                run[g] = run[g] + 1 if d < run_depth else 0
            left[g] -= 1
            weight[g] = left[g] * (1 + run[g]) if left[g] > 0 else 0
            bits[t >> 6] |= np.uint64(1) << np.uint64(t & 63)
            owner[t] = g
            if weight[g] > 0:
                fenwick_add(tw, t, cap + 1, weight[g])
            t += 1
            out[pos] = g
    return out, items, extra_cold, clamped


@njit(cache=True, no_cfunc_wrapper=True)
def _event(state, cold, D, wtot, wcdf, edges, items, max_ids):
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
        d = _draw_bin(state, wcdf, wtot, edges)
        if d < D:
            return 0, d, x, 0
    return 0, D - 1, x, 1


def synthesize_budgets(prof, n: int, rows: int, rng: np.random.Generator):
    """(item numbers in [0, items), facts) of n accesses by the budget model: the windows and
    first touches of `windows.window_tables`, each window's reuse histogram, the budgets."""
    wt = window_tables(prof, n)
    exact = int(prof.extra.get("budget_exact", 0))
    per_octave = int(prof.extra.get("budget_per_octave", 2))
    run_depth = int(prof.extra.get("budget_run_depth", 0))
    stream, items, extra, clamped = _budget_core(
        int(n), wt.bounds, wt.hot, wt.gap_cdf, wt.gap_edges, wt.cold, wt.cdf, wt.edges,
        wt.fallback, int(rng.integers(0, 2 ** 63)), int(rows),
        np.ascontiguousarray(prof.count_values, dtype=np.int64),
        np.ascontiguousarray(prof.count_ids, dtype=np.int64),
        float(n) / max(prof.accesses, 1), exact, per_octave, run_depth)
    return stream, {"extra_cold": int(extra), "clamped": int(clamped), "items": int(items)}
