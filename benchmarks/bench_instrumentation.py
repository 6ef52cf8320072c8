"""Instrumentation overhead of `dlrmprof run` (issue #4 target: <= 5% of end-to-end time).

    python benchmarks/bench_instrumentation.py [--iters 40] [--rounds 9] [--max-rows 1000000]

The same model, data source and batches, two loops interleaved round by round so the host's
noise hits both alike:

* ``plain``: data loading + `DLRMTrain.train_step` (or `infer_step`) with no timer at all;
* ``instrumented``: the loop `dlrmprof run` uses (`train.run_loop` with an `OpTimer`: a
  perf_counter pair around every op and the step, raw samples kept, other processes' CPU use
  read at iteration boundaries).

Before timing, both loops run one step from identical model copies on the same batch and
their losses must agree exactly (the timer does not change the computation).  Timed on the
benchmark harness (dlrmprof.profile.harness): one call = `--iters` iterations of a loop, the
two loops interleaved round by round.  Printed: the median per-iteration wall time of each
loop and the median of per-round ratios instrumented / plain - 1 (the overhead) with its
quartiles, with other processes' CPU use while measuring.  Results:
benchmarks/results/instrumentation.json.
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from dlrmprof.dlrm.model import build_dlrm
from dlrmprof.dlrm.train import DLRMTrain, run_loop
from dlrmprof.profile import harness
from dlrmprof.profile.timers import OpTimer
from dlrmprof.session.prepare import RunOptions, make_source, prepare

SCHEMA = "dlrmprof.bench.instrumentation/1"
OUT = harness.results_path(__file__, "instrumentation.json")


def same_loss(trainer, model, batch, lr) -> None:
    """One train step of the model and of a twin under an OpTimer: the same loss."""
    twin = DLRMTrain(copy.deepcopy(model), lr)
    a = float(trainer.train_step(batch)[0])
    timer = OpTimer(device="cpu", threads=1)
    timer.begin_iteration()
    b = float(twin.train_step(batch, timer)[0])
    timer.end_iteration()
    assert a == b, f"instrumented loss {b!r} != plain loss {a!r}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=40, help="iterations per loop per round")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--max-rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--mode", choices=("train", "infer"), default="train")
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    opts = RunOptions(config="kaggle", data="random", max_rows=args.max_rows,
                      batch_size=args.batch_size, mode=args.mode, backend=args.backend,
                      roofline=False, cache_study=False, render=False, iters=args.iters)
    prep = prepare(opts)
    cfg = prep.config
    source = make_source(prep)
    model = build_dlrm(cfg, backend=prep.backend, device="cpu", seed=0)
    trainer = DLRMTrain(model, cfg.lr)

    # Check first: the timer must not change what is computed.
    batch = source.next_batch()
    step = trainer.train_step if args.mode == "train" else trainer.infer_step

    def plain(i):
        for _ in range(args.iters):
            step(source.next_batch())

    def instrumented(i):
        timer = OpTimer(device="cpu", threads=1)
        run_loop(trainer, source, mode=args.mode, iters=args.iters, warmup=0, timer=timer)

    def check(_out):
        if args.mode == "train":
            same_loss(trainer, model, batch, cfg.lr)

    try:
        cmp = harness.compare({"plain": plain, "instrumented": instrumented}, baseline="plain",
                              check=check, rounds=args.rounds, warmup=1, calls=1, threads=1,
                              label=f"kaggle {args.mode} {args.backend}",
                              params=dict(mode=args.mode, backend=args.backend,
                                          batch=args.batch_size, max_rows=args.max_rows,
                                          iters=args.iters))
    except harness.CheckFailed as exc:
        raise SystemExit(f"bench_instrumentation: {exc}") from None
    for r in range(cmp.rounds):
        p, q = cmp.samples_s["plain"][r], cmp.samples_s["instrumented"][r]
        oc = cmp.other_cores[r]
        print(f"round {r}: plain {p / args.iters * 1e3:7.3f} ms/iter  instrumented "
              f"{q / args.iters * 1e3:7.3f} ms/iter  ratio {q / p:.3f}  other processes "
              f"{'-' if oc is None else f'{oc:.2f}'} cores"
              f"{'  (contaminated)' if cmp.contaminated[r] else ''}")
    ov = cmp.ratio("instrumented", "plain")
    total = sum(cmp.samples_s["instrumented"]) / sum(cmp.samples_s["plain"])
    print(f"\nkaggle preset ({args.mode}, {args.backend}, batch {args.batch_size}, tables capped "
          f"at {args.max_rows} rows, 1 thread), {args.rounds} interleaved rounds x {args.iters} "
          f"iterations; figures over {ov.used} rounds ({cmp.clean_rounds} clean)")
    print(f"plain        {cmp.median_s('plain') / args.iters * 1e3:.3f} ms/iter")
    print(f"instrumented {cmp.median_s('instrumented') / args.iters * 1e3:.3f} ms/iter")
    print(f"overhead (median of per-round ratios - 1): {100 * (ov.median - 1):+.2f}%  (target "
          f"<= 5%); interquartile {100 * (ov.q25 - 1):+.1f}%..{100 * (ov.q75 - 1):+.1f}%; "
          f"total time ratio {100 * (total - 1):+.2f}%")
    print(f"other processes' CPU use while measuring: {cmp.other_cores_mean() or 0:.2f} cores "
          f"on average")
    doc = harness.results_doc(
        SCHEMA, comparisons=[cmp], source="measured (perf_counter, interleaved rounds)",
        summary={"overhead_median": ov.median - 1, "overhead_q25": ov.q25 - 1,
                 "overhead_q75": ov.q75 - 1, "target": 0.05, "rounds_used": ov.used})
    print(f"wrote {harness.write_results(args.out, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
