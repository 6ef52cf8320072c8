"""Alternative synthesis models measured against gen-trace's on the bursty and drifting streams.

    python benchmarks/bench_tracegen_models.py [--seed 11] [--syntheses 3] [--only TEXT]
        [--out benchmarks/results/tracegen_models.json]

The question (issue 16): can one model keep both the LRU curve and the popularity (LFU,
top-10 share) of a stream whose popular ids come in sessions?  gen-trace's model keeps the
K most popular ids' per-window counts and places them by their gap histogram, the other ids
on an LRU stack; a small K keeps the sessions' LRU curve, a large K their LFU curve, neither
both.  Each variant below is synthesized `--syntheses` times (seeds seed, seed + 1, ...) and
its fidelity averaged (`tracegen.fidelity`, the same figures as gen-trace's report):

* model: gen-trace's own choice (`generate._profile`, the measured selection);
* no hot set: the same model with K = 0 (every id on the windowed LRU stack);
* hot K=256: the same model with 256 hot ids (spaced by their gaps);
* budgets, no short band / hot K=4 and budgets / budgets with the short band: the budget
  model (`tracegen/budgets.py`) without its short band (the model before it), with 4 hot
  ids (no band), and with the band measured on the stream (`budgets.short_band`);
* counts as budgets: one LRU stack, no hot set; every id enters with a target count drawn
  (without replacement) from the counts of the source's ids first seen in that window; a
  drawn depth whose id has used its count takes the nearest id on the stack with budget left;
* classes, global depth: ids grouped by floor(log2(count)); per window the exact number of
  accesses and first touches of each class; a class-c access draws a depth from class c's
  histogram of global reuse distances and takes the nearest class-c id to that depth;
* classes, own stacks: the same classes, each on its own LRU stack, distances counted among
  the class's ids only (per window and class);
* classes, own stacks + 64 hot: the 64 most popular ids as classes of one id each (exact
  per-window counts, placed at random in their window), the rest as above;
* capped (both of the above): no id of class c, counts [2^c, 2^(c+1)), is used more than
  2^(c+1) - 1 times (the nearest id of its stack under the cap is taken);
* half-octave classes: the same, classes of counts [2^(c/2), 2^((c+1)/2));
* classes, own stacks, counts as budgets: each id's limit is a count drawn (without
  replacement) from the counts of the source's ids of its class first seen in its window.
* the source's generator, another seed: not a model; the stream's own generator at the
  seeds after the source's (one per synthesis), measured against the source as a synthesis
  is.  Two realizations of one process differ this much: the floor for any model of the
  stream's statistics (an LFU cache of a few entries keeps whichever ids first outgrow the
  others' in-cache counts, settled in a stream's first few hundred accesses);
* sessions, T: an access whose reuse distance is under T continues a session, any other
  (first touches included) starts one.  The ids of the session starts, in order, are a
  stream of their own, synthesized by gen-trace's model (its selection included); the output
  takes, per window, the source's number of starts at random positions, the next synthetic
  start there, and elsewhere the id at a depth drawn from the source's histogram of
  distances under T on the output's own LRU stack (its top T ids).

The alternative models run on plain move-to-front arrays (O(depth) per access): they are
measured here, not shipped.  Each synthesis is checked before it is measured: its length is
the source's, its distinct count within 2% of it, and the class models' per-window class
counts are exact.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from numba import njit

from dlrmprof.profile.harness import write_results
from dlrmprof.tracegen import budgets
from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen import workloads
from dlrmprof.tracegen.fidelity import errors, fidelity, source_extras
from dlrmprof.tracegen.generate import _profile
from dlrmprof.tracegen.profile import build_profile
from dlrmprof.tracegen.synth import _below, _draw_bin, synthesize_bags

SCHEMA = "dlrmprof.bench.tracegen_models/1"
ROOT = Path(__file__).resolve().parent.parent
WINDOWS = 32
CLASSES = 16
FIGURES = ("mrc_mae", "lfu_mae", "fifo_mae", "setassoc32_mae", "top10_share", "distinct",
           "batch_unique", "batch_overlap")


# each stream's generator (a function of the length and the seed) and the seed of the source
GENERATORS = {
    "bursty sessions": (lambda n, seed: workloads.bursty_sessions(
        n, users=20_000, zipf_a=1.0, mean_session=8, concurrent=32, seed=seed), 1),
    "user-item log users": (lambda n, seed: workloads.user_item_log(
        n, users=20_000, items=50_000, seed=seed)[0], 3),
    "user-item log items": (lambda n, seed: workloads.user_item_log(
        n, users=20_000, items=50_000, seed=seed)[1], 3),
    "drifting Zipf": (lambda n, seed: workloads.drifting_zipf(
        n, distinct=50_000, a=1.0, drift=0.05, seed=seed), 2),
}
OTHER_SEED = "the source's generator, another seed"


def streams(n: int) -> dict[str, np.ndarray]:
    return {f"{name} ({n:,})": gen(n, seed) for name, (gen, seed) in GENERATORS.items()}


def other_seeds(name: str, n: int):
    """The stream `name`'s generator at seeds after the source's: a function of the
    synthesis number returning (ids, None).  Another realization of the same process is
    the floor a model of the stream's statistics can reach on each figure."""
    gen, seed = GENERATORS[name.split(" (")[0]]
    return lambda s: (_reuse.dense_ids(np.asarray(gen(n, seed + 1 + s), dtype=np.int64)), None)


# ------------------------------------------------------------------ the stack primitives
@njit(cache=True)
def _depth(state, wc, edges, D):
    """A reuse distance drawn from the binned cdf `wc` (redrawn up to 8 times while not
    shallower than the stack's D ids, then clamped to its bottom)."""
    for _ in range(8):
        d = _draw_bin(state, wc, wc[wc.shape[0] - 1], edges)
        if d < D:
            return d
    return D - 1


@njit(cache=True)
def _next_event(state, ev, i, rc, rw):
    """(class, first touch?) of a window's i-th event; a class's first touches are spread at
    random over its accesses (rc, rw: its first touches and reuses left, updated)."""
    c = ev[i]
    cold = _below(state, rc[c] + rw[c]) < rc[c]
    if cold:
        rc[c] -= 1
    else:
        rw[c] -= 1
    return c, cold


@njit(cache=True)
def _to_front(stk, d, g):
    """Move the id at depth d (or, d = D, a new id g) to the top of the stack."""
    for i in range(d, 0, -1):
        stk[i] = stk[i - 1]
    stk[0] = g


@njit(cache=True)
def _nearest(stk, D, d, key, want):
    """Depth of the id nearest to depth d (shallower first at equal distance) whose
    key[id] == want; -1 when none."""
    for r in range(0, D):
        if d - r >= 0 and key[stk[d - r]] == want:
            return d - r
        if d + r < D and key[stk[d + r]] == want:
            return d + r
    return -1


@njit(cache=True)
def _shuffled_events(state, counts, ev):
    """ev[:sum(counts)]: class c repeated counts[c] times, in random order."""
    k = 0
    for c in range(counts.shape[0]):
        for _ in range(counts[c]):
            ev[k] = c
            k += 1
    for i in range(k - 1, 0, -1):
        j = _below(state, i + 1)
        ev[i], ev[j] = ev[j], ev[i]


# ------------------------------------------------------------------ the alternative models
@njit(cache=True)
def _budgets(bounds, cold_cnt, cdf, edges, new_counts, new_off, seed):
    """Counts as budgets on one LRU stack (see the module docstring); returns (ids, accesses
    that found no id with budget left)."""
    n = bounds[-1]
    out = np.empty(n, np.int64)
    state = np.full(1, seed, np.uint64)
    stk = np.empty(n + 1, np.int64)
    budget = np.zeros(n + 1, np.int64)
    ok = np.zeros(n + 1, np.int64)
    D, items, over = 0, 0, 0
    for w in range(cold_cnt.shape[0]):
        pool = new_counts[new_off[w]:new_off[w + 1]].copy()
        for i in range(pool.shape[0] - 1, 0, -1):
            j = _below(state, i + 1)
            pool[i], pool[j] = pool[j], pool[i]
        rc, rw = cold_cnt[w], bounds[w + 1] - bounds[w] - cold_cnt[w]
        for pos in range(bounds[w], bounds[w + 1]):
            cold = _below(state, rc + rw) < rc
            rc, rw = (rc - 1, rw) if cold else (rc, rw - 1)
            if cold or D == 0 or cdf[w, -1] == 0:
                g = items
                budget[g] = pool[items - new_off[w]] if items - new_off[w] < pool.shape[0] else 1
                items += 1
                _to_front(stk, D, g)
                D += 1
            else:
                d = _depth(state, cdf[w], edges, D)
                j = _nearest(stk, D, d, ok, 1)
                over += j < 0
                d = d if j < 0 else j
                g = stk[d]
                _to_front(stk, d, g)
            budget[g] -= 1
            ok[g] = 1 if budget[g] > 0 else 0
            out[pos] = g
    return out, over


@njit(cache=True)
def _classes_global(bounds, cls_acc, cls_cold, cdf, edges, seed):
    """Per-class histograms of global depth, the nearest id of the class taken; returns
    (ids, class of each access)."""
    n = bounds[-1]
    out = np.empty(n, np.int64)
    acc_cls = np.empty(n, np.int64)
    state = np.full(1, seed, np.uint64)
    stk = np.empty(n + 1, np.int64)
    cl = np.zeros(n + 1, np.int64)
    ev = np.empty(n, np.int64)
    D, items = 0, 0
    for w in range(bounds.shape[0] - 1):
        _shuffled_events(state, cls_acc[w], ev)
        rc, rw = cls_cold[w].copy(), cls_acc[w] - cls_cold[w]
        for pos in range(bounds[w], bounds[w + 1]):
            c, cold = _next_event(state, ev, pos - bounds[w], rc, rw)
            if cold or D == 0 or cdf[c, -1] == 0:
                g = items
                items += 1
                cl[g] = c
                _to_front(stk, D, g)
                D += 1
            else:
                d = _depth(state, cdf[c], edges, D)
                j = _nearest(stk, D, d, cl, c)
                d = d if j < 0 else j
                g = stk[d]
                _to_front(stk, d, g)
            out[pos] = g
            acc_cls[pos] = c
    return out, acc_cls


@njit(cache=True)
def _classes_own(bounds, cls_acc, cls_cold, cdf, edges, seed, nmax, cap, pool, pool_off):
    """Each class on its own LRU stack, class-local distances per window and class; returns
    (ids, class of each access).  An id's limit: drawn at its first touch (without
    replacement) from pool[pool_off[w * C + c]:pool_off[w * C + c + 1]], the counts of the
    source's class-c ids first seen in window w, else cap[c]; an id that has used its limit
    (> 0) is not drawn again (the nearest id of its stack under its limit is taken)."""
    n = bounds[-1]
    C = cls_acc.shape[1]
    out = np.empty(n, np.int64)
    acc_cls = np.empty(n, np.int64)
    state = np.full(1, seed, np.uint64)
    stk = np.empty((C, nmax + 1), np.int64)
    D = np.zeros(C, np.int64)
    ev = np.empty(n, np.int64)
    used = np.zeros(n + 1, np.int64)
    under = np.zeros(n + 1, np.int64)          # 1: the id is still under its limit
    lim = np.zeros(n + 1, np.int64)
    left = pool_off[1:] - pool_off[:-1]        # counts not drawn yet, per (window, class)
    pool = pool.copy()
    items = 0
    for w in range(bounds.shape[0] - 1):
        _shuffled_events(state, cls_acc[w], ev)
        rc, rw = cls_cold[w].copy(), cls_acc[w] - cls_cold[w]
        for pos in range(bounds[w], bounds[w + 1]):
            c, cold = _next_event(state, ev, pos - bounds[w], rc, rw)
            if cold or D[c] == 0 or cdf[w, c, -1] == 0:
                g = items
                items += 1
                lim[g] = cap[c]
                k = w * C + c
                if left[k] > 0:                 # a count of the pool, without replacement
                    i = pool_off[k] + _below(state, left[k])
                    lim[g] = pool[i]
                    left[k] -= 1
                    pool[i] = pool[pool_off[k] + left[k]]
                _to_front(stk[c], D[c], g)
                D[c] += 1
            else:
                d = _depth(state, cdf[w, c], edges, D[c])
                j = _nearest(stk[c], D[c], d, under, 1)
                d = d if j < 0 else j
                g = stk[c, d]
                _to_front(stk[c], d, g)
            used[g] += 1
            under[g] = 1 if lim[g] <= 0 or used[g] < lim[g] else 0
            out[pos] = g
            acc_cls[pos] = c
    return out, acc_cls


# ------------------------------------------------------------------ what they are fed
class Source:
    """One stream's figures the alternative models need, measured once."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids
        self.n = n = int(ids.shape[0])
        self.prof = build_profile("s", ids, None, rows=int(ids.max()) + 1, windows=WINDOWS,
                                  hot=0)
        self.prof.extra["source_extras"] = source_extras(ids, None, self.prof.distinct)
        W = self.prof.num_windows
        self.bounds = np.minimum(np.arange(W + 1, dtype=np.int64) * self.prof.window_size, n)
        self.win = np.searchsorted(self.bounds, np.arange(n), side="right") - 1
        self.counts = np.bincount(ids)
        self.edges = _reuse.bin_edges(_reuse.MAX_BINS)

    def new_counts(self):
        """Per window, the whole-stream counts of the ids first seen in it (window order)."""
        _, first, cnt = np.unique(self.ids, return_index=True, return_counts=True)
        win = self.win[first]
        order = np.argsort(win, kind="stable")
        off = np.zeros(len(self.bounds), np.int64)
        np.cumsum(np.bincount(win, minlength=len(self.bounds) - 1), out=off[1:])
        return cnt[order].astype(np.int64), off

    def classes(self, hot: int, per_octave: int = 1):
        """(class of each access, classes, the largest count of each class): classes of
        counts floor(per_octave * log2(count)) (at most CLASSES * per_octave, the last open),
        after `hot` classes of one id each (the most popular ids; largest count 0: none)."""
        C = CLASSES * per_octave
        c_id = np.floor(per_octave * np.log2(np.maximum(self.counts, 1)) + 1e-9)
        c_id = np.minimum(c_id.astype(np.int64), C - 1)
        largest = np.zeros(hot + C, np.int64)
        largest[hot:] = np.ceil(2.0 ** ((np.arange(C) + 1) / per_octave) - 1e-9) - 1
        if hot:
            c_id = c_id + hot
            c_id[np.argsort(-self.counts, kind="stable")[:hot]] = np.arange(hot)
        return c_id[self.ids], hot + C, largest

    def class_windows(self, acc_cls, C, dist):
        """(accesses [W, C], first touches [W, C]) of each class per window."""
        W = len(self.bounds) - 1
        acc = np.zeros((W, C), np.int64)
        np.add.at(acc, (self.win, acc_cls), 1)
        cold = np.zeros((W, C), np.int64)
        first = dist < 0
        np.add.at(cold, (self.win[first], acc_cls[first]), 1)
        return acc, cold

    def cdf(self, dist, keys, shape):
        """Cumulative binned histograms of the reuses' distances, one row per key."""
        reuse = dist >= 0
        bins = np.array([_reuse.dist_bin(int(d)) for d in dist[reuse]], np.int64)
        flat = np.zeros(int(np.prod(shape)) * _reuse.MAX_BINS, np.int64)
        np.add.at(flat, keys[reuse] * _reuse.MAX_BINS + bins, 1)
        return np.cumsum(flat.reshape(*shape, _reuse.MAX_BINS), axis=-1)


def _check(src: Source, out: np.ndarray, what: str) -> None:
    """The source's length, its distinct count within 2% (the goal; the schedules of first
    touches keep it up to the few added where a window has no reuse to draw)."""
    if out.shape[0] != src.n or abs(len(np.unique(out)) / src.prof.distinct - 1) > 0.02:
        raise AssertionError(f"{what}: length {out.shape[0]} / distinct "
                             f"{len(np.unique(out))}, expected {src.n} / {src.prof.distinct}")


def _check_classes(src, acc_cls, want_acc, what):
    got = np.zeros_like(want_acc)
    np.add.at(got, (src.win, acc_cls), 1)
    if not np.array_equal(got, want_acc):
        raise AssertionError(f"{what}: per-window class counts differ from the source's")


def variants(src: Source, ids: np.ndarray, seed: int):
    """name -> a function of the synthesis number returning (ids, offsets or None)."""
    chosen = _profile("s", ids, None, int(ids.max()) + 1, WINDOWS, None, None)
    k256 = build_profile("s", ids, None, rows=int(ids.max()) + 1, windows=WINDOWS, hot=256)
    out = {f"model (K={chosen.hot_k}, "
           f"{chosen.extra['hot_selection']['placement']})": lambda s: synthesize_bags(
               chosen, seed=seed + s)[:2],
           "no hot set": lambda s: synthesize_bags(src.prof, seed=seed + s)[:2],
           "hot K=256": lambda s: synthesize_bags(k256, seed=seed + s)[:2]}
    # the budget model without the short band, with no hot set and with 4 hot ids
    k4 = build_profile("s", ids, None, rows=int(ids.max()) + 1, windows=WINDOWS, hot=4)
    for name, base, placement in (("budgets, no short band", src.prof, budgets.BUDGET_MODEL),
                                  ("hot K=4 and budgets", k4, budgets.BUDGET_HOT),
                                  ("budgets with the short band", src.prof,
                                   budgets.BUDGET_MODEL)):
        prof = budgets.budget_profile(base, ids, placement,
                                      budgets.NO_BAND if "no short" in name else None)
        out[name] = lambda s, prof=prof: synthesize_bags(prof, seed=seed + s)[:2]
    nc, off = src.new_counts()
    th = np.cumsum(np.asarray(src.prof.tail_hist, np.int64), axis=1)
    edges = _reuse.bin_edges(th.shape[1])
    out["counts as budgets"] = lambda s: (_budgets(src.bounds, src.prof.tail_cold, th, edges,
                                                   nc, off, seed + s)[0], None)
    acc_cls, C, _ = src.classes(0)
    dist = _reuse.reuse_distances(src.ids)
    acc, cold = src.class_windows(acc_cls, C, dist)
    cdf_g = src.cdf(dist, acc_cls, (C,))

    def global_depth(s):
        o, ac = _classes_global(src.bounds, acc, cold, cdf_g, src.edges, seed + s)
        _check_classes(src, ac, acc, "classes, global depth")
        return o, None

    out["classes, global depth"] = global_depth
    for hot in (0, 64):
        out[f"classes, own stacks{f' + {hot} hot' if hot else ''}"] = _own(src, hot, seed)
    out["classes, own stacks, capped"] = _own(src, 0, seed, capped=True)
    out["classes, own stacks + 64 hot, capped"] = _own(src, 64, seed, capped=True)
    out["half-octave classes, own stacks, capped"] = _own(src, 0, seed, capped=True,
                                                          per_octave=2)
    out["classes, own stacks, counts as budgets"] = _own(src, 0, seed, budgets=True)
    for T in (16, 64, 256):
        out[f"sessions, T={T}"] = _sessions(src, dist, T, seed)
    return out


@njit(cache=True)
def _session_synth(bounds, starts_per_win, starts, cont_cdf, seed, T):
    """The session variant's output: per window its number of starts at random positions
    (the next id of `starts` each), the other accesses at a depth d < T drawn from
    `cont_cdf` on the output's LRU stack (its top T ids; a depth past the stack takes its
    deepest)."""
    np.random.seed(seed)
    n = bounds[-1]
    out = np.empty(n, np.int64)
    top = np.full(T, -1, np.int64)      # the output's T most recent ids, most recent first
    size = 0
    k = 0
    tot = cont_cdf[-1]
    for w in range(bounds.shape[0] - 1):
        lo, hi = bounds[w], bounds[w + 1]
        is_start = np.zeros(hi - lo, np.bool_)
        is_start[np.random.permutation(hi - lo)[:starts_per_win[w]]] = True
        for i in range(lo, hi):
            if k < starts.shape[0] and (is_start[i - lo] or size == 0 or tot == 0):
                g = starts[k]       # (the first access starts one wherever it falls)
                k += 1
            else:
                d = np.searchsorted(cont_cdf, np.random.randint(0, tot), side="right")
                g = top[min(d, size - 1)]
            out[i] = g
            # move g to the front of the top-T list
            j = 0
            while j < size and top[j] != g:
                j += 1
            if j == size:
                if size < T:
                    size += 1
                j = size - 1
            while j > 0:
                top[j] = top[j - 1]
                j -= 1
            top[0] = g
    return out


def _sessions(src: Source, dist: np.ndarray, T: int, seed: int):
    start = (dist < 0) | (dist >= T)
    s_ids = _reuse.dense_ids(src.ids[start])
    s_prof = _profile("starts", s_ids, None, int(s_ids.max()) + 1, WINDOWS, None, None)
    per_win = np.bincount(src.win[start], minlength=len(src.bounds) - 1).astype(np.int64)
    cont_cdf = np.cumsum(np.bincount(dist[~start], minlength=T)[:T]).astype(np.int64)

    def synth(s):
        starts = synthesize_bags(s_prof, seed=seed + s)[0]
        return _session_synth(src.bounds, per_win, starts, cont_cdf, seed + s, T), None
    return synth


def _own(src: Source, hot: int, seed: int, capped: bool = False, per_octave: int = 1,
         budgets: bool = False):
    acc_cls, C, largest = src.classes(hot, per_octave)
    # capped: no id of a class gets more accesses than the class's largest count
    cap = largest if capped else np.zeros(C, np.int64)
    W = len(src.bounds) - 1
    pool, pool_off = np.zeros(0, np.int64), np.zeros(W * C + 1, np.int64)
    if budgets:                     # each id's count, by its first window and its class
        _, first, cnt = np.unique(src.ids, return_index=True, return_counts=True)
        key = src.win[first] * C + acc_cls[first]
        order = np.argsort(key, kind="stable")
        pool = cnt[order].astype(np.int64)
        np.cumsum(np.bincount(key, minlength=W * C), out=pool_off[1:])
    dist = np.empty(src.n, np.int64)
    for c in range(C):                        # distances among the class's ids only
        at = np.flatnonzero(acc_cls == c)
        if at.size:
            dist[at] = _reuse.reuse_distances(src.ids[at])
    acc, cold = src.class_windows(acc_cls, C, dist)
    cdf = src.cdf(dist, src.win * C + acc_cls, (W, C))
    nmax = int(np.bincount(acc_cls[dist < 0], minlength=C).max())

    def synth(s):
        o, ac = _classes_own(src.bounds, acc, cold, cdf, src.edges, seed + s, nmax, cap,
                             pool, pool_off)
        _check_classes(src, ac, acc, "classes, own stacks")
        return o, None
    return synth


def measure(ids: np.ndarray, seed: int, syntheses: int, other=None) -> dict:
    """Each variant's mean errors; `other` (`other_seeds`) adds the row OTHER_SEED, not
    checked as a synthesis is (another realization's distinct count differs by a few %)."""
    ids = _reuse.dense_ids(np.asarray(ids, dtype=np.int64))
    src = Source(ids)
    rows = {}
    runs = variants(src, ids, seed)
    if other is not None:
        runs[OTHER_SEED] = other
    for name, synth in runs.items():
        t0 = time.perf_counter()
        errs = []
        for s in range(syntheses):
            out, offs = synth(s)
            if name != OTHER_SEED:
                _check(src, out, name)
            errs.append(errors(fidelity(src.prof, out, offsets=offs)))
        rows[name] = {k: float(np.mean([e[k] for e in errs])) for k in FIGURES}
        rows[name]["seconds"] = time.perf_counter() - t0
    return {"accesses": src.n, "distinct": src.prof.distinct, "variants": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--syntheses", type=int, default=3)
    ap.add_argument("--accesses", type=int, default=200_000)
    ap.add_argument("--only", default=None, metavar="TEXT",
                    help="only the streams whose name contains TEXT (a partial run)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                          "tracegen_models.json"))
    args = ap.parse_args()
    results = {}
    for name, ids in streams(args.accesses).items():
        if args.only and args.only not in name:
            continue
        results[name] = measure(ids, args.seed, args.syntheses,
                                other_seeds(name, args.accesses))
        for v, r in results[name]["variants"].items():
            print(f"{name}: {v}: LRU {r['mrc_mae']:.4f} LFU {r['lfu_mae']:.4f} top-10 "
                  f"{100 * r['top10_share']:.1f}% batch overlap {100 * r['batch_overlap']:.1f}%",
                  flush=True)
    cmd = "python benchmarks/bench_tracegen_models.py" + (
        f" --only '{args.only}'" if args.only else "") + (
        f" --syntheses {args.syntheses}" if args.syntheses != 3 else "")
    write_results(args.out, {
        "schema": SCHEMA, "command": cmd, "seed": args.seed, "syntheses": args.syntheses,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "loadavg": list(os.getloadavg())},
        "source": "measured: each variant's syntheses against their source, exact "
                  "simulation, the mean over the syntheses",
        "streams": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
