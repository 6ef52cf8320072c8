"""Exact LRU reuse (stack) distances, miss-ratio curves and SHARDS sampling.

Reuse distance of an access = number of distinct *other* IDs touched since the previous access
to the same ID (-1 for a first touch).  An LRU cache of C entries hits exactly the accesses
with distance < C, so the distance histogram gives the whole miss-ratio curve.

Algorithm (Bennett-Kruskal / Olken): every ID sits on the time slot of its last access; a
Fenwick tree counts the occupied slots, and the distance of an access is the number of
occupied slots after the ID's previous slot.  Two things keep it fast:

* the time axis is compacted: when the slots run out, the occupied ones (one per distinct ID)
  are renumbered 0..D-1 and the tree is rebuilt, so the tree holds O(distinct) counters and
  stays in cache whatever the stream length;
* the range count and the move (unmark the old slot, mark the new one) only walk the part of
  the tree between the two slots, so the many short distances of skewed streams cost
  O(log distance), not O(log N).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from dlrmprof.tracegen import hashmap as _hm

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('hashmap.py',)
_DEPS_SHA256 = '97d3eab76e531ae5'

# ---------------------------------------------------------------- distance histogram bins
# Exact bins for distances < 2**EXACT_BITS, then SUB_BITS sub-bins per power of two.  Bin
# boundaries fall on every power of two, so hit rates at cache sizes 2**j are exact.
EXACT_BITS = 8
SUB_BITS = 4
MAX_BINS = (1 << EXACT_BITS) + (64 - EXACT_BITS) * (1 << SUB_BITS)


@njit(cache=True, no_cfunc_wrapper=True)
def dist_bin(d):
    """The bin of a distance d >= 0 (see bin_edges)."""
    if d < (1 << EXACT_BITS):
        return d
    k = 0                          # the top set bit, by halving: 6 steps, not up to 55
    x = d
    for step in (32, 16, 8, 4, 2, 1):
        if x >> step:
            k += step
            x >>= step
    sub = (d >> (k - SUB_BITS)) & ((1 << SUB_BITS) - 1)
    return (1 << EXACT_BITS) + (k - EXACT_BITS) * (1 << SUB_BITS) + sub


def bin_edges(nbins: int) -> np.ndarray:
    """Lower edge of each bin (and one past the last): bin i holds distances in [e[i], e[i+1]).
    A read-only array, shared between calls."""
    return _ALL_EDGES[: nbins + 1]


def _all_edges() -> np.ndarray:
    top = 2 ** 63 - 1                 # edges past int64 (never reached) are clamped
    vals = []
    for i in range(MAX_BINS + 1):
        if i < (1 << EXACT_BITS):
            vals.append(i)
        else:
            j = i - (1 << EXACT_BITS)
            k = EXACT_BITS + j // (1 << SUB_BITS)
            vals.append(min(((1 << SUB_BITS) + j % (1 << SUB_BITS)) << (k - SUB_BITS), top))
    edges = np.array(vals, dtype=np.int64)
    edges.setflags(write=False)
    return edges


_ALL_EDGES = _all_edges()


@njit(cache=True, no_cfunc_wrapper=True)
def _bin_counts(dist, nbins):
    hist = np.zeros(nbins, dtype=np.int64)
    cold = 0
    for i in range(dist.shape[0]):
        d = dist[i]
        if d < 0:
            cold += 1
        else:
            hist[dist_bin(d)] += 1
    return hist, cold


def histogram(dist: np.ndarray) -> tuple[np.ndarray, int]:
    """(binned histogram of warm distances, trimmed; cold count)."""
    dist = np.asarray(dist, dtype=np.int64)
    hist, cold = _bin_counts(dist, MAX_BINS)
    nz = np.flatnonzero(hist)
    n = int(nz[-1]) + 1 if nz.size else 0
    return hist[:n].copy(), int(cold)


# ---------------------------------------------------------------- the Fenwick pass
@intrinsic
def _popcnt(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Software prefetch of arr[idx] (llvm.prefetch: read, high locality)."""
    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                       wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


PREFETCH_AHEAD = 32
PREFETCH_IDS = 1 << 15      # an id table this small (128 KiB of int32) stays in cache: no prefetch


@njit(cache=True, inline="always")
def _pc(x):
    return np.int64(_popcnt(np.uint64(x)))


@njit(cache=True, no_cfunc_wrapper=True)
def fenwick_build(bits, tree):
    """The Fenwick tree (1-based, tree[0] unused) over the popcounts of the bitmap's words."""
    nw = bits.shape[0]
    for i in range(1, nw + 1):
        tree[i] = 0
    for i in range(1, nw + 1):
        tree[i] += _pc(bits[i - 1])
        j = i + (i & (-i))
        if j <= nw:
            tree[j] += tree[i]


@njit(cache=True, inline="always")
def fenwick_add(tree, j, stop, delta):
    """Add `delta` along the Fenwick update path from node j while the node is below `stop`;
    returns the first node not updated.  A move of one slot from word ws to word wt > ws is
    `stop = fenwick_add(tree, ws + 1, wt + 1, -1)` then `fenwick_add(tree, wt + 1,
    min(stop, nw + 1), +1)`: both paths stop where they meet, so it walks only the part of
    the tree between the two words."""
    while j < stop:
        tree[j] += delta
        j += j & (-j)
    return j


@njit(cache=True, no_cfunc_wrapper=True)
def _rebuild(bits, tree, d):
    """Slots 1..d occupied (slot s = bit s & 63 of word s >> 6); Fenwick tree over words."""
    nw = bits.shape[0]
    for w in range(nw):
        lo = w * 64
        hi = lo + 64
        # slots lo..hi-1 occupied where 1 <= s <= d
        a = lo if lo > 1 else 1
        b = hi - 1 if hi - 1 < d else d
        word = np.uint64(0)
        if b >= a:
            n = b - a + 1
            if n == 64:
                word = ~np.uint64(0)
            else:
                word = ((np.uint64(1) << np.uint64(n)) - np.uint64(1)) << np.uint64(a - lo)
        bits[w] = word
    fenwick_build(bits, tree)


@njit(cache=True, no_cfunc_wrapper=True)
def _compact(last, bits):
    """Renumber occupied slots to 1..D in time order (ranks); returns D."""
    nw = bits.shape[0]
    cum = np.empty(nw + 1, dtype=np.int64)
    cum[0] = 0
    for w in range(nw):
        cum[w + 1] = cum[w] + _pc(bits[w])
    for x in range(last.shape[0]):
        s = np.int64(last[x])
        if s > 0:
            w = s >> 6
            below = bits[w] & ((np.uint64(1) << np.uint64(s & 63)) - np.uint64(1))
            last[x] = cum[w] + _pc(below) + 1
    return cum[nw]


@njit(cache=True, no_cfunc_wrapper=True)
def _rd_run(ids, start, out, last, bits, tree, cap, t, d, hist):
    """Process ids[start:] until slot `cap` is used.  Returns (next index, t, d).  A `hist`
    (MAX_BINS long; empty: none) counts each warm distance in its bin instead of `out`."""
    n = ids.shape[0]
    nw = bits.shape[0]
    one = np.uint64(1)
    binned = hist.shape[0] > 0
    far = last.shape[0] > PREFETCH_IDS
    i = start
    while i < n:
        if t >= cap:
            break
        if far and i + PREFETCH_AHEAD < n:
            _prefetch(last, ids[i + PREFETCH_AHEAD])
        x = ids[i]
        s = np.int64(last[x])
        wt = t >> 6
        if s == 0:
            if not binned:
                out[i] = -1
            d += 1
            fenwick_add(tree, wt + 1, nw + 1, 1)
        else:
            ws = s >> 6
            if ws == wt:
                m = bits[ws] >> np.uint64(s & 63) >> one
                m &= (one << np.uint64(t - s - 1)) - one
                r = _pc(m)
                bits[ws] &= ~(one << np.uint64(s & 63))
            else:
                r = _pc(bits[ws] >> np.uint64(s & 63) >> one)
                r += _pc(bits[wt] & ((one << np.uint64(t & 63)) - one))
                # whole words ws+1 .. wt-1 (1-based Fenwick index = word + 1)
                # prefix(wt) - prefix(ws + 1): both walks stop at their common prefix
                a = wt
                b = ws + 1
                while a > b:
                    r += tree[a]
                    a &= a - 1
                while b > a:
                    r -= tree[b]
                    b &= b - 1
                bits[ws] &= ~(one << np.uint64(s & 63))
                stop = fenwick_add(tree, ws + 1, wt + 1, -1)
                fenwick_add(tree, wt + 1, min(stop, nw + 1), 1)
            if binned:
                hist[dist_bin(r)] += 1
            else:
                out[i] = r
        bits[wt] |= one << np.uint64(t & 63)
        last[x] = t
        t += 1
        i += 1
    return i, t, d


class ReuseState:
    """Streaming reuse-distance state for one ID stream (IDs dense, >= 0).

    Memory is O(distinct IDs): each ID's last slot (int32), an occupancy bitmap of the slots
    and a Fenwick tree over its 64-bit words.  Feed chunks with `feed`.
    """

    MIN_CAP = 1 << 14
    _NO_HIST = np.zeros(0, dtype=np.int64)      # _rd_run's "no histogram" (and unused `out`)

    def __init__(self, id_bound: int = 1024):
        self.last = np.zeros(max(int(id_bound), 1), dtype=np.int32)   # 0 = never seen
        self._alloc(self._cap_for(0))
        self.t = 1
        self.d = 0

    def _cap_for(self, d: int) -> int:
        # at least half the slots free after a compaction, and compactions (which scan the
        # id table) no more often than every len(last) accesses: amortised O(1)
        cap = max(self.MIN_CAP, 2 * d + 64, 2 * self.last.shape[0])
        return ((cap + 63) // 64) * 64

    def _alloc(self, cap: int) -> None:
        if cap >= 2 ** 31 - 1:
            raise MemoryError("reuse-distance state: more than 2^30 distinct ids")
        self.cap = cap
        self.bits = np.zeros(cap // 64, dtype=np.uint64)
        self.tree = np.zeros(cap // 64 + 1, dtype=np.int32)

    @property
    def distinct(self) -> int:
        return self.d

    def _grow_ids(self, bound: int) -> None:
        size = self.last.shape[0]
        while size < bound:
            size *= 2
        grown = np.zeros(size, dtype=np.int32)
        grown[: self.last.shape[0]] = self.last
        self.last = grown

    def _make_room(self) -> None:
        d = int(_compact(self.last, self.bits))
        cap = self._cap_for(d)
        if cap > self.cap:
            self._alloc(cap)
        _rebuild(self.bits, self.tree, d)
        self.t = d + 1
        self.d = d

    def feed(self, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        out = np.empty(ids.shape[0], dtype=np.int64) if out is None else out
        self._run(ids, out, self._NO_HIST)
        return out

    def feed_hist(self, ids: np.ndarray, hist: np.ndarray) -> int:
        """`feed` without a per-access array: each warm distance counted in its bin of
        `hist` (int64 [MAX_BINS], `histogram`'s bins); returns the first touches."""
        if hist.shape != (MAX_BINS,) or hist.dtype != np.int64:
            raise ValueError(f"hist: expected int64 [{MAX_BINS}], got {hist.dtype} {hist.shape}")
        before = self.d
        self._run(np.ascontiguousarray(ids, dtype=np.int64), self._NO_HIST, hist)
        return self.d - before

    def _run(self, ids: np.ndarray, out: np.ndarray, hist: np.ndarray) -> None:
        if ids.size:
            top = int(ids.max()) + 1
            if top > self.last.shape[0]:
                self._grow_ids(top)
        i = 0
        while i < ids.shape[0]:
            i, self.t, self.d = _rd_run(ids, i, out, self.last, self.bits, self.tree,
                                        self.cap, self.t, self.d, hist)
            if i < ids.shape[0]:
                self._make_room()


# ---------------------------------------------------------------- dense remapping
@njit(cache=True, no_cfunc_wrapper=True)
def _hash_remap(x, keys, vals, out, n):
    """Map int64 keys to dense ids in a `hashmap`; returns (next index, n); stops when half
    full."""
    mask = keys.shape[0] - 1
    limit = keys.shape[0] // 2
    for i in range(x.shape[0]):
        k = x[i]
        p = _hm.slot(keys, vals, k, mask)
        v = vals[p]
        if v < 0:
            if n >= limit:
                return i, n
            keys[p] = k
            vals[p] = n
            out[i] = n
            n += 1
        else:
            out[i] = v
    return x.shape[0], n


class DenseMap:
    """Map arbitrary int64 keys to dense ids 0,1,2,... in order of first appearance."""

    def __init__(self, capacity: int = 1 << 12):
        self.keys, self.vals = _hm.empty(1 << max(12, int(capacity - 1).bit_length()))
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def map(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.int64)
        out = np.empty(x.shape[0], dtype=np.int64)
        i = 0
        while True:
            done, self.n = _hash_remap(x[i:], self.keys, self.vals, out[i:], self.n)
            i += done
            if i >= x.shape[0]:
                return out
            self.keys, self.vals = _hm.doubled(self.keys, self.vals)


def dense_ids(ids: np.ndarray) -> np.ndarray:
    """Dense ids in first-appearance order (identity-cheap when ids are already small)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got {ids.dtype}")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.size == 0:
        return ids
    lo, hi = int(ids.min()), int(ids.max())
    if lo >= 0 and hi < max(4 * ids.size, 1 << 16):
        return ids       # small non-negative ids: used as they are (the state is sized to them)
    return DenseMap(min(ids.size, 1 << 24) * 2).map(ids)


def reuse_distances(ids) -> np.ndarray:
    """Exact LRU reuse distance of every access: int64, -1 for a first touch.

    Distance = number of distinct *other* IDs touched since the previous access to the same
    ID, so an LRU cache of C entries hits exactly the accesses with distance < C.
    """
    ids = dense_ids(np.asarray(ids))
    if ids.size == 0:
        return np.empty(0, dtype=np.int64)
    state = ReuseState(int(ids.max()) + 1)
    # size the tree for the whole stream up front: no regrowth
    return state.feed(ids)


# ---------------------------------------------------------------- miss-ratio curves
def mrc_sizes(distinct: int) -> np.ndarray:
    """Cache sizes 2^0 .. 2^k, k the smallest with 2^k >= distinct."""
    k = max(0, int(max(distinct, 1) - 1).bit_length())
    return (1 << np.arange(k + 1, dtype=np.int64))


def hit_rates(hist: np.ndarray, cold: int, sizes: np.ndarray) -> np.ndarray:
    """LRU hit rate at each cache size from a binned distance histogram (exact at 2^j)."""
    hist = np.asarray(hist, dtype=np.int64)
    total = int(hist.sum()) + int(cold)
    if total == 0:
        return np.zeros(len(sizes))
    edges = bin_edges(len(hist))
    cum = np.concatenate([[0], np.cumsum(hist)])
    c = np.asarray(sizes, dtype=np.int64)
    # bins entirely below c; for sizes not on an edge interpolate inside the bin
    j = np.searchsorted(edges, c, side="right") - 1
    inside = j < len(hist)
    ji = np.where(inside, j, 0)
    lo = edges[ji]
    hi = edges[np.minimum(ji + 1, len(edges) - 1)]
    part = (hist[ji] * (c - lo)).astype(np.float64) / np.maximum(hi - lo, 1) if len(hist) else 0.0
    h = np.where(inside, cum[ji] + part, cum[-1])
    return h / total


def exact_hit_rates(dist: np.ndarray, sizes) -> np.ndarray:
    """LRU hit rate at any cache sizes, exactly, from per-access distances (O(N + distinct))."""
    dist = np.asarray(dist, dtype=np.int64)
    if dist.size == 0:
        return np.zeros(len(sizes))
    counts = np.bincount(dist[dist >= 0]) if (dist >= 0).any() else np.zeros(1, dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(counts)])
    idx = np.minimum(np.asarray(sizes, dtype=np.int64), len(counts))
    return cum[idx] / dist.size


# ---------------------------------------------------------------- SHARDS sampling
def shards_sample_mask(ids: np.ndarray, rate: float, seed: int = 0) -> np.ndarray:
    """Spatial sampling: keep every access whose ID hashes below rate * 2^32."""
    ids = np.asarray(ids, dtype=np.int64).view(np.uint64)
    salt = np.uint64((seed * 0x632BE59BD9B4E019 + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        h = (ids ^ salt) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
    return (h & np.uint64(0xFFFFFFFF)) < np.uint64(int(rate * (1 << 32)))


SHARDS_HEAVY = 512           # ids kept at rate 1 (found from a 1-in-64 access sample)


@njit(cache=True, no_cfunc_wrapper=True)
def _shards_weighted(m_ids, dist, is_heavy, heavy_idx, n_heavy, rate, i0, prev, hlast, hist,
                     cold):
    """Add to the weighted histogram `hist` the estimated distances of this piece of the
    merged substream (dense ids m_ids, its accesses numbered from i0): heavy accesses weigh
    1, sampled ones 1/rate; estimated distance = distinct heavy ids in between + (other
    distinct ids in between) / rate.  prev (per id) and hlast (per heavy id) hold the last
    position seen, -1 none, carried across pieces.  Returns the weighted cold count."""
    n = m_ids.shape[0]
    inv = 1.0 / rate
    for j in range(n):
        i = i0 + j
        x = m_ids[j]
        w = 1.0 if is_heavy[j] else inv
        q = prev[x]
        if dist[j] < 0:
            cold += w
        else:
            hb = 0
            for h in range(n_heavy):
                if hlast[h] > q:
                    hb += 1
            if is_heavy[j]:
                hb -= 1 if hlast[heavy_idx[j]] > q else 0     # itself is not "in between"
            est = hb + (dist[j] - hb) * inv
            hist[dist_bin(np.int64(est))] += w
        prev[x] = i
        if is_heavy[j]:
            hlast[heavy_idx[j]] = i
    return cold


@njit(cache=True, no_cfunc_wrapper=True)
def _shards_select(ids, hkeys, hvals, salt, threshold):
    """One pass: keep accesses to heavy ids (their index) or ids hashing below threshold."""
    n = ids.shape[0]
    out = np.empty(n, dtype=np.int64)
    hidx = np.empty(n, dtype=np.int64)
    mask = hkeys.shape[0] - 1
    m = 0
    for i in range(n):
        x = ids[i]
        k = hvals[_hm.slot(hkeys, hvals, x, mask)]
        keep = k >= 0
        if not keep:
            h = (np.uint64(x) ^ salt) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(29)
            keep = (h & np.uint64(0xFFFFFFFF)) < threshold
        if keep:
            out[m] = x
            hidx[m] = k
            m += 1
    return out[:m].copy(), hidx[:m].copy()


def shards_heavy(probe_counts: np.ndarray, heavy: int = SHARDS_HEAVY) -> np.ndarray:
    """The `heavy` ids most frequent in the probe (every 64th access; probe_counts[x] = times
    id x was probed), ties to the smaller id."""
    vals = np.flatnonzero(probe_counts)
    cnt = probe_counts[vals]
    return vals[np.argsort(-cnt, kind="stable")[:heavy]] if heavy > 0 else vals[:0]


class ShardsStream:
    """SHARDS with the heavy ids kept exactly (see `shards_histogram`), fed the stream chunk by
    chunk: memory O(sampled ids + heavy ids), never O(accesses)."""

    def __init__(self, heavy_ids: np.ndarray, rate: float, seed: int = 0):
        hv = np.ascontiguousarray(heavy_ids, dtype=np.int64)
        self.hkeys, self.hvals = _hm.empty(1 << max(4, (2 * len(hv)).bit_length()))
        _hash_remap(hv, self.hkeys, self.hvals, np.empty(len(hv), dtype=np.int64), 0)
        self.n_heavy = len(hv)
        self.rate = float(rate)
        self.salt = np.uint64((seed * 0x632BE59BD9B4E019 + 0x9E3779B97F4A7C15)
                              & 0xFFFFFFFFFFFFFFFF)
        self.threshold = np.uint64(int(rate * (1 << 32)))
        self.dense = DenseMap()
        self.state = ReuseState()
        self.prev = np.full(1024, -1, dtype=np.int64)
        self.hlast = np.full(max(self.n_heavy, 1), -1, dtype=np.int64)
        self.hist = np.zeros(MAX_BINS, dtype=np.float64)
        self.cold = 0.0
        self.kept = 0                    # accesses of the merged substream so far
        self.total = 0

    def feed(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.total += ids.shape[0]
        sub, heavy_idx = _shards_select(ids, self.hkeys, self.hvals, self.salt, self.threshold)
        if not sub.size:
            return
        dense = self.dense.map(sub)
        dist = self.state.feed(dense)
        top = len(self.dense)
        if top > self.prev.shape[0]:
            grown = np.full(max(top, 2 * self.prev.shape[0]), -1, dtype=np.int64)
            grown[: self.prev.shape[0]] = self.prev
            self.prev = grown
        self.cold = _shards_weighted(dense, dist, heavy_idx >= 0, heavy_idx, self.n_heavy,
                                     self.rate, self.kept, self.prev, self.hlast, self.hist,
                                     self.cold)
        self.kept += sub.shape[0]

    def result(self) -> tuple[np.ndarray, int, int]:
        """(histogram, cold, accesses) scaled to the whole stream."""
        if self.total == 0:
            return np.zeros(0, dtype=np.int64), 0, 0
        factor = self.total / max(self.hist.sum() + self.cold, 1.0)
        hist = np.round(self.hist * factor).astype(np.int64)
        nz = np.flatnonzero(hist)
        hist = hist[: int(nz[-1]) + 1 if nz.size else 0]
        return hist, int(round(self.cold * factor)), self.total


def shards_histogram(ids: np.ndarray, rate: float, seed: int = 0,
                     heavy: int = SHARDS_HEAVY) -> tuple[np.ndarray, int, int]:
    """SHARDS estimate of the distance histogram, scaled to the full stream: (hist, cold,
    accesses).

    Spatial sampling keeps an id's accesses if the id hashes below rate * 2^32; distances
    among sampled ids are scaled by 1/rate.  Plain SHARDS is unreliable on skewed streams
    (whether the few ids carrying a large share of the accesses fall in the sample decides
    the curve), so the `heavy` most frequent ids (found from every 64th access) are always
    kept, at weight 1, and a sampled access's distance is estimated as the heavy ids touched
    in between plus the other ids in between divided by rate."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), 0, 0
    probe = ids[::64]
    if int(probe.min()) >= 0 and int(probe.max()) < max(4 * probe.size, 1 << 16):
        probe_counts = np.bincount(probe)
        hv = shards_heavy(probe_counts, heavy)
    else:                                 # large raw ids: count the distinct ones
        vals, cnt = np.unique(probe, return_counts=True)
        hv = vals[np.argsort(-cnt, kind="stable")[:heavy]] if heavy > 0 else vals[:0]
    st = ShardsStream(hv, rate, seed)
    st.feed(ids)
    return st.result()
