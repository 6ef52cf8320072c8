"""The windowed stack model's kernel (`synth._synth_core`, its accesses drawn by `_synth_span`
between the stack's compactions and the use counts' growth) against a plain-Python reference
on random inputs: hot sets, first touches, redraws, capped ids (dropped or kept in place),
full tables, streams long enough to compact the time axis."""

import numpy as np
import pytest

from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen import synth
from dlrmprof.tracegen.synth import _below, _draw_bin
from tracegen_helpers import RefWalk, hot_schedule


def _ref_take(stack, d, uses, max_uses, keep_capped):
    """The item a reuse at depth d takes (removed from `stack`, most recent first): capped
    items (used max_uses times) leave the stack for good and the item then at that depth is
    taken, or (keep_capped) stay where they are and the nearest depth within NEAREST under
    its cap is taken (shallower first; the drawn depth when none is)."""
    if keep_capped:
        for i in range(2 * synth.NEAREST + 1):
            e = d + ((i + 1) // 2) * (1 if i % 2 == 0 else -1)
            if 0 <= e < len(stack) and uses.get(stack[e], 0) < max_uses:
                return stack.pop(e)
        return stack.pop(d)
    while True:
        g = stack.pop(d)
        if uses.get(g, 0) < max_uses or not stack:
            return g
        d = min(d, len(stack) - 1)


def _reference(n, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf, edges, seed, max_ids,
               redraws, deep_is_cold, max_uses, keep_capped):
    """`_synth_core` from its definition: a Python list as the LRU stack, the hot ids off
    it, the same random draws in the same order (a tail depth is `_draw_bin`'s draw)."""
    walk = RefWalk(seed, max_ids)
    state = walk.state
    stack, uses = [], {}
    extra = clamped = 0
    for cold in walk.tail_events(bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf):
        wcdf, wtot, D = walk.wcdf, walk.wtot, len(stack)
        if not cold and (D == 0 or wtot == 0):
            cold, extra = True, extra + 1
        if cold and walk.items >= max_ids:
            if D == 0:
                walk.out.append(_below(state, max_ids))
                continue
            cold, d = False, D - 1
        elif not cold:
            d = D
            for _try in range(redraws):
                d = _draw_bin(state, wcdf, wtot, edges)
                if d < D:
                    break
            if d >= D:
                if deep_is_cold and walk.items < max_ids:
                    cold, extra = True, extra + 1
                else:
                    d, clamped = D - 1, clamped + 1
        if cold:
            g = walk.new_item()
        elif max_uses > 0:
            g = _ref_take(stack, d, uses, max_uses, keep_capped)
        else:
            g = stack.pop(d)
        if max_uses > 0:
            uses[g] = uses.get(g, 0) + 1
        stack.insert(0, g)
        walk.out.append(g)
    return np.array(walk.out, dtype=np.int64), walk.items, extra, clamped


@pytest.mark.parametrize("case", range(8))     # odd cases: a hot set; 2, 6: a full table
def test_kernel_matches_the_reference_on_random_inputs(case):
    rng = np.random.default_rng(300 + case)
    # even cases past synth.FIRST_CAP (the time axis compacts), odd ones under it
    n = int(rng.integers(17_000, 40_000) if case % 2 == 0 else rng.integers(2_000, 16_000))
    W = int(rng.integers(1, 5))
    bounds = np.linspace(0, n, W + 1).astype(np.int64)
    hot, gap_cdf, gap_edges = hot_schedule(rng, case, bounds)
    cold_cnt = np.array([int(rng.integers(0, (bounds[w + 1] - bounds[w]) // 4 + 1))
                         for w in range(W)], dtype=np.int64)
    nb = int(rng.integers(20, 300))
    hist = rng.integers(0, 50, (W, nb)) * (rng.random((W, nb)) < 0.5)
    hist[:, 0] += 1
    cdf = np.cumsum(hist, axis=1).astype(np.int64)
    if W > 1 and case % 4 == 3:
        cdf[1] = 0                                  # a window falls back to the sum
    max_ids = int(cold_cnt.sum()) // 2 + 1 if case in (2, 6) else 10 ** 6
    max_uses = [0, 3, 40, 8][case % 4]
    keep = case >= 4 and max_uses > 0
    args = (n, bounds, hot, gap_cdf, gap_edges, cold_cnt, cdf, _reuse.bin_edges(nb),
            777 + case, max_ids, int(rng.integers(1, 9)), case % 3 == 0, max_uses, keep)
    got = synth.synth_core(*args[:8], np.ascontiguousarray(cdf.sum(axis=0)), *args[8:])
    want = _reference(*args)
    assert np.array_equal(got[0], want[0])
    assert tuple(int(x) for x in got[1:]) == tuple(want[1:])
    if case % 2 == 0 and max_uses:    # the use counts outgrew their first 1024 between spans
        assert want[1] > 1024
