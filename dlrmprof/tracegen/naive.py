"""The naive baseline's stream kernel: i.i.d. draws from one reuse-distance histogram on one
LRU stack (`synth.synthesize_naive`).

It is `synth._synth_core` with the naive model's arguments (one window, no hot ids, one draw
per tail access, a draw deeper than the stack a first touch, no use cap), those branches
and the per-access bookkeeping they need taken out: the same random draws in the same order
and the same stack, so the same ids (tests/test_tracegen_policies.py checks it against
`_synth_core` on random histograms).  The naive stream is drawn for every table's fidelity
record at full length, so its per-access cost is part of every capture.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dlrmprof.tracegen._lru_stack import compact_stack, new_stack, pop_depth
from dlrmprof.tracegen.reuse import fenwick_add
from dlrmprof.tracegen.synth import GUIDE, _below, _uniform


@njit(cache=True)
def _guide(wcdf, wtot, rem_warm):
    """`synth._window_setup`'s guide table: guide[j] = first bin whose cdf exceeds
    j * wtot / G (it only shortens the bin search)."""
    nb = wcdf.shape[0]
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
    return guide


@njit(cache=True)
def naive_core(n, rem_cold, wcdf, edges, seed, max_ids):
    """(stream of item numbers in first-touch order, items used, extra cold, clamped) of n
    accesses: rem_cold first touches placed at random, the other accesses at distances
    drawn from the histogram with cdf `wcdf` over bins `edges`."""
    out = np.empty(n, dtype=np.int64)
    state = np.full(1, seed, dtype=np.uint64)
    nb = wcdf.shape[0]
    wtot = wcdf[nb - 1] if nb > 0 else 0
    rem_warm = n - rem_cold
    guide = _guide(wcdf, wtot, rem_warm)
    gscale = guide.shape[0] - 1
    cap = 1 << 14
    owner, nw, bits, tree = new_stack(cap)
    t, D, items, extra_cold, clamped = 1, 0, 0, 0, 0
    one = np.uint64(1)
    for pos in range(n):
        if t >= cap:
            owner, cap, nw, D, bits, tree = compact_stack(owner, t - 1, cap)
            t = D + 1
        cold = _below(state, rem_cold + rem_warm) < rem_cold
        if cold:
            rem_cold -= 1
        else:
            rem_warm -= 1
            if D == 0 or wtot == 0:
                cold = True
                extra_cold += 1
        if cold and items >= max_ids:
            if D == 0:
                out[pos] = _below(state, max_ids)
                continue
            cold = False            # table full: reuse the least recently used id
            d = D - 1
        elif not cold:
            uf = _uniform(state)
            u = np.int64(uf * wtot)
            a = guide[np.int64(uf * gscale)]
            while a > 0 and wcdf[a - 1] > u:      # float rounding guard
                a -= 1
            while wcdf[a] <= u:
                a += 1
            lo_e = edges[a]
            width = edges[a + 1] - lo_e
            d = lo_e + (_below(state, width) if width > 1 else 0)
            if d >= D:
                if items < max_ids:
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
        else:
            g = pop_depth(owner, bits, tree, nw, t, d, D)
        bits[t >> 6] |= one << np.uint64(t & 63)
        owner[t] = g
        t += 1
        out[pos] = g
    return out, items, extra_cold, clamped
