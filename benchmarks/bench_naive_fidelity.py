"""Cost of the naive baseline's fidelity record: its reuse histogram from the reuse pass over
its ids, or from the stack depths its draws took (`synth.synthesize_naive_hist`), or the whole
record from what its draws keep, without its stream (`naive.naive_figures`, what gen-trace
uses: `generate._naive_fidelity`).

    python benchmarks/bench_naive_fidelity.py [--quick] [--rounds 3] [--out PATH]

Streams (seeded, tracegen.workloads), 2M accesses each (200k with --quick): IRM Zipf over
2^7, 2^11 and 2^17 ids and a drifting Zipf over 2^14; each is profiled as gen-trace does
(`generate._profile`: the hot-set selection, the source's curves).  One timed call is, per
stream, the naive stream at the source's length and its whole fidelity record (LRU curve,
popularity, FIFO / LFU / set-associative curves, per-batch figures), as `generate._measured`
makes it.  Before timing, all ways must give the same fidelity record (and the first two the
same ids and histogram).
Timed on the benchmark harness (interleaved rounds, other processes' CPU use recorded).
"""

from __future__ import annotations

import argparse

import numpy as np

from dlrmprof.profile import harness
from dlrmprof.tracegen import workloads
from dlrmprof.tracegen.fidelity import fidelity
from dlrmprof.tracegen.generate import _naive_fidelity, _profile
from dlrmprof.tracegen.profile import stream_histogram
from dlrmprof.tracegen.reuse import dense_ids
from dlrmprof.tracegen.synth import synthesize_naive, synthesize_naive_hist

SCHEMA = "dlrmprof.bench.naive_fidelity/1"


def streams(n: int) -> dict[str, np.ndarray]:
    return {"irm_zipf_1.05_2^7": workloads.irm_zipf(n, 1 << 7, 1.05, 1),
            "irm_zipf_1.05_2^11": workloads.irm_zipf(n, 1 << 11, 1.05, 2),
            "irm_zipf_1.05_2^17": workloads.irm_zipf(n, 1 << 17, 1.05, 3),
            "drifting_zipf_2^14": workloads.drifting_zipf(n, 1 << 14, 1.0, 0.05, 4)}


def reuse_pass(prof, seed):
    ids = synthesize_naive(prof, seed=seed)
    return ids, stream_histogram(ids), fidelity(prof, ids)


def from_draws(prof, seed):
    ids, hist = synthesize_naive_hist(prof, seed=seed)
    return ids, hist, fidelity(prof, ids, synthetic_hist=hist)


def figures(prof, seed):
    return None, None, _naive_fidelity(prof, prof.rows, seed, None)


def same(out: dict) -> None:
    for (a_ids, a_hist, a_fid), (b_ids, b_hist, b_fid) in zip(out["reuse_pass"],
                                                              out["from_draws"]):
        if not np.array_equal(a_ids, b_ids):
            raise AssertionError("the naive ids differ")
        if a_hist[1] != b_hist[1] or not np.array_equal(a_hist[0], b_hist[0]):
            raise AssertionError("the histogram from the draws differs from the reuse pass's")
        if a_fid != b_fid:
            raise AssertionError("the fidelity records differ")
    for (_, _, a_fid), (_, _, b_fid) in zip(out["reuse_pass"], out["figures"]):
        if a_fid != b_fid:
            raise AssertionError("the record from naive_figures differs")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=harness.results_path(__file__, "naive_fidelity.json"))
    args = ap.parse_args()
    n = 200_000 if args.quick else 2_000_000
    profs = []
    for name, raw in streams(n).items():
        ids = dense_ids(raw)
        profs.append(_profile(name, ids, None, int(ids.max()) + 1, 32, None, None))
    work = {k: (lambda f: lambda i: [f(p, 7 + i) for p in profs])(f)
            for k, f in (("reuse_pass", reuse_pass), ("from_draws", from_draws),
                          ("figures", figures))}
    for f in work.values():
        f(0)                                        # compile / load both
    cmp = harness.compare(work, baseline="reuse_pass", baseline_of={"figures": "from_draws"},
                          check=same, rounds=args.rounds,
                          warmup=0, threads=2, label="naive stream + fidelity, all streams",
                          params={"accesses": n, "streams": len(profs)})
    best = {k: min(v) for k, v in cmp.samples_s.items()}
    other = [c for c in cmp.other_cores if c is not None] or [0.0]
    summary = {"accesses_per_stream": n, "streams": [p.name for p in profs],
               "distinct": [int(p.distinct) for p in profs], "rounds": args.rounds,
               "best_s": best, "speedup": best["reuse_pass"] / best["from_draws"],
               "speedup_figures_vs_from_draws": best["from_draws"] / best["figures"],
               "other_cpus_max": max(other)}
    print(f"{len(profs)} streams of {n} accesses: naive stream + fidelity "
          f"{best['reuse_pass']:.3f} s with the reuse pass, {best['from_draws']:.3f} s from "
          f"the draws ({summary['speedup']:.2f}x), {best['figures']:.3f} s from naive_figures "
          f"({summary['speedup_figures_vs_from_draws']:.2f}x of the draws' histogram; other "
          f"processes' CPU max {max(other):.2f})")
    doc = harness.results_doc(SCHEMA, comparisons=[cmp], summary=summary,
                              source="measured (time.perf_counter, best of interleaved "
                                     "rounds; same fidelity records checked first)")
    print(f"wrote {harness.write_results(args.out, doc)}")


if __name__ == "__main__":
    main()
