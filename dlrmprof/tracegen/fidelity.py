"""How close a synthetic stream is to its source, from the source's profile.

Per table: LRU hit-rate mean absolute error over cache sizes 2^0..2^k (k covers both distinct
counts), the distinct-id ratio (synthetic / source), the top-10 and top-1% share of accesses
(source vs synthetic), and the total-variation distance between the two reuse-distance
histograms (same bins, cold as its own bin).
"""

from __future__ import annotations

import numpy as np

from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.profile import LocalityProfile, stream_histogram


def top_share(ids: np.ndarray, n: int) -> float:
    if len(ids) == 0:
        return 0.0
    counts = np.bincount(np.asarray(ids, dtype=np.int64))
    if n < counts.size:
        top = np.partition(counts, counts.size - n)[counts.size - n:]
    else:
        top = counts
    return float(top.sum()) / len(ids)


def fidelity(profile: LocalityProfile, synthetic_ids: np.ndarray,
             synthetic_dist: np.ndarray | None = None) -> dict:
    ids = np.asarray(synthetic_ids, dtype=np.int64)
    if synthetic_dist is not None:
        hist, cold = _reuse.histogram(synthetic_dist)
    else:
        hist, cold = stream_histogram(ids)
    distinct_syn = int(cold)
    sizes = _reuse.mrc_sizes(max(profile.distinct, distinct_syn))
    src = _reuse.hit_rates(profile.hist, profile.cold, sizes)
    syn = _reuse.hit_rates(hist, cold, sizes)
    nb = max(len(hist), len(profile.hist))
    a = np.zeros(nb + 1)
    b = np.zeros(nb + 1)
    a[: len(profile.hist)] = profile.hist
    a[nb] = profile.cold
    b[: len(hist)] = hist
    b[nb] = cold
    tv = 0.5 * float(np.abs(a / max(a.sum(), 1) - b / max(b.sum(), 1)).sum())
    n1 = max(1, profile.distinct // 100)
    return {
        "sizes": sizes.tolist(),
        "source_hit_rate": src.tolist(),
        "synthetic_hit_rate": syn.tolist(),
        "mrc_mae": float(np.abs(src - syn).mean()),
        "mrc_max_error": float(np.abs(src - syn).max()),
        "distinct_source": int(profile.distinct),
        "distinct_synthetic": distinct_syn,
        "distinct_ratio": distinct_syn / profile.distinct if profile.distinct else 1.0,
        "top10_share_source": profile.top_share(10),
        "top10_share_synthetic": top_share(ids, 10),
        "top1pct_share_source": profile.top_share(n1),
        "top1pct_share_synthetic": top_share(ids, n1),
        "hist_tv_distance": tv,
        "accesses_synthetic": int(len(ids)),
    }
