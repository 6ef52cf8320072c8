"""Hybrid-parallel DLRM on this host: 1 rank vs 2 ranks (gloo), and where the time goes.

    python benchmarks/bench_distributed.py [--iters 60] [--rounds 2] [--max-rows 100000]
                                           [--batch-size 1024] [--backend numba|torch]

Setting: the `kaggle` preset (26 tables, dim 16, bottom 13-512-256-64-16, top 367-512-256-1),
tables capped at --max-rows, global batch --batch-size, 1 thread per process (torch and
numba), indices from a trace synthesized from the bundled Criteo sample's locality (rows set
to the capped Kaggle cardinalities), synthetic dense features and labels.

Variants, interleaved round by round so the machine's noise hits them alike:

* ``plain``:  the single-process loop (`DLRM` + `DLRMTrain`, as `dlrmprof run`), in this process;
* ``1 rank``: `dlrmprof.session.launch` with one rank (the all-to-all degenerates to a
  local copy, DDP to a no-op all-reduce): the cost of the distributed machinery itself;
* ``2 ranks``: two processes through `launch` (torchrun's elastic agent, gloo): tables split
  by the sharding plan, batch split in two, all-to-all forward/backward, DDP all-reduce;
* ``2 ranks, no barriers``: the same without the timed waits before each collective (what
  separating wait from transfer costs).

Printed: median step time per variant (the slowest rank's per-iteration step for the
distributed ones), the 2-rank/1-rank ratio, the 2-rank report's breakdown per rank (compute,
wait before collectives, transfer; the all-to-all time, bytes and bandwidth per step; the
all-reduce), the accounting check (compute + communication vs the measured step, target
within 10%), and other processes' CPU use during the runs (this machine is shared).
Results: benchmarks/results/distributed.json (through the benchmark harness's results writer;
the rounds are not harness-timed: each variant's figure is the step time its own run's
report measured, the slowest rank's for the distributed ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from dlrmprof.dlrm import sharding as S  # noqa: E402
from dlrmprof.dlrm.config import load_config  # noqa: E402
from dlrmprof.dlrm.data import bundled_criteo_sample  # noqa: E402
from dlrmprof.dlrm.model import build_dlrm  # noqa: E402
from dlrmprof.dlrm.train import DLRMTrain, run_loop  # noqa: E402
from dlrmprof.profile import harness  # noqa: E402
from dlrmprof.profile.report import Report  # noqa: E402
from dlrmprof.profile.timers import OpTimer  # noqa: E402
from dlrmprof.session import launch as D  # noqa: E402
from dlrmprof.session.prepare import RunOptions, make_source, prepare  # noqa: E402

SCHEMA = "dlrmprof.bench.distributed/1"
OUT = harness.results_path(__file__, "distributed.json")


def make_trace(path: str, max_rows: int, num_samples: int, seed: int) -> str:
    from dlrmprof.tracegen import synthesize_trace
    from dlrmprof.tracegen.generate import profiles_from_criteo
    from dlrmprof.tracegen.readers import read_criteo

    cfg = load_config("kaggle", max_rows=max_rows)
    profiles = profiles_from_criteo(read_criteo([bundled_criteo_sample()]))
    profiles = [dataclasses.replace(p, rows=t.rows) for p, t in zip(profiles, cfg.tables)]
    synthesize_trace(profiles, source={"kind": "kaggle-sample", "note": "bench_distributed"},
                     num_samples=num_samples, seed=seed, compute_fidelity=False).save(path)
    return path


def plain(opts: RunOptions) -> dict:
    import torch

    torch.set_num_threads(opts.threads)
    if opts.backend == "numba":  # as the ranks do: numba's pool at --threads, not 2
        import numba

        numba.set_num_threads(opts.threads)
    prep = prepare(opts)
    model = build_dlrm(prep.config, backend=prep.backend, seed=opts.seed)
    timer = OpTimer(threads=opts.threads)
    run_loop(DLRMTrain(model, prep.config.lr), make_source(prep), mode="train",
             iters=opts.iters, warmup=opts.warmup, timer=timer)
    noise = timer.noise.summary()
    return {"step_s": float(np.median(timer.samples("step"))),
            "other_cores": noise.get("other_cores_mean")}


def distributed(opts: RunOptions, nproc: int, barriers: bool = True) -> dict:
    res = D.launch(opts, D.DistOptions(nproc=nproc, timeout_s=120, barriers=barriers),
                   fingerprint=False)
    rep = Report.load(res[0]["summary"]["out"])
    step = rep.op("step", "step")
    noise = [n.get("other_cores_mean") for n in rep.noise["per_rank"]]
    return {"step_s": step["time"]["median"], "report": rep,
            "other_cores": float(np.mean([x for x in noise if x is not None] or [np.nan]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-rows", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="numba", choices=["numba", "torch"])
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench-dist-")
    trace = make_trace(os.path.join(tmp, "t.npz"), args.max_rows,
                       (args.iters + args.warmup) * args.batch_size, args.seed)
    base = RunOptions(config="kaggle", trace=trace, max_rows=args.max_rows,
                      batch_size=args.batch_size, iters=args.iters, warmup=args.warmup,
                      seed=args.seed, roofline=False, cache_study=False, threads=1,
                      backend=args.backend)
    print(f"kaggle preset, tables capped at {args.max_rows} rows, global batch "
          f"{args.batch_size}, {args.iters} timed steps (+{args.warmup} warm-up), {args.backend} "
          f"kernels, 1 thread per process, {os.cpu_count()} CPUs", flush=True)
    results: dict[str, list[dict]] = {"plain": [], "1 rank": [], "2 ranks": [],
                                      "2 ranks, no barriers": []}
    for rnd in range(args.rounds):
        t0 = time.perf_counter()
        results["plain"].append(plain(base))
        for n, key, bar in ((1, "1 rank", True), (2, "2 ranks", True),
                            (2, "2 ranks, no barriers", False)):
            opts = dataclasses.replace(base, out=os.path.join(tmp, f"r{rnd}-n{n}{bar}.json"))
            results[key].append(distributed(opts, n, bar))
        print(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
            f"{k} {results[k][-1]['step_s'] * 1e3:.1f} ms" for k in results) +
            f" ({time.perf_counter() - t0:.0f} s)", flush=True)

    med = {k: float(np.median([r["step_s"] for r in v])) for k, v in results.items()}
    print("\nmedian step time over rounds (other processes' CPU use, in cores):")
    for k, v in results.items():
        oc = np.nanmean([r["other_cores"] if r["other_cores"] is not None else np.nan
                         for r in v])
        print(f"  {k:<21} {med[k] * 1e3:8.2f} ms   {args.batch_size / med[k]:9,.0f} samples/s   "
              f"(other processes {oc:.2f} cores)")
    print(f"  2 ranks / 1 rank = {med['2 ranks'] / med['1 rank']:.2f}x step time; "
          f"1 rank / plain = {med['1 rank'] / med['plain']:.2f}x; the timed waits cost "
          f"{(med['2 ranks'] / med['2 ranks, no barriers'] - 1):+.1%} (2 ranks with vs without)")
    print("\n" + S.ShardingPlan.from_dict(
        results["2 ranks"][-1]["report"].config["distributed"]["plan"]).describe())

    breakdown = {key: print_breakdown(key, results[key][-1]["report"])
                 for key in ("1 rank", "2 ranks")}
    doc = harness.results_doc(
        SCHEMA, source="measured (each run's own report: median step time, the slowest "
                       "rank's for the distributed runs; psutil noise per rank)",
        rounds={k: [{"step_s": r["step_s"], "other_cores": r["other_cores"]} for r in v]
                for k, v in results.items()},
        breakdown=breakdown,
        summary={**{f"{k} step_s": v for k, v in med.items()},
                 "2 ranks / 1 rank": med["2 ranks"] / med["1 rank"],
                 "1 rank / plain": med["1 rank"] / med["plain"]})
    print(f"wrote {harness.write_results(args.out, doc)}")
    return 0


def print_breakdown(key: str, rep) -> dict:
    """Print the per-rank accounting of one run's report; returns it for the results file."""
    d = rep.end_to_end["distributed"]
    print(f"\n{key} (last round) breakdown, per-step means:")
    worst = 0.0
    for r in d["ranks"]:
        a = r["accounting"]
        worst = max(worst, a["accounting_error"])
        col = r["collectives"]
        print(f"  rank {r['rank']} ({len(r['tables'])} tables): step {a['step_s'] * 1e3:.2f} ms"
              f" = compute {a['compute_s'] * 1e3:.2f} + wait {a['wait_s'] * 1e3:.2f} + "
              f"transfer {a['transfer_s'] * 1e3:.2f} ms; untimed "
              f"{a['unaccounted_s'] * 1e3:.3f} ms -> accounting error "
              f"{a['accounting_error']:.1%}")
        if r.get("own_cores_mean") is not None:
            print(f"    CPU obtained {r['own_cores_mean']:.2f} cores; all other processes "
                  f"(other ranks included) {r['other_cores_mean']:.2f} cores")
        for name in ("alltoall.fwd", "alltoall.bwd", "allreduce"):
            c = col.get(name)
            if c:
                print(f"    {name:<13} {c['mean_s'] * 1e3:7.3f} ms  "
                      f"{c['bytes_per_step'] / 1e3:8.1f} kB  algbw {c['algbw_gbs']:.3f} "
                      f"GB/s  busbw {c['busbw_gbs']:.3f} GB/s")
    print(f"  all-to-all per step {d['alltoall_per_step_s'] * 1e3:.2f} ms "
          f"({d['alltoall_fraction_of_step']:.1%} of the step); all communication incl. "
          f"waits {d['comm_per_step_s'] * 1e3:.2f} ms; compute imbalance "
          f"{d['load_imbalance_compute']:.2f}")
    ok = worst <= 0.10
    print(f"  accounting: max error over ranks {worst:.1%} "
          f"({'within' if ok else 'OUTSIDE'} the 10% target)")
    return {"ranks": [{"rank": r["rank"], "tables": len(r["tables"]),
                       "accounting": r["accounting"]} for r in d["ranks"]],
            "alltoall_per_step_s": d["alltoall_per_step_s"],
            "alltoall_fraction_of_step": d["alltoall_fraction_of_step"],
            "comm_per_step_s": d["comm_per_step_s"], "accounting_error_max": worst}


if __name__ == "__main__":
    sys.exit(main())
