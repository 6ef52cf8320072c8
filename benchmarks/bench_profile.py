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

Each part runs on the benchmark harness (dlrmprof.profile.harness): ours and the baseline in
interleaved rounds, ratio per round, median [quartiles].  Results:
benchmarks/results/profile.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from dlrmprof.profile import cachesim, harness, host, noise

SCHEMA = "dlrmprof.bench.profile/1"
OUT = harness.results_path(__file__, "profile.json")


def bench_cachesim(n: int, caches, rounds: int) -> harness.Comparison:
    rng = np.random.default_rng(0)
    rows = (rng.zipf(1.1, size=n) % 2_000_000).astype(np.int64)
    lines = cachesim.row_lines(rows, 64)
    from dlrmprof.profile.host import data_caches
    l1 = data_caches(caches)[0]
    levels = len(data_caches(caches))
    prefix = lines[: min(lines.size, 200_000)]
    pre_list = prefix.tolist()

    def check(_out):
        fast = cachesim.lru_misses(prefix, l1["size_bytes"], l1["ways"])
        ref = cachesim.reference_lru_misses(pre_list, l1["size_bytes"], l1["ways"])
        assert fast.tolist() == ref, "numba LRU disagrees with the reference"

    cmp = harness.compare(
        {"python reference": lambda i: cachesim.reference_lru_misses(
            pre_list, l1["size_bytes"], l1["ways"]),
         "numba": lambda i: cachesim.simulate_hierarchy(lines, caches,
                                                        fully_associative=False)},
        baseline="python reference", check=check, rounds=rounds, warmup=0,
        label="cachesim per level-access", params={"accesses": n, "levels": levels,
                                                   "reference_accesses": int(prefix.size)})
    # per access: the reference runs one level on the prefix, ours `levels` on the whole stream
    scale = lines.size * levels / prefix.size
    r = cmp.speedup("numba")
    ours_per = cmp.median_s("numba") / lines.size / levels
    base_per = cmp.median_s("python reference") / prefix.size
    print(f"cachesim: numba {lines.size / cmp.median_s('numba') / 1e6:.1f} M accesses/s through "
          f"{levels} levels ({ours_per * 1e9:.1f} ns per level-access); Python reference "
          f"{base_per * 1e9:.0f} ns per access (one level): {r.median * scale:.0f}x faster "
          f"[{r.q25 * scale:.0f}-{r.q75 * scale:.0f}]")
    cmp.params["per_access_speedup"] = r.median * scale
    return cmp


def bench_fa(n: int, rounds: int) -> harness.Comparison:
    rng = np.random.default_rng(1)
    lines = (rng.zipf(1.1, size=n) % 200_000).astype(np.int64)
    caps = [1 << k for k in range(4, 13)]

    def check(out):
        rates = out["reuse distances"][0]
        for c, r in zip(caps[:3], rates[:3]):
            m = cachesim.lru_misses(lines, c * 64, c)
            assert abs((1 - m.size / n) - r) < 1e-9, f"hit rate at {c} lines differs"

    cmp = harness.compare(
        {"one simulation per size": lambda i: [cachesim.lru_misses(lines, c * 64, c)
                                               for c in caps],
         "reuse distances": lambda i: cachesim.fully_associative_hit_rates(
             lines, [c * 64 for c in caps])},
        baseline="one simulation per size", check=check, rounds=rounds, warmup=0,
        label=f"fully-associative MRC, {len(caps)} sizes", params={"accesses": n})
    print(f"fully-associative MRC at {len(caps)} sizes, {n} accesses: reuse distances "
          f"{cmp.median_s('reuse distances'):.3f} s vs one single-set simulation per size "
          f"{cmp.median_s('one simulation per size'):.3f} s: "
          f"{cmp.speedup('reuse distances').describe()}")
    return cmp


def bench_timing(rounds: int) -> list[harness.Comparison]:
    out = []
    for target in (1e-3, 50e-6):
        def work():
            t_end = time.perf_counter() + target
            while time.perf_counter() < t_end:
                pass
        reps = 200

        def bare(i):
            for _ in range(reps):
                a = time.perf_counter()
                work()
                _ = time.perf_counter() - a

        def ours(i):
            noise.timed_samples(work, repeats=reps, warmup=0, budget_s=0.0,
                                drop_contaminated=False)

        cmp = harness.compare({"bare loop": bare, "timed_samples": ours},
                              baseline="bare loop", rounds=rounds, warmup=0,
                              label=f"timed_samples at {target * 1e6:.0f} us per call",
                              params={"call_s": target, "samples": reps})
        over = cmp.ratio("timed_samples", "bare loop")
        per = (cmp.median_s("timed_samples") - cmp.median_s("bare loop")) / reps
        print(f"timed_samples wall overhead at {target * 1e6:.0f} us per call: "
              f"{per * 1e6:.1f} us per sample ({over.median - 1:+.1%} [{over.q25 - 1:+.1%}.."
              f"{over.q75 - 1:+.1%}]; spent outside the timed window, so it lengthens a study, "
              f"not the times it reports)")
        cmp.params["overhead_per_sample_s"] = per
        out.append(cmp)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    args = ap.parse_args(argv)
    caches = host.collect(gpu=False, counters=False)["caches"]
    n = 500_000 if args.quick else 4_000_000
    try:
        cmps = [bench_cachesim(n, caches, args.rounds),
                bench_fa(n // 4 if args.quick else 1_000_000, args.rounds),
                *bench_timing(args.rounds)]
    except harness.CheckFailed as exc:
        raise SystemExit(f"bench_profile: {exc}") from None
    doc = harness.results_doc(SCHEMA, comparisons=cmps,
                              source="measured (perf_counter, interleaved rounds)")
    print(f"wrote {harness.write_results(args.out, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
