"""Synthesis fidelity, measured: the bundled real Criteo sample (26 columns, synthetic of the
same length, several seeds) and a larger realistic synthetic stream (Zipf with drift and
short-range repeats), with the hot-set size chosen the way gen-trace chooses it.

    python benchmarks/bench_tracegen_fidelity.py [--seeds 3] [--drift-n 2000000]
"""

from __future__ import annotations

import argparse

import numpy as np

from dlrmprof.tracegen.fidelity import fidelity
from dlrmprof.tracegen.generate import choose_hot
from dlrmprof.tracegen.profile import stream_histogram
from dlrmprof.tracegen.readers import BUNDLED_SAMPLE, read_criteo
from dlrmprof.tracegen.synth import synthesize_stream


def drift_stream(n: int, n_ids: int, s: float = 1.05, drift: float = 0.05, block: int = 50_000,
                 repeat: float = 0.2, window: int = 50, seed: int = 0) -> np.ndarray:
    """Zipf(s) ranks over n_ids ids whose rank->id mapping drifts (every `block` accesses a
    `drift` fraction of ranks get brand-new ids), plus `repeat` of the accesses re-reading one
    of the previous `window` accesses (short-range temporal locality)."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, n_ids + 1, dtype=np.float64) ** -s
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(n))
    mapping = rng.permutation(n_ids).astype(np.int64)
    nxt = n_ids
    out = np.empty(n, dtype=np.int64)
    for b in range(0, n, block):
        k = int(drift * n_ids)
        sel = rng.choice(n_ids, k, replace=False)
        mapping[sel] = np.arange(nxt, nxt + k)
        nxt += k
        out[b:b + block] = mapping[ranks[b:b + block]]
    idx = np.arange(n)
    back = rng.integers(1, window, n)
    src = np.where((rng.random(n) < repeat) & (idx >= back), idx - back, idx)
    out = out[src]
    # dense ids in first-touch order
    _, first, inv = np.unique(out, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inv].astype(np.int64)


def summarize(fids):
    m = [f["mrc_mae"] for f in fids]
    r = [f["distinct_ratio"] for f in fids]
    t = [f["top10_share_synthetic"] / f["top10_share_source"] - 1 for f in fids]
    return (f"MRC MAE mean {np.mean(m):.4f}, worst {np.max(m):.4f}; distinct ratio "
            f"{min(r):.3f}..{max(r):.3f}; top-10 share worst relative error "
            f"{max(map(abs, t)):.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--drift-n", type=int, default=2_000_000)
    args = ap.parse_args()
    r = read_criteo(BUNDLED_SAMPLE)
    sparse = np.concatenate([c.sparse for c in r])
    print("bundled Criteo sample, 26 columns x 1999 accesses, synthetic of the same length")
    print(f"{'table':<6} {'distinct':>8} {'K':>5} {'MAE':>7} {'dist.ratio':>10} "
          f"{'top10 src':>9} {'top10 syn':>9} {'top1% src':>9} {'top1% syn':>9}")
    per_seed = {s: [] for s in range(args.seeds)}
    for j, name in enumerate(r.table_names):
        ids = sparse[:, j]
        prof, tried = choose_hot(name, ids, None, None, 32, stream_histogram(ids))
        fs = []
        for s in range(args.seeds):
            syn, _ = synthesize_stream(prof, seed=s)
            f = fidelity(prof, syn)
            per_seed[s].append(f)
            fs.append(f)
        mae = np.mean([f["mrc_mae"] for f in fs])
        f = fs[0]
        print(f"{name:<6} {prof.distinct:>8} {tried['chosen']:>5} {mae:7.4f} "
              f"{f['distinct_ratio']:10.3f} {f['top10_share_source']:9.3f} "
              f"{f['top10_share_synthetic']:9.3f} {f['top1pct_share_source']:9.3f} "
              f"{f['top1pct_share_synthetic']:9.3f}")
    for s, fids in per_seed.items():
        print(f"seed {s}: {summarize(fids)}")
    ids = drift_stream(args.drift_n, args.drift_n // 10)
    prof, tried = choose_hot("drift", ids, None, None, 32, stream_histogram(ids))
    syn, facts = synthesize_stream(prof, seed=0)
    f = fidelity(prof, syn)
    print(f"Zipf(1.05)+drift+repeats, {len(ids)} accesses, {prof.distinct} distinct, K chosen "
          f"{tried['chosen']} (candidates {[(c['hot'], round(c['mrc_mae'], 4)) for c in tried['candidates']]}):"
          f" {summarize([f])}; top-1% share {f['top1pct_share_source']:.3f} source vs "
          f"{f['top1pct_share_synthetic']:.3f} synthetic")


if __name__ == "__main__":
    main()
