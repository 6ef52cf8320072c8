"""Cost of the FIFO / LFU / 32-way set-associative hit-rate curves (tracegen.policies).

    python benchmarks/bench_policies.py [--quick] [--out benchmarks/results/policies.json]

Streams (seeded, tracegen.workloads): IRM Zipf(1.05) over 2^20 ids and bursty user sessions
(Zipf(1.0) over 2^20 users, mean session 10, 64 concurrent), 2M accesses each (200k with
--quick); cache sizes 2^0..2^20.

Before timing, every kernel is checked against the plain-Python reference
(`policies.reference_hit_rate`) on a 20k-access prefix at sizes 1, 7, 32, 64.  Then, in
interleaved rounds, it times:
  ours       fifo + lfu + setassoc32 at all sizes on the whole stream;
  lru        the exact reuse-distance pass (`reuse.reuse_distances`): what the fidelity code
             already pays for the LRU curve, so ours / lru says what the new curves add;
  reference  the Python reference at sizes 1..64 (powers of two) on the prefix, scaled per
             access and size, against ours at the same sizes on the whole stream.
Timed on the benchmark harness (dlrmprof.profile.harness): the four run in rotated rounds;
the figures are each one's best round (its own CPU seconds beside), and other processes' CPU
use is recorded per round.  Then each policy alone at all sizes; with --previous COMMIT beside
the same policy of that commit's policies.py (its kernels compiled here, uncached), which must
give the same hit rates: the per-policy ratio of a kernel change, measured in the same rounds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from dlrmprof.profile import harness
from dlrmprof.tracegen import policies, reuse, workloads

# history: 1: results per stream; 2: plus the harness's comparisons (rounds, noise)
SCHEMA = "dlrmprof.bench.policies/2"
POLICIES = {"fifo": policies.fifo_hit_rates, "lfu": policies.lfu_hit_rates,
            "setassoc": policies.setassoc_hit_rates}
PREFIX = 20_000
CHECK_SIZES = (1, 7, 32, 64)
SMALL = [1 << k for k in range(7)]


def previous_policies(commit: str) -> dict:
    """{policy: hit-rate function} of `commit`'s tracegen/policies.py, loaded as a module."""
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "-C", str(root), "show",
                          f"{commit}:dlrmprof/tracegen/policies.py"],
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("policies_previous")
    sys.modules[mod.__name__] = mod        # dataclasses look their module up
    exec(compile(src.replace("cache=True", "cache=False"), f"{commit}:policies.py", "exec"),
         mod.__dict__)
    return {"fifo": mod.fifo_hit_rates, "lfu": mod.lfu_hit_rates,
            "setassoc": mod.setassoc_hit_rates}


def check(ids: np.ndarray) -> None:
    pre = ids[:PREFIX]
    for name, fn in POLICIES.items():
        got = fn(pre, CHECK_SIZES)
        for k, c in enumerate(CHECK_SIZES):
            want = policies.reference_hit_rate(name, pre, c)
            assert abs(got[k] - want) < 1e-12, f"{name} at {c}: {got[k]} != reference {want}"


def with_cpu(fn, cpu: list):
    """fn(i) that also appends its own CPU seconds (this process, all threads) to `cpu`."""
    def call(i):
        c0 = time.process_time()
        out = fn()
        cpu.append(time.process_time() - c0)
        return out
    return call


def bench_stream(name: str, ids: np.ndarray, rounds: int,
                 previous: dict | None = None) -> tuple[dict, list]:
    sizes = 1 << np.arange(21)
    pre = ids[:PREFIX].tolist()
    work = {"ours": lambda: policies.policy_mrcs(ids, sizes),
            "lru": lambda: reuse.reuse_distances(ids),
            "ours_small": lambda: [f(ids, SMALL) for f in POLICIES.values()],
            "reference_small": lambda: [policies.reference_hit_rate(p, pre, c)
                                        for p in POLICIES for c in SMALL]}
    cpu = {k: [] for k in work}
    cmp = harness.compare({k: with_cpu(fn, cpu[k]) for k, fn in work.items()}, baseline="lru",
                          baseline_of={"ours_small": "reference_small"},
                          check=lambda _out: check(ids), rounds=rounds, warmup=0,
                          threads=2, label=name, params={"accesses": int(ids.size)})
    cpu = {k: v[1:] for k, v in cpu.items()}       # the check call is not a timed round
    fns = dict(POLICIES) | {f"previous_{p}": f for p, f in (previous or {}).items()}

    def same(out):
        for p in previous or {}:
            if not np.array_equal(out[p], out[f"previous_{p}"]):
                raise AssertionError(f"{p}: hit rates differ from the previous code's")
    per = harness.compare({p: (lambda f: lambda i: f(ids, sizes))(f) for p, f in fns.items()},
                          baseline="fifo", rounds=rounds, warmup=0, threads=2,
                          label=f"{name} per policy", check=same if previous else None,
                          baseline_of={p: f"previous_{p}" for p in previous or {}})
    runs = {k: list(cmp.samples_s[k]) for k in work}
    best = {k: min(v) for k, v in runs.items()}
    ours_small_per = best["ours_small"] / (ids.size * len(SMALL))
    ref_small_per = best["reference_small"] / (len(pre) * len(SMALL))
    other = [c for c in cmp.other_cores if c is not None] or [0.0]
    res = {"stream": name, "accesses": int(ids.size), "distinct": int(np.unique(ids).size),
           "sizes": f"2^0..2^{sizes.size - 1}", "rounds": rounds,
           "seconds": runs, "best_s": best,
           "cpu_seconds": cpu, "best_cpu_s": {k: min(v) for k, v in cpu.items()},
           "per_policy_best_s": {p: min(per.samples_s[p]) for p in POLICIES},
           "ours_over_lru": best["ours"] / best["lru"],
           "reference_ns_per_access_size": ref_small_per * 1e9,
           "ours_ns_per_access_size_small": ours_small_per * 1e9,
           "speedup_vs_reference": ref_small_per / ours_small_per,
           "other_cpus_max": max(other), "other_cpus_mean": float(np.mean(other))}
    if previous:
        res["previous_best_s"] = {p: min(per.samples_s[f"previous_{p}"]) for p in previous}
        res["speedup_vs_previous"] = {p: res["previous_best_s"][p] / res["per_policy_best_s"][p]
                                      for p in previous}
    return res, [cmp, per]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--previous", default=None,
                    help="commit whose policies.py is timed beside ours, per policy")
    ap.add_argument("--out", default=harness.results_path(__file__, "policies.json"))
    args = ap.parse_args()
    previous = previous_policies(args.previous) if args.previous else None
    n = 200_000 if args.quick else 2_000_000
    rounds = 3
    streams = {"irm_zipf_1.05": workloads.irm_zipf(n, 1 << 20, 1.05, 1),
               "bursty_sessions": workloads.bursty_sessions(n, 1 << 20, 1.0, 10, 64, 2)}
    policies.policy_mrcs(streams["irm_zipf_1.05"][:1000], [1, 2, 64])   # compile / load
    reuse.reuse_distances(streams["irm_zipf_1.05"][:1000])
    results, cmps = [], []
    for name, ids in streams.items():
        try:
            r, c = bench_stream(name, ids, rounds, previous)
        except harness.CheckFailed as exc:
            raise SystemExit(f"bench_policies: {name}: {exc}") from None
        results.append(r)
        cmps += c
        pp = ", ".join(f"{k} {v:.2f}" for k, v in r["per_policy_best_s"].items())
        print(f"{name}: {r['accesses']} accesses, {r['distinct']} distinct, sizes {r['sizes']}: "
              f"fifo+lfu+setassoc32 {r['best_s']['ours']:.2f} s ({pp}); exact LRU pass "
              f"{r['best_s']['lru']:.3f} s: {r['ours_over_lru']:.0f}x the LRU curve's cost")
        print(f"  vs the Python reference (sizes 1..64, per access and size): "
              f"{r['reference_ns_per_access_size']:.0f} ns vs "
              f"{r['ours_ns_per_access_size_small']:.1f} ns: {r['speedup_vs_reference']:.0f}x "
              f"faster; other processes' CPU max {r['other_cpus_max']:.2f}")
        if previous:
            print("  vs the previous code, per policy: " + ", ".join(
                f"{p} {v:.2f}x" for p, v in r["speedup_vs_previous"].items()))
    doc = harness.results_doc(
        SCHEMA, comparisons=cmps, results=results, previous=args.previous,
        source="measured (time.perf_counter, best of interleaved rounds)")
    print(f"wrote {harness.write_results(args.out, doc)}")


if __name__ == "__main__":
    main()
