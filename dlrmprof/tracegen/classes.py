"""Count classes on their own LRU stacks, capped: the model for tables whose popularity drifts.

Ids are grouped by floor(log2(their access count in the whole stream)) (counts 1, 2-3, 4-7,
..., as many as the counts span), or by half octaves (floor(2 log2(count))).  The
profile keeps, per window and class, the class's first touches and the histogram of its
class-local reuse distances (distinct ids *of the class* since the id's previous access), and
each class's largest count.  The synthesis keeps every window's per-class access and
first-touch counts: each class is an LRU stack of its own (`synth._synth_core` without a hot
set, one call per class), capped so that no id is used more often than the source's most
accessed id of its class (a spent id keeps its place on the stack); the classes' accesses
are then interleaved at random inside each window.

What it keeps that the windowed hot-set model does not: the popularity of every rank (an id
stays in its class, and a class's ids keep the class's reuse), so the LFU curve and the
top-10 share follow the source where popularity drifts (an item catalogue, drifting Zipf).
What it loses: which ids come together (a session's burst is spread over its window), so the
selection (`selection.select_hot`) keeps it only where it wins the objective.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit

from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.profile import CLASS_MODEL, _chunks, count_ids

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('hashmap.py', 'reuse.py')
_DEPS_SHA256 = 'd80456446d1b32a7'

# classes span at most this many octaves of counts (the last class open): more than any
# stream's counts (an open class would lump a long stream's most popular ids together)
OCTAVES = 48
MODEL = CLASS_MODEL     # profile.extra["model"] of this model
# the selection's placements of this model: classes per octave of counts
PLACEMENTS = {CLASS_MODEL: 1, "half-octave classes": 2}


def count_classes(counts: np.ndarray, per_octave: int = 1) -> np.ndarray:
    """Class of each id from its access count: floor(per_octave * log2(count)), at most
    OCTAVES * per_octave - 1; -1 for ids never accessed."""
    counts = np.asarray(counts, dtype=np.int64)
    cls = np.full(counts.shape[0], -1, dtype=np.int64)
    seen = counts > 0
    c = np.floor(per_octave * np.log2(counts[seen].astype(np.float64)) + 1e-9)
    cls[seen] = np.minimum(c.astype(np.int64), OCTAVES * per_octave - 1)
    return cls


@njit(cache=True, no_cfunc_wrapper=True)
def _class_pass(dist, pos, wsize, c, C, rows, cold):
    """Class c's accesses (class-local distances `dist`, -1 a first touch, at stream positions
    `pos`) added to their window's row w * C + c, or to its first touches cold[w, c]."""
    for i in range(dist.shape[0]):
        w = pos[i] // wsize
        if dist[i] < 0:
            cold[w, c] += 1
        else:
            rows[w * C + c, _reuse.dist_bin(dist[i])] += 1


class ClassState:
    """The class part of a profile, fed the stream chunk by chunk: the classes come from the
    whole stream's counts and the windows from its length (both known before the first
    chunk, as for `profile.WindowState`).  Memory O(distinct ids): one reuse state per class
    over class-local dense ids."""

    def __init__(self, counts: np.ndarray, n: int, windows: int, per_octave: int = 1):
        W = max(1, min(int(windows), int(n)))
        self.wsize = max(1, -(-int(n) // W))
        self.W = max(1, -(-int(n) // self.wsize))
        self.cls = count_classes(counts, per_octave)
        seen = self.cls >= 0
        self.C = int(self.cls.max()) + 1 if seen.any() else 1
        size = np.bincount(self.cls[seen], minlength=self.C)
        # each id's number among its class's ids (ids of one class numbered 0, 1, ...)
        order = np.argsort(self.cls, kind="stable")
        sc = self.cls[order]
        self.local = np.zeros(self.cls.shape[0], dtype=np.int64)
        self.local[order] = np.arange(order.shape[0]) - np.searchsorted(sc, sc)
        self.states = [_reuse.ReuseState(max(int(s), 1)) for s in size]
        self.largest = np.zeros(self.C, dtype=np.int64)
        np.maximum.at(self.largest, self.cls[seen], np.asarray(counts, np.int64)[seen])
        self.cold = np.zeros((self.W, self.C), dtype=np.int64)
        self.rows = np.zeros((self.W * self.C, _reuse.MAX_BINS), dtype=np.int64)
        self.pos = 0

    def feed(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not ids.size:
            return
        c_of = self.cls[ids]
        order = np.argsort(c_of, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(c_of, minlength=self.C))])
        for c in np.flatnonzero(np.diff(bounds)):
            at = order[bounds[c]:bounds[c + 1]]
            dist = self.states[c].feed(self.local[ids[at]])
            _class_pass(dist, at + self.pos, self.wsize, int(c), self.C, self.rows,
                        self.cold)
        self.pos += int(ids.shape[0])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(class_cold [W, C], class_hist [W * C, nbins] trimmed, class_max [C])."""
        used = np.flatnonzero(self.rows.sum(axis=0))
        nb = int(used[-1]) + 1 if used.size else 0
        return self.cold, self.rows[:, :nb].copy(), self.largest


def with_classes(prof, state: ClassState):
    """`prof` (built without a hot set) as the class model, from the fed `state`."""
    cold, hist, largest = state.arrays()
    return replace(prof, class_cold=cold, class_hist=hist, class_max=largest,
                   extra=dict(prof.extra, model=MODEL))


def class_profile(prof, ids, per_octave: int = 1):
    """The class model of a stream whose profile (no hot set) is `prof`."""
    counts = np.zeros(max(prof.rows, int(ids.max()) + 1 if ids.shape[0] else 1), np.int64)
    for c in _chunks(ids):
        count_ids(c, counts)
    state = ClassState(counts, prof.accesses, prof.num_windows, per_octave)
    if state.wsize != prof.window_size:
        raise AssertionError("class windows differ from the profile's")
    for c in _chunks(ids):
        state.feed(c)
    return with_classes(prof, state)


def _apportion(weights: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Integer rows summing to `totals`, proportional to the rows of `weights` (largest
    remainders; a row of zero weights stays zero)."""
    wsum = weights.sum(axis=1, keepdims=True)
    share = np.where(wsum > 0, weights * (totals[:, None] / np.maximum(wsum, 1)), 0.0)
    out = np.floor(share).astype(np.int64)
    short = np.where(wsum[:, 0] > 0, totals - out.sum(axis=1), 0)
    rank = np.argsort(np.argsort(-(share - out), axis=1, kind="stable"), axis=1)
    return out + (rank < short[:, None])


def plan_classes(prof, n: int):
    """(window bounds, accesses [W', C], first touches [W', C], cap per class, source window of
    each) of a synthesis of n accesses: the windows and first touches of `windows.plan_windows`,
    each split over the classes as the source window's; caps scaled by the length like
    `windows.tail_cap`."""
    from dlrmprof.tracegen.windows import plan_windows

    bounds, _, cold, src_w = plan_windows(prof, n)
    W, C = prof.class_cold.shape
    acc_src = prof.class_cold + prof.class_hist.sum(axis=1).reshape(W, C)
    acc = _apportion(acc_src[src_w].astype(np.float64), np.diff(bounds))
    ccold = np.minimum(_apportion(prof.class_cold[src_w].astype(np.float64), cold), acc)
    cap = np.maximum(1, -(-prof.class_max * int(n) // max(prof.accesses, 1)))
    return bounds, acc, ccold, cap, src_w


def synthesize_classes(prof, n: int, rows: int, rng: np.random.Generator):
    """(item numbers in [0, items), facts) of n accesses by the class model: each class's
    stream from its own capped stack (`synth.synth_core`, one numba call per class), the
    classes interleaved at random inside each window."""
    from dlrmprof.tracegen.synth import synth_core

    bounds, acc, ccold, cap, src_w = plan_classes(prof, n)
    W, C = prof.class_cold.shape
    Wn = acc.shape[0]
    hist = prof.class_hist.reshape(W, C, -1)
    nb = hist.shape[2]
    edges = _reuse.bin_edges(nb)
    seqs, items, extra, clamped = [], 0, 0, 0
    left_cold = ccold.sum(axis=0)
    for c in range(C):
        m = int(acc[:, c].sum())
        if m == 0:
            continue
        cb = np.concatenate([[0], np.cumsum(acc[:, c])]).astype(np.int64)
        cdf = np.ascontiguousarray(np.cumsum(hist[src_w, c], axis=1)) if nb else \
            np.zeros((Wn, 0), np.int64)
        later = int(left_cold[c + 1:].sum())
        room = max(1, rows - items - later)
        s, k, e, cl = synth_core(
            m, cb, np.zeros((0, Wn), np.int64), np.zeros((0, 0), np.int64),
            _reuse.bin_edges(0), np.ascontiguousarray(ccold[:, c]), cdf, edges,
            np.ascontiguousarray(cdf.sum(axis=0)), int(rng.integers(0, 2 ** 63)), room, 8,
            False, int(cap[c]), True)
        if items + k <= rows:
            seqs.append(s + items)
            items += int(k)
        else:                    # the table is full (fewer rows than ids): reuse its ids
            seqs.append(s % rows)
        extra, clamped = extra + int(e), clamped + int(cl)
    labels = np.repeat(np.tile(np.arange(C), Wn), acc.reshape(-1))
    for w in range(Wn):                      # the classes' accesses at random in each window
        rng.shuffle(labels[bounds[w]:bounds[w + 1]])
    out = np.empty(int(n), dtype=np.int64)
    out[np.argsort(labels, kind="stable")] = np.concatenate(seqs) if seqs else out[:0]
    return out, {"extra_cold": extra, "clamped": clamped, "items": items}

