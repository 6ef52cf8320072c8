"""Profiler internals against plain baselines measured in the same run.

    python benchmarks/bench_profile.py [--quick]

Parts (each prints ours, the baseline, and the ratio; results are compared before timing):
  cachesim   numba set-associative LRU (L1d/L2/L3 of this host) vs the plain-Python reference
             (`cachesim.reference_lru_misses`, an OrderedDict per set), on a Zipf(1.1) row stream;
             the Python baseline runs on a prefix and is scaled per access.
  fa         fully-associative hit rates from exact reuse distances (one pass, all sizes) vs
             one set-associative simulation per capacity with a single set.
  timing     overhead of `noise.timed_samples` (psutil before/after each sample) vs a bare
             perf_counter loop, for a 1 ms and a 50 us function.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dlrmprof.profile import cachesim, host, noise


def best(fn, repeat=3):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def bench_cachesim(n: int, caches) -> None:
    rng = np.random.default_rng(0)
    rows = (rng.zipf(1.1, size=n) % 2_000_000).astype(np.int64)
    lines = cachesim.row_lines(rows, 64)
    from dlrmprof.profile.host import data_caches
    l1 = data_caches(caches)[0]
    prefix = lines[: min(lines.size, 200_000)]
    fast = cachesim.lru_misses(prefix, l1["size_bytes"], l1["ways"])
    ref = cachesim.reference_lru_misses(prefix.tolist(), l1["size_bytes"], l1["ways"])
    assert fast.tolist() == ref, "numba LRU disagrees with the reference"
    ours = best(lambda: cachesim.simulate_hierarchy(lines, caches, fully_associative=False))
    base = best(lambda: cachesim.reference_lru_misses(prefix.tolist(), l1["size_bytes"],
                                                      l1["ways"]), repeat=1)
    base_per = base / prefix.size
    # the hierarchy runs 3 levels; compare per level-access
    levels = len(data_caches(caches))
    ours_per = ours / lines.size / levels
    print(f"cachesim: numba {lines.size / ours / 1e6:.1f} M accesses/s through {levels} levels "
          f"({ours_per * 1e9:.1f} ns per level-access); Python reference "
          f"{base_per * 1e9:.0f} ns per access (one level): {base_per / ours_per:.0f}x faster")


def bench_fa(n: int) -> None:
    rng = np.random.default_rng(1)
    lines = (rng.zipf(1.1, size=n) % 200_000).astype(np.int64)
    caps = [1 << k for k in range(4, 13)]
    rates, _, _ = cachesim.fully_associative_hit_rates(lines, [c * 64 for c in caps])
    for c, r in zip(caps[:3], rates[:3]):
        m = cachesim.lru_misses(lines, c * 64, c)
        assert abs((1 - m.size / n) - r) < 1e-9
    ours = best(lambda: cachesim.fully_associative_hit_rates(lines, [c * 64 for c in caps]))
    base = best(lambda: [cachesim.lru_misses(lines, c * 64, c) for c in caps], repeat=1)
    print(f"fully-associative MRC at {len(caps)} sizes, {n} accesses: reuse distances "
          f"{ours:.3f} s vs one single-set simulation per size {base:.3f} s: "
          f"{base / ours:.1f}x")


def bench_timing() -> None:
    for target in (1e-3, 50e-6):
        def work():
            t_end = time.perf_counter() + target
            while time.perf_counter() < t_end:
                pass
        reps = 200
        t0 = time.perf_counter()
        for _ in range(reps):
            a = time.perf_counter()
            work()
            _ = time.perf_counter() - a
        bare = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        noise.timed_samples(work, repeats=reps, warmup=0, budget_s=0.0,
                            drop_contaminated=False)
        ours = (time.perf_counter() - t0) / reps
        print(f"timed_samples wall overhead at {target * 1e6:.0f} us per call: "
              f"{(ours - bare) * 1e6:.1f} us per sample ({(ours / bare - 1):+.1%}; spent "
              f"outside the timed window, so it lengthens a study, not the times it reports)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    caches = host.collect(gpu=False, counters=False)["caches"]
    n = 500_000 if args.quick else 4_000_000
    bench_cachesim(n, caches)
    bench_fa(n // 4 if args.quick else 1_000_000)
    bench_timing()


if __name__ == "__main__":
    main()
