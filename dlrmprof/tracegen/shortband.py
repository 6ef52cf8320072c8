"""The short band of a stream: the depths where its reuses do not follow its ids' counts.

The budget model (`budgets.py`) weighs a reuse at depth d by the taken id's budget left,
which is right where an id's chance of being the one reused there (its hazard) grows with its
access count as count^1 (independent references).  In a session stream it does not at short
depths: within a session a popular id comes back about as often as any active one.  Here the
hazard's slope against the count is measured per half-octave depth bucket on a stream's
prefix; the short band is the depths before the first bucket whose slope reaches BAND_SLOPE,
with each count class's measured hazard there (`short_band`), which the budget kernel uses
as the weights under the band's depth.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dlrmprof.tracegen._lru_stack import _cttz
from dlrmprof.tracegen.profile import BUDGET_HEAD
from dlrmprof.tracegen.reuse import dense_ids as _reuse_dense
from dlrmprof.tracegen.reuse import _pc, reuse_distances

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('_lru_stack.py', 'hashmap.py', 'reuse.py')
_DEPS_SHA256 = 'b9b06b69bdc07d84'

# no short band: (its depth, its weight per count class, its weight per head depth)
NO_BAND = (0, (), ())

# the hazard of an id at a depth (the chance that the next access is its reuse) grows with
# the id's access count as count^slope, the slope measured per half-octave depth bucket:
# the short band is the depths before the first bucket whose slope reaches BAND_SLOPE
BAND_SLOPE = 0.5
BAND_EVERY = 512        # the stack's composition is counted every BAND_EVERY accesses
BAND_MIN_REUSES = 256   # a bucket's slope is measured where it has this many reuses
BAND_BUCKETS = 48       # half-octave buckets: depths up to 2^23
BAND_MIN_DEPTH = 4      # a shorter band holds only buckets of one depth: weights choose nothing
BAND_PREFIX = 1 << 16   # the band is measured on a stream's first BAND_PREFIX accesses
HEAD = BUDGET_HEAD      # depths 0..HEAD-1 (one id each) are drawn among as one bucket
RATE_UNIT = 1 << 16     # an id's class: log2 of its accesses per RATE_UNIT accesses


def rate_class(counts: np.ndarray, unit: float) -> np.ndarray:
    """Per id, floor(log2(count x unit)), at least 0."""
    return np.floor(np.log2(np.maximum(np.asarray(counts, dtype=np.float64) * unit, 1.0))
                    ).astype(np.int64)


@njit(cache=True, no_cfunc_wrapper=True)
def _bkey(d):
    """The half-octave bucket of depth d: 0 for depth 0, 1 + floor(2 log2 d) from 1."""
    if d <= 0:
        return 0
    return min(BAND_BUCKETS - 1, 1 + np.int64(np.floor(2.0 * np.log2(np.float64(d)) + 1e-9)))


@njit(cache=True, no_cfunc_wrapper=True)
def _band_counts(ids, dist, cls, C, every):
    """(reuses [B, C]: the reuses at each depth bucket of the ids of each count class,
    residents [B, C]: the ids of each class at each bucket, counted every `every` accesses
    and weighted by `every`): the stack's composition is walked from the top, over the
    accesses that are their ids' last so far (`ids` dense: `cls` has one entry per id).
    Those accesses are the set bits of a bitmap over the stream (a word's bits counted at
    once, so a walk costs O(accesses / 64 + ids)); the buckets of depths 0..ids are computed
    once (`_bkey`).  The counts are whole numbers: the same floats in any order."""
    G = cls.shape[0]
    bk = np.empty(G + 1, dtype=np.int64)
    for r in range(G + 1):
        bk[r] = _bkey(r)
    reuses = np.zeros((BAND_BUCKETS, C), dtype=np.float64)
    residents = np.zeros((BAND_BUCKETS, C), dtype=np.float64)
    last = np.full(G, -1, dtype=np.int64)
    live = np.zeros((ids.shape[0] >> 6) + 1, dtype=np.uint64)   # bit u: ids[u] is last at u
    one = np.uint64(1)
    for t in range(ids.shape[0]):
        g = ids[t]
        if dist[t] >= 0:
            reuses[bk[dist[t]], cls[g]] += 1
        if t % every == 0 and t > 0:
            r = 0
            for wi in range((t - 1) >> 6, -1, -1):
                x = live[wi]
                c = _pc(x)           # the word's accesses, depths r..r + c - 1 from its top
                k = r + c - 1
                while x:
                    residents[bk[k], cls[ids[wi * 64 + np.int64(_cttz(x))]]] += every
                    k -= 1
                    x &= x - one
                r += c
        if last[g] >= 0:
            live[last[g] >> 6] &= ~(one << np.uint64(last[g] & 63))
        live[t >> 6] |= one << np.uint64(t & 63)
        last[g] = t
    return reuses, residents


def _slope(reuses: np.ndarray, residents: np.ndarray) -> float:
    """The slope of log2 hazard (reuses / residents) against the count class, a
    least-squares fit weighted by the reuses over the classes seen; NaN for fewer than two."""
    m = (reuses > 0) & (residents > 0)
    if m.sum() < 2:
        return np.nan
    w, x = reuses[m], np.flatnonzero(m).astype(np.float64)
    y = np.log2(reuses[m] / residents[m])
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    var = np.average((x - xm) ** 2, weights=w)
    return float(np.average((x - xm) * (y - ym), weights=w) / var) if var > 0 else np.nan


def band_slopes(reuses: np.ndarray, residents: np.ndarray) -> np.ndarray:
    """Per depth bucket (rows of `_band_counts`' arrays), the hazard's slope (`_slope`) from
    bucket 1 on while a bucket has BAND_MIN_REUSES reuses (empty ones skipped); at the first
    that has fewer, the slope of the buckets from there on pooled (where they have that many
    together), and NaN past it."""
    out = np.full(reuses.shape[0], np.nan)
    for b in range(1, reuses.shape[0]):
        if reuses[b].sum() == 0:
            continue                 # (bucket 2 holds no integer depth)
        if reuses[b].sum() >= BAND_MIN_REUSES:
            out[b] = _slope(reuses[b], residents[b])
            continue
        if reuses[b:].sum() >= BAND_MIN_REUSES:
            out[b] = _slope(reuses[b:].sum(axis=0), residents[b:].sum(axis=0))
        break
    return out


def short_band(ids: np.ndarray) -> tuple:
    """(depth, class weights, head weights) of the short band of the stream `ids` (its first
    BAND_PREFIX accesses): the depths before the first bucket whose hazard slope
    (`band_slopes`) reaches BAND_SLOPE; per count class (`rate_class`), its hazard over those
    depths, scaled to integers (the largest 2^16); per head depth, its share of the reuses
    over the class weights found there.  NO_BAND where the first measured bucket already
    reaches the slope (an independent-reference stream: the hazard is the count) or the band
    would be under BAND_MIN_DEPTH."""
    ids = _reuse_dense(ids[:BAND_PREFIX])
    counts = np.bincount(ids)
    cls = rate_class(counts, RATE_UNIT / ids.shape[0])
    reuses, residents = _band_counts(ids, reuse_distances(ids), cls, int(cls.max()) + 1,
                                     BAND_EVERY)
    slopes = band_slopes(reuses, residents)
    seen = np.flatnonzero(~np.isnan(slopes[1:])) + 1
    cut = seen[slopes[seen] >= BAND_SLOPE]
    depth = int(np.ceil(2.0 ** ((cut[0] - 1) / 2) - 1e-9)) if cut.size else 0
    if not seen.size or depth < BAND_MIN_DEPTH or cut[0] == seen[0]:
        return NO_BAND
    r = reuses[1:cut[0]].sum(axis=0)
    o = residents[1:cut[0]].sum(axis=0)
    h = np.where(o > 0, r / np.maximum(o, 1), np.nan)
    seen_c = np.flatnonzero(o > 0)
    h = np.interp(np.arange(h.shape[0]), seen_c, h[seen_c])      # classes not seen there
    # class 0 (one access in the measured prefix) is never reused there, by definition: it
    # takes class 1's hazard (in the synthesis an id of one access is spent at its first)
    h[0] = h[1] if h.shape[0] > 1 else h[0]
    top = h.max()
    if not top > 0:
        return NO_BAND
    w = np.maximum(1, np.round(h / top * (1 << 16)))
    # the head's depths (one id each): the source's reuses at depth j over the class weights
    # of the ids found there, so that a draw among them weighted by class keeps each depth's
    # share where the synthesis's stack holds the source's mix of classes
    rows = [_bkey(j) for j in range(HEAD)]
    q = np.array([reuses[b].sum() / max((residents[b] * w).sum(), 1e-300) for b in rows])
    if not q.max() > 0:
        return NO_BAND
    return (depth, tuple(int(x) for x in w),
            tuple(int(max(1, round(x / q.max() * (1 << 16)))) for x in q))
