"""The naive baseline's fidelity figures in one pass over its draws, without its whole stream.

Fidelity sets every table's model against the naive baseline (`synth.synthesize_naive`: i.i.d.
stack depths drawn from the source's whole reuse-distance histogram on one LRU stack).  Of
the naive stream, fidelity reads only:

* its reuse-distance histogram and distinct count: each access's distance is the depth it
  drew (the ids are an injection of the stack's items), a first touch is cold;
* the top-10 / top-1% shares: each item's access count;
* per-batch unique ids and batch-to-batch overlap.  The ids a batch has touched so far are
  the top U of the stack, so an access is new in its batch when its depth is >= U (or it is
  a first touch); the ids the batch has not touched keep their order from the batch's start,
  when the previous batch's U' ids were the top U', so a new access was in the previous
  batch when its depth - U < U' - (previous batch's ids touched so far);
* its first accesses' ids, for the FIFO/LFU/set-associative runs on a prefix.

`naive_figures` runs the same draws as `synth.synthesize_naive` (the same RNG calls in the same
order, so the same items, the same injection) and keeps only these: no stream of ids, no
depth array, no reuse or batch pass over them.  A stack that never holds more than MTF_ITEMS
items is a move-to-front array: a few items spread over the time axis of `_lru_stack`'s
Fenwick stack cost it a scan back over many bitmap words on most accesses.  Tested against
`synthesize_naive` measured by `fidelity.stream_figures` on random profiles.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen._lru_stack import compact_stack, new_stack, pop_depth, shift_down
from dlrmprof.tracegen.fidelity import StreamFigures
from dlrmprof.tracegen.batches import BatchStats, batch_stats
from dlrmprof.tracegen.profile import LocalityProfile
from dlrmprof.tracegen.reuse import dist_bin, fenwick_add
from dlrmprof.tracegen.synth import _below, _uniform, _window_setup, bag_seeds, naive_setup

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('_lru_stack.py', 'hashmap.py', 'profile.py', 'reuse.py', 'synth.py')
_DEPS_SHA256 = '131ac8460316d293'


@njit(cache=True, inline="always")
def _close_batches(ends, bsize, offsets, nfull, nbat, cur, prev, seen, sums, pos):
    """Close every batch size's batch that ends at access pos (its unique count and overlap
    ratio summed as `batches._batch_sums` sums them); returns the next access at which a
    batch ends."""
    nxt = np.int64(1) << 62
    for i in range(ends.shape[0]):
        while ends[i] == pos and nbat[i] < nfull[i]:     # (an empty batch ends there too)
            b = nbat[i]
            u = cur[i]
            sums[i, 0] += u
            if b > 0 and u > 0:
                sums[i, 1] += seen[i] / u
                sums[i, 2] += 1
            prev[i] = u
            cur[i] = 0
            seen[i] = 0
            nbat[i] = b + 1
            ends[i] = offsets[(b + 2) * bsize[i]] if b + 1 < nfull[i] else np.int64(1) << 62
        nxt = min(nxt, ends[i])
    return nxt


@njit(cache=True, no_cfunc_wrapper=True)
def _batch_state(bsize, offsets, nfull):
    """Per batch size: (where its first batch ends, batches closed, ids the current batch
    has touched, ids the previous batch touched, of the current batch's ids those the
    previous had, [unique sum, overlap-ratio sum, ratios]), and the first batch end."""
    nb = bsize.shape[0]
    ends = np.empty(nb, dtype=np.int64)
    next_end = np.int64(1) << 62
    for i in range(nb):
        ends[i] = offsets[bsize[i]] if nfull[i] > 0 else np.int64(1) << 62
        next_end = min(next_end, ends[i])
    zeros = np.zeros((4, nb), dtype=np.int64)
    return (ends, zeros[0], zeros[1], zeros[2], zeros[3], np.zeros((nb, 3), dtype=np.float64),
            next_end)


MTF_ITEMS = 2048    # stacks of at most this many items: a move-to-front array


@njit(cache=True, inline="always")
def _to_front(mtf, j, g):
    """mtf[0..j-1] move down one place and g takes the front (mtf 1-D, C-contiguous)."""
    shift_down(mtf, j)
    mtf[0] = g


@njit(cache=True, no_cfunc_wrapper=True)
def _naive_pass(n, cold_total, cdf, edges, seed, max_ids, head_len, bsize, offsets, nfull,
                mtf, fenwick):
    """The naive draws of `synth._synth_core` (one window, no hot set, one draw, a draw deeper
    than the stack a first touch) with their figures kept instead of their stream.  The
    stack: the int16 move-to-front array `mtf` (fenwick None), else (fenwick True) the Fenwick
    stack.  fenwick's type picks the specialization: None compiles without the Fenwick stack's
    pop and compaction (a cold start on small tables never compiles them), True with them.  Returns (first head_len items,
    each item's count, binned warm histogram, items (= first touches), per batch size
    [unique sum, overlap-ratio sum, ratios])."""
    bounds = np.array([0, n], dtype=np.int64)
    no_hot = np.zeros((0, 1), dtype=np.int64)
    rem_cold, rem_warm, wcdf, wtot, guide = _window_setup(
        np.int64(0), bounds, no_hot, cold_total, cdf.reshape((1, cdf.shape[0])), cdf)
    head = np.empty(head_len, dtype=np.int64)
    counts = np.zeros(max(min(n, max_ids), 1), dtype=np.int64)
    hist = np.zeros(_reuse.MAX_BINS, dtype=np.int64)
    state = np.full(1, seed, dtype=np.uint64)
    cap = np.int64(1 << 14)
    owner, nw, bits, tree = new_stack(cap)
    t, D, items = np.int64(1), np.int64(0), np.int64(0)
    nb = bsize.shape[0]
    ends, nbat, cur, prev, seen, sums, next_end = _batch_state(bsize, offsets, nfull)
    lo = np.int64(0)                    # min(cur): a depth below it changes no batch's figures
    for pos in range(n):
        if pos == next_end:
            next_end = _close_batches(ends, bsize, offsets, nfull, nbat, cur, prev, seen,
                                      sums, pos)
            lo = np.int64(0)
        if fenwick is not None and t >= cap:
            owner, cap, nw, D, bits, tree = compact_stack(owner, t - 1, cap)
            t = D + 1
        fresh = _below(state, rem_cold + rem_warm) < rem_cold
        if fresh:
            rem_cold -= 1
        else:
            rem_warm -= 1
        fresh = fresh or D == 0 or wtot == 0
        d = D - 1                           # the table-full reuse of the bottom item
        if not fresh:
            uf = _uniform(state)
            u = np.int64(uf * wtot)
            a = guide[np.int64(uf * (guide.shape[0] - 1))]
            while a > 0 and wcdf[a - 1] > u:
                a -= 1
            while wcdf[a] <= u:
                a += 1
            width = edges[a + 1] - edges[a]
            d = edges[a] + (_below(state, width) if width > 1 else 0)
            fresh = d >= D and items < max_ids
            d = min(d, D - 1)               # too deep on a full table: the bottom item
        elif items >= max_ids:
            fresh = False                   # table full: d stays at the bottom
        if fresh:
            g = items
            items += 1
            if fenwick is None:
                _to_front(mtf, D, g)
            else:
                fenwick_add(tree, (t >> 6) + 1, nw + 1, 1)
            D += 1
        elif fenwick is None:
            g = mtf[d]
            _to_front(mtf, d, g)
            hist[dist_bin(d)] += 1
        else:
            g = pop_depth(owner, bits, tree, nw, t, d, D)
            hist[dist_bin(d)] += 1
        if fresh or d >= lo:            # else within every batch's touched ids: no change
            lo = np.int64(1) << 62
            for i in range(nb):
                if fresh or d >= cur[i]:
                    if not fresh and d - cur[i] < prev[i] - seen[i]:
                        seen[i] += 1
                    cur[i] += 1
                lo = min(lo, cur[i])
        counts[g] += 1
        if fenwick is not None:
            owner[t] = g
            bits[t >> 6] |= np.uint64(1) << np.uint64(t & 63)
            t += 1
        if pos < head_len:
            head[pos] = g
    if n == next_end:
        _close_batches(ends, bsize, offsets, nfull, nbat, cur, prev, seen, sums, n)
    return head, counts[:items], hist, items, sums


def naive_figures(profile: LocalityProfile, length: int | None = None, rows: int | None = None,
                  seed: int | np.random.SeedSequence = 0, head: int = 0,
                  offsets: np.ndarray | None = None, batch_sizes: tuple = ()):
    """What `fidelity.stream_figures` measures of `synth.synthesize_naive(profile, length,
    rows, seed)`, from its draws: a `fidelity.StreamFigures` with its first `head` ids and
    its per-batch figures at `batch_sizes` (bags `offsets`, None: one id per bag; sizes with
    fewer than 2 full batches left out, as `batches.batch_stats` does)."""
    setup = naive_setup(profile, length, rows, seed)
    n, rows, rng = setup.n, setup.rows, setup.rng
    if rows < 1:
        raise ValueError(f"rows: expected >= 1, got {rows}")
    off = (np.arange(n + 1, dtype=np.int64) if offsets is None
           else np.ascontiguousarray(offsets, dtype=np.int64))
    if off.shape[0] < 1 or int(off[-1]) != n:
        raise ValueError("bag offsets must end at the stream's length")
    nbags = off.shape[0] - 1
    bs = np.array([int(b) for b in batch_sizes], dtype=np.int64)
    nfull = np.array([nbags // b if nbags // b >= 2 else 0 for b in bs], dtype=np.int64)
    if setup.empty:                     # all id 0: one first touch, then depth 0
        h, c = _reuse.histogram(np.minimum(np.arange(n, dtype=np.int64) - 1, 0))
        ids = np.zeros(min(head, n), dtype=np.int64)
        return StreamFigures(n, h, c, np.array([n] if n else [], dtype=np.int64), ids,
                             batch_stats(np.zeros(n, dtype=np.int64), off,
                                         tuple(int(b) for b in bs)))
    # the stack never holds more than min(n, rows) items
    small = min(n, rows) <= MTF_ITEMS
    mtf = np.empty(min(n, rows) if small else 1, dtype=np.int16)
    hd, counts, hist, items, sums = _naive_pass(
        n, setup.cold, setup.cdf, _reuse.bin_edges(setup.cdf.shape[0]), setup.core_seed, rows,
        min(int(head), n), bs, off, nfull, mtf, None if small else True)
    mapping = rng.choice(rows, size=max(int(items), 1), replace=False)
    nz = np.flatnonzero(hist)
    hist = hist[: int(nz[-1]) + 1 if nz.size else 0].copy()
    batches = tuple(BatchStats(int(b), int(f), float(s[0]) / int(f),
                               float(s[1]) / s[2] if s[2] else 0.0)
                    for b, f, s in zip(bs, nfull, sums) if f >= 2)
    return StreamFigures(n, hist, int(items), counts, mapping[hd], batches)


def naive_bags_figures(profile: LocalityProfile, seed) -> StreamFigures | None:
    """`naive_figures` of `synth.synthesize_bags(profile, seed=seed)` for a profile of the
    naive model (its stream is `synthesize_naive`'s from the seed's second spawn, cut into
    bags of the source's one length): the same ids (all of them, the head) and per-batch
    figures at the source's batch sizes (`fidelity.source_extras`), without the stream's
    reuse and batch passes.  None where the bags' lengths vary (their draw is not
    repeated here): synthesize the stream then."""
    if len(profile.bag_len_values) != 1:
        return None
    stream_ss = bag_seeds(seed)[1]
    length = int(profile.bag_len_values[0])
    bags = profile.num_bags
    extras = profile.extra.get("source_extras") or {}
    sizes = tuple(int(b["batch_size"]) for b in extras.get("batches", ()))
    return naive_figures(profile, length=bags * length, seed=stream_ss, head=bags * length,
                         offsets=np.arange(bags + 1, dtype=np.int64) * length,
                         batch_sizes=sizes if bags * length == profile.accesses else ())
