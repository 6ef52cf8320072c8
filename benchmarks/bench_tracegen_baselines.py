"""Baselines for benchmarks/bench_tracegen.py: a plain numba Fenwick reuse-distance pass
(tree over the whole time axis, prefix-sum queries), as the issue measured it."""

import numpy as np
from numba import njit


@njit(cache=True)
def plain_fenwick_distances(ids, n_ids):
    n = ids.shape[0]
    tree = np.zeros(n + 1, dtype=np.int64)
    last = np.zeros(n_ids, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    total = 0
    for i in range(n):
        t = i + 1
        x = ids[i]
        s = last[x]
        if s == 0:
            out[i] = -1
        else:
            # marked slots after s = total - prefix(s)
            p = 0
            j = s
            while j > 0:
                p += tree[j]
                j -= j & (-j)
            out[i] = total - p
            j = s
            while j <= n:
                tree[j] -= 1
                j += j & (-j)
            total -= 1
        j = t
        while j <= n:
            tree[j] += 1
            j += j & (-j)
        total += 1
        last[x] = t
    return out
