"""Hit rates of the caches people size, on an id stream.

Every cache size is simulated exactly, one pass per size (FIFO and LFU have no stack property:
a larger cache can hit less, so one reuse-distance pass cannot give their curves):

* ``fifo_hit_rates``: FIFO, first in first out; a hit does not reorder.  Ring buffer of the
  cached ids and an in-cache flag per id: O(N) per size.
* ``lfu_hit_rates``: LFU with in-cache frequency.  An id's count starts at 1 when it enters the
  cache and is forgotten when it is evicted; the victim is the cached id with the smallest count,
  ties broken by least recent use.  O(1) per access with frequency buckets (one recency-ordered
  list per count, as Shah, Mitra and Matani's O(1) LFU).
* ``setassoc_hit_rates``: set-associative LRU with the geometry of FBGEMM's TBE software cache:
  ``ways = min(C, 32)``, ``sets = max(1, C // ways)`` (capacity ``sets * ways``, which is C when C
  is a power of two); an id's set is a fixed 64-bit mixing hash of the id (the splitmix64
  finaliser) modulo the set count, not the raw id, so strided ids do not pile into one set.
  Sizes of one set (fully associative, C <= ways) all come from one pass keeping the top
  `ways` of the LRU stack (`_lru_depths`); the others are simulated with each id's way
  recorded and each set's ways in a recency list, so a hit and a miss are O(1)
  (`_setassoc_all`).

A size at or above the stream's distinct count never evicts (for set-associative: when no set
receives more distinct ids than it has ways), so its hit rate is (N - distinct) / N without a
pass.  A cache of one entry holds the id of the access before (each miss replaces it, in each
policy): FIFO's and LFU's hits there are the stream's repeats, without a pass (set-associative
sizes of one set come from `_lru_depths`' one pass).  ``policy_mrcs`` runs the three at the same
sizes (per-batch figures: ``batches``).

``_lru_pass`` is the one set-associative LRU kernel of the project: ``profile.cachesim`` uses
it for the host's L1/L2/L3 too.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from numba import njit

from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen._lru_stack import shift_down
from dlrmprof.tracegen.reuse import dense_ids

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('_lru_stack.py', 'hashmap.py', 'reuse.py')
_DEPS_SHA256 = 'b9b06b69bdc07d84'

SETASSOC_WAYS = 32

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


# ---------------------------------------------------------------- kernels
@njit(cache=True, no_cfunc_wrapper=True)
def _lru_pass(lines, nsets, ways, miss_out):
    """Set-associative LRU over `lines`; writes the missed lines to miss_out, returns count."""
    tags = np.full((nsets, ways), -1, dtype=np.int64)
    stamp = np.zeros((nsets, ways), dtype=np.int64)
    nmiss = 0
    pow2 = (nsets & (nsets - 1)) == 0
    mask = nsets - 1
    for t in range(lines.size):
        ln = lines[t]
        s = (ln & mask) if pow2 else (ln % nsets)   # a mask, not a division, when possible
        hit = -1
        for w in range(ways):
            if tags[s, w] == ln:
                hit = w
                break
        if hit >= 0:
            stamp[s, hit] = t + 1
        else:
            victim = 0
            oldest = stamp[s, 0]
            for w in range(1, ways):
                if stamp[s, w] < oldest:
                    oldest = stamp[s, w]
                    victim = w
            tags[s, victim] = ln
            stamp[s, victim] = t + 1
            miss_out[nmiss] = ln
            nmiss += 1
    return nmiss


@njit(cache=True, no_cfunc_wrapper=True)
def _fifo_hits(ids, caps, nid):
    """FIFO hits at each cache size in caps (one pass per size)."""
    out = np.zeros(caps.shape[0], dtype=np.int64)
    incache = np.zeros(nid, dtype=np.uint8)
    for k in range(caps.shape[0]):
        cap = caps[k]
        incache[:] = 0
        ring = np.empty(cap, dtype=np.int64)
        hits = 0
        pos = 0
        filled = 0
        for i in range(ids.shape[0]):
            x = ids[i]
            if incache[x]:
                hits += 1
                continue
            if filled == cap:
                incache[ring[pos]] = 0
            else:
                filled += 1
            ring[pos] = x
            incache[x] = 1
            pos += 1
            if pos == cap:
                pos = 0
        out[k] = hits
    return out


@njit(cache=True, no_cfunc_wrapper=True)
def _lfu_hits(ids, caps, node, head, tail):
    """LFU hits at each cache size in caps (one pass per size, the state reset between).

    node[x] = (in-cache count, 0: not cached; prev; next): per count a doubly linked list of
    the cached ids with that count, oldest last use at the head (an id joins a list when it is
    used).  One row per id keeps an access to one cache line; head/tail are indexed by count."""
    out = np.zeros(caps.shape[0], dtype=np.int64)
    for k in range(caps.shape[0]):
        node[:, :] = 0
        head[:] = -1
        tail[:] = -1
        cap = caps[k]
        size = 0
        minf = 0
        hits = 0
        for i in range(ids.shape[0]):
            x = ids[i]
            f = node[x, 0]
            if f > 0:
                hits += 1
                p = node[x, 1]
                q = node[x, 2]
                if p >= 0:
                    node[p, 2] = q
                else:
                    head[f] = q
                if q >= 0:
                    node[q, 1] = p
                else:
                    tail[f] = p
                if minf == f and head[f] < 0:
                    minf = f + 1
                f += 1
            else:
                if size == cap:
                    v = head[minf]
                    q = node[v, 2]
                    head[minf] = q
                    if q >= 0:
                        node[q, 1] = -1
                    else:
                        tail[minf] = -1
                    node[v, 0] = 0
                else:
                    size += 1
                f = 1
                minf = 1
            node[x, 0] = f
            t = tail[f]
            node[x, 1] = t
            node[x, 2] = -1
            if t >= 0:
                node[t, 2] = x
            else:
                head[f] = x
            tail[f] = x
        out[k] = hits
    return out


def mix64(ids: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of each id (uint64): the fixed set-index hash."""
    z = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


# ---------------------------------------------------------------- input checks
def _check_ids(ids, max_accesses: int | None = None) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids: expected a 1-D array, got shape {tuple(arr.shape)}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"ids: expected integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError("ids: expected values below 2^63")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and int(arr.min()) < 0:
        i = int(np.argmax(arr < 0))
        raise ValueError(f"ids: expected non-negative ids, got {int(arr[i])} at position {i}")
    if max_accesses is not None:
        if int(max_accesses) < 1:
            raise ValueError(f"max_accesses: expected >= 1, got {max_accesses}")
        arr = arr[: int(max_accesses)]
    return arr


def _check_sizes(sizes) -> np.ndarray:
    s = np.atleast_1d(np.asarray(sizes))
    if s.ndim != 1 or (s.size and s.dtype.kind not in "iu"):
        raise ValueError(f"sizes: expected a 1-D list of integers, got {s.dtype} {s.shape}")
    s = s.astype(np.int64)
    if s.size and int(s.min()) < 1:
        raise ValueError(f"sizes: expected cache sizes >= 1 entry, got {int(s.min())}")
    return s


class _Stream:
    """Dense ids of a checked stream and the figures every policy needs (computed once, so
    `policy_mrcs` checks and remaps a stream once for all three policies)."""

    def __init__(self, ids, max_accesses: int | None = None):
        self.raw = _check_ids(ids, max_accesses)
        self.ids = dense_ids(self.raw)
        self.n = int(self.ids.size)
        self.nid = int(self.ids.max()) + 1 if self.n else 1
        self.counts = np.bincount(self.ids, minlength=self.nid)
        self.distinct = int(np.count_nonzero(self.counts))

    @property
    def repeats(self) -> int:
        """Accesses to the id of the access before: a cache of one entry holds that id (every
        miss replaces it, in each policy), so they are its hits."""
        if not hasattr(self, "_repeats"):
            self._repeats = int(np.count_nonzero(self.ids[1:] == self.ids[:-1]))
        return self._repeats

    def hits(self, caps: np.ndarray, kernel) -> np.ndarray:
        """Hits at the `evicting` sizes `caps`: one entry's from the repeats, the others from
        `kernel(sizes)` (one pass per size)."""
        out = np.empty(caps.size, dtype=np.int64)
        one = caps == 1
        out[one] = self.repeats
        if not one.all():
            out[~one] = kernel(np.ascontiguousarray(caps[~one]))
        return out

    def evicting(self, sizes: np.ndarray) -> np.ndarray:
        """The sizes below the distinct count (int64): at or above it nothing is evicted."""
        return np.ascontiguousarray(sizes[sizes < self.distinct], dtype=np.int64)

    def rates(self, sizes: np.ndarray, hits: np.ndarray) -> np.ndarray:
        """Hit rates at `sizes`, given the hits at the `evicting` ones (in order); at or
        above the distinct count: compulsory misses only."""
        out = np.zeros(sizes.size)
        if self.n == 0:
            return out
        out[:] = (self.n - self.distinct) / self.n
        out[sizes < self.distinct] = np.asarray(hits, dtype=np.float64) / self.n
        return out


# One kernel call per policy and stream, all sizes inside it: on short streams (a table of
# a few thousand accesses, the selection's case) the per-call cost outweighs the pass.
@njit(cache=True, no_cfunc_wrapper=True)
def _setassoc_all(ids, h, nsets, ways, nid):
    """Hits of set-associative LRU for each geometry (nsets[k], ways[k]) on dense ids (h: each
    access's mix64 hash; its set h % sets): `_lru_pass`'s hits on keys id * sets + set.
    `where`: each id's way (-1: not cached); each set's ways in a recency list (`_lru_list`),
    so a hit and a miss are O(1) (a miss does not scan its set for the oldest way)."""
    out = np.zeros(nsets.shape[0], dtype=np.int64)
    where = np.empty(nid, dtype=np.int64)
    for k in range(nsets.shape[0]):
        ns, w = nsets[k], ways[k]
        tags = np.full(ns * w, -1, dtype=np.int64)
        older, newer, lru, mru = _lru_list(ns, w)
        where[:] = -1
        mask, uns, pow2 = np.uint64(ns - 1), np.uint64(ns), (ns & (ns - 1)) == 0
        hits = 0
        for i in range(ids.shape[0]):
            x = ids[i]
            j = where[x]
            s = np.int64(h[i] & mask) if pow2 else np.int64(h[i] % uns)
            if j >= 0:
                hits += 1
            else:                               # the least recently used way
                j = lru[s]
                if tags[j] >= 0:
                    where[tags[j]] = -1
                tags[j] = x
                where[x] = j
            m = mru[s]
            if m != j:                          # way j to the front of its set's list
                o, n = older[j], newer[j]
                if o >= 0:
                    newer[o] = n
                else:
                    lru[s] = n
                older[n] = o
                older[j], newer[j], newer[m], mru[s] = m, -1, j, j
        out[k] = hits
    return out


@njit(cache=True, no_cfunc_wrapper=True)
def _lru_list(ns, w):
    """Each of ns sets' w ways (global index set * w + way) in a doubly linked recency list:
    (older, newer: the next way toward the LRU / MRU end, -1 none; each set's LRU and MRU
    way).  At first in index order from the LRU end: the empty ways are filled lowest index
    first, as the oldest-stamp scan (ties to the lowest way) of `_lru_pass` fills them."""
    older = np.empty(ns * w, dtype=np.int64)
    newer = np.empty(ns * w, dtype=np.int64)
    lru = np.empty(ns, dtype=np.int64)
    mru = np.empty(ns, dtype=np.int64)
    for s in range(ns):
        for j in range(w):
            older[s * w + j] = s * w + j - 1 if j > 0 else -1
            newer[s * w + j] = s * w + j + 1 if j < w - 1 else -1
        lru[s] = s * w
        mru[s] = s * w + w - 1
    return older, newer, lru, mru


@njit(cache=True, no_cfunc_wrapper=True)
def _lru_depths(ids, depth, nid, top):
    """Accesses at each LRU stack distance 0 .. depth-1 (int64 [depth]): the top `depth`
    ids of the stack, most recent first (`top`: scratch of at least `depth` entries, int32
    when the ids fit, each move one memmove), and an in-list flag per id.  A fully
    associative LRU cache of c <= depth entries hits sum(out[:c]) times: one pass for every
    such size."""
    out = np.zeros(depth, dtype=np.int64)
    top[:] = -1
    inlist = np.zeros(nid, dtype=np.uint8)
    filled = 0
    for i in range(ids.shape[0]):
        x = ids[i]
        if inlist[x]:
            j = 0
            while top[j] != x:
                j += 1
            out[j] += 1
        elif filled == depth:
            j = depth - 1
            inlist[top[j]] = 0
        else:
            j = filled
            filled += 1
        shift_down(top, j)
        top[0] = x
        inlist[x] = 1
    return out


def lru_depths(ids: np.ndarray, depth: int, nid: int) -> np.ndarray:
    """`_lru_depths` of dense ids below `nid`, its scratch made here."""
    top = np.empty(depth, dtype=np.int32 if nid < 2 ** 31 else np.int64)
    return _lru_depths(ids, depth, nid, top)


def _fifo(st: _Stream, sizes: np.ndarray) -> np.ndarray:
    caps = st.evicting(sizes)
    return st.rates(sizes, st.hits(caps, lambda c: _fifo_hits(st.ids, c, st.nid)))


def _lfu(st: _Stream, sizes: np.ndarray) -> np.ndarray:
    caps = st.evicting(sizes)
    return st.rates(sizes, st.hits(caps, lambda c: _lfu_pass(st, c)))


def _lfu_pass(st: _Stream, caps: np.ndarray) -> np.ndarray:
    maxf = int(st.counts.max())
    dt = np.int32 if max(st.nid, maxf + 2) < 2 ** 31 else np.int64
    node = np.zeros((st.nid, 4), dtype=dt)        # 16-byte rows when int32
    head = np.full(maxf + 2, -1, dtype=dt)
    tail = np.full(maxf + 2, -1, dtype=dt)
    return _lfu_hits(st.ids, caps, node, head, tail)


def _max_per_set(h_distinct: np.ndarray, nsets: int) -> int:
    sets = (h_distinct % np.uint64(nsets)).astype(np.int64)
    if nsets <= 4 * sets.size + 1024:
        return int(np.bincount(sets, minlength=nsets).max())
    return int(np.unique(sets, return_counts=True)[1].max())    # sets far above the ids


SHORT_DEPTHS = 1 << 16      # `_depths` takes the reuse pass below this many accesses


def _depths(st: _Stream, depth: int) -> np.ndarray:
    """Accesses at each LRU stack distance 0 .. depth-1 (`_lru_depths`'s): on a short stream
    and up to the reuse histogram's exact bins, from the reuse-distance pass every capture
    and fidelity record compiles anyway (one kernel less to compile cold on a short sample);
    else by `_lru_depths` (about half the reuse pass' time on 2^18 accesses)."""
    if depth > 1 << _reuse.EXACT_BITS or st.n >= SHORT_DEPTHS:
        return lru_depths(st.ids, depth, st.nid)
    hist = np.zeros(_reuse.MAX_BINS, dtype=np.int64)
    _reuse.ReuseState(st.nid).feed_hist(st.ids, hist)
    return hist[:depth]


def _setassoc(st: _Stream, sizes: np.ndarray, ways: int) -> np.ndarray:
    out = np.zeros(sizes.size)
    if st.n == 0:
        return out
    h = mix64(st.raw)
    h_distinct = np.zeros(st.nid, dtype=np.uint64)
    h_distinct[st.ids] = h                          # one hash per distinct id
    h_distinct = h_distinct[st.counts > 0]
    out[:] = (st.n - st.distinct) / st.n            # no set overflows: compulsory misses only
    sim, geo = [], []
    for k, c in enumerate(sizes):
        nsets, w = setassoc_geometry(int(c), ways)
        if c >= st.distinct and _max_per_set(h_distinct, nsets) <= w:
            continue
        if nsets > (2 ** 62) // st.nid:
            raise ValueError(f"sizes: {int(c)} entries is too large to simulate "
                             f"({nsets} sets for {st.nid} ids)")
        sim.append(k)
        geo.append((nsets, w))
    one = [j for j, (nsets, _) in enumerate(geo) if nsets == 1]   # fully associative
    if one:
        depths = np.cumsum(_depths(st, max(geo[j][1] for j in one)))
        out[[sim[j] for j in one]] = depths[[geo[j][1] - 1 for j in one]] / st.n
    sets = [j for j, (nsets, _) in enumerate(geo) if nsets > 1]
    if sets:
        g = np.asarray([geo[j] for j in sets], dtype=np.int64)
        hits = _setassoc_all(st.ids, h, np.ascontiguousarray(g[:, 0]),
                             np.ascontiguousarray(g[:, 1]), st.nid)
        out[[sim[j] for j in sets]] = hits / st.n
    return out


# ---------------------------------------------------------------- public API
def fifo_hit_rates(ids, sizes, *, max_accesses: int | None = None) -> np.ndarray:
    """FIFO hit rate at each cache size (entries), float64 [len(sizes)].

    With `max_accesses`, only that prefix of the stream is simulated (as for every policy)."""
    return _fifo(_Stream(ids, max_accesses), _check_sizes(sizes))


def lfu_hit_rates(ids, sizes, *, max_accesses: int | None = None) -> np.ndarray:
    """LFU hit rate at each cache size (entries), float64 [len(sizes)].

    In-cache frequency: a count starts at 1 on insertion, grows by 1 per hit and is forgotten
    on eviction; the victim has the smallest count, ties evicted least recently used."""
    return _lfu(_Stream(ids, max_accesses), _check_sizes(sizes))


def setassoc_geometry(size: int, ways: int = SETASSOC_WAYS) -> tuple[int, int]:
    """(sets, ways) of a `size`-entry cache: ways = min(size, ways), sets = size // ways."""
    w = max(1, min(int(size), int(ways)))
    return max(1, int(size) // w), w


def setassoc_hit_rates(ids, sizes, ways: int = SETASSOC_WAYS, *,
                       max_accesses: int | None = None) -> np.ndarray:
    """Set-associative LRU hit rate at each cache size (entries), float64 [len(sizes)].

    Geometry as FBGEMM's TBE software cache (see `setassoc_geometry`); an id's set is
    ``mix64(id) % sets``.  The kernel sees the key ``dense_id * sets + set`` (unique per id,
    never negative, its set index is the hashed one), so `_lru_pass` is used unchanged."""
    sizes = _check_sizes(sizes)
    if int(ways) < 1:
        raise ValueError(f"ways: expected >= 1, got {ways}")
    return _setassoc(_Stream(ids, max_accesses), sizes, int(ways))


def policy_mrcs(ids, sizes, *, max_accesses: int | None = None) -> dict:
    """{"fifo", "lfu", "setassoc32"}: hit-rate lists at `sizes` (JSON-able, for the fidelity
    record); with `max_accesses` only that prefix is simulated."""
    sizes = _check_sizes(sizes)
    st = _Stream(ids, max_accesses)
    return {"fifo": _fifo(st, sizes).tolist(), "lfu": _lfu(st, sizes).tolist(),
            f"setassoc{SETASSOC_WAYS}": _setassoc(st, sizes, SETASSOC_WAYS).tolist()}


# ---------------------------------------------------------------- plain references (tests)
def reference_hit_rate(policy: str, ids, size: int, ways: int = SETASSOC_WAYS) -> float:
    """Plain-Python simulation of one cache ("fifo", "lfu" or "setassoc"): the reference the
    kernels are tested and benchmarked against.  O(N) for fifo/setassoc, O(N * size) for lfu."""
    ids = [int(x) for x in ids]
    if not ids:
        return 0.0
    hits = {"fifo": _ref_fifo, "lfu": _ref_lfu}.get(policy)
    if policy == "setassoc":
        return _ref_setassoc(ids, size, ways) / len(ids)
    if hits is None:
        raise ValueError(f"policy: expected fifo, lfu or setassoc, got {policy!r}")
    return hits(ids, size) / len(ids)


def _ref_fifo(ids, c):
    cache, order, hits = set(), [], 0
    for x in ids:
        if x in cache:
            hits += 1
            continue
        if len(cache) == c:
            cache.discard(order.pop(0))
        cache.add(x)
        order.append(x)
    return hits


def _ref_lfu(ids, c):
    cache, hits = {}, 0        # id -> [count, last use]
    for t, x in enumerate(ids):
        if x in cache:
            hits += 1
            cache[x][0] += 1
            cache[x][1] = t
            continue
        if len(cache) == c:
            del cache[min(cache, key=lambda k: (cache[k][0], cache[k][1]))]
        cache[x] = [1, t]
    return hits


def _ref_mix(x):
    m = (1 << 64) - 1
    z = x & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def _ref_setassoc(ids, c, ways):
    w = max(1, min(c, ways))
    nsets = max(1, c // w)
    sets = [OrderedDict() for _ in range(nsets)]
    hits = 0
    for x in ids:
        s = sets[_ref_mix(x) % nsets]
        if x in s:
            hits += 1
            s.move_to_end(x)
            continue
        if len(s) == w:
            s.popitem(last=False)
        s[x] = True
    return hits
