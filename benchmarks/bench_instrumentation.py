"""Instrumentation overhead of `dlrmprof run` (issue #4 target: <= 5% of end-to-end time).

    python benchmarks/bench_instrumentation.py [--iters 40] [--rounds 9] [--max-rows 1000000]

The same model, data source and batches, two loops interleaved round by round so the host's
noise hits both alike:

* ``plain``: data loading + `DLRMTrain.train_step` (or `infer_step`) with no timer at all;
* ``instrumented``: the loop `dlrmprof run` uses (`train.run_loop` with an `OpTimer`: a
  perf_counter pair around every op and the step, raw samples kept, other processes' CPU use
  read at iteration boundaries).

Before timing, both loops run one step from identical model copies on the same batch and
their losses must agree exactly (the timer does not change the computation).  Printed: the
median per-iteration wall time of each loop and the median of per-round ratios
instrumented / plain - 1 (the overhead), with other processes' CPU use while measuring.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import psutil
import torch

from dlrmprof.session.prepare import RunOptions, make_source, prepare
from dlrmprof.dlrm.model import build_dlrm
from dlrmprof.dlrm.train import DLRMTrain, run_loop
from dlrmprof.profile.timers import OpTimer


def other_cpu(wall_s: float, own_cpu_s: float, busy0: float) -> float:
    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
    return max(0.0, (busy - busy0 - own_cpu_s) / wall_s)


def busy_now() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=40, help="iterations per loop per round")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--max-rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--mode", choices=("train", "infer"), default="train")
    ap.add_argument("--backend", default="numba")
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
    twin = DLRMTrain(copy.deepcopy(model), cfg.lr)
    if args.mode == "train":
        a = float(trainer.train_step(batch)[0])
        timer = OpTimer(device="cpu", threads=1)
        timer.begin_iteration()
        b = float(twin.train_step(batch, timer)[0])
        timer.end_iteration()
        if a != b:
            raise SystemExit(f"instrumented loss {b!r} != plain loss {a!r}")
    del twin

    step = trainer.train_step if args.mode == "train" else trainer.infer_step

    def plain() -> float:
        t0 = time.perf_counter()
        for _ in range(args.iters):
            step(source.next_batch())
        return (time.perf_counter() - t0) / args.iters

    def instrumented() -> float:
        timer = OpTimer(device="cpu", threads=1)
        t0 = time.perf_counter()
        run_loop(trainer, source, mode=args.mode, iters=args.iters, warmup=0, timer=timer)
        return (time.perf_counter() - t0) / args.iters

    plain(), instrumented()  # warm-up (JIT, allocator)
    rows = []
    for r in range(args.rounds):
        busy0, cpu0, w0 = busy_now(), time.process_time(), time.perf_counter()
        order = (plain, instrumented) if r % 2 == 0 else (instrumented, plain)
        res = {fn.__name__: fn() for fn in order}
        wall = time.perf_counter() - w0
        res["other"] = other_cpu(wall, time.process_time() - cpu0, busy0)
        rows.append(res)
        print(f"round {r}: plain {res['plain'] * 1e3:7.3f} ms/iter  instrumented "
              f"{res['instrumented'] * 1e3:7.3f} ms/iter  ratio "
              f"{res['instrumented'] / res['plain']:.3f}  other processes {res['other']:.2f} cores")
    ratios = sorted(r["instrumented"] / r["plain"] for r in rows)
    ratio = statistics.median(ratios)
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    total = sum(r["instrumented"] for r in rows) / sum(r["plain"] for r in rows)
    print(f"\nkaggle preset ({args.mode}, {args.backend}, batch {args.batch_size}, tables capped at "
          f"{args.max_rows} rows, 1 thread), {args.rounds} interleaved rounds x {args.iters} iterations")
    print(f"plain        {statistics.median(r['plain'] for r in rows) * 1e3:.3f} ms/iter")
    print(f"instrumented {statistics.median(r['instrumented'] for r in rows) * 1e3:.3f} ms/iter")
    print(f"overhead (median of per-round ratios - 1): {100 * (ratio - 1):+.2f}%  (target <= 5%); "
          f"interquartile {100 * (q1 - 1):+.1f}%..{100 * (q3 - 1):+.1f}%; "
          f"total time ratio {100 * (total - 1):+.2f}%")
    print(f"other processes' CPU use while measuring: median "
          f"{statistics.median(r['other'] for r in rows):.2f} cores of {psutil.cpu_count()}")


if __name__ == "__main__":
    main()
